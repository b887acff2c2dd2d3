package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"
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

// statusReply is the JSON of /status.
type statusReply struct {
	Ready    bool            `json:"ready"`
	Version  string          `json:"version"`
	Accounts []accountReport `json:"accounts"`
}

// accountReport is one configured account in /status.
type accountReport struct {
	Account   string       `json:"account"`
	Backend   string       `json:"backend"`
	LastLogin *time.Time   `json:"last_login,omitempty"`
	LastSync  *time.Time   `json:"last_sync,omitempty"`
	LastError *errorReport `json:"last_error,omitempty"`
	Token     *tokenReport `json:"token,omitempty"`
	Sync      *syncStatus  `json:"sync,omitempty"`
}

type errorReport struct {
	Class string    `json:"class"`
	At    time.Time `json:"at"`
}

// Token states in /status.
const (
	tokenOK      = "ok"            // the last refresh (or stored token) worked
	tokenReauth  = "reauth_needed" // popbridge auth must be run again
	tokenFailing = "refresh_failing"
	tokenUnknown = "unknown" // not used since the start
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
func (m *metrics) snapshot() []accountReport {
	m.mu.Lock()
	users := m.current
	ss := make([]*accountStatus, 0, len(users))
	for _, u := range users {
		if s := m.accounts[u]; s != nil {
			ss = append(ss, s)
		}
	}
	m.mu.Unlock()
	out := make([]accountReport, 0, len(ss))
	for _, s := range ss {
		s.mu.Lock()
		r := accountReport{Account: s.user, Backend: s.backend, LastLogin: timePtr(s.lastLogin), LastSync: timePtr(s.lastSync)}
		if s.errClass != "" {
			r.LastError = &errorReport{Class: s.errClass, At: s.errAt.UTC().Truncate(time.Second)}
		}
		src := s.token
		if s.sync != nil {
			r.Sync = newSyncStatus(s.sync.SyncProgress())
		}
		s.mu.Unlock()
		if src != nil {
			exp, reauth, err := src.Status()
			t := &tokenReport{State: tokenUnknown, ExpiresAt: timePtr(exp), expiry: exp}
			switch {
			case reauth:
				t.State = tokenReauth
			case err != nil:
				t.State = tokenFailing
			case !exp.IsZero():
				t.State = tokenOK
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
	enc.Encode(statusReply{Ready: m.ready(), Version: versionString(), Accounts: m.snapshot()})
}

// startHTTP serves m's handler on addr and marks the POP3 listeners up;
// call it once they are bound. stop closes the listener; by then
// readiness has followed the server's shutdown.
func startHTTP(addr string, m *metrics, log zerolog.Logger) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen.http: %w", err)
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
	}, nil
}

// healthcheck asks a running server's /healthz (or /readyz) and exits 0
// when it answers 200, for container health checks.
func (c *cli) healthcheck(ctx context.Context, args []string) error {
	fs := c.flags("healthcheck", "(-config FILE | -url URL) [-ready] [-timeout D]",
		"Ask the running server's operations listener (listen.http) whether it is\n"+
			"alive: exit 0 when GET /healthz (with -ready, /readyz) answers 200,\n"+
			"else 1. With -config, the address is listen.http of FILE (an address for\n"+
			"all interfaces is asked on loopback); only that key is read.")
	path := fs.String("config", "", "configuration `file` (YAML)")
	base := fs.String("url", "", "base `URL` of the listener, e.g. http://127.0.0.1:9110")
	ready := fs.Bool("ready", false, "ask /readyz: 200 only while every POP3 listener is up and not shutting down")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this `duration`")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if (*path == "") == (*base == "") {
		return usageError("give -config or -url")
	}
	target := *base
	if *path != "" {
		addr, err := httpAddr(*path)
		if err != nil {
			return err
		}
		target = "http://" + addr
	}
	target = strings.TrimSuffix(target, "/")
	if *ready {
		target += "/readyz"
	} else {
		target += "/healthz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", target, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: not answering: %w", target, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", target, resp.Status)
	}
	fmt.Fprintf(c.stdout, "%s: %s\n", target, resp.Status)
	return nil
}

// httpAddr returns the host:port at which to ask the listen.http of the
// configuration file at path, reading nothing else from it.
func httpAddr(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var c struct {
		Listen struct {
			HTTP string `yaml:"http"`
		} `yaml:"listen"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if c.Listen.HTTP == "" {
		return "", fmt.Errorf("%s: listen.http is not set, so there is nothing to ask", path)
	}
	host, port, err := net.SplitHostPort(c.Listen.HTTP)
	if err != nil {
		return "", fmt.Errorf("%s: listen.http: %w", path, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}
