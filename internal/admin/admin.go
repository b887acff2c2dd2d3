// Package admin is the owner's web page: an overview of the accounts,
// connecting or re-authorizing an OAuth2 account from the browser,
// testing an account, forgetting its cache and reading its recent log
// lines.
//
// The page is one http.Handler built by New from Options: the app
// supplies the data and the actions through small interfaces. Every
// request passes, in order: security headers, the Host allow-list (421
// for another name: DNS rebinding), the cleartext policy (plain HTTP
// only from allowed addresses), cross-origin protection
// (http.CrossOriginProtection), then the routes, where everything but
// the login form and the static files needs a session, and every POST
// with a session also needs the session's form token.
package admin

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

//go:embed static templates
var assets embed.FS

// Account is one account as the overview shows it. Zero times mean
// never (or unknown).
type Account struct {
	User    string
	Backend string // what it serves from, e.g. "imap imap.example.org:993"
	// LastLogin and LastSync are the last POP3 login and the last
	// finished sync.
	LastLogin, LastSync time.Time
	// Token is the OAuth2 grant's state; nil for an account without
	// OAuth2.
	Token *TokenState
	// LastError says in plain words what failed last; empty if nothing.
	LastError   string
	LastErrorAt time.Time
	// Cache is what the cache holds for the account.
	Cache CacheStats
	// Sync is the current or last sync; nil if the backend has none.
	Sync *proxy.SyncProgress
	// Sessions is the number of POP3 sessions open now.
	Sessions int
	// SendOff, if not empty, says in plain words why the account cannot
	// send over SMTP submission; then the Send fields are unused.
	SendOff string
	// LastSend is the last message sent over SMTP submission;
	// LastSendError says in plain words why the last failed send failed,
	// empty if none did.
	LastSend        time.Time
	LastSendError   string
	LastSendErrorAt time.Time
}

// TokenState is an OAuth2 grant's state, as oauth.Source.Status gives it.
type TokenState struct {
	Expiry time.Time // of the access token; zero if unknown
	Reauth bool      // the grant is gone: the owner must re-authorize
	Err    string    // the last refresh error in plain words, if any
}

// CacheStats is what the cache holds for one account.
type CacheStats struct {
	Messages   int   // message records (sizes and UIDLs)
	Bytes      int64 // sum of the recorded message sizes
	Tombstones int   // messages hidden from POP3
}

// AccountSource lists the accounts for the overview.
type AccountSource interface {
	Accounts(ctx context.Context) []Account
}

// Tester checks one account the way "popbridge check" does and says in
// plain words what it found; an error says what failed.
type Tester interface {
	Test(ctx context.Context, account string) (string, error)
}

// Forgetter drops what the cache holds for an account, as cache.Store's
// Forget does: errors wrapping cache.ErrInUse or cache.ErrNoAccount are
// explained on the page.
type Forgetter interface {
	Forget(ctx context.Context, account string) error
}

// LogSource returns an account's recent log lines, oldest first.
// LogRing implements it.
type LogSource interface {
	Lines(account string) []string
}

// OAuthClients gives the OAuth2 client of an account that logs in with
// OAuth2: the x/oauth2 configuration (as oauth.Config.OAuth2 makes it)
// and the provider, which chooses the flow (the device code for
// Microsoft, the authorization code with PKCE otherwise). ok is false
// for an account without OAuth2.
type OAuthClients interface {
	OAuthClient(account string) (cfg *oauth2.Config, provider modes.Provider, ok bool)
}

// TokenSaver keeps a new grant where the account's token source reads
// it; *oauth.Store implements it, and oauth.Source picks the new file up
// at the next login.
type TokenSaver interface {
	Save(account string, tok *oauth2.Token) error
}

// Options configure the page. PasswordHash and Hosts are required; a
// nil source or action hides that part of the page.
type Options struct {
	// PasswordHash is the bcrypt hash of the admin password.
	PasswordHash []byte
	// Hosts are the Host header values accepted: names ("admin.lan"),
	// which match on any port, or name:port and addr:port pairs.
	Hosts []string
	// TLS is true when the listener serves HTTPS: cookies become Secure
	// and __Host- prefixed, and responses carry HSTS.
	TLS bool
	// Cleartext decides which client addresses may use the page over
	// plain HTTP (like cleartext_auth); nil allows loopback only.
	Cleartext func(netip.Addr) bool

	Accounts  AccountSource
	Tester    Tester
	Forgetter Forgetter
	Logs      LogSource
	OAuth     OAuthClients
	Tokens    TokenSaver
	// HTTPClient makes the token requests; nil means one with a 30 s
	// timeout.
	HTTPClient *http.Client
	// LoopbackAddr is where the redirect listener of an authorization
	// code flow binds; empty means 127.0.0.1:0. "off" starts none: the
	// owner pastes the final URL.
	LoopbackAddr string

	// SessionTTL is how long a session lasts; 0 means 12 hours.
	SessionTTL time.Duration
	// Log gets one line per login, refusal and action (never a secret);
	// nil logs nothing.
	Log *zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the admin page. Close it to stop running OAuth2 flows.
type Server struct {
	opt   Options
	hosts map[string]bool
	tmpl  map[string]*template.Template
	log   zerolog.Logger
	cop   *http.CrossOriginProtection
	mux   *http.ServeMux

	sessions *sessions
	limiter  *limiter

	mu    sync.Mutex
	flows map[string]*flow
	ctx   context.Context
	stop  context.CancelFunc
}

// New returns the page's server. It fails when the options cannot make
// a safe page.
func New(opt Options) (*Server, error) {
	if len(opt.PasswordHash) == 0 {
		return nil, errors.New("admin: no password hash (make one with popbridge hash-password)")
	}
	if len(opt.Hosts) == 0 {
		return nil, errors.New("admin: no allowed host names (the names the page is opened with, e.g. localhost)")
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.SessionTTL <= 0 {
		opt.SessionTTL = 12 * time.Hour
	}
	if opt.Cleartext == nil {
		opt.Cleartext = func(a netip.Addr) bool { return a.IsLoopback() }
	}
	if opt.HTTPClient == nil {
		opt.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	s := &Server{
		opt:      opt,
		hosts:    map[string]bool{},
		log:      zerolog.Nop(),
		cop:      http.NewCrossOriginProtection(),
		sessions: newSessions(opt.Now, opt.SessionTTL),
		limiter:  newLimiter(opt.Now),
		flows:    map[string]*flow{},
	}
	if opt.Log != nil {
		s.log = *opt.Log
	}
	s.ctx, s.stop = context.WithCancel(context.Background())
	for _, h := range opt.Hosts {
		s.hosts[strings.ToLower(h)] = true
	}
	if err := s.parseTemplates(); err != nil {
		return nil, err
	}
	s.cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.log.Warn().Str("remote", r.RemoteAddr).Str("origin", r.Header.Get("Origin")).Msg("admin: cross-origin request refused")
		s.textPage(w, http.StatusForbidden, "Refused: this form was sent from another site. Use the admin page itself.")
	}))
	s.routes()
	return s, nil
}

// Close stops the OAuth2 flows still running.
func (s *Server) Close() {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.flows {
		f.close()
	}
}

// ServeHTTP runs a request through the checks, then the routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	if s.opt.TLS {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	if !s.hostAllowed(r.Host) {
		s.log.Warn().Str("remote", r.RemoteAddr).Str("host", r.Host).Msg("admin: unknown Host refused")
		s.textPage(w, http.StatusMisdirectedRequest, "Refused: this page answers only under the names it is configured for. Open it with one of those.")
		return
	}
	if r.TLS == nil && !s.opt.TLS {
		addr := remoteAddr(r)
		if !addr.IsValid() || !s.opt.Cleartext(addr) {
			s.log.Warn().Str("remote", r.RemoteAddr).Msg("admin: plain HTTP from a disallowed address refused")
			s.textPage(w, http.StatusForbidden, "Refused: plain HTTP is not allowed from your address. Use HTTPS, or allow this address for plain HTTP in the configuration.")
			return
		}
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	}
	s.cop.Handler(s.mux).ServeHTTP(w, r)
}

func (s *Server) hostAllowed(host string) bool {
	host = strings.ToLower(host)
	if s.hosts[host] {
		return true
	}
	name, _, err := net.SplitHostPort(host)
	if err != nil {
		return false
	}
	if strings.HasPrefix(host, "[") {
		name = "[" + name + "]"
		if s.hosts[strings.Trim(name, "[]")] {
			return true
		}
	}
	return s.hosts[name]
}

// remoteAddr is the client's address, unmapped; invalid if unknown.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (s *Server) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /login", s.loginForm)
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.auth(s.logout))
	m.HandleFunc("GET /{$}", s.auth(s.overview))
	m.HandleFunc("GET /progress", s.auth(s.progress))
	m.HandleFunc("GET /account", s.auth(s.account))
	m.HandleFunc("POST /test", s.auth(s.test))
	m.HandleFunc("GET /forget", s.auth(s.forgetConfirm))
	m.HandleFunc("POST /forget", s.auth(s.forget))
	m.HandleFunc("POST /connect", s.auth(s.connect))
	m.HandleFunc("GET /flow", s.auth(s.flowPage))
	m.HandleFunc("GET /flow/status", s.auth(s.flowStatus))
	m.HandleFunc("POST /flow/paste", s.auth(s.paste))
	s.mux = m
}

func (s *Server) parseTemplates() error {
	funcs := template.FuncMap{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return "never"
			}
			return t.Local().Format("2006-01-02 15:04")
		},
		"bytes": humanBytes,
		"percent": func(p *proxy.SyncProgress) int {
			if p == nil || p.Total <= 0 {
				return 0
			}
			return p.Done * 100 / p.Total
		},
	}
	s.tmpl = map[string]*template.Template{}
	pages, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return err
	}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(p, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", p)
		if err != nil {
			return fmt.Errorf("admin: template %s: %w", p, err)
		}
		s.tmpl[name] = t
	}
	return nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// page is what every template gets.
type page struct {
	Title   string
	CSRF    string // the session's form token; empty when signed out
	Refresh int    // seconds for a meta refresh; 0 for none
	Data    any
}

func (s *Server) render(w http.ResponseWriter, status int, name string, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := s.tmpl[name].Execute(w, p); err != nil {
		s.log.Error().Err(err).Str("page", name).Msg("admin: rendering failed")
	}
}

// textPage answers with a short page that says msg.
func (s *Server) textPage(w http.ResponseWriter, status int, msg string) {
	s.render(w, status, "message", page{Title: http.StatusText(status), Data: msg})
}
