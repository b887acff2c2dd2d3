package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/accounts"
	"github.com/popbridge/popbridge/backends/gmail"
	imapb "github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/backends/maildir"
	pop3relay "github.com/popbridge/popbridge/backends/pop3"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/pglock"
	"github.com/popbridge/popbridge/internal/tlsconf"
	"github.com/popbridge/popbridge/proxy"
)

// shutdownTimeout bounds the wait for sessions to end after a signal;
// then the remaining connections are closed.
const shutdownTimeout = 30 * time.Second

// newServer builds the POP3 server for cfg, its backends sharing st.
func newServer(cfg *config.Config, log *zerolog.Logger, st *state) (*proxy.Server, error) {
	st.log = log
	if (cfg.Listen.HTTP != "" || cfg.Listen.Admin != "") && st.metrics == nil { // the admin page reads them too
		st.metrics = newMetrics(cfg, st.bodies)
		if st.pg != nil {
			st.metrics.storePing = st.pg.Ping
		}
	}
	router, err := newRouter(cfg, st)
	if err != nil {
		return nil, err
	}
	st.commitBackends()
	srv := &proxy.Server{Backend: newSwapBackend(router), Logger: log} // SIGHUP swaps the router
	if st.pg != nil {
		// The maildrop lock across replicas: a lease in PostgreSQL.
		srv.Locker = pglock.New(st.pg, st.leaseTTL)
	}
	if srv.Cleartext, err = CleartextPolicy(cfg.CleartextAuth); err != nil {
		return nil, err
	}
	if err := ApplyLimits(cfg.Limits, srv); err != nil {
		return nil, err
	}
	if srv.TLSConfig, err = tlsconf.Server(cfg, log); err != nil {
		return nil, err
	}
	st.metrics.setServer(srv) // sets srv.Observer
	return srv, nil
}

// newRouter builds every account's backend and the router in front.
func newRouter(cfg *config.Config, st *state) (*accounts.Router, error) {
	st.sources, st.gmail, st.graph = nil, nil, nil // new settings, new token sources and backends (shared with the senders built next)
	accts := make([]accounts.Account, 0, len(cfg.Accounts))
	for i, a := range cfg.Accounts {
		b, err := newBackend(a, st)
		if err != nil {
			return nil, fmt.Errorf("accounts[%d] (%s): %w", i, a.User, err)
		}
		st.metrics.register(a) // the server's Observer times its calls for listen.http
		accts = append(accts, accounts.Account{User: a.User, PasswordHash: a.PasswordHash, Passthrough: a.Passthrough(),
			Backend: b})
	}
	r, err := accounts.New(accts, accounts.Options{})
	if err == nil {
		st.metrics.setAccounts(accountUsers(cfg))
	}
	return r, err
}

// Backend is what the binary needs from every account's backend, of
// any type.
type Backend interface {
	backends.Opener
	// Check tries the backend without a client, for popbridge check.
	Check(ctx context.Context) error
}

// newBackend builds the backend of account a. Every backend shares st's
// store, where the account's name is its user name, and its body cache.
func newBackend(a config.Account, st *state) (Backend, error) {
	switch a.Backend.Type {
	case config.TypeMaildir:
		m := a.Backend.Maildir
		return built(maildir.New(maildir.Options{
			Path:     m.Path,
			OnDelete: m.OnDelete,
			Store:    st.store,
			Account:  a.User,
		}))
	case config.TypePOP3:
		return built(newPOP3Backend(a, st))
	case config.TypeIMAP:
		return built(newIMAPBackend(a, st))
	case config.TypeGmail:
		return built(newGmailBackend(a, st))
	case config.TypeGraph:
		return built(newGraphBackend(a, st))
	}
	return nil, fmt.Errorf("unknown backend type %q", a.Backend.Type)
}

// built returns b as a backend, or a nil one (not a nil *B) on error.
func built[B Backend](b B, err error) (Backend, error) {
	if err != nil {
		return nil, err
	}
	return b, nil
}

// describe names account a's backend for people, without secrets: each
// backend describes the options built from a's settings, defaults
// included.
func describe(a config.Account) string {
	switch b := a.Backend; b.Type {
	case config.TypeMaildir:
		return maildir.Options{Path: b.Maildir.Path, OnDelete: b.Maildir.OnDelete}.String()
	case config.TypePOP3:
		return pop3relay.Options{Addr: b.POP3.Addr, TLS: b.POP3.TLS, Auth: b.POP3.Auth}.String()
	case config.TypeIMAP:
		return imapb.Options{Addr: b.IMAP.Addr, Folder: b.IMAP.Folder, TLS: b.IMAP.TLS, Auth: b.IMAP.Auth,
			OnDelete: b.IMAP.OnDelete}.String()
	case config.TypeGmail:
		return gmail.Options{Endpoint: b.Gmail.APIEndpoint, Labels: b.Gmail.Labels, OnDelete: b.Gmail.OnDelete,
			DownloadOnce: b.Gmail.DownloadOnce}.String()
	case config.TypeGraph:
		return describeGraph(b.Graph)
	}
	return a.Backend.Type
}

// listener is a bound listening socket and how to serve it.
type listener struct {
	net.Listener
	name string // pop3 or pop3s
	tls  bool   // implicit TLS
}

// runServer serves every listener until ctx ends, then shuts srv down
// gracefully, or until a listener fails.
func runServer(ctx context.Context, srv *proxy.Server, ls []listener, log zerolog.Logger) error {
	errc := make(chan error, len(ls))
	for _, l := range ls {
		log.Info().Str("listener", l.name).Str("addr", l.Addr().String()).Bool("tls", l.tls).
			Bool("stls", !l.tls && srv.TLSConfig != nil).Msg("listening")
		go func() {
			var err error
			if l.tls {
				err = srv.ServeTLS(l)
			} else {
				err = srv.Serve(l)
			}
			if err != nil && !errors.Is(err, proxy.ErrServerClosed) {
				err = fmt.Errorf("%s on %s: %w", l.name, l.Addr(), err)
			}
			errc <- err
		}()
	}

	var failed error
	select {
	case <-ctx.Done():
		log.Info().Msg("shutting down: waiting for sessions to end")
	case failed = <-errc:
		log.Error().Err(failed).Msg("listener failed; shutting down")
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("sessions did not end in time; connections closed")
	}
	n := len(ls)
	if failed != nil {
		n--
	}
	for range n {
		<-errc
	}
	if failed != nil {
		return failed
	}
	log.Info().Msg("stopped")
	return nil
}
