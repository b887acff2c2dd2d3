package cache

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
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

func reopen(t testing.TB, s *Store, opts *Options) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	n, err := Open(s.Path(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
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

func TestMessageRecords(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	recs := []MessageRecord{
		{Key: "k1", Size: 1234, UIDL: "u1"},
		{Key: "k2", Size: 0, UIDL: ""},
		{Key: "k3", Size: 1 << 40, UIDL: strings.Repeat("x", 70)},
		{Key: "ключ\x00bin", Size: 7, UIDL: "u4"},
		{Key: "k6", Size: 8, UIDL: "u6", Stamp: "8:1700000000000000000"},
	}
	if err := s.PutMessages("alice", recs); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, want []MessageRecord) {
		t.Helper()
		got, err := s.Messages("alice")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Errorf("Messages: %d records, want %d", len(got), len(want))
		}
		for _, w := range want {
			if got[w.Key] != w {
				t.Errorf("Messages[%q] = %+v, want %+v", w.Key, got[w.Key], w)
			}
			r, ok, err := s.Message("alice", w.Key)
			if err != nil || !ok || r != w {
				t.Errorf("Message(%q) = %+v, %v, %v; want %+v", w.Key, r, ok, err, w)
			}
		}
	}
	check(s, recs)
	s = reopen(t, s, testOptions)
	check(s, recs)

	// Replace one, delete two (one of them absent), add one.
	recs[0].Size, recs[0].UIDL = 99, "u1b"
	if err := s.PutMessages("alice", []MessageRecord{recs[0], {Key: "k5", Size: 5, UIDL: "u5"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMessages("alice", []string{"k2", "absent"}); err != nil {
		t.Fatal(err)
	}
	want := []MessageRecord{recs[0], recs[2], recs[3], recs[4], {Key: "k5", Size: 5, UIDL: "u5"}}
	check(s, want)
	s = reopen(t, s, testOptions)
	check(s, want)

	if _, ok, err := s.Message("alice", "k2"); ok || err != nil {
		t.Errorf("deleted k2: ok=%v err=%v", ok, err)
	}
	if _, ok, err := s.Message("bob", "k1"); ok || err != nil {
		t.Errorf("other account sees alice's k1: ok=%v err=%v", ok, err)
	}
	// The copy belongs to the caller.
	m, _ := s.Messages("alice")
	delete(m, "k1")
	if _, ok, _ := s.Message("alice", "k1"); !ok {
		t.Error("changing the map from Messages changed the store")
	}
}

func TestTombstones(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "a", Size: 1}, {Key: "b", Size: 2}}})
	if err := s.AddTombstones("alice", []string{"a", "gone"}); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, want ...string) {
		t.Helper()
		got, err := s.Tombstones("alice")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(slices.Sorted(maps.Keys(got)), want) {
			t.Errorf("Tombstones = %v, want %v", slices.Sorted(maps.Keys(got)), want)
		}
		for _, k := range []string{"a", "b", "gone", "x"} {
			ok, err := s.IsTombstoned("alice", k)
			if err != nil || ok != slices.Contains(want, k) {
				t.Errorf("IsTombstoned(%q) = %v, %v", k, ok, err)
			}
		}
	}
	check(s, "a", "gone")
	s = reopen(t, s, testOptions)
	check(s, "a", "gone")

	// Deleting the record leaves its tombstone; removal is explicit.
	if err := s.DeleteMessages("alice", []string{"a"}); err != nil {
		t.Fatal(err)
	}
	check(s, "a", "gone")
	if err := s.RemoveTombstones("alice", []string{"gone", "never"}); err != nil {
		t.Fatal(err)
	}
	check(s, "a")
	s = reopen(t, s, testOptions)
	check(s, "a")
	if ok, _ := s.IsTombstoned("bob", "a"); ok {
		t.Error("bob sees alice's tombstone")
	}
}

func TestSyncState(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	st, err := s.SyncState("alice")
	if err != nil || st.UIDValidity != 0 || st.HighestUID != 0 || st.HistoryID != 0 || st.POP3UIDLs != nil {
		t.Fatalf("fresh SyncState = %+v, %v; want zero", st, err)
	}
	want := SyncState{UIDValidity: 1<<32 - 1, HighestUID: 4242, HistoryID: 1<<64 - 1, POP3UIDLs: []string{"a", "", "ccc"}}
	if err := s.PutSyncState("alice", want); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, want SyncState) {
		t.Helper()
		got, err := s.SyncState("alice")
		if err != nil {
			t.Fatal(err)
		}
		if got.UIDValidity != want.UIDValidity || got.HighestUID != want.HighestUID ||
			got.HistoryID != want.HistoryID || !slices.Equal(got.POP3UIDLs, want.POP3UIDLs) {
			t.Errorf("SyncState = %+v, want %+v", got, want)
		}
	}
	check(s, want)
	// Neither the caller's slice nor the returned one aliases the store's.
	want.POP3UIDLs[0] = "changed"
	got, _ := s.SyncState("alice")
	got.POP3UIDLs[1] = "changed too"
	check(s, SyncState{UIDValidity: 1<<32 - 1, HighestUID: 4242, HistoryID: 1<<64 - 1, POP3UIDLs: []string{"a", "", "ccc"}})
	s = reopen(t, s, testOptions)
	check(s, SyncState{UIDValidity: 1<<32 - 1, HighestUID: 4242, HistoryID: 1<<64 - 1, POP3UIDLs: []string{"a", "", "ccc"}})

	// Replacement is whole, and messages are untouched by it.
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "m", Size: 3, UIDL: "m"}}})
	if err := s.PutSyncState("alice", SyncState{HighestUID: 5}); err != nil {
		t.Fatal(err)
	}
	check(s, SyncState{HighestUID: 5})
	if _, ok, _ := s.Message("alice", "m"); !ok {
		t.Error("PutSyncState lost a message record")
	}
}

func TestApplyOrderAndAtomicity(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "x", Size: 1, UIDL: "old"}}, AddTombstones: []string{"t"}})
	// Delete runs before Put, RemoveTombstones before AddTombstones.
	mustApply(t, s, "alice", Change{
		Delete:           []string{"x"},
		Put:              []MessageRecord{{Key: "x", Size: 2, UIDL: "new"}},
		RemoveTombstones: []string{"t"},
		AddTombstones:    []string{"t"},
		Sync:             &SyncState{HighestUID: 9},
	})
	check := func(st *Store) {
		t.Helper()
		if r, _, err := st.Message("alice", "x"); r.UIDL != "new" || r.Size != 2 || err != nil {
			t.Errorf("x = %+v, %v; want the Put after the Delete", r, err)
		}
		if ok, err := st.IsTombstoned("alice", "t"); !ok || err != nil {
			t.Errorf("tombstone t missing (%v): AddTombstones must follow RemoveTombstones", err)
		}
		if sy, err := st.SyncState("alice"); sy.HighestUID != 9 || err != nil {
			t.Errorf("HighestUID = %d, %v; want 9", sy.HighestUID, err)
		}
	}
	check(s)
	check(reopen(t, s, testOptions))
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

func TestStatsAndForget(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	mustApply(t, s, "bob", Change{
		Put:           []MessageRecord{{Key: "1", Size: 100, UIDL: "a"}, {Key: "2", Size: 23, UIDL: "b"}},
		AddTombstones: []string{"1", "9", "8"},
	})
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "1", Size: 5, UIDL: "a"}}})
	mustApply(t, s, "carol", Change{Sync: &SyncState{HistoryID: 7}})
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := []AccountStats{
		{Account: "alice", Messages: 1, Bytes: 5},
		{Account: "bob", Messages: 2, Tombstones: 3, Bytes: 123},
		{Account: "carol"},
	}
	if len(st) != len(want) {
		t.Fatalf("Stats = %+v, want %d accounts", st, len(want))
	}
	for i := range want {
		if st[i].DiskBytes <= 0 {
			t.Errorf("%s: DiskBytes = %d, want > 0", st[i].Account, st[i].DiskBytes)
		}
		st[i].DiskBytes = 0
		if st[i] != want[i] {
			t.Errorf("Stats[%d] = %+v, want %+v", i, st[i], want[i])
		}
	}

	// Warm bob's snapshot, so Forget must also clear memory.
	if _, err := s.Snapshot("bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget("bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget("bob"); !errors.Is(err, ErrNoAccount) {
		t.Errorf("second Forget: %v, want ErrNoAccount", err)
	}
	snap, err := s.Snapshot("bob")
	if err != nil || snap.Len() != 0 || snap.TombstoneCount() != 0 {
		t.Errorf("after Forget bob has %d records, %d tombstones (%v)", snap.Len(), snap.TombstoneCount(), err)
	}
	s = reopen(t, s, testOptions)
	st, _ = s.Stats()
	if len(st) != 2 || st[0].Account != "alice" || st[1].Account != "carol" {
		t.Errorf("after Forget(bob) Stats = %+v", st)
	}
	if r, ok, _ := s.Message("alice", "1"); !ok || r.Size != 5 {
		t.Errorf("Forget(bob) touched alice: %+v %v", r, ok)
	}
	if sy, _ := s.SyncState("carol"); sy.HistoryID != 7 {
		t.Errorf("Forget(bob) touched carol: %+v", sy)
	}
}

func TestHoldBlocksForget(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "1", Size: 1, Stamp: "s"}}})
	mustApply(t, s, "bob", Change{AddTombstones: []string{"x"}})
	release, err := s.Hold("alice")
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Hold("alice") // a second session
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Forget("alice"); !errors.Is(err, ErrInUse) {
		t.Fatalf("Forget of a held account: %v, want ErrInUse", err)
	}
	if r, ok, _ := s.Message("alice", "1"); !ok || r.Stamp != "s" {
		t.Errorf("refused Forget changed the account: %+v %v", r, ok)
	}
	if err := s.Forget("bob"); err != nil {
		t.Errorf("Forget of another account: %v", err)
	}
	release()
	release() // twice is harmless, and does not release the other hold
	if err := s.Forget("alice"); !errors.Is(err, ErrInUse) {
		t.Fatalf("Forget with one hold left: %v, want ErrInUse", err)
	}
	again()
	if err := s.Forget("alice"); err != nil {
		t.Fatalf("Forget after release: %v", err)
	}
	if _, err := s.Hold(""); err == nil {
		t.Error("Hold of the empty account succeeded")
	}

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
		s.holds.mu.Lock()
		n := s.holds.forgetting["carol"]
		s.holds.mu.Unlock()
		if n > 0 {
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

func TestSnapshotViews(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	mustApply(t, s, "a", Change{
		Put:           []MessageRecord{{Key: "1", Size: 1, UIDL: "u1"}, {Key: "2", Size: 2, UIDL: "u2"}},
		AddTombstones: []string{"2"},
		Sync:          &SyncState{POP3UIDLs: []string{"p"}},
	})
	old, err := s.Snapshot("a")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for r := range old.Messages() {
		keys = append(keys, r.Key)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"1", "2"}) {
		t.Errorf("Messages() yielded %v", keys)
	}
	if tombs := slices.Collect(old.Tombstones()); !slices.Equal(tombs, []string{"2"}) {
		t.Errorf("Tombstones() yielded %v", tombs)
	}
	mustApply(t, s, "a", Change{Delete: []string{"1"}, RemoveTombstones: []string{"2"}, Sync: &SyncState{}})
	// The old snapshot is immutable; a new one shows the change.
	if old.Len() != 2 || !old.Tombstoned("2") || len(old.Sync().POP3UIDLs) != 1 {
		t.Errorf("old snapshot changed: len %d, tombstoned %v, sync %+v", old.Len(), old.Tombstoned("2"), old.Sync())
	}
	cur, _ := s.Snapshot("a")
	if _, ok := cur.Message("1"); ok || cur.Len() != 1 || cur.Tombstoned("2") || cur.Sync().POP3UIDLs != nil {
		t.Errorf("new snapshot misses the change: len %d", cur.Len())
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

func TestClosedStoreFails(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	mustApply(t, s, "a", Change{Put: []MessageRecord{{Key: "1"}}})
	if _, err := s.Snapshot("a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Message("a", "1"); err == nil {
		t.Error("read after Close served stale memory")
	}
	if err := s.PutMessages("a", []MessageRecord{{Key: "2"}}); err == nil {
		t.Error("write after Close succeeded")
	}
}

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
