package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/admin"
	"github.com/popbridge/popbridge/internal/modes"
)

// adminCheckTimeout bounds the test of one account from the page, as
// popbridge check bounds it.
const adminCheckTimeout = 30 * time.Second

// adminSources gives the admin page its data and actions from the
// running app: the accounts of the configuration in use (SIGHUP
// included), the metrics' per-account status, the cache store and the
// token store of popbridge auth.
type adminSources struct {
	st      *state
	cfg     func() *config.Config
	explain func(config.Account, error) string // nil: the error as it is
}

func (s *adminSources) account(user string) (config.Account, bool) {
	as := s.cfg().Accounts
	i := slices.IndexFunc(as, func(a config.Account) bool { return a.User == user })
	if i < 0 {
		return config.Account{}, false
	}
	return as[i], true
}

// Accounts implements admin.AccountSource.
func (s *adminSources) Accounts(ctx context.Context) []admin.Account {
	stats := map[string]admin.CacheStats{}
	if list, err := s.st.store.Stats(); err == nil {
		for _, c := range list {
			stats[c.Account] = admin.CacheStats{Messages: c.Messages, Bytes: c.Bytes, Tombstones: c.Tombstones}
		}
	} else if s.st.log != nil {
		s.st.log.Warn().Err(err).Msg("admin: reading the cache stats")
	}
	m := s.st.metrics
	cfg := s.cfg()
	var out []admin.Account
	for _, a := range cfg.Accounts {
		v := admin.Account{User: a.User, Backend: describe(a), Cache: stats[a.User], Sessions: s.st.store.Holders(a.User), SendOff: sendOff(cfg, a)}
		m.mu.Lock()
		st := m.accounts[a.User]
		m.mu.Unlock()
		if st != nil {
			st.mu.Lock()
			v.LastLogin, v.LastSync = st.lastLogin, st.lastSync
			if st.errClass != "" {
				v.LastError, v.LastErrorAt = plainClass(st.errClass), st.errAt
			}
			v.LastSend = st.lastSend
			if st.sendErrClass != "" {
				v.LastSendError, v.LastSendErrorAt = plainSendClass(st.sendErrClass), st.sendErrAt
			}
			src, sync := st.token, st.sync
			st.mu.Unlock()
			if sync != nil {
				p := sync.SyncProgress()
				v.Sync = &p
			}
			if src != nil {
				exp, reauth, err := src.Status()
				v.Token = &admin.TokenState{Expiry: exp, Reauth: reauth}
				if err != nil && !reauth {
					v.Token.Err = "the last token refresh failed: " + errorClass(err)
				}
			}
		}
		if v.Token == nil {
			if o, _ := OAuthAccount(a); o != nil {
				v.Token = &admin.TokenState{} // OAuth2, not used since the start
			}
		}
		out = append(out, v)
	}
	return out
}

// plainClass says an error class of /status in a sentence.
func plainClass(class string) string {
	switch class {
	case "re-auth needed":
		return "The OAuth2 grant is missing, expired or revoked: re-authorize the account."
	case "authentication failed":
		return "The upstream refused the login: check the account's password or grant."
	case "maildrop in use":
		return "The maildrop was in use by another session."
	case "upstream certificate rejected":
		return "The upstream's TLS certificate was rejected: check its name or ca_file."
	case "upstream timeout":
		return "The upstream did not answer in time."
	case "upstream unreachable":
		return "The upstream could not be reached: check its address and the network."
	case "permanent failure":
		return "The upstream reported a permanent failure; the log has the detail."
	}
	return "A temporary failure; the log has the detail."
}

// sendOff says in plain words why account a of cfg cannot send over
// SMTP submission, or "" if it can.
func sendOff(cfg *config.Config, a config.Account) string {
	if cfg.Listen.Submission == "" && cfg.Listen.Submissions == "" {
		return "no SMTP submission listener: set listen.submission or listen.submissions (see docs/smtp.md)"
	}
	if s, why := a.DefaultSend(); s == nil {
		return why
	}
	return ""
}

// plainSendClass says a send error class of /status in a sentence.
func plainSendClass(class string) string {
	switch class {
	case "not_configured":
		return "The account is not set up to send: check its send section (see docs/smtp.md)."
	case "upstream_login":
		return "The submission server refused the login: check the send credentials or re-authorize the grant."
	case "upstream_refused":
		return "The submission server refused the message; the log has its reply."
	case "upstream_deferred":
		return "The submission server deferred the message or the send rate limit was reached; the client will retry."
	}
	return "The submission server could not be reached or failed; the log has the detail."
}

// Test implements admin.Tester: what popbridge check does for one
// account, its backend built on a scratch store with the real tokens.
func (s *adminSources) Test(ctx context.Context, user string) (string, error) {
	a, ok := s.account(user)
	if !ok {
		return "", fmt.Errorf("no account %s in the configuration", user)
	}
	scratch, err := os.MkdirTemp("", "popbridge-check-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(scratch)
	bs, err := OpenBackends(scratch, s.st.tokenHome(), nil)
	if err != nil {
		return "", err
	}
	defer bs.Close()
	bs.st.tokenDB = s.st.tokenDB // the shared tokens, under state.driver postgres
	b, err := bs.New(a)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, adminCheckTimeout)
		defer cancel()
		err = b.Check(ctx)
	}
	if err != nil {
		if s.explain != nil {
			return "", errors.New(s.explain(a, err))
		}
		return "", err
	}
	return "OK: " + describe(a) + " answered.", nil
}

// Forget implements admin.Forgetter, as the control socket's forget.
func (s *adminSources) Forget(ctx context.Context, user string) error {
	err := s.st.store.Forget(user)
	if err == nil || errors.Is(err, cache.ErrNoAccount) {
		s.st.bodies.Forget(user)
	}
	if err == nil && s.st.log != nil {
		s.st.log.Info().Str("account", user).Msg("cache forgotten")
	}
	return err
}

// OAuthClient implements admin.OAuthClients.
func (s *adminSources) OAuthClient(user string) (*oauth2.Config, modes.Provider, bool) {
	a, ok := s.account(user)
	if !ok {
		return nil, "", false
	}
	o, proto := OAuthAccount(a)
	if o == nil {
		return nil, "", false
	}
	cfg, _, err := OAuthClient(o, proto, s.st.tokenHome())
	if err != nil {
		return nil, "", false
	}
	return cfg, o.Provider, true
}

// Save implements admin.TokenSaver: into the account's token store, the
// one popbridge auth writes, with the account's token key.
func (s *adminSources) Save(user string, tok *oauth2.Token) error {
	a, ok := s.account(user)
	if !ok {
		return fmt.Errorf("no account %s in the configuration", user)
	}
	o, proto := OAuthAccount(a)
	if o == nil {
		return fmt.Errorf("account %s does not log in with OAuth2", user)
	}
	_, store, err := OAuthClient(o, proto, s.st.tokenHome())
	if err != nil {
		return err
	}
	return s.st.tokenStore(store).Save(user, tok)
}

// debugWriter logs each line of net/http's error log at debug level.
type debugWriter struct{ log zerolog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// adminHosts are the Host names the page answers to: the loopback
// names on its port, the bound address if it is a specific one, and the
// configured ones.
func adminHosts(bound net.Addr, extra []string) []string {
	_, port, _ := net.SplitHostPort(bound.String())
	hosts := []string{"localhost:" + port, "127.0.0.1:" + port, "[::1]:" + port}
	if ta, ok := bound.(*net.TCPAddr); ok && !ta.IP.IsUnspecified() && !ta.IP.IsLoopback() {
		hosts = append(hosts, bound.String())
	}
	return append(hosts, extra...)
}

// startAdmin serves the admin page on listen.admin.
func (a *App) startAdmin(cfg *config.Config, opts Options) error {
	ac := cfg.Admin
	policy, err := CleartextPolicy(ac.Cleartext)
	if err != nil {
		return fmt.Errorf("admin.cleartext: %w", err)
	}
	l, err := net.Listen("tcp", cfg.Listen.Admin)
	if err != nil {
		return fmt.Errorf("listen.admin: %w", err)
	}
	cur := func() *config.Config { return cfg }
	if a.reloader != nil {
		cur = a.reloader.current
	}
	src := &adminSources{st: a.st, cfg: cur, explain: opts.AdminExplain}
	log := a.log.With().Str("listener", "admin").Logger()
	o := admin.Options{
		PasswordHash: []byte(ac.PasswordHash),
		Hosts:        adminHosts(l.Addr(), ac.Hosts),
		TLS:          ac.TLS,
		Cleartext:    func(addr netip.Addr) bool { return policy.Allows(addr) },
		Accounts:     src,
		Tester:       src,
		Forgetter:    src,
		OAuth:        src,
		Tokens:       src,
		Log:          &log,
	}
	if opts.AdminLogs != nil {
		o.Logs = opts.AdminLogs
	}
	page, err := admin.New(o)
	if err != nil {
		l.Close()
		return err
	}
	if ac.TLS {
		if a.srv.TLSConfig == nil {
			l.Close()
			return errors.New("admin.tls: needs the tls section")
		}
		l = tls.NewListener(l, a.srv.TLSConfig)
	}
	hs := &http.Server{
		Handler:           page,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute, // an account test takes up to a minute
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          stdlog.New(debugWriter{log}, "", 0), // TLS handshake failures and such
	}
	a.log.Info().Str("listener", "admin").Str("addr", l.Addr().String()).Bool("tls", ac.TLS).Msg("listening")
	if !ac.TLS && !cfg.AdminLoopback() {
		a.log.Warn().Str("listener", "admin").Msg("the admin page is on plain HTTP beyond loopback: its password and cookie can be read on the network; set admin.tls")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error().Err(err).Msg("admin listener failed")
		}
	}()
	a.adminAddr = l.Addr()
	a.stopAdmin = func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if hs.Shutdown(ctx) != nil {
			hs.Close()
		}
		<-done
		page.Close()
	}
	return nil
}
