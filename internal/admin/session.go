package admin

import (
	"crypto/rand"
	"crypto/subtle"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// maxSessions bounds the sessions kept; the oldest goes first.
const maxSessions = 10

type session struct {
	id, csrf string
	expires  time.Time
	created  time.Time
}

type sessions struct {
	now func() time.Time
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]*session
}

func newSessions(now func() time.Time, ttl time.Duration) *sessions {
	return &sessions{now: now, ttl: ttl, m: map[string]*session{}}
}

// newID returns 32 random bytes as text.
func newID() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return encodeID(b)
}

func encodeID(b []byte) string {
	const digits = "0123456789abcdefghijklmnopqrstuv"
	out := make([]byte, 0, len(b)*2)
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func (ss *sessions) create() *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := ss.now()
	for id, s := range ss.m {
		if !now.Before(s.expires) {
			delete(ss.m, id)
		}
	}
	for len(ss.m) >= maxSessions {
		var oldest *session
		for _, s := range ss.m {
			if oldest == nil || s.created.Before(oldest.created) {
				oldest = s
			}
		}
		delete(ss.m, oldest.id)
	}
	s := &session{id: newID(), csrf: newID(), created: now, expires: now.Add(ss.ttl)}
	ss.m[s.id] = s
	return s
}

func (ss *sessions) get(id string) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[id]
	if s == nil {
		return nil
	}
	if !ss.now().Before(s.expires) {
		delete(ss.m, id)
		return nil
	}
	return s
}

func (ss *sessions) remove(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, id)
}

func (s *Server) cookieName() string {
	if s.opt.TLS {
		return "__Host-popbridge-admin"
	}
	return "popbridge-admin"
}

func (s *Server) session(r *http.Request) *session {
	c, err := r.Cookie(s.cookieName())
	if err != nil {
		return nil
	}
	return s.sessions.get(c.Value)
}

// auth passes signed-in requests on, with their session; others go to
// the login form (GET) or are refused (POST). A POST must carry the
// session's form token.
func (s *Server) auth(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess := s.session(r)
		if sess == nil {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			s.textPage(w, http.StatusUnauthorized, "Not signed in, or the session has expired. Sign in again.")
			return
		}
		if r.Method == http.MethodPost {
			tok := r.PostFormValue("csrf")
			if subtle.ConstantTimeCompare([]byte(tok), []byte(sess.csrf)) != 1 {
				s.log.Warn().Str("remote", r.RemoteAddr).Msg("admin: POST without the form token refused")
				s.textPage(w, http.StatusForbidden, "Refused: the form is stale or was not sent by this page. Reload the page and try again.")
				return
			}
		}
		h(w, r, sess)
	}
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	if s.session(r) != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.render(w, http.StatusOK, "login", page{Title: "Sign in"})
}

// dummyHash is compared when the form is incomplete, so that timing
// tells nothing.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("popbridge admin dummy"), bcrypt.MinCost)

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	addr := remoteAddr(r)
	if wait := s.limiter.blocked(addr); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		s.log.Warn().Str("remote", r.RemoteAddr).Msg("admin: login refused: too many failed attempts")
		s.render(w, http.StatusTooManyRequests, "login", page{Title: "Sign in", Data: "Too many failed sign-ins. Wait a minute and try again."})
		return
	}
	pass := r.PostFormValue("password")
	hash := s.opt.PasswordHash
	if pass == "" || len(pass) > 72 {
		hash = dummyHash
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
	if err != nil || pass == "" || len(pass) > 72 {
		s.limiter.fail(addr)
		s.log.Warn().Str("remote", r.RemoteAddr).Msg("admin: wrong password")
		s.render(w, http.StatusUnauthorized, "login", page{Title: "Sign in", Data: "Wrong password."})
		return
	}
	if old := s.session(r); old != nil {
		s.sessions.remove(old.id) // a new token at every sign-in
	}
	sess := s.sessions.create()
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(), Value: sess.id, Path: "/",
		HttpOnly: true, Secure: s.opt.TLS, SameSite: http.SameSiteStrictMode,
		MaxAge: int(s.opt.SessionTTL / time.Second),
	})
	s.log.Info().Str("remote", r.RemoteAddr).Msg("admin: signed in")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	s.sessions.remove(sess.id)
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.opt.TLS, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// Login rate limits: failures per client address, and in all, within
// one window.
const (
	perAddrFailures = 5
	allFailures     = 50
	failureWindow   = time.Minute
)

// limiter counts failed sign-ins per address and in all, in fixed
// windows of failureWindow.
type limiter struct {
	now   func() time.Time
	mu    sync.Mutex
	start time.Time
	all   int
	per   map[string]int
}

func newLimiter(now func() time.Time) *limiter {
	return &limiter{now: now, per: map[string]int{}}
}

// roll starts a new window when the current one has passed.
func (l *limiter) roll() {
	now := l.now()
	if now.Sub(l.start) >= failureWindow {
		l.start, l.all, l.per = now, 0, map[string]int{}
	}
}

// blocked returns how long addr must wait; 0 if it may try.
func (l *limiter) blocked(addr interface{ String() string }) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.roll()
	if l.per[addr.String()] >= perAddrFailures || l.all >= allFailures {
		return l.start.Add(failureWindow).Sub(l.now())
	}
	return 0
}

func (l *limiter) fail(addr interface{ String() string }) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.roll()
	l.all++
	if len(l.per) < 10000 { // bounded: beyond, the global cap works alone
		l.per[addr.String()]++
	}
}
