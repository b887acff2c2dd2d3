// Package app assembles a popbridge server from a validated
// configuration: the state directory (cache.db, the body cache, the
// OAuth2 token store), every account's backend behind the accounts
// router, the POP3 listeners, the SMTP submission listeners with every
// account's sender (submission.go), the operations listener (listen.http:
// /metrics, /status, /healthz, /readyz) and the control socket.
//
// Build binds and opens everything, Serve runs the POP3 server until its
// context ends and then shuts it down gracefully, Reload reads the
// configuration file again (accounts and cleartext_auth; the rest needs a
// restart) and Close releases what Build took. The binary
// (cmd/popbridge) keeps flags, terminal output and signals.
package app

import (
	"context"
	"fmt"
	"net"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/admin"
	"github.com/popbridge/popbridge/internal/control"
	"github.com/popbridge/popbridge/internal/submission"
	"github.com/popbridge/popbridge/proxy"
)

// Version is the version that /status and popbridge_build_info report;
// the binary sets it before Build.
var Version = "dev"

// Options are what Build needs beside the configuration.
type Options struct {
	// ConfigPath is the configuration file. Reload reads it again, and
	// the state directory is claimed for it (refused if it belongs to
	// another file). Empty (popbridge demo): no reload, no claim.
	ConfigPath string
	// Listeners are bound sockets to serve, by listener name (pop3,
	// pop3s), instead of binding the address in cfg.Listen.
	Listeners map[string]net.Listener
	// AdminLogs, if set, is the ring of recent log lines (fed by the
	// logger) that the admin page shows per account.
	AdminLogs *admin.LogRing
	// AdminExplain, if set, says in plain words why the admin page's
	// test of an account failed, as popbridge check does.
	AdminExplain func(config.Account, error) string
}

// App is a server built from a configuration.
type App struct {
	log      *zerolog.Logger
	st       *state
	srv      *proxy.Server
	ls       []listener
	httpAddr net.Addr
	stopHTTP func()
	ctl      *control.Server
	reloader *reloader // nil without Options.ConfigPath

	adminAddr net.Addr
	stopAdmin func()
	// SMTP submission: nil and empty without listen.submission(s).
	smtp   *submission.Server
	smtpLs []listener
}

// Build opens the state directory of cfg, builds every account's backend
// and the POP3 server, binds the listeners and starts the operations
// listener and the control socket. Call Serve, then Close.
func Build(cfg *config.Config, log *zerolog.Logger, opts Options) (_ *App, err error) {
	bodies, err := Bodies(cfg.Cache)
	if err != nil {
		return nil, err
	}
	if opts.ConfigPath != "" {
		if err := CheckOwner(cfg.StateDir, opts.ConfigPath); err != nil {
			return nil, err
		}
	}
	st, err := openStateConfig(cfg, bodies, log)
	if err != nil {
		return nil, err
	}
	a := &App{log: log, st: st}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if opts.ConfigPath != "" {
		if prev, err := claimOwner(cfg.StateDir, opts.ConfigPath); err != nil {
			return nil, err
		} else if prev != "" {
			log.Info().Str("state_dir", cfg.StateDir).Str("previous_config", prev).
				Msg("state directory taken over: its previous configuration file no longer exists")
		}
	}
	if a.srv, err = newServer(cfg, log, st); err != nil {
		return nil, err
	}
	for _, spec := range []struct {
		name, addr string
		tls        bool
	}{
		{"pop3", cfg.Listen.POP3, false},
		{"pop3s", cfg.Listen.POP3S, true},
	} {
		l := opts.Listeners[spec.name]
		if l == nil && spec.addr == "" {
			continue
		}
		if l == nil {
			if l, err = net.Listen("tcp", spec.addr); err != nil {
				return nil, fmt.Errorf("listen.%s: %w", spec.name, err)
			}
		}
		a.ls = append(a.ls, listener{Listener: l, name: spec.name, tls: spec.tls})
	}
	wrapProxyProtocol(a.ls, cfg.Listen.ProxyNetworks(), *log)
	sends := &sendSwap{router: a.srv.Backend.(*swapBackend)}
	if a.smtpLs, err = bindSubmission(cfg, opts.Listeners); err != nil {
		return nil, err
	}
	wrapProxyProtocol(a.smtpLs, cfg.Listen.ProxyNetworks(), *log)
	if len(a.smtpLs) > 0 {
		set, err := newSenders(cfg, st)
		if err != nil {
			return nil, err
		}
		sends.cur.Store(set)
		if a.smtp, err = newSubmission(cfg, log, a.srv, sends); err != nil {
			return nil, err
		}
	}
	if cfg.Listen.HTTP != "" { // listen.http: after the POP3 listeners, so ready means ready
		if a.stopHTTP, a.httpAddr, err = startHTTP(cfg.Listen.HTTP, st.metrics, *log); err != nil {
			return nil, err
		}
	}
	if opts.ConfigPath != "" {
		log.Info().Str("version", Version).Str("config", opts.ConfigPath).
			Int("accounts", len(cfg.Accounts)).Str("state_dir", cfg.StateDir).Msg("popbridge starting")
		a.reloader = &reloader{path: opts.ConfigPath, backend: a.srv.Backend.(*swapBackend), srv: a.srv, st: st, log: log, cfg: cfg}
		if a.smtp != nil {
			a.reloader.sends = sends
		}
	}
	if a.srv.Cleartext.Mode == proxy.CleartextAlways {
		log.Warn().Msg("cleartext_auth is always: passwords may cross the network unencrypted")
	}
	a.ctl = startControlOrWarn(st, *log)
	if cfg.Listen.Admin != "" {
		if err := a.startAdmin(cfg, opts); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// startControlOrWarn starts the control socket. The server runs without
// it if it cannot: popbridge cache then reports the store as locked.
func startControlOrWarn(st *state, log zerolog.Logger) *control.Server {
	ctl, err := control.Start(st.dir, st.store, st.bodies, log)
	if err != nil {
		log.Warn().Err(err).Msg("no control socket: popbridge cache stats and forget cannot reach this server")
		return nil
	}
	log.Debug().Str("path", ctl.Path()).Msg("control socket listening")
	return ctl
}

// Serve serves every POP3 listener until ctx ends, then shuts the server
// down gracefully (sessions get 30 s to end), or until a listener fails.
// The SMTP submission listeners are served alongside and shut down with
// them.
func (a *App) Serve(ctx context.Context) error {
	if a.smtp == nil {
		return runServer(ctx, a.srv, a.ls, *a.log)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	wait := serveSubmission(ctx, a.smtp, a.smtpLs, *a.log, func(err error) {
		a.log.Error().Err(err).Msg("listener failed; shutting down")
		cancel(err)
	})
	err := runServer(ctx, a.srv, a.ls, *a.log)
	cancel(nil)
	wait()
	if err == nil {
		if cause := context.Cause(ctx); cause != context.Canceled && cause != nil {
			err = cause
		}
	}
	return err
}

// Reload reads the configuration file again: if it is valid and every
// account's backend can be built, new logins use the new accounts and
// cleartext_auth; otherwise nothing changes. Both are logged.
func (a *App) Reload() error {
	if a.reloader == nil {
		return fmt.Errorf("no configuration file to reload")
	}
	return a.reloader.reload()
}

// Addr returns the address of listener name (pop3, pop3s, submission,
// submissions, http or admin), or nil if it is not configured.
func (a *App) Addr(name string) net.Addr {
	if name == "http" {
		return a.httpAddr
	}
	if name == "admin" {
		return a.adminAddr
	}
	for _, l := range append(a.ls, a.smtpLs...) {
		if l.name == name {
			return l.Addr()
		}
	}
	return nil
}

// Close stops the control socket and the operations listener, closes the
// POP3 listeners (Serve has closed them already) and stops the backends'
// background work, then closes the store.
func (a *App) Close() {
	if a.stopAdmin != nil {
		a.stopAdmin()
		a.stopAdmin = nil
	}
	if a.ctl != nil {
		a.ctl.Close()
		a.ctl = nil
	}
	if a.stopHTTP != nil {
		a.stopHTTP()
		a.stopHTTP = nil
	}
	for _, l := range a.ls {
		l.Close()
	}
	if a.smtp != nil {
		a.smtp.Close()
	}
	closeListeners(a.smtpLs)
	if a.st != nil {
		a.st.close(*a.log)
		a.st = nil
	}
}

// Describe names account a's backend for people, without secrets.
func Describe(a config.Account) string { return describe(a) }

// Backends builds account backends outside a server, for popbridge check
// and sync, on the store in one directory.
type Backends struct {
	st     *state
	tokens *pgstore.Store // opened by ShareTokens; nil if none
}

// OpenBackends opens the store in dir. The OAuth2 token sources read the
// tokens in the state directory tokens (dir if empty); log, if not nil,
// gets the backends' warnings.
func OpenBackends(dir, tokens string, log *zerolog.Logger) (*Backends, error) {
	st, err := openState(dir, nil)
	if err != nil {
		return nil, err
	}
	st.tokens, st.log = tokens, log
	return &Backends{st: st}, nil
}

// New builds account a's backend, as the server does.
func (b *Backends) New(a config.Account) (Backend, error) { return newBackend(a, b.st) }

// Close stops the background work of every backend built, then closes
// the store.
func (b *Backends) Close() {
	b.st.close(zerolog.Nop())
	if b.tokens != nil {
		b.tokens.Close()
	}
}

// OwnerFile in the state directory names the configuration file it
// belongs to.
const OwnerFile = ownerFile
