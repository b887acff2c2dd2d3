package proxy_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	. "github.com/popbridge/popbridge/proxy"

	"github.com/popbridge/popbridge/internal/memback"
)

// fakeLocker is a Locker whose failures the test sets; it records what
// happened, in order, in log (shared with the backend's Hook).
type fakeLocker struct {
	mu       sync.Mutex
	lockErr  error // returned by Lock
	checkErr error // returned by Check
	log      []string
	locks    []*fakeLock
}

type fakeLock struct {
	l    *fakeLocker
	key  string
	lost chan struct{}
}

func (f *fakeLocker) record(s string) {
	f.mu.Lock()
	f.log = append(f.log, s)
	f.mu.Unlock()
}

func (f *fakeLocker) events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}

func (f *fakeLocker) set(lockErr, checkErr error) {
	f.mu.Lock()
	f.lockErr, f.checkErr = lockErr, checkErr
	f.mu.Unlock()
}

func (f *fakeLocker) Lock(_ context.Context, key string) (Lock, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lockErr != nil {
		f.log = append(f.log, "lock-failed "+key)
		return nil, f.lockErr
	}
	f.log = append(f.log, "lock "+key)
	k := &fakeLock{l: f, key: key, lost: make(chan struct{})}
	f.locks = append(f.locks, k)
	return k, nil
}

func (f *fakeLocker) last() *fakeLock {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.locks[len(f.locks)-1]
}

func (k *fakeLock) Check(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		k.l.record("check without deadline")
	}
	k.l.mu.Lock()
	defer k.l.mu.Unlock()
	k.l.log = append(k.l.log, "check "+k.key)
	return k.l.checkErr
}

func (k *fakeLock) Lost() <-chan struct{} { return k.lost }

func (k *fakeLock) Release(context.Context) error {
	k.l.record("release " + k.key)
	return nil
}

// newLockedBackend returns alice's maildrop whose upstream calls are
// recorded in f's log.
func newLockedBackend(f *fakeLocker, commit bool) *memBackend {
	b := newMemBackend()
	b.Commit = commit
	b.Hook = func(_ context.Context, op memback.Op, _ string) error {
		if op == memback.OpDelete || op == memback.OpCommit || op == memback.OpClose {
			f.record(string(op))
		}
		return nil
	}
	return b
}

func authPlain(user, pass string) string {
	return "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))
}

// TestLockerRefusals: a lock held elsewhere is IN-USE, a locker that
// cannot be reached is SYS/TEMP without its detail, at PASS and AUTH;
// the mailbox is closed and the session may try again.
func TestLockerRefusals(t *testing.T) {
	f := &fakeLocker{}
	b := newLockedBackend(f, false)
	addr := startServer(t, &Server{Backend: b, Locker: f, Cleartext: CleartextPolicy{Mode: CleartextAlways}})
	cl := dial(t, addr)
	converse(t, cl, []step{{"", []string{"+OK*"}}})

	f.set(fmt.Errorf("replica b holds it: %w", ErrInUse), nil)
	converse(t, cl, []step{
		{"USER alice", []string{"+OK*"}},
		{"PASS secret", []string{"-ERR [IN-USE] Mailbox is locked by another POP3 session."}},
		{authPlain("alice", "secret"), []string{"-ERR [IN-USE] Mailbox is locked by another POP3 session."}},
	})
	f.set(errors.New("dial tcp 10.0.0.9:5432: connection refused (secret detail)"), nil)
	converse(t, cl, []step{
		{"USER alice", []string{"+OK*"}},
		{"PASS secret", []string{"-ERR [SYS/TEMP] Temporary server failure, try again later."}},
		{authPlain("alice", "secret"), []string{"-ERR [SYS/TEMP] Temporary server failure, try again later."}},
	})
	f.set(nil, nil)
	converse(t, cl, []step{
		{"USER alice", []string{"+OK*"}},
		{"PASS secret", []string{"+OK Logged in."}},
		{"QUIT", []string{"+OK*"}},
	})
	cl.expectEOF()
	if st := b.Stats(); st.Open != 0 || st.Calls[memback.OpClose] != 5 {
		t.Errorf("mailboxes: %d open, %d closed; want 0 and 5", st.Open, st.Calls[memback.OpClose])
	}
	if got := strings.Join(f.events(), ","); strings.Count(got, "lock-failed alice") != 4 || !strings.HasSuffix(got, "lock alice,close,release alice") {
		t.Errorf("events %s", got)
	}
}

// TestQuitChecksLockFirst: the UPDATE state checks the lock, with a
// deadline, before it deletes or commits, and releases it before +OK.
func TestQuitChecksLockFirst(t *testing.T) {
	for _, commit := range []bool{false, true} {
		t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) {
			f := &fakeLocker{}
			b := newLockedBackend(f, commit)
			addr := startServer(t, &Server{Backend: b, Locker: f})
			cl := dial(t, addr)
			login(t, cl, "alice", "secret")
			converse(t, cl, []step{
				{"DELE 2", []string{"+OK*"}},
				{"QUIT", []string{"+OK Logging out, 1 messages deleted."}},
			})
			cl.expectEOF()
			op := "delete"
			if commit {
				op = "commit"
			}
			want := "lock alice,check alice," + op + ",close,release alice"
			if got := strings.Join(f.events(), ","); got != want {
				t.Errorf("events %s, want %s", got, want)
			}
		})
	}
}

// TestQuitWithFailingLockCheck: when the lock cannot be confirmed, QUIT
// says so and nothing is deleted or committed.
func TestQuitWithFailingLockCheck(t *testing.T) {
	for _, commit := range []bool{false, true} {
		t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) {
			f := &fakeLocker{}
			b := newLockedBackend(f, commit)
			addr := startServer(t, &Server{Backend: b, Locker: f})
			cl := dial(t, addr)
			login(t, cl, "alice", "secret")
			f.set(nil, errors.New("lease taken over by fence 7 (secret detail)"))
			converse(t, cl, []step{
				{"DELE 1", []string{"+OK*"}},
				{"QUIT", []string{"-ERR [SYS/TEMP] Could not confirm the lock on the mailbox; no messages were deleted. Log in again and retry."}},
			})
			cl.expectEOF()
			if st := b.Stats(); len(st.Deleted) != 0 || len(st.Commits) != 0 || st.Calls[memback.OpDelete]+st.Calls[memback.OpCommit] != 0 {
				t.Errorf("deleted %v, commits %v after a failed lock check", st.Deleted, st.Commits)
			}
			if got := strings.Join(f.events(), ","); got != "lock alice,check alice,close,release alice" {
				t.Errorf("events %s", got)
			}
			if n := len(b.Messages("alice")); n != 3 {
				t.Errorf("alice has %d messages, want 3", n)
			}
		})
	}
}

// TestLockLostEndsSession: a lock lost mid-session ends the session at
// once with SYS/TEMP; nothing is deleted, also for a QUIT that follows
// the loss at once.
func TestLockLostEndsSession(t *testing.T) {
	f := &fakeLocker{}
	b := newLockedBackend(f, false)
	addr := startServer(t, &Server{Backend: b, Locker: f})

	// Idle: the server speaks first.
	cl := dial(t, addr)
	login(t, cl, "alice", "secret")
	converse(t, cl, []step{{"DELE 1", []string{"+OK*"}}})
	close(f.last().lost)
	converse(t, cl, []step{{"", []string{"-ERR [SYS/TEMP] Lost the lock on the mailbox; no messages were deleted. Log in again."}}})
	cl.expectEOF()

	// A QUIT right after the loss.
	cl = dial(t, addr)
	login(t, cl, "alice", "secret")
	converse(t, cl, []step{{"DELE 1", []string{"+OK*"}}})
	close(f.last().lost)
	cl.send("QUIT\r\n")
	if got := cl.line(); !strings.HasPrefix(got, "-ERR [SYS/TEMP] ") || !strings.Contains(got, "no messages were deleted") {
		t.Errorf("QUIT after the loss: %q", got)
	}
	cl.expectEOF()

	waitFor(t, func() bool { return strings.Count(strings.Join(f.events(), ","), "release") == 2 })
	if st := b.Stats(); len(st.Deleted) != 0 || st.Calls[memback.OpDelete] != 0 {
		t.Errorf("deleted %v after the lock was lost", st.Deleted)
	}
}

// TestLockReleasedOnDrop: a dropped session releases its lock.
func TestLockReleasedOnDrop(t *testing.T) {
	f := &fakeLocker{}
	b := newLockedBackend(f, false)
	addr := startServer(t, &Server{Backend: b, Locker: f})
	cl := dial(t, addr)
	login(t, cl, "alice", "secret")
	converse(t, cl, []step{{"DELE 1", []string{"+OK*"}}})
	cl.c.Close()
	waitFor(t, func() bool { return strings.Join(f.events(), ",") == "lock alice,close,release alice" })
	if d := b.deleted(); len(d) != 0 {
		t.Errorf("deleted %v", d)
	}
}
