package cache

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testOptions commit at once, so sequential tests do not wait for batches.
var testOptions = &Options{BatchDelay: -1}

func openTemp(t testing.TB, opts *Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "cache.db")
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func mustApply(t testing.TB, s *Store, account string, c Change) {
	t.Helper()
	if err := s.Apply(account, c); err != nil {
		t.Fatal(err)
	}
}

func TestOpenCreatesFile0600(t *testing.T) {
	s, path := openTemp(t, nil)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", di.Mode().Perm())
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
}

func TestOpenLockedByAnotherHolder(t *testing.T) {
	_, path := openTemp(t, nil)
	start := time.Now()
	_, err := Open(path, &Options{LockTimeout: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("second Open of a held file succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked by another process") || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not explain the lock and name the file", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open waited %v despite a 100ms LockTimeout", d)
	}
}

func TestApplyRejectsBadInput(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	long := strings.Repeat("k", 40000)
	for name, tc := range map[string]struct {
		account string
		c       Change
	}{
		"empty account":     {"", Change{Put: []MessageRecord{{Key: "k"}}}},
		"empty key":         {"a", Change{Put: []MessageRecord{{Key: "ok"}, {Key: ""}}}},
		"negative size":     {"a", Change{Put: []MessageRecord{{Key: "k", Size: -1}}}},
		"long key":          {"a", Change{Put: []MessageRecord{{Key: long}}}},
		"long account":      {long, Change{Put: []MessageRecord{{Key: "k"}}}},
		"empty delete":      {"a", Change{Delete: []string{""}}},
		"empty tombstone":   {"a", Change{AddTombstones: []string{"x", ""}}},
		"empty untombstone": {"a", Change{RemoveTombstones: []string{""}}},
	} {
		if err := s.Apply(tc.account, tc.c); err == nil || !strings.HasPrefix(err.Error(), "cache: ") {
			t.Errorf("%s: err = %v, want a cache: error", name, err)
		}
	}
	st, err := s.Stats()
	if err != nil || len(st) != 0 {
		t.Errorf("after rejected changes Stats = %+v, %v; want nothing stored", st, err)
	}
	if _, err := s.Snapshot(""); err == nil {
		t.Error("Snapshot of the empty account succeeded")
	}
	// Removals alone do not create an account.
	mustApply(t, s, "ghost", Change{Delete: []string{"a"}, RemoveTombstones: []string{"b"}})
	mustApply(t, s, "ghost", Change{})
	if st, _ := s.Stats(); len(st) != 0 {
		t.Errorf("removals created an account: %+v", st)
	}
}

// TestHoldWaitsForForget: a Hold taken while a Forget runs waits for it
// (the rest of Hold and Forget is in the contract, TestContract).
func TestHoldWaitsForForget(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	// A Hold waits while a Forget runs: hold bbolt's write transaction so
	// the Forget stays in progress.
	mustApply(t, s, "carol", Change{AddTombstones: []string{"x"}})
	tx, err := s.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	forgot := make(chan error, 1)
	go func() { forgot <- s.Forget("carol") }()
	for {
		if s.holds.Forgetting("carol") {
			break
		}
		time.Sleep(time.Millisecond)
	}
	held := make(chan struct{})
	go func() {
		rel, _ := s.Hold("carol")
		close(held)
		rel()
	}()
	select {
	case <-held:
		t.Error("Hold did not wait for the Forget in progress")
	case <-time.After(50 * time.Millisecond):
	}
	tx.Rollback()
	if err := <-forgot; err != nil {
		t.Errorf("Forget: %v", err)
	}
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("Hold still waiting after the Forget finished")
	}
}

// TestWarmReadsSkipBolt checks the read-through layer: one load per
// account, writes keep the cached snapshot current without reloading.
func TestWarmReadsSkipBolt(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	mustApply(t, s, "a", Change{Put: []MessageRecord{{Key: "1", Size: 1}}})
	for range 3 {
		if _, _, err := s.Message("a", "1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.loads.Load(); n != 1 {
		t.Errorf("%d loads for three reads, want 1", n)
	}
	mustApply(t, s, "a", Change{Put: []MessageRecord{{Key: "2", Size: 2}}, AddTombstones: []string{"1"}})
	if r, ok, _ := s.Message("a", "2"); !ok || r.Size != 2 {
		t.Errorf("warm read after write: %+v %v", r, ok)
	}
	if ok, _ := s.IsTombstoned("a", "1"); !ok {
		t.Error("warm read misses the new tombstone")
	}
	if n := s.loads.Load(); n != 1 {
		t.Errorf("%d loads, want 1: a write must update memory, not evict it", n)
	}
}

func TestMemoryBound(t *testing.T) {
	// 10 records of memory: an account of 3 records weighs 4.
	s, _ := openTemp(t, &Options{BatchDelay: -1, MemoryRecords: 10})
	for _, a := range []string{"a", "b", "c"} {
		mustApply(t, s, a, Change{Put: []MessageRecord{{Key: "1"}, {Key: "2"}, {Key: "3"}}})
	}
	read := func(a string) {
		t.Helper()
		snap, err := s.Snapshot(a)
		if err != nil || snap.Len() != 3 {
			t.Fatalf("Snapshot(%s): %d records, %v", a, snap.Len(), err)
		}
	}
	read("a")
	read("b")
	read("a") // a is now the most recent
	read("c") // evicts b
	before := s.loads.Load()
	read("a")
	read("c")
	if n := s.loads.Load() - before; n != 0 {
		t.Errorf("a and c reloaded %d times, want 0", n)
	}
	read("b")
	if n := s.loads.Load() - before; n != 1 {
		t.Errorf("evicted b: %d loads, want 1", n)
	}

	// An account heavier than the bound is read from the file each time.
	var big []MessageRecord
	for i := range 20 {
		big = append(big, MessageRecord{Key: fmt.Sprint(i), Size: int64(i)})
	}
	mustApply(t, s, "big", Change{Put: big})
	before = s.loads.Load()
	for range 2 {
		snap, err := s.Snapshot("big")
		if err != nil || snap.Len() != 20 {
			t.Fatalf("big: %d records, %v", snap.Len(), err)
		}
	}
	if n := s.loads.Load() - before; n != 2 {
		t.Errorf("big account: %d loads, want 2", n)
	}

	off, _ := openTemp(t, &Options{BatchDelay: -1, MemoryRecords: -1})
	mustApply(t, off, "a", Change{Put: []MessageRecord{{Key: "1", Size: 4}}})
	for range 2 {
		if r, ok, err := off.Message("a", "1"); !ok || r.Size != 4 || err != nil {
			t.Fatalf("memory off: %+v %v %v", r, ok, err)
		}
	}
	if n := off.loads.Load(); n != 2 {
		t.Errorf("memory off: %d loads, want 2", n)
	}
}

// TestConcurrentAccounts runs writers and readers of many accounts at once,
// with batching on, then checks that memory and file agree.
func TestConcurrentAccounts(t *testing.T) {
	s, _ := openTemp(t, &Options{BatchDelay: time.Millisecond, MemoryRecords: 400})
	const accounts, workers, rounds = 8, 24, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	// A Forget by one of an account's workers may fall between another's
	// write and its read of it: Forget excludes those pairs.
	var forgets [accounts]sync.RWMutex
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := fmt.Sprintf("acct%d", w%accounts)
			for i := range rounds {
				key := fmt.Sprintf("w%d-%d", w, i)
				forget := i%5 == 4 && w%7 == 0 && i%20 == 4
				unlock := forgets[w%accounts].RUnlock
				if forget {
					forgets[w%accounts].Lock()
					unlock = forgets[w%accounts].Unlock
				} else {
					forgets[w%accounts].RLock()
				}
				var err error
				switch i % 5 {
				case 0, 1:
					err = s.Apply(a, Change{Put: []MessageRecord{{Key: key, Size: int64(i), UIDL: key}}, Sync: &SyncState{HighestUID: uint32(i)}})
				case 2:
					err = s.AddTombstones(a, []string{key, fmt.Sprintf("w%d-%d", w, i-1)})
				case 3:
					err = s.DeleteMessages(a, []string{fmt.Sprintf("w%d-%d", w, i-3)})
				case 4:
					if forget {
						err = s.Forget(a)
						if errors.Is(err, ErrNoAccount) {
							err = nil
						}
					} else {
						err = s.RemoveTombstones(a, []string{fmt.Sprintf("w%d-%d", w, i-2)})
					}
				}
				if err != nil {
					unlock()
					errs <- err
					return
				}
				// Read your own write, and a neighbour's account.
				if i%5 <= 1 {
					if r, ok, err := s.Message(a, key); err != nil || !ok || r.UIDL != key {
						unlock()
						errs <- fmt.Errorf("%s: own write %s not visible: %+v %v %v", a, key, r, ok, err)
						return
					}
				}
				unlock()
				if _, err := s.Snapshot(fmt.Sprintf("acct%d", (w+1)%accounts)); err != nil {
					errs <- err
					return
				}
				if i%10 == 0 {
					if _, err := s.Stats(); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for a := range accounts {
		name := fmt.Sprintf("acct%d", a)
		mem, err := s.Snapshot(name)
		if err != nil {
			t.Fatal(err)
		}
		disk, err := s.load(name)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(mem.msgs, disk.msgs) || !maps.Equal(mem.tombs, disk.tombs) || mem.sync.HighestUID != disk.sync.HighestUID {
			t.Errorf("%s: memory (%d records, %d tombstones) and file (%d, %d) disagree",
				name, mem.Len(), mem.TombstoneCount(), disk.Len(), disk.TombstoneCount())
		}
	}
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }

// TestReadsDuringWrite holds bbolt's single write transaction open, as a
// long write of one account would, and checks that reads of other
// accounts, warm from memory or cold from the file, do not wait for it.
func TestReadsDuringWrite(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	mustApply(t, s, "warm", Change{Put: []MessageRecord{{Key: "1", Size: 1}}})
	mustApply(t, s, "cold", Change{Put: []MessageRecord{{Key: "2", Size: 2}}})
	if _, err := s.Snapshot("warm"); err != nil {
		t.Fatal(err)
	}
	s.mem.drop("cold")
	tx, err := s.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		if r, ok, err := s.Message("warm", "1"); err != nil || !ok || r.Size != 1 {
			done <- fmt.Errorf("warm read: %+v %v %v", r, ok, err)
			return
		}
		if r, ok, err := s.Message("cold", "2"); err != nil || !ok || r.Size != 2 {
			done <- fmt.Errorf("cold read: %+v %v %v", r, ok, err)
			return
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Error("reads waited for another account's write transaction")
	}
	tx.Rollback()
}
