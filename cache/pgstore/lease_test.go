package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/popbridge/popbridge/cache"
)

// TestLeaseInUseAcrossReplicas races Acquire of one maildrop on two
// Stores (two replicas): exactly one wins, the others are told it is in
// use, and after Release the next one gets a higher fence.
func TestLeaseInUseAcrossReplicas(t *testing.T) {
	dsn := newDB(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []*Lease
	inUse := 0
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []*Store{a, b}[i%2]
			l, err := s.Acquire(context.Background(), "bob", "replica", time.Minute)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won = append(won, l)
			case errors.Is(err, ErrLeaseHeld) && errors.Is(err, cache.ErrInUse) && !IsTemporary(err):
				inUse++
			default:
				t.Errorf("Acquire: %v", err)
			}
		}()
	}
	wg.Wait()
	if len(won) != 1 || inUse != 9 {
		t.Fatalf("%d won, %d in use; want 1 and 9", len(won), inUse)
	}
	// Another maildrop is free.
	other, err := b.Acquire(context.Background(), "carol", "replica-b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := won[0].Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	next, err := b.Acquire(context.Background(), "bob", "replica-b", time.Minute)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	if next.Fence <= won[0].Fence || other.Fence == next.Fence {
		t.Errorf("fences %d then %d (carol %d): want growing, never reused", won[0].Fence, next.Fence, other.Fence)
	}
	t.Logf("replicas: maildrop lease: 1 of 10 concurrent acquires on 2 replicas won, 9 got in-use; fence %d then %d after release", won[0].Fence, next.Fence)
}

// TestLeaseTakeoverAfterExpiry: a holder that stops renewing (a killed
// replica) loses the maildrop after its TTL, to another replica.
func TestLeaseTakeoverAfterExpiry(t *testing.T) {
	dsn := newDB(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	const ttl = time.Second // the check before expiry must fit in it
	dead, err := a.Acquire(context.Background(), "bob", "replica-a", ttl)
	if err != nil {
		t.Fatal(err)
	}
	a.Close() // the replica dies without releasing
	if _, err := b.Acquire(context.Background(), "bob", "replica-b", ttl); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("Acquire before expiry: %v, want ErrLeaseHeld", err)
	}
	start := time.Now()
	var l *Lease
	for {
		l, err = b.Acquire(context.Background(), "bob", "replica-b", time.Minute)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrLeaseHeld) {
			t.Fatal(err)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("no takeover 10 s after a 1 s lease")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l.Fence <= dead.Fence {
		t.Errorf("takeover fence %d, not above the dead holder's %d", l.Fence, dead.Fence)
	}
	t.Logf("replicas: lease of a dead replica (TTL %v) taken over by another after %v", ttl, time.Since(start).Round(10*time.Millisecond))
}

// TestStaleHolderFencedWriteRefused: A's lease expires (a pause), B takes
// over and commits; A wakes up and its deletes, cursor and renewal are
// all refused, and the database holds B's writes only.
func TestStaleHolderFencedWriteRefused(t *testing.T) {
	dsn := newDB(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	mustApply(t, a, "bob", Change{Put: []MessageRecord{{Key: "m1", Size: 1}, {Key: "m2", Size: 2}, {Key: "m3", Size: 3}}})
	la, err := a.Acquire(context.Background(), "bob", "replica-a", 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	lb, err := b.Acquire(context.Background(), "bob", "replica-b", time.Minute)
	if err != nil {
		t.Fatalf("takeover: %v", err)
	}
	err = b.Fenced(context.Background(), lb, func(w *Writer) error {
		if err := w.Apply(Change{AddTombstones: []string{"m2"}}); err != nil {
			return err
		}
		return w.PutCursor("graph", "b-link")
	})
	if err != nil {
		t.Fatalf("the holder's fenced write: %v", err)
	}
	// A, back from its pause, tries to commit its QUIT.
	err = a.Fenced(context.Background(), la, func(w *Writer) error {
		if err := w.Apply(Change{AddTombstones: []string{"m1", "m3"}, Delete: []string{"m1"}}); err != nil {
			return err
		}
		return w.PutCursor("graph", "a-link")
	})
	if !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale holder's fenced write: %v, want ErrLeaseLost", err)
	}
	select {
	case <-la.Lost():
	default:
		t.Error("Lost not closed after a refused fenced write")
	}
	if err := la.Renew(context.Background()); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("stale Renew: %v, want ErrLeaseLost", err)
	}
	tombs, _ := a.Tombstones("bob")
	if len(tombs) != 1 {
		t.Errorf("tombstones %v, want only B's m2", tombs)
	}
	if _, ok, _ := a.Message("bob", "m1"); !ok {
		t.Error("the stale holder's delete of m1 was applied")
	}
	if c, _ := a.Cursor("bob", "graph"); c != "b-link" {
		t.Errorf("cursor %q, want B's", c)
	}
	var fence int64
	if err := a.pool.QueryRow(t.Context(), "SELECT fence FROM tombstone WHERE account = 'bob' AND key = 'm2'").Scan(&fence); err != nil || fence != lb.Fence {
		t.Errorf("tombstone fence %d (%v), want B's %d", fence, err, lb.Fence)
	}
	// Releasing the stale lease leaves B's alone.
	la.Release(context.Background())
	if err := lb.Renew(context.Background()); err != nil {
		t.Errorf("B's lease after A's release: %v", err)
	}
	t.Logf("replicas: a stale holder's fenced QUIT (fence %d) was refused after a takeover (fence %d); only the new holder's writes are stored", la.Fence, lb.Fence)
}

// TestPausedHolderCannotCommit: a lease that expired with nobody taking
// over still refuses the writes; nothing partial is left.
func TestPausedHolderCannotCommit(t *testing.T) {
	s, _ := openTemp(t)
	mustApply(t, s, "bob", Change{Put: []MessageRecord{{Key: "m1", Size: 1}}})
	l, err := s.Acquire(context.Background(), "bob", "replica-a", 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Fenced(context.Background(), l, func(w *Writer) error {
		return w.Apply(Change{Put: []MessageRecord{{Key: "m2", Size: 2}}})
	}); err != nil {
		t.Fatalf("write within the lease: %v", err)
	}
	time.Sleep(700 * time.Millisecond) // paused past the lease
	called := false
	err = s.Fenced(context.Background(), l, func(w *Writer) error {
		called = true
		return w.Apply(Change{Delete: []string{"m1"}, AddTombstones: []string{"m1"}})
	})
	if !errors.Is(err, ErrLeaseLost) || IsTemporary(err) {
		t.Fatalf("commit after the lease: %v, want ErrLeaseLost", err)
	}
	if called {
		t.Error("the writes ran although the fence check failed")
	}
	if _, ok, _ := s.Message("bob", "m1"); !ok {
		t.Error("the paused holder's delete was applied")
	}
	// A failing fn writes nothing either.
	l2, err := s.Acquire(context.Background(), "bob", "replica-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("upstream failed")
	err = s.Fenced(context.Background(), l2, func(w *Writer) error {
		if err := w.Apply(Change{AddTombstones: []string{"m1"}}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("Fenced: %v, want fn's error", err)
	}
	if ok, _ := s.IsTombstoned("bob", "m1"); ok {
		t.Error("a failed Fenced left a tombstone")
	}
	t.Log("replicas: a holder paused past its lease cannot commit its QUIT; nothing partial is written")
}

// TestKeepAlive: a renewed lease outlives its TTL; Release frees it; a
// lease taken over under KeepAlive reports Lost.
func TestKeepAlive(t *testing.T) {
	s, _ := openTemp(t)
	const ttl = 600 * time.Millisecond
	l, err := s.Acquire(context.Background(), "bob", "a", ttl)
	if err != nil {
		t.Fatal(err)
	}
	l.KeepAlive()
	time.Sleep(3 * ttl)
	if _, err := s.Acquire(context.Background(), "bob", "b", ttl); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("Acquire of a kept-alive lease after 3 TTLs: %v, want ErrLeaseHeld", err)
	}
	if err := s.Fenced(context.Background(), l, func(w *Writer) error { return w.Apply(Change{AddTombstones: []string{"x"}}) }); err != nil {
		t.Errorf("fenced write of a kept-alive lease: %v", err)
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	l2, err := s.Acquire(context.Background(), "bob", "b", ttl)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	l2.KeepAlive()
	defer l2.Release(context.Background())
	// Steal it, as an operator's cleanup or a clock-free takeover would.
	if _, err := s.pool.Exec(t.Context(), "UPDATE maildrop_lease SET fence = nextval('lease_fence') WHERE account = 'bob'"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l2.Lost():
		if !errors.Is(l2.Err(), ErrLeaseLost) {
			t.Errorf("Err = %v", l2.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("KeepAlive did not report the lost lease")
	}
}

// TestLeaseBlocksForget: a live lease on any replica keeps Forget away.
func TestLeaseBlocksForget(t *testing.T) {
	dsn := newDB(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	mustApply(t, a, "bob", Change{AddTombstones: []string{"x"}})
	l, err := a.Acquire(context.Background(), "bob", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Forget("bob"); !errors.Is(err, cache.ErrInUse) {
		t.Fatalf("Forget during another replica's lease: %v, want cache.ErrInUse", err)
	}
	if ok, _ := b.IsTombstoned("bob", "x"); !ok {
		t.Error("refused Forget removed data")
	}
	l.Release(context.Background())
	if err := b.Forget("bob"); err != nil {
		t.Errorf("Forget after Release: %v", err)
	}
}

// TestFencedExtendsLease: each committed Fenced renews the lease, and
// ValidUntil follows; a failed one does not.
func TestFencedExtendsLease(t *testing.T) {
	s, _ := openTemp(t)
	const ttl = time.Second
	before := time.Now()
	l, err := s.Acquire(context.Background(), "bob", "a", ttl)
	if err != nil {
		t.Fatal(err)
	}
	if v := l.ValidUntil(); v.Before(before.Add(ttl)) || v.After(time.Now().Add(ttl)) {
		t.Errorf("ValidUntil %v after Acquire, want about now+TTL", v)
	}
	// Four fenced writes half a TTL apart, twice the TTL in all,
	// without KeepAlive.
	for i := range 4 {
		time.Sleep(ttl / 2)
		prev := l.ValidUntil()
		if err := s.Fenced(context.Background(), l, func(w *Writer) error {
			return w.Apply(Change{AddTombstones: []string{fmt.Sprint(i)}})
		}); err != nil {
			t.Fatalf("fenced write %d: %v", i, err)
		}
		if !l.ValidUntil().After(prev) {
			t.Errorf("write %d: ValidUntil did not move from %v", i, prev)
		}
	}
	if _, err := s.Acquire(context.Background(), "bob", "b", ttl); !errors.Is(err, ErrLeaseHeld) {
		t.Errorf("Acquire while fenced writes renew the lease: %v, want ErrLeaseHeld", err)
	}
	prev := l.ValidUntil()
	s.Fenced(context.Background(), l, func(w *Writer) error { return errors.New("abort") })
	if l.ValidUntil() != prev {
		t.Error("a rolled back Fenced moved ValidUntil")
	}
}

// TestExtendOutlastsKeepAlive: Extend holds the lease past its TTL in the
// database, and KeepAlive's renewals do not shorten it; a lost lease is
// not extended.
func TestExtendOutlastsKeepAlive(t *testing.T) {
	s, _ := openTemp(t)
	const ttl = 500 * time.Millisecond
	l, err := s.Acquire(context.Background(), "bob", "a", ttl)
	if err != nil {
		t.Fatal(err)
	}
	l.KeepAlive()
	defer l.Release(context.Background())
	before := time.Now()
	if err := l.Extend(context.Background(), 4*time.Second); err != nil {
		t.Fatal(err)
	}
	if v := l.ValidUntil(); v.Before(before.Add(4 * time.Second)) {
		t.Errorf("ValidUntil %v after Extend(4s) at %v", v, before)
	}
	time.Sleep(2 * ttl) // several renewals
	var left time.Duration
	if err := s.pool.QueryRow(t.Context(), "SELECT extract(epoch FROM expires_at - clock_timestamp())::float8 * 1e9 FROM maildrop_lease WHERE account = 'bob'").Scan((*float64Duration)(&left)); err != nil {
		t.Fatal(err)
	}
	if left < 2*time.Second {
		t.Errorf("lease ends in %v after renewals; Extend(4s) was %v ago", left, time.Since(before))
	}
	// Taken over: Extend fails and says so.
	if _, err := s.pool.Exec(t.Context(), "UPDATE maildrop_lease SET fence = nextval('lease_fence') WHERE account = 'bob'"); err != nil {
		t.Fatal(err)
	}
	if err := l.Extend(context.Background(), time.Minute); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Extend of a taken-over lease: %v, want ErrLeaseLost", err)
	}
}

// float64Duration scans nanoseconds given as a float.
type float64Duration time.Duration

func (d *float64Duration) Scan(v any) error {
	f, ok := v.(float64)
	if !ok {
		return fmt.Errorf("scan %T as a duration", v)
	}
	*d = float64Duration(f)
	return nil
}
