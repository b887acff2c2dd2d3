package pgstore

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Invalidation tells a replica what changed in the shared state, so that
// it drops what it keeps in memory about it.
type Invalidation struct {
	// All: drop everything cached. Sent after every (re)connection of
	// the listener, since changes made while it was away were not heard.
	All bool
	// Kind is what changed: "state" (records, tombstones, sync state,
	// cursors, Forget), "token" or "lease".
	Kind string
	// Account is the account whose data changed.
	Account string
	// Origin is the Store.Origin of the Store that made the change.
	Origin string
}

// ListenerName is the application_name of a Subscriber's connection
// (unless the DSN sets one), as pg_stat_activity shows it.
const ListenerName = "popbridge-listener"

// Subscriber listens on Channel over a connection of its own (never a
// pooled one, and never through a transaction-mode PgBouncer) and
// reconnects by itself.
type Subscriber struct {
	c      chan Invalidation
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	connected bool
	err       error // why the listener last failed
}

// Subscribe starts listening with dsn. Invalidations arrive on C until
// Close; the first is an All once the listener is connected. A slow
// reader delays delivery, and never loses an Invalidation.
func Subscribe(dsn string) (*Subscriber, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, invalid("pgstore: the PostgreSQL DSN does not parse")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = ListenerName
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Subscriber{c: make(chan Invalidation, 64), cancel: cancel, done: make(chan struct{})}
	go s.run(ctx, cfg)
	return s, nil
}

// C delivers the invalidations.
func (s *Subscriber) C() <-chan Invalidation { return s.c }

// Connected reports whether the listener is connected now.
func (s *Subscriber) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

// Close stops listening and closes C.
func (s *Subscriber) Close() {
	s.cancel()
	<-s.done
}

// Err returns why the listener last lost or failed to get its
// connection, for logs; nil before any failure.
func (s *Subscriber) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Subscriber) setConnected(v bool) {
	s.mu.Lock()
	s.connected = v
	s.mu.Unlock()
}

func (s *Subscriber) failed(err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	s.err = wrap("listen", err)
	s.mu.Unlock()
}

func (s *Subscriber) run(ctx context.Context, cfg *pgx.ConnConfig) {
	defer close(s.done)
	defer close(s.c)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		if s.listen(ctx, cfg) {
			backoff = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// listen connects, LISTENs and delivers until the connection fails; it
// reports whether it got as far as listening.
func (s *Subscriber) listen(ctx context.Context, cfg *pgx.ConnConfig) bool {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		s.failed(err)
		return false
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		s.failed(err)
		return false
	}
	s.setConnected(true)
	defer s.setConnected(false)
	if !s.send(ctx, Invalidation{All: true}) {
		return true
	}
	for {
		// A short wait, then a ping: TCP alone may not notice a server
		// that went away. An expired wait leaves the connection usable.
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return true
			}
			if conn.IsClosed() || wctx.Err() == nil {
				s.failed(err)
				return true
			}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				s.failed(err)
				return true
			}
			continue
		}
		kind, account, _ := strings.Cut(n.Payload, ":")
		kind, origin, _ := strings.Cut(kind, "/")
		if !s.send(ctx, Invalidation{Kind: kind, Account: account, Origin: origin}) {
			return true
		}
	}
}

func (s *Subscriber) send(ctx context.Context, inv Invalidation) bool {
	select {
	case s.c <- inv:
		return true
	case <-ctx.Done():
		return false
	}
}
