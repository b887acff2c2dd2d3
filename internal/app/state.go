package app

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/backends/graph"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/config"
)

// StoreFile is the cache store in the state directory, held by one
// process.
const StoreFile = "cache.db"

// state is what every backend of one popbridge process shares.
type state struct {
	dir string
	// tokens, if set, is the state directory whose tokens/ the OAuth2
	// sources use instead of dir's (check runs on a scratch store but
	// must use the real tokens).
	tokens string
	store  cache.StateStore
	// pg is store under state.driver postgres, nil under bbolt; dsn and
	// leaseTTL are its DSN (never logged) and state.lease_ttl.
	pg       *pgstore.Store
	dsn      string
	leaseTTL time.Duration
	// tokenDB, if set, holds the OAuth2 tokens instead of tokens/: pg,
	// or the server's pg for a scratch state (the admin page's test).
	tokenDB *pgstore.Store
	// inval drops in-memory caches on other replicas' changes; nil
	// under bbolt.
	inval  *invalidator
	bodies *cache.Bodies // nil keeps no bodies
	// log is the server's log, for backends that report on their own
	// (imap: UIDVALIDITY changes); nil logs nothing.
	log *zerolog.Logger
	// metrics feeds listen.http; nil (no listen.http) records nothing.
	metrics *metrics
	// workers are the backends working in the background (workers.go).
	workers workers
	// sources are the OAuth2 token sources, by the oauth2 section they
	// were made for: an account's backend and sender share one.
	sources map[*config.OAuth2]*oauth.Source
	// gmail are the gmail backends of the last build, by account: their
	// senders share their quota and token.
	gmail map[string]*gmail.Backend
	// graph are the graph backends of the last build, by account, for
	// their senders.
	graph map[string]*graph.Backend
}

// tokenHome is the directory holding tokens/.
func (st *state) tokenHome() string {
	if st.tokens != "" {
		return st.tokens
	}
	return st.dir
}

// openState opens the store in dir, creating dir 0700 if missing.
func openState(dir string, bodies *cache.Bodies) (*state, error) {
	store, err := cache.Open(filepath.Join(dir, StoreFile), nil)
	if errors.Is(err, cache.ErrDamaged) {
		return nil, DamagedStore(err)
	}
	if err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	return &state{dir: dir, store: store, bodies: bodies}, nil
}

// DamagedStore adds to the error of a damaged cache.db what to do, and
// what is lost with the file. Other errors are returned as they are.
func DamagedStore(err error) error {
	var de *cache.DamagedError
	if !errors.As(err, &de) {
		return err
	}
	return damagedStoreError{de}
}

// damagedStoreError is a DamagedError explained for people.
type damagedStoreError struct{ *cache.DamagedError }

func (e damagedStoreError) Error() string {
	return fmt.Sprintf("%s is damaged: %s. To recover, stop popbridge, move the file aside (mv %s %s.damaged) and start popbridge again: "+
		"it creates a new, empty %s. Lost with the old file: the tombstones of messages hidden from POP3 "+
		"(on_delete: keep, imap seen, gmail mark-read and download_once), which show again, so mail clients that leave "+
		"mail on the server may download them again; and the message sizes and UIDLs learnt from upstreams, "+
		"which are learnt again at the next login (a first login on a large mailbox takes longer). Nothing upstream is changed.",
		e.Path, e.Reason, e.Path, e.Path, StoreFile)
}

func (e damagedStoreError) Unwrap() error { return e.DamagedError }

// close stops the backends' background work, then closes the store,
// logging a failure.
func (s *state) close(log zerolog.Logger) {
	s.closeBackends()
	s.inval.close()
	if err := s.store.Close(); err != nil {
		log.Error().Err(err).Msg("closing the cache store")
	}
}
