// Package storetest is the contract of cache.StateStore: one table of
// tests that every store runs, cache.Store (bbolt) and pgstore.Store
// (PostgreSQL) alike. What only one store does (bbolt's file and memory
// layer, PostgreSQL's replicas and errors) stays in its own tests.
package storetest

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/cache"
)

// Opener makes the stores a test runs on.
type Opener struct {
	// Open returns a fresh, empty store, closed when the test ends.
	Open func(t *testing.T) cache.StateStore
	// Reopen closes s and opens its data again, as a restarted process.
	Reopen func(t *testing.T, s cache.StateStore) cache.StateStore
}

// Run runs every case of the contract as a subtest.
func Run(t *testing.T, o Opener) {
	for _, c := range []struct {
		name string
		f    func(*testing.T, Opener)
	}{
		{"MessageRecords", messageRecords},
		{"Tombstones", tombstones},
		{"SyncState", syncState},
		{"ApplyOrder", applyOrder},
		{"StatsAndForget", statsAndForget},
		{"HoldBlocksForget", holdBlocksForget},
		{"SnapshotViews", snapshotViews},
		{"ClosedStoreFails", closedStoreFails},
	} {
		t.Run(c.name, func(t *testing.T) { c.f(t, o) })
	}
}

type (
	MessageRecord = cache.MessageRecord
	SyncState     = cache.SyncState
	Change        = cache.Change
)

func mustApply(t *testing.T, s cache.StateStore, account string, c Change) {
	t.Helper()
	if err := s.Apply(account, c); err != nil {
		t.Fatal(err)
	}
}

func messageRecords(t *testing.T, o Opener) {
	s := o.Open(t)
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
	check := func(s cache.StateStore, want []MessageRecord) {
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
	s = o.Reopen(t, s)
	check(s, recs)

	// Replace one, delete two (one of them absent), add one; a key put
	// twice in one change keeps the last.
	recs[0].Size, recs[0].UIDL = 99, "u1b"
	if err := s.PutMessages("alice", []MessageRecord{{Key: "k1", Size: 1}, recs[0], {Key: "k5", Size: 5, UIDL: "u5"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMessages("alice", []string{"k2", "absent"}); err != nil {
		t.Fatal(err)
	}
	want := []MessageRecord{recs[0], recs[2], recs[3], recs[4], {Key: "k5", Size: 5, UIDL: "u5"}}
	check(s, want)
	s = o.Reopen(t, s)
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

func tombstones(t *testing.T, o Opener) {
	s := o.Open(t)
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "a", Size: 1}, {Key: "b", Size: 2}}})
	if err := s.AddTombstones("alice", []string{"a", "gone", "a"}); err != nil {
		t.Fatal(err)
	}
	check := func(s cache.StateStore, want ...string) {
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
	s = o.Reopen(t, s)
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
	s = o.Reopen(t, s)
	check(s, "a")
	if ok, _ := s.IsTombstoned("bob", "a"); ok {
		t.Error("bob sees alice's tombstone")
	}
}

func syncState(t *testing.T, o Opener) {
	s := o.Open(t)
	st, err := s.SyncState("alice")
	if err != nil || st.UIDValidity != 0 || st.HighestUID != 0 || st.HistoryID != 0 || st.POP3UIDLs != nil {
		t.Fatalf("fresh SyncState = %+v, %v; want zero", st, err)
	}
	want := SyncState{UIDValidity: 1<<32 - 1, HighestUID: 4242, HistoryID: 1<<64 - 1, POP3UIDLs: []string{"a", "", "ccc"}}
	if err := s.PutSyncState("alice", want); err != nil {
		t.Fatal(err)
	}
	check := func(s cache.StateStore, want SyncState) {
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
	stored := SyncState{UIDValidity: 1<<32 - 1, HighestUID: 4242, HistoryID: 1<<64 - 1, POP3UIDLs: []string{"a", "", "ccc"}}
	check(s, stored)
	s = o.Reopen(t, s)
	check(s, stored)

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

func applyOrder(t *testing.T, o Opener) {
	s := o.Open(t)
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "x", Size: 1, UIDL: "old"}}, AddTombstones: []string{"t"}})
	// Delete runs before Put, RemoveTombstones before AddTombstones.
	mustApply(t, s, "alice", Change{
		Delete:           []string{"x"},
		Put:              []MessageRecord{{Key: "x", Size: 2, UIDL: "new"}},
		RemoveTombstones: []string{"t"},
		AddTombstones:    []string{"t"},
		Sync:             &SyncState{HighestUID: 9},
	})
	check := func(st cache.StateStore) {
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
	check(o.Reopen(t, s))
}

func statsAndForget(t *testing.T, o Opener) {
	s := o.Open(t)
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
	want := []cache.AccountStats{
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

	// Read bob first: a store that keeps it in memory must drop it too.
	if _, err := s.Snapshot("bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget("bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget("bob"); !errors.Is(err, cache.ErrNoAccount) {
		t.Errorf("second Forget: %v, want cache.ErrNoAccount", err)
	}
	snap, err := s.Snapshot("bob")
	if err != nil || snap.Len() != 0 || snap.TombstoneCount() != 0 {
		t.Errorf("after Forget bob has %d records, %d tombstones (%v)", snap.Len(), snap.TombstoneCount(), err)
	}
	s = o.Reopen(t, s)
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

func holdBlocksForget(t *testing.T, o Opener) {
	s := o.Open(t)
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
	if n := s.Holders("alice"); n != 2 {
		t.Errorf("Holders = %d, want 2", n)
	}
	if err := s.Forget("alice"); !errors.Is(err, cache.ErrInUse) {
		t.Fatalf("Forget of a held account: %v, want cache.ErrInUse", err)
	}
	if r, ok, _ := s.Message("alice", "1"); !ok || r.Stamp != "s" {
		t.Errorf("refused Forget changed the account: %+v %v", r, ok)
	}
	if err := s.Forget("bob"); err != nil {
		t.Errorf("Forget of another account: %v", err)
	}
	release()
	release() // twice is harmless, and does not release the other hold
	if err := s.Forget("alice"); !errors.Is(err, cache.ErrInUse) {
		t.Fatalf("Forget with one hold left: %v, want cache.ErrInUse", err)
	}
	again()
	if n := s.Holders("alice"); n != 0 {
		t.Errorf("Holders after release = %d, want 0", n)
	}
	if err := s.Forget("alice"); err != nil {
		t.Fatalf("Forget after release: %v", err)
	}
	if _, err := s.Hold(""); err == nil {
		t.Error("Hold of the empty account succeeded")
	}
}

func snapshotViews(t *testing.T, o Opener) {
	s := o.Open(t)
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

func closedStoreFails(t *testing.T, o Opener) {
	s := o.Open(t)
	mustApply(t, s, "a", Change{Put: []MessageRecord{{Key: "1"}}})
	if _, err := s.Snapshot("a"); err != nil { // warm, where a store keeps memory
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Message("a", "1"); err == nil {
		t.Error("read after Close succeeded")
	}
	if err := s.PutMessages("a", []MessageRecord{{Key: "2"}}); err == nil {
		t.Error("write after Close succeeded")
	}
}
