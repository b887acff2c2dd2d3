// Package oauthtest is a fake OAuth2 authorization server for tests:
// authorize (authorization code with PKCE), token (authorization_code,
// refresh_token and device_code grants) and device endpoints.
package oauthtest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is the fake. Its exported fields may be changed between
// requests under no lock only before the flow under test starts.
type Server struct {
	URL                          string // base URL
	AuthURL, TokenURL, DeviceURL string
	ClientID, ClientSecret       string // ClientSecret "" accepts a public client
	AccessTTL                    time.Duration
	// Rotate makes every refresh return a new refresh token.
	Rotate bool
	// DevicePending and DeviceSlowDown are how many device polls answer
	// authorization_pending, then slow_down, before the token; DeviceDeny
	// answers access_denied instead of the token.
	DevicePending, DeviceSlowDown int
	DeviceDeny                    bool
	DeviceInterval                int
	// IntrospectURL is the token introspection endpoint (RFC 7662, as
	// Dovecot's oauth2 passdb uses it): POST token=..., answered with
	// active and, for a live token, username Username.
	IntrospectURL string
	Username      string

	srv       *httptest.Server
	mu        sync.Mutex
	codes     map[string]authCode
	refresh   map[string]bool // live refresh tokens
	access    map[string]time.Time
	refreshes int
	rejectAll bool // ValidAccess says no to every token
	checked   map[string]int
	polls     []string // device poll answers, in order
	scopes    []string // scope of the last authorize or device request
	devCode   string
}

type authCode struct {
	challenge, redirect string
}

// Start starts a fake; it is closed when the test ends.
func Start(t testing.TB) *Server {
	s := New()
	t.Cleanup(s.Close)
	return s
}

// New starts a fake outside a test (e.g. a dev binary); the caller
// calls Close.
func New() *Server {
	s := &Server{
		ClientID: "test-client", AccessTTL: time.Hour, DeviceInterval: 1,
		codes: map[string]authCode{}, refresh: map[string]bool{}, access: map[string]time.Time{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", s.authorize)
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("POST /device", s.device)
	mux.HandleFunc("POST /introspect", s.introspect)
	mux.HandleFunc("/devicelogin", s.deviceLogin)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	s.AuthURL, s.TokenURL, s.DeviceURL = s.URL+"/authorize", s.URL+"/token", s.URL+"/device"
	s.IntrospectURL = s.URL + "/introspect"
	return s
}

// Close shuts the fake down.
func (s *Server) Close() { s.srv.Close() }

func random() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": "fake: " + code})
}

// authorize plays the user who grants access at once: it redirects to
// redirect_uri with a code and the state. PKCE S256 is required.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect := q.Get("redirect_uri")
	u, err := url.Parse(redirect)
	if err != nil || u.Hostname() != "127.0.0.1" {
		http.Error(w, "fake: redirect_uri must be a 127.0.0.1 loopback URL", http.StatusBadRequest)
		return
	}
	if q.Get("client_id") != s.ClientID || q.Get("response_type") != "code" ||
		q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		http.Error(w, "fake: bad authorization request (client_id, response_type=code, PKCE S256)", http.StatusBadRequest)
		return
	}
	code := random()
	s.mu.Lock()
	s.codes[code] = authCode{challenge: q.Get("code_challenge"), redirect: redirect}
	s.scopes = strings.Fields(q.Get("scope"))
	s.mu.Unlock()
	v := u.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (s *Server) device(w http.ResponseWriter, r *http.Request) {
	if r.PostFormValue("client_id") != s.ClientID {
		oauthError(w, http.StatusBadRequest, "invalid_client")
		return
	}
	s.mu.Lock()
	s.devCode = random()
	s.scopes = strings.Fields(r.PostFormValue("scope"))
	dc := s.devCode
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"device_code": dc, "user_code": "ABCD-EFGH",
		"verification_uri": s.URL + "/devicelogin", "expires_in": 900, "interval": s.DeviceInterval,
	})
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	if r.PostFormValue("client_id") != s.ClientID {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	if s.ClientSecret != "" && r.PostFormValue("client_secret") != s.ClientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.PostFormValue("grant_type") {
	case "authorization_code":
		c, ok := s.codes[r.PostFormValue("code")]
		delete(s.codes, r.PostFormValue("code"))
		if !ok || c.redirect != r.PostFormValue("redirect_uri") {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		sum := sha256.Sum256([]byte(r.PostFormValue("code_verifier")))
		if base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
			oauthError(w, http.StatusBadRequest, "invalid_grant") // PKCE mismatch
			return
		}
		s.issue(w, true)
	case "refresh_token":
		s.refreshes++
		rt := r.PostFormValue("refresh_token")
		if !s.refresh[rt] {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		if s.Rotate {
			delete(s.refresh, rt)
		}
		s.issue(w, s.Rotate)
	case "urn:ietf:params:oauth:grant-type:device_code":
		if s.devCode == "" || r.PostFormValue("device_code") != s.devCode {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		switch {
		case s.DevicePending > 0:
			s.DevicePending--
			s.polls = append(s.polls, "authorization_pending")
			oauthError(w, http.StatusBadRequest, "authorization_pending")
		case s.DeviceSlowDown > 0:
			s.DeviceSlowDown--
			s.polls = append(s.polls, "slow_down")
			oauthError(w, http.StatusBadRequest, "slow_down")
		case s.DeviceDeny:
			s.polls = append(s.polls, "access_denied")
			oauthError(w, http.StatusBadRequest, "access_denied")
		default:
			s.polls = append(s.polls, "token")
			s.devCode = ""
			s.issue(w, true)
		}
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type")
	}
}

// issue answers with a new access token and, if withRefresh, a new
// refresh token. Called with s.mu held.
func (s *Server) issue(w http.ResponseWriter, withRefresh bool) {
	at := "at-" + random()
	s.access[at] = time.Now().Add(s.AccessTTL)
	resp := map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": int(s.AccessTTL / time.Second)}
	if withRefresh {
		rt := "rt-" + random()
		s.refresh[rt] = true
		resp["refresh_token"] = rt
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// ValidAccess reports whether tok is an unexpired access token issued here.
func (s *Server) ValidAccess(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.checked == nil {
		s.checked = map[string]int{}
	}
	s.checked[tok]++
	exp, ok := s.access[tok]
	return ok && !s.rejectAll && time.Now().Before(exp)
}

// RevokeAll makes every refresh token invalid (invalid_grant).
func (s *Server) RevokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh = map[string]bool{}
}

// AddRefreshToken registers a live refresh token.
func (s *Server) AddRefreshToken(rt string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh[rt] = true
}

// LiveRefreshToken reports whether rt would be accepted.
func (s *Server) LiveRefreshToken(rt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refresh[rt]
}

// Refreshes is the number of refresh_token grants requested so far.
func (s *Server) Refreshes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes
}

// Polls returns the answers given to device polls, in order.
func (s *Server) Polls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.polls...)
}

// Scopes returns the scopes of the last authorize or device request.
func (s *Server) Scopes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.scopes...)
}

// introspect answers whether the token in the form is a live access
// token, and whose.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	tok := r.PostFormValue("token")
	if tok == "" {
		// Dovecot's "auth" mode sends the token as a bearer credential.
		tok, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	resp := map[string]any{"active": s.ValidAccess(tok)}
	if resp["active"] == true {
		s.mu.Lock()
		resp["username"] = s.Username
		s.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// RevokeAccess makes every access token issued so far invalid, while
// the refresh tokens stay live: the provider rotated or revoked them.
func (s *Server) RevokeAccess() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access = map[string]time.Time{}
}

// Issue returns a new token, access and refresh, as a new grant
// ("popbridge auth") would get it.
func (s *Server) Issue() (access, refresh string, expiry time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	access, refresh = "at-"+random(), "rt-"+random()
	expiry = time.Now().Add(s.AccessTTL)
	s.access[access] = expiry
	s.refresh[refresh] = true
	return access, refresh, expiry
}

// RejectAccess makes ValidAccess refuse every access token, also those
// issued later, while on: a grant that refreshes but is no longer
// accepted upstream.
func (s *Server) RejectAccess(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejectAll = on
}

// Checked is how many times ValidAccess was asked about tok.
func (s *Server) Checked(tok string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checked[tok]
}
