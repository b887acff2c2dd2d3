package pgstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/pgtest"
)

// TestPostgresRestart stops PostgreSQL under a replica: every operation
// fails at once with a temporary error, a kept-alive lease is reported
// lost after its TTL, and once PostgreSQL is back the same Store and
// Subscriber work again by themselves, with nothing lost.
func TestPostgresRestart(t *testing.T) {
	srv := pgtest.Start(t) // a server of its own: this test stops it
	dsn := srv.CreateDB(t)
	s := openDSN(t, dsn)
	tokens := &Tokens{Store: s, Key: testKey}
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "1", Size: 10, UIDL: "u1"}}, AddTombstones: []string{"0"}})
	if err := tokens.Save("alice", tokenFor("rt-1")); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, dsn)
	const ttl = time.Second
	lease, err := s.Acquire(context.Background(), "alice", "replica-a", ttl)
	if err != nil {
		t.Fatal(err)
	}
	lease.KeepAlive()
	defer lease.Release(context.Background())

	srv.Shutdown()
	down := time.Now()
	checks := map[string]func() error{
		"Message":  func() error { _, _, err := s.Message("alice", "1"); return err },
		"Snapshot": func() error { _, err := s.Snapshot("alice"); return err },
		"Apply":    func() error { return s.AddTombstones("alice", []string{"2"}) },
		"Acquire": func() error {
			_, err := s.Acquire(context.Background(), "bob", "replica-a", ttl)
			return err
		},
		"Fenced": func() error {
			return s.Fenced(context.Background(), lease, func(w *Writer) error { return w.Apply(Change{Delete: []string{"1"}}) })
		},
		"Token": func() error { _, err := tokens.Load("alice"); return err },
		"Stats": func() error { _, err := s.Stats(); return err },
		"Ping":  func() error { return s.Ping(context.Background()) },
	}
	for name, op := range checks {
		start := time.Now()
		err := op()
		if !IsTemporary(err) || !strings.Contains(err.Error(), "try again") {
			t.Errorf("%s with PostgreSQL down: %v, want a temporary error", name, err)
		}
		if d := time.Since(start); d > 2*DefaultConnectTimeout {
			t.Errorf("%s took %v to fail", name, d)
		}
	}
	select {
	case <-lease.Lost():
		if !errors.Is(lease.Err(), ErrLeaseLost) {
			t.Errorf("lease error %v", lease.Err())
		}
	case <-time.After(10 * time.Second):
		t.Error("a kept-alive lease was not reported lost while PostgreSQL was down")
	}
	if sub.Connected() {
		t.Error("subscriber says connected to a stopped server")
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	outage := time.Since(down)
	// The pool reconnects by itself.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, ok, err := s.Message("alice", "1")
		if err == nil {
			if !ok || r.UIDL != "u1" || r.Size != 10 {
				t.Errorf("after the restart: %+v %v", r, ok)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery 20 s after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	recovered := time.Since(down) - outage
	if ok, _ := s.IsTombstoned("alice", "2"); ok {
		t.Error("a write that failed during the outage was applied")
	}
	if tok, err := tokens.Load("alice"); err != nil || tok.RefreshToken != "rt-1" {
		t.Errorf("token after the restart: %+v, %v", tok, err)
	}
	// The lost lease cannot commit, and expires so another session gets
	// the maildrop.
	if err := s.Fenced(context.Background(), lease, func(w *Writer) error { return w.Apply(Change{Delete: []string{"1"}}) }); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("fenced write of the lost lease after the restart: %v, want ErrLeaseLost", err)
	}
	l2, err := s.Acquire(context.Background(), "alice", "replica-b", ttl)
	if err != nil {
		t.Errorf("Acquire after the restart: %v", err)
	} else {
		l2.Release(context.Background())
	}
	// The subscriber reconnects, invalidates all, and hears changes.
	for inv := next(t, sub); !inv.All; inv = next(t, sub) {
	}
	mustApply(t, s, "alice", Change{AddTombstones: []string{"3"}})
	for inv := next(t, sub); inv != (Invalidation{Kind: "state", Account: "alice"}); inv = next(t, sub) {
	}
	t.Logf("replicas: PostgreSQL down %v: %d operations failed as temporary, the lease was reported lost; recovered %v after the restart without a new Store",
		outage.Round(10*time.Millisecond), len(checks), recovered.Round(10*time.Millisecond))
}
