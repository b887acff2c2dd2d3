package app

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// handler serves /healthz, /readyz, /metrics and /status.
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if m.ready() {
			text(w, http.StatusOK, "ready")
		} else {
			text(w, http.StatusServiceUnavailable, "not ready")
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("GET /status", m.serveStatus)
	return mux
}

func text(w http.ResponseWriter, code int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, s)
}

// authorized reports whether r carries the status token, if one is
// configured. Both sides are hashed first, so the comparison takes the
// same time whatever the lengths.
func (m *metrics) authorized(r *http.Request) bool {
	if m.statusToken == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	a, b := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256([]byte(m.statusToken))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// StatusReply is the JSON of /status, for its clients.
type StatusReply struct {
	Ready    bool            `json:"ready"`
	Version  string          `json:"version"`
	Accounts []AccountReport `json:"accounts"`
}

// AccountReport is one configured account in /status.
type AccountReport struct {
	Account   string       `json:"account"`
	Backend   string       `json:"backend"`
	LastLogin *time.Time   `json:"last_login,omitempty"`
	LastSync  *time.Time   `json:"last_sync,omitempty"`
	LastError *errorReport `json:"last_error,omitempty"`
	// LastSend and LastSendError are about SMTP submission.
	LastSend      *time.Time   `json:"last_send,omitempty"`
	LastSendError *errorReport `json:"last_send_error,omitempty"`
	Token         *tokenReport `json:"token,omitempty"`
	Sync          *syncStatus  `json:"sync,omitempty"`
}

type errorReport struct {
	Class string    `json:"class"`
	At    time.Time `json:"at"`
}

// Token states in /status.
const (
	TokenOK      = "ok"              // the last refresh (or stored token) worked
	TokenReauth  = "reauth_needed"   // popbridge auth must be run again
	TokenFailing = "refresh_failing" // refreshes fail, for a reason other than a revoked grant
	TokenUnknown = "unknown"         // not used since the start
)

type tokenReport struct {
	State     string     `json:"state"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	expiry    time.Time
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC().Truncate(time.Second)
	return &t
}

// snapshot returns the report of every account in use.
func (m *metrics) snapshot() []AccountReport {
	m.mu.Lock()
	users := m.current
	ss := make([]*accountStatus, 0, len(users))
	for _, u := range users {
		if s := m.accounts[u]; s != nil {
			ss = append(ss, s)
		}
	}
	m.mu.Unlock()
	out := make([]AccountReport, 0, len(ss))
	for _, s := range ss {
		s.mu.Lock()
		r := AccountReport{Account: s.user, Backend: s.backend, LastLogin: timePtr(s.lastLogin), LastSync: timePtr(s.lastSync)}
		if s.errClass != "" {
			r.LastError = &errorReport{Class: s.errClass, At: s.errAt.UTC().Truncate(time.Second)}
		}
		r.LastSend = timePtr(s.lastSend)
		if s.sendErrClass != "" {
			r.LastSendError = &errorReport{Class: s.sendErrClass, At: s.sendErrAt.UTC().Truncate(time.Second)}
		}
		src := s.token
		if s.sync != nil {
			r.Sync = newSyncStatus(s.sync.SyncProgress())
		}
		s.mu.Unlock()
		if src != nil {
			exp, reauth, err := src.Status()
			t := &tokenReport{State: TokenUnknown, ExpiresAt: timePtr(exp), expiry: exp}
			switch {
			case reauth:
				t.State = TokenReauth
			case err != nil:
				t.State = TokenFailing
			case !exp.IsZero():
				t.State = TokenOK
			}
			r.Token = t
		}
		out = append(out, r)
	}
	return out
}

func (m *metrics) serveStatus(w http.ResponseWriter, r *http.Request) {
	if !m.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="popbridge"`)
		text(w, http.StatusUnauthorized, "unauthorized")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(StatusReply{Ready: m.ready(), Version: Version, Accounts: m.snapshot()})
}

// startHTTP serves m's handler on addr and marks the POP3 listeners up;
// call it once they are bound. It returns the bound address. stop closes
// the listener; by then readiness has followed the server's shutdown.
func startHTTP(addr string, m *metrics, log zerolog.Logger) (stop func(), bound net.Addr, err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen.http: %w", err)
	}
	hs := &http.Server{
		Handler:           m.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	log.Info().Str("listener", "http").Str("addr", l.Addr().String()).Msg("listening")
	m.listening.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("http listener failed")
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if hs.Shutdown(ctx) != nil {
			hs.Close()
		}
		<-done
	}, l.Addr(), nil
}
