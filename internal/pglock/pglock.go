// Package pglock is the POP3 maildrop lock across replicas: a
// proxy.Locker over pgstore's lease, so that every popbridge sharing one
// PostgreSQL database lets one session at a time into a maildrop.
//
// Lock acquires the account's lease (pgstore.Store.Acquire) for the TTL
// and keeps it alive (renewed every TTL/3) until Release. A lease held
// by a live session anywhere answers IN-USE; PostgreSQL unreachable
// answers SYS/TEMP. A replica killed while holding a lease stops
// renewing it, and the maildrop is free again after at most the TTL.
//
// Check, called by the proxy before the UPDATE state deletes anything
// upstream, extends the lease in the database, under this session's
// fencing token, until past the deadline of the deletes that follow: a
// replica whose lease expired (paused or cut off past the TTL) and was
// taken over, or simply expired, gets an error and deletes nothing;
// and while the deletes run no other replica can take the maildrop
// over. When KeepAlive finds the lease lost, Lost is closed and the
// proxy ends the session without deleting anything.
package pglock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/proxy"
)

// checkMargin is how far past the deletes' deadline Check extends the
// lease.
const checkMargin = time.Second

// Locker is a proxy.Locker over the leases of a pgstore.Store.
type Locker struct {
	store *pgstore.Store
	ttl   time.Duration
	owner string

	noKeepAlive bool // tests: a replica that stalls without releasing
}

var _ proxy.Locker = (*Locker)(nil)

// New returns a Locker over store's leases that last ttl
// (pgstore.DefaultLeaseTTL when zero) unless renewed.
func New(store *pgstore.Store, ttl time.Duration) *Locker {
	if ttl <= 0 {
		ttl = pgstore.DefaultLeaseTTL
	}
	host, _ := os.Hostname()
	return &Locker{store: store, ttl: ttl, owner: fmt.Sprintf("%s pid %d", host, os.Getpid())}
}

// TTL returns the lease's length.
func (l *Locker) TTL() time.Duration { return l.ttl }

// errLockUnavailable is what a client sees when the lease cannot be
// taken for another reason than another session holding it.
var errLockUnavailable = &proxy.Error{Code: proxy.CodeSysTemp, Text: "Cannot lock the mailbox right now, try again later."}

// Lock acquires key's lease and keeps it alive until Release.
func (l *Locker) Lock(ctx context.Context, key string) (proxy.Lock, error) {
	lease, err := l.store.Acquire(ctx, key, l.owner, l.ttl)
	switch {
	case errors.Is(err, pgstore.ErrLeaseHeld):
		return nil, &proxy.Error{Code: proxy.ErrInUse.Code, Text: proxy.ErrInUse.Text, Err: err}
	case err != nil:
		return nil, &proxy.Error{Code: errLockUnavailable.Code, Text: errLockUnavailable.Text, Err: err}
	}
	if !l.noKeepAlive {
		lease.KeepAlive()
	}
	return &lock{lease: lease}, nil
}

type lock struct {
	lease *pgstore.Lease
}

// Check extends the lease in the database, under its fencing token,
// until checkMargin past ctx's deadline (at least one TTL from now).
func (k *lock) Check(ctx context.Context) error {
	d := k.lease.TTL
	deadline, ok := ctx.Deadline()
	if ok {
		d = max(d, time.Until(deadline)+checkMargin)
	}
	if err := k.lease.Extend(ctx, d); err != nil {
		return fmt.Errorf("pglock: %w", err)
	}
	if ok && k.lease.ValidUntil().Before(deadline) {
		return fmt.Errorf("pglock: account %q: the lease is sure only until %v, before the deadline %v", k.lease.Account, k.lease.ValidUntil(), deadline)
	}
	return nil
}

func (k *lock) Lost() <-chan struct{} { return k.lease.Lost() }

func (k *lock) Release(ctx context.Context) error {
	if err := k.lease.Release(ctx); err != nil {
		return fmt.Errorf("pglock: %w", err)
	}
	return nil
}
