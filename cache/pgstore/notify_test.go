package pgstore

import (
	"context"
	"errors"
	"testing"
	"time"
)

// next returns the next invalidation, failing the test after 10 s,
// with its Origin checked and cleared (see TestNotifyOrigin).
func next(t *testing.T, sub *Subscriber) Invalidation {
	t.Helper()
	inv := nextOrigin(t, sub)
	if !inv.All && inv.Origin == "" {
		t.Errorf("%+v: no Origin", inv)
	}
	inv.Origin = ""
	return inv
}

// nextOrigin returns the next invalidation, failing the test after 10 s.
func nextOrigin(t *testing.T, sub *Subscriber) Invalidation {
	t.Helper()
	select {
	case inv, ok := <-sub.C():
		if !ok {
			t.Fatal("subscriber closed")
		}
		return inv
	case <-time.After(10 * time.Second):
		t.Fatal("no invalidation within 10 s")
	}
	return Invalidation{}
}

func subscribe(t *testing.T, dsn string) *Subscriber {
	t.Helper()
	sub, err := Subscribe(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	if inv := next(t, sub); !inv.All {
		t.Fatalf("first invalidation %+v, want All", inv)
	}
	return sub
}

// TestNotifyAcrossConnections: a change made by one replica reaches the
// listener of another, after commit only; a rolled back change is never
// announced.
func TestNotifyAcrossConnections(t *testing.T) {
	dsn := newDB(t)
	writer := openDSN(t, dsn)
	sub := subscribe(t, dsn)
	if !sub.Connected() {
		t.Error("Connected false after the first All")
	}
	mustApply(t, writer, "alice", Change{Put: []MessageRecord{{Key: "1", Size: 1}}})
	if inv := next(t, sub); inv != (Invalidation{Kind: "state", Account: "alice"}) {
		t.Errorf("got %+v, want a state change of alice", inv)
	}
	// A rolled back fenced write says nothing; the lease says "lease".
	l, err := writer.Acquire(context.Background(), "bob", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if inv := next(t, sub); inv != (Invalidation{Kind: "lease", Account: "bob"}) {
		t.Errorf("got %+v, want the lease of bob", inv)
	}
	writer.Fenced(context.Background(), l, func(w *Writer) error {
		w.Apply(Change{AddTombstones: []string{"x"}})
		return errors.New("abort")
	})
	if err := writer.PutCursor("carol", "graph", "link"); err != nil {
		t.Fatal(err)
	}
	if inv := next(t, sub); inv != (Invalidation{Kind: "state", Account: "carol"}) {
		t.Errorf("got %+v, want carol's cursor (and nothing of the rolled back write)", inv)
	}
	tokens := &Tokens{Store: writer}
	if _, err := tokens.CompareAndSwap(t.Context(), "dave", 0, nil); err == nil {
		t.Error("CompareAndSwap of a nil token succeeded")
	}
	if err := tokens.Save("dave", tokenFor("rt")); err != nil {
		t.Fatal(err)
	}
	if inv := next(t, sub); inv != (Invalidation{Kind: "token", Account: "dave"}) {
		t.Errorf("got %+v, want dave's token", inv)
	}
	t.Log("replicas: changes by one replica reach another's listener after commit; rolled back ones never")
}

// TestNotifyAfterReconnect: the listener's connection is killed; the
// subscriber reconnects by itself, says All, and hears later changes.
func TestNotifyAfterReconnect(t *testing.T) {
	dsn := newDB(t)
	writer := openDSN(t, dsn)
	sub := subscribe(t, dsn)
	tag, err := writer.pool.Exec(t.Context(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()", ListenerName)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("terminate the listener: %v, %d rows", err, tag.RowsAffected())
	}
	if inv := next(t, sub); !inv.All {
		t.Fatalf("after the connection was killed: %+v, want All", inv)
	}
	if err := sub.Err(); !IsTemporary(err) {
		t.Errorf("Err after the kill = %v, want a temporary error", err)
	}
	mustApply(t, writer, "alice", Change{AddTombstones: []string{"x"}})
	if inv := next(t, sub); inv != (Invalidation{Kind: "state", Account: "alice"}) {
		t.Errorf("after reconnecting: %+v, want alice", inv)
	}
	sub.Close()
	if _, ok := <-sub.C(); ok {
		t.Error("C still open after Close")
	}
	t.Log("replicas: the listener reconnected by itself after its connection was killed, and invalidated everything")
}

// TestNotifyOrigin: an invalidation names the Store that made the
// change, so that a replica can tell its own changes from others'.
func TestNotifyOrigin(t *testing.T) {
	dsn := newDB(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	if a.Origin() == "" || a.Origin() == b.Origin() {
		t.Fatalf("origins %q and %q, want two different ones", a.Origin(), b.Origin())
	}
	sub := subscribe(t, dsn)
	mustApply(t, a, "alice", Change{AddTombstones: []string{"x"}})
	if inv := nextOrigin(t, sub); inv != (Invalidation{Kind: "state", Account: "alice", Origin: a.Origin()}) {
		t.Errorf("got %+v, want alice's change from %s", inv, a.Origin())
	}
	if err := (&Tokens{Store: b}).Save("a:b/c", tokenFor("rt")); err != nil {
		t.Fatal(err)
	}
	if inv := nextOrigin(t, sub); inv != (Invalidation{Kind: "token", Account: "a:b/c", Origin: b.Origin()}) {
		t.Errorf("got %+v, want the token of a:b/c from %s", inv, b.Origin())
	}
}
