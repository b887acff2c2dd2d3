package app

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/config"
)

// pgStartWait bounds how long Build waits for PostgreSQL to answer at
// start; after it the binary exits with the reason (a supervisor such as
// Kubernetes restarts it). Once running, an outage only makes the server
// not ready (/readyz) until PostgreSQL is back. A variable for tests.
var pgStartWait = 30 * time.Second

// StateDSN returns the PostgreSQL DSN of a state section: its dsn, else
// the file dsn_file names, else the environment variable of dsn_env,
// whatever the driver.
func StateDSN(st config.State) (string, error) {
	dsn, err := pgstore.LoadDSN(st.DSN, st.DSNFile, st.Env())
	if err != nil {
		return "", fmt.Errorf("state: %w", err)
	}
	return dsn, nil
}

// OpenShared opens the PostgreSQL database of a state section at once,
// without the wait of a starting server: for the commands that use it
// beside the replicas (popbridge auth, check and cache).
func OpenShared(ctx context.Context, st config.State, opts *pgstore.Options) (*pgstore.Store, error) {
	dsn, err := StateDSN(st)
	if err != nil {
		return nil, err
	}
	pg, err := pgstore.Open(ctx, dsn, opts)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return pg, nil
}

// openStateConfig opens the state that cfg.State chooses: cache.db in
// cfg.StateDir (bbolt), or the PostgreSQL database of the state DSN.
// state_dir is created either way: it keeps the control socket and the
// self-signed certificate.
func openStateConfig(cfg *config.Config, bodies *cache.Bodies, log *zerolog.Logger) (*state, error) {
	if !cfg.State.Postgres() {
		return openState(cfg.StateDir, bodies)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", cfg.StateDir, err)
	}
	dsn, err := StateDSN(cfg.State)
	if err != nil {
		return nil, err
	}
	if cfg.State.InlinePassword() && log != nil {
		log.Warn().Msg("state.dsn holds a password in the configuration file; move the DSN into a file of mode 0600 (state.dsn_file) or the environment variable state.dsn_env names")
	}
	pg, err := openPG(dsn, log)
	if err != nil {
		return nil, err
	}
	inval, err := startInvalidator(dsn, pg, bodies, log)
	if err != nil {
		pg.Close()
		return nil, fmt.Errorf("state: %w", err)
	}
	return &state{dir: cfg.StateDir, store: pg, pg: pg, tokenDB: pg, dsn: dsn, leaseTTL: cfg.State.Lease(), bodies: bodies, inval: inval}, nil
}

// openPG opens the PostgreSQL store, waiting up to pgStartWait while it
// cannot be reached. A schema newer than this binary's is refused at once.
func openPG(dsn string, log *zerolog.Logger) (*pgstore.Store, error) {
	deadline := time.Now().Add(pgStartWait)
	for delay, logged := 250*time.Millisecond, false; ; delay = min(2*delay, 5*time.Second) {
		pg, err := pgstore.Open(context.Background(), dsn, nil)
		if err == nil {
			return pg, nil
		}
		if !pgstore.IsTemporary(err) || time.Now().Add(delay).After(deadline) {
			return nil, fmt.Errorf("state: %w", err)
		}
		if !logged && log != nil {
			log.Warn().Err(err).Int64("wait_ms", pgStartWait.Milliseconds()).Msg("state: PostgreSQL does not answer yet; retrying")
			logged = true
		}
		time.Sleep(delay)
	}
}

// OpenBackendsConfig opens the state that cfg.State chooses, as the
// server does (popbridge sync): cache.db in state_dir, or the PostgreSQL
// database, whose tokens the OAuth2 sources then use.
func OpenBackendsConfig(cfg *config.Config, log *zerolog.Logger) (*Backends, error) {
	st, err := openStateConfig(cfg, nil, log)
	if err != nil {
		return nil, err
	}
	st.log = log
	return &Backends{st: st}, nil
}

// ShareTokens makes the backends built next read their OAuth2 tokens
// from the PostgreSQL state of cfg under state.driver postgres, where
// popbridge auth stored them (popbridge check, whose store is a scratch
// one). Under bbolt it does nothing. Close closes the connection.
func (b *Backends) ShareTokens(cfg *config.Config) error {
	if !cfg.State.Postgres() {
		return nil
	}
	pg, err := OpenShared(context.Background(), cfg.State, &pgstore.Options{NoMigrate: true})
	if err != nil {
		return err
	}
	b.st.tokenDB, b.tokens = pg, pg
	return nil
}
