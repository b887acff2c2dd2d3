package proxy

import (
	"context"
	"sync"
)

// Locker takes maildrop locks: one session per maildrop (RFC 1939 §8),
// across every Server that shares the Locker's state. Server.Locker
// selects one; the default is a lock in this process's memory.
type Locker interface {
	// Lock takes key's lock for a session that just logged in. It fails
	// with an error wrapping ErrInUse while another session holds it
	// (the client gets -ERR [IN-USE]); any other error is answered like
	// a backend's (SYS/TEMP unless it carries an *Error), and the
	// session stays in the AUTHORIZATION state.
	Lock(ctx context.Context, key string) (Lock, error)
}

// Lock is one session's hold on a maildrop.
type Lock interface {
	// Check confirms that the lock is still this session's and stays so
	// until ctx's deadline. The UPDATE state calls it with the context
	// of the Delete or Commit that follows, before anything changes
	// upstream; when it fails, nothing is deleted or committed.
	Check(ctx context.Context) error
	// Lost is closed when the lock is known to be lost before Release
	// (a lease that could not be renewed, or was taken over); the
	// session then ends at once without deleting anything. Nil if the
	// lock cannot be lost.
	Lost() <-chan struct{}
	// Release gives the lock up. It is called once, when the session
	// leaves the maildrop (QUIT or not). A lock it cannot release must
	// free itself later.
	Release(ctx context.Context) error
}

// localLocker is the default Locker: a set of held keys in memory.
type localLocker struct {
	mu   sync.Mutex
	held map[string]struct{}
}

func (l *localLocker) Lock(_ context.Context, key string) (Lock, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, held := l.held[key]; held {
		return nil, ErrInUse
	}
	if l.held == nil {
		l.held = make(map[string]struct{})
	}
	l.held[key] = struct{}{}
	return &localLock{l: l, key: key}, nil
}

type localLock struct {
	l    *localLocker
	key  string
	once sync.Once
}

func (*localLock) Check(context.Context) error { return nil }
func (*localLock) Lost() <-chan struct{}       { return nil }

func (k *localLock) Release(context.Context) error {
	k.once.Do(func() {
		k.l.mu.Lock()
		delete(k.l.held, k.key)
		k.l.mu.Unlock()
	})
	return nil
}
