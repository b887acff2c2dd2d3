package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/popbridge/popbridge/cache"
)

// DefaultLeaseTTL is the lease length Acquire uses when given zero: well
// above a garbage-collection pause or a network blip, and the bound on
// how long a dead replica keeps a maildrop locked.
const DefaultLeaseTTL = 30 * time.Second

// ErrLeaseHeld is wrapped by Acquire's error when another session, on
// any replica, holds the maildrop's lease (POP3 -ERR [IN-USE]). It wraps
// cache.ErrInUse.
var ErrLeaseHeld = fmt.Errorf("pgstore: the maildrop is locked by another session: %w", cache.ErrInUse)

// ErrLeaseLost is wrapped by Renew, and by Fenced without writing
// anything, when the lease expired or another session took it over: the
// session must end without applying its deletes.
var ErrLeaseLost = errors.New("pgstore: the maildrop lease was lost (expired or taken over); nothing was written")

// Lease is one session's lock on a maildrop. Fence grows with every
// grant and is never reused, so a write checked against it cannot come
// from an older holder.
type Lease struct {
	Account string
	Owner   string // who holds it, for humans: replica and session
	Fence   int64
	TTL     time.Duration

	store      *Store
	mu         sync.Mutex
	validUntil time.Time     // local, conservative: see ValidUntil
	lost       chan struct{} // closed when the lease is known lost
	err        error         // why
	stop       chan struct{} // ends KeepAlive
	done       chan struct{} // closed when KeepAlive has returned
}

// Acquire takes the account's maildrop lease for ttl (DefaultLeaseTTL
// when zero), or fails with an error wrapping ErrLeaseHeld while a live
// lease of another session exists. An expired lease is taken over: a
// replica that died releases its maildrops within ttl.
func (s *Store) Acquire(ctx context.Context, account, owner string, ttl time.Duration) (*Lease, error) {
	if err := checkAccount(account); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	var fence int64
	held := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockAccount(ctx, tx, account); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `INSERT INTO maildrop_lease (account, owner, fence, expires_at)
			VALUES ($1, $2, nextval('lease_fence'), clock_timestamp() + $3::interval)
			ON CONFLICT (account) DO UPDATE SET owner = EXCLUDED.owner, fence = EXCLUDED.fence, expires_at = EXCLUDED.expires_at
			WHERE maildrop_lease.expires_at <= clock_timestamp()
			RETURNING fence`, account, owner, ttl).Scan(&fence)
		if errors.Is(err, pgx.ErrNoRows) {
			held = true
			return nil
		}
		if err != nil {
			return err
		}
		return notify(ctx, tx, s.origin, "lease", account)
	})
	if err != nil {
		return nil, wrap(fmt.Sprintf("account %q: acquire the maildrop lease", account), err)
	}
	if held {
		return nil, fmt.Errorf("account %q: %w", account, ErrLeaseHeld)
	}
	return &Lease{Account: account, Owner: owner, Fence: fence, TTL: ttl, store: s, lost: make(chan struct{}), validUntil: start.Add(ttl)}, nil
}

// Renew extends the lease by its TTL from now (never shortening it). It
// fails with an error wrapping ErrLeaseLost, and marks the lease lost,
// when it expired or was taken over meanwhile.
func (l *Lease) Renew(ctx context.Context) error { return l.renew(ctx, l.TTL) }

// Extend is Renew for at least d from now instead of the TTL: before a
// change upstream that must finish under the lease (the deletes of a
// POP3 QUIT), extend it past that change's deadline. KeepAlive's
// renewals do not shorten it. A replica that dies meanwhile keeps the
// maildrop locked until then.
func (l *Lease) Extend(ctx context.Context, d time.Duration) error {
	return l.renew(ctx, max(d, l.TTL))
}

func (l *Lease) renew(ctx context.Context, d time.Duration) error {
	if err := l.Err(); err != nil {
		return err // a lost lease is never renewed again
	}
	ctx, cancel := context.WithTimeout(ctx, l.store.timeout)
	defer cancel()
	start := time.Now()
	tag, err := l.store.pool.Exec(ctx, `UPDATE maildrop_lease SET expires_at = greatest(expires_at, clock_timestamp() + $3::interval)
		WHERE account = $1 AND fence = $2 AND expires_at > clock_timestamp()`, l.Account, l.Fence, d)
	if err != nil {
		return wrap(fmt.Sprintf("account %q: renew the maildrop lease", l.Account), err)
	}
	if tag.RowsAffected() == 0 {
		err := fmt.Errorf("account %q, fence %d: %w", l.Account, l.Fence, ErrLeaseLost)
		l.markLost(err)
		return err
	}
	l.extendedBy(start, d)
	return nil
}

// ValidUntil returns a time before which the lease is surely still this
// session's, by this machine's clock: the start of the last successful
// Acquire, Renew or Fenced plus TTL. Make an upstream change that the
// database cannot fence (a delete upstream) only after a successful
// Fenced or Renew, and only while its timeout ends before ValidUntil.
func (l *Lease) ValidUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.validUntil
}

// extended records that the database extended the lease to TTL after
// start, or later.
func (l *Lease) extended(start time.Time) { l.extendedBy(start, l.TTL) }

// extendedBy records that the database extended the lease to d after
// start, or later.
func (l *Lease) extendedBy(start time.Time, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t := start.Add(d); l.err == nil && t.After(l.validUntil) {
		l.validUntil = t
	}
}

// KeepAlive renews the lease every TTL/3 in the background until Release.
// When a renewal says the lease is lost, or no renewal succeeded for a
// whole TTL (the database unreachable), Lost is closed: the session must
// end without deleting anything.
func (l *Lease) KeepAlive() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stop != nil {
		return
	}
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.keepAlive(l.stop, l.done)
}

func (l *Lease) keepAlive(stop, done chan struct{}) {
	defer close(done)
	period := l.TTL / 3
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-l.lost:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), period)
		err := l.Renew(ctx)
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, ErrLeaseLost):
			return
		case !time.Now().Before(l.ValidUntil()):
			l.markLost(fmt.Errorf("account %q, fence %d: no renewal for %v (%v): %w", l.Account, l.Fence, l.TTL, err, ErrLeaseLost))
			return
		}
	}
}

// Lost is closed when the lease is known lost; Err then says why.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err returns why the lease was lost, or nil.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *Lease) markLost(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
		close(l.lost)
	}
}

// Release stops KeepAlive and gives the lease up, if it is still this
// session's. A lease that cannot be released expires by itself.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	stop, done := l.stop, l.done
	l.stop = nil
	l.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	ctx, cancel := context.WithTimeout(ctx, l.store.timeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, l.store.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM maildrop_lease WHERE account = $1 AND fence = $2", l.Account, l.Fence); err != nil {
			return err
		}
		return notify(ctx, tx, l.store.origin, "lease", l.Account)
	})
	return wrap(fmt.Sprintf("account %q: release the maildrop lease", l.Account), err)
}

// CheckFence locks lease's row in tx and fails with an error wrapping
// ErrLeaseLost unless the lease is still live and still this session's;
// it also extends the lease by its TTL when tx commits. Writes made later
// in tx are then fenced: a takeover waits for the row lock, so it cannot
// happen between the check and the commit. Call it first in a
// transaction of the caller's own (Fenced does all this).
func CheckFence(ctx context.Context, tx pgx.Tx, lease *Lease) error {
	return checkFence(ctx, tx, lease)
}

func checkFence(ctx context.Context, tx pgx.Tx, lease *Lease) error {
	var one int
	err := tx.QueryRow(ctx, `UPDATE maildrop_lease SET expires_at = greatest(expires_at, clock_timestamp() + $3::interval)
		WHERE account = $1 AND fence = $2 AND expires_at > clock_timestamp() RETURNING 1`, lease.Account, lease.Fence, lease.TTL).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		err := fmt.Errorf("account %q, fence %d: %w", lease.Account, lease.Fence, ErrLeaseLost)
		lease.markLost(err)
		return err
	}
	return err
}

// Fenced runs fn in one transaction that first checks the lease (see
// CheckFence), for the writes of the UPDATE state: tombstones, records
// of deleted messages, cursors. When the lease is lost it returns an
// error wrapping ErrLeaseLost and nothing is written; when fn fails,
// nothing is written either. A commit extends the lease by its TTL, so
// the upstream deletes that follow have ValidUntil to finish.
func (s *Store) Fenced(ctx context.Context, lease *Lease, fn func(*Writer) error) error {
	if lease == nil || lease.store != s {
		return invalid("pgstore: Fenced needs a lease of this store")
	}
	return s.write(ctx, lease.Account, lease, func(_ context.Context, w *Writer) error { return fn(w) })
}
