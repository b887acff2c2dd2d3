package pgstore

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbridge/popbridge/cache"
)

type (
	MessageRecord = cache.MessageRecord
	SyncState     = cache.SyncState
	Change        = cache.Change
)

func mustApply(t testing.TB, s *Store, account string, c Change) {
	t.Helper()
	if err := s.Apply(account, c); err != nil {
		t.Fatal(err)
	}
}

func TestMessageRecords(t *testing.T) {
	s, dsn := openTemp(t)
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
	s = reopen(t, s, dsn)
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
	s = reopen(t, s, dsn)
	check(s, want)

	if _, ok, err := s.Message("alice", "k2"); ok || err != nil {
		t.Errorf("deleted k2: ok=%v err=%v", ok, err)
	}
	if _, ok, err := s.Message("bob", "k1"); ok || err != nil {
		t.Errorf("other account sees alice's k1: ok=%v err=%v", ok, err)
	}
	m, _ := s.Messages("alice")
	delete(m, "k1")
	if _, ok, _ := s.Message("alice", "k1"); !ok {
		t.Error("changing the map from Messages changed the store")
	}
}

func TestTombstones(t *testing.T) {
	s, dsn := openTemp(t)
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "a", Size: 1}, {Key: "b", Size: 2}}})
	if err := s.AddTombstones("alice", []string{"a", "gone", "a"}); err != nil {
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
	s = reopen(t, s, dsn)
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
	s = reopen(t, s, dsn)
	check(s, "a")
	if ok, _ := s.IsTombstoned("bob", "a"); ok {
		t.Error("bob sees alice's tombstone")
	}
}

func TestSyncState(t *testing.T) {
	s, dsn := openTemp(t)
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
			got.HistoryID != want.HistoryID || !slices.Equal(got.POP3UIDLs, want.POP3UIDLs) ||
			(got.POP3UIDLs == nil) != (want.POP3UIDLs == nil) {
			t.Errorf("SyncState = %+v, want %+v", got, want)
		}
	}
	check(s, want)
	want.POP3UIDLs[0] = "changed"
	check(s, SyncState{UIDValidity: 1<<32 - 1, HighestUID: 4242, HistoryID: 1<<64 - 1, POP3UIDLs: []string{"a", "", "ccc"}})
	s = reopen(t, s, dsn)
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
	// An empty listing stays empty, not absent.
	if err := s.PutSyncState("alice", SyncState{POP3UIDLs: []string{}}); err != nil {
		t.Fatal(err)
	}
	check(s, SyncState{POP3UIDLs: []string{}})
}

func TestCursor(t *testing.T) {
	s, dsn := openTemp(t)
	if v, err := s.Cursor("alice", "graph"); v != "" || err != nil {
		t.Fatalf("fresh Cursor = %q, %v", v, err)
	}
	link := "https://graph.microsoft.com/v1.0/me/mailFolders/inbox/messages/delta?$deltatoken=" + strings.Repeat("Zm9v", 300)
	if err := s.PutCursor("alice", "graph", link); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCursor("alice", "other", "x"); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dsn)
	if v, err := s.Cursor("alice", "graph"); v != link || err != nil {
		t.Errorf("Cursor = %.40q..., %v", v, err)
	}
	if v, _ := s.Cursor("bob", "graph"); v != "" {
		t.Errorf("bob sees alice's cursor %q", v)
	}
	if err := s.PutCursor("alice", "graph", ""); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Cursor("alice", "graph"); v != "" {
		t.Errorf("removed cursor = %q", v)
	}
	if v, _ := s.Cursor("alice", "other"); v != "x" {
		t.Errorf("removing one cursor touched another: %q", v)
	}
	if err := s.PutCursor("alice", "", "x"); err == nil {
		t.Error("PutCursor with an empty name succeeded")
	}
	// Forget takes cursors too.
	if err := s.Forget("alice"); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Cursor("alice", "other"); v != "" {
		t.Errorf("Forget left cursor %q", v)
	}
}

func TestApplyOrderAndAtomicity(t *testing.T) {
	s, dsn := openTemp(t)
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "x", Size: 1, UIDL: "old"}}, AddTombstones: []string{"t"}})
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
	s = reopen(t, s, dsn)
	check(s)

	// A change that fails in the database writes none of its parts.
	_, err := s.pool.Exec(t.Context(), "ALTER TABLE sync_state ADD CONSTRAINT small CHECK (highest_uid < 100)")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Apply("alice", Change{Put: []MessageRecord{{Key: "y", Size: 1}}, AddTombstones: []string{"u"}, Sync: &SyncState{HighestUID: 100}})
	if err == nil || !strings.HasPrefix(err.Error(), "pgstore: ") || IsTemporary(err) {
		t.Fatalf("failing change: %v", err)
	}
	if _, ok, _ := s.Message("alice", "y"); ok {
		t.Error("a failed change left its Put")
	}
	if ok, _ := s.IsTombstoned("alice", "u"); ok {
		t.Error("a failed change left its tombstone")
	}
}

func TestApplyRejectsBadInput(t *testing.T) {
	s, _ := openTemp(t)
	long := strings.Repeat("k", MaxKeySize+1)
	for name, tc := range map[string]struct {
		account string
		c       Change
	}{
		"empty account":     {"", Change{Put: []MessageRecord{{Key: "k"}}}},
		"empty key":         {"a", Change{Put: []MessageRecord{{Key: "ok"}, {Key: ""}}}},
		"negative size":     {"a", Change{Put: []MessageRecord{{Key: "k", Size: -1}}}},
		"long key":          {"a", Change{Put: []MessageRecord{{Key: long}}}},
		"long account":      {long, Change{Put: []MessageRecord{{Key: "k"}}}},
		"NUL account":       {"a\x00b", Change{Put: []MessageRecord{{Key: "k"}}}},
		"non-UTF-8 account": {"a\xff", Change{Put: []MessageRecord{{Key: "k"}}}},
		"empty delete":      {"a", Change{Delete: []string{""}}},
		"empty tombstone":   {"a", Change{AddTombstones: []string{"x", ""}}},
		"empty untombstone": {"a", Change{RemoveTombstones: []string{""}}},
	} {
		if err := s.Apply(tc.account, tc.c); err == nil || !strings.HasPrefix(err.Error(), "pgstore: ") || IsTemporary(err) {
			t.Errorf("%s: err = %v, want a pgstore: error", name, err)
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
	s, dsn := openTemp(t)
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
	s = reopen(t, s, dsn)
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
	s, _ := openTemp(t)
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "1", Size: 1, Stamp: "s"}}})
	mustApply(t, s, "bob", Change{AddTombstones: []string{"x"}})
	release, err := s.Hold("alice")
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Hold("alice")
	if err != nil {
		t.Fatal(err)
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
	release()
	if err := s.Forget("alice"); !errors.Is(err, cache.ErrInUse) {
		t.Fatalf("Forget with one hold left: %v, want cache.ErrInUse", err)
	}
	again()
	if err := s.Forget("alice"); err != nil {
		t.Fatalf("Forget after release: %v", err)
	}
	if _, err := s.Hold(""); err == nil {
		t.Error("Hold of the empty account succeeded")
	}
}

func TestSnapshotViews(t *testing.T) {
	s, _ := openTemp(t)
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
	if old.Len() != 2 || !old.Tombstoned("2") || len(old.Sync().POP3UIDLs) != 1 {
		t.Errorf("old snapshot changed: len %d, tombstoned %v, sync %+v", old.Len(), old.Tombstoned("2"), old.Sync())
	}
	cur, _ := s.Snapshot("a")
	if _, ok := cur.Message("1"); ok || cur.Len() != 1 || cur.Tombstoned("2") || cur.Sync().POP3UIDLs != nil {
		t.Errorf("new snapshot misses the change: len %d", cur.Len())
	}
}

// TestReplicasShareState runs writers of many accounts on three Stores
// of one database, as three replicas, and checks that every replica
// reads every other's writes at once: the same UIDLs and sizes.
func TestReplicasShareState(t *testing.T) {
	dsn := newDB(t)
	reps := []*Store{openDSN(t, dsn), openDSN(t, dsn), openDSN(t, dsn)}
	const accounts, workers, rounds = 6, 12, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := fmt.Sprintf("acct%d", w%accounts)
			for i := range rounds {
				key := fmt.Sprintf("w%d-%d", w, i)
				rec := MessageRecord{Key: key, Size: int64(1000*w + i), UIDL: "uidl-" + key}
				if err := reps[i%3].PutMessages(a, []MessageRecord{rec}); err != nil {
					errs <- err
					return
				}
				// Read it back from another replica.
				r, ok, err := reps[(i+1)%3].Message(a, key)
				if err != nil || !ok || r != rec {
					errs <- fmt.Errorf("%s: replica %d wrote %+v, replica %d reads %+v %v %v", a, i%3, rec, (i+1)%3, r, ok, err)
					return
				}
				if i%3 == 2 {
					if err := reps[(i+2)%3].AddTombstones(a, []string{key}); err != nil {
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
	total := 0
	for a := range accounts {
		name := fmt.Sprintf("acct%d", a)
		var snaps [3]*cache.Snapshot
		var msgs [3]map[string]MessageRecord
		var tombs [3]map[string]struct{}
		for i, r := range reps {
			var err error
			if snaps[i], err = r.Snapshot(name); err != nil {
				t.Fatal(err)
			}
			if msgs[i], err = r.Messages(name); err != nil {
				t.Fatal(err)
			}
			if tombs[i], err = r.Tombstones(name); err != nil {
				t.Fatal(err)
			}
		}
		for i := 1; i < 3; i++ {
			if !maps.Equal(msgs[0], msgs[i]) || !maps.Equal(tombs[0], tombs[i]) {
				t.Errorf("%s: replicas 0 and %d disagree", name, i)
			}
		}
		if n := snaps[0].Len(); n != workers/accounts*rounds {
			t.Errorf("%s: %d records, want %d", name, n, workers/accounts*rounds)
		}
		total += snaps[0].Len()
	}
	t.Logf("replicas: 3 stores on one database agree on %d records of %d accounts, each read back from another replica", total, accounts)
}

func TestClosedStoreFails(t *testing.T) {
	s, _ := openTemp(t)
	mustApply(t, s, "a", Change{Put: []MessageRecord{{Key: "1"}}})
	s.Close()
	if _, _, err := s.Message("a", "1"); err == nil {
		t.Error("read after Close succeeded")
	}
	if err := s.PutMessages("a", []MessageRecord{{Key: "2"}}); err == nil {
		t.Error("write after Close succeeded")
	}
}

// TestReadsDuringWrite holds a write transaction of one account open,
// with its lock, and checks that reads of that account and another do
// not wait for it and see the state before it.
func TestReadsDuringWrite(t *testing.T) {
	s, _ := openTemp(t)
	mustApply(t, s, "busy", Change{Put: []MessageRecord{{Key: "1", Size: 1}}})
	mustApply(t, s, "other", Change{Put: []MessageRecord{{Key: "2", Size: 2}}})
	tx, err := s.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(t.Context())
	if err := lockAccount(t.Context(), tx, "busy"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "DELETE FROM message WHERE account = 'busy'"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		if r, ok, err := s.Message("busy", "1"); err != nil || !ok || r.Size != 1 {
			done <- fmt.Errorf("read of the account being written: %+v %v %v", r, ok, err)
			return
		}
		if snap, err := s.Snapshot("other"); err != nil || snap.Len() != 1 {
			done <- fmt.Errorf("read of another account: %v", err)
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
		t.Error("reads waited for a write transaction")
	}
}

// TestHoldWaitsForForget: a Hold taken while a Forget runs waits for it.
func TestHoldWaitsForForget(t *testing.T) {
	s, _ := openTemp(t)
	mustApply(t, s, "carol", Change{AddTombstones: []string{"x"}})
	// Keep the Forget in progress: hold the account's lock elsewhere.
	tx, err := s.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := lockAccount(t.Context(), tx, "carol"); err != nil {
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
	case <-time.After(100 * time.Millisecond):
	}
	tx.Rollback(t.Context())
	if err := <-forgot; err != nil {
		t.Errorf("Forget: %v", err)
	}
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("Hold still waiting after the Forget finished")
	}
}
