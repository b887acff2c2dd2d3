package pgstore

import (
	"fmt"
	"maps"
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

// TestApplyAtomicity: a change that fails in the database writes none of
// its parts (the order of a change's parts is in the contract).
func TestApplyAtomicity(t *testing.T) {
	s, _ := openTemp(t)
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "x", Size: 1}}})
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
