package pgstore

import (
	"fmt"
	"os"
	"testing"
)

// TestSizePerMessage measures what the database spends per message
// record and tombstone, indexes included, for docs/scale.md. Opt-in:
// POPBRIDGE_PG_SIZE=1.
func TestSizePerMessage(t *testing.T) {
	if os.Getenv("POPBRIDGE_PG_SIZE") == "" {
		t.Skip("set POPBRIDGE_PG_SIZE=1 to measure")
	}
	s, _ := openTemp(t)
	const accounts, msgs = 100, 1000
	for a := range accounts {
		name := fmt.Sprintf("user%04d@example.com", a)
		c := Change{Sync: &SyncState{HistoryID: 123456789}}
		for m := range msgs {
			id := fmt.Sprintf("18c%013x", a*msgs+m) // a Gmail message id
			c.Put = append(c.Put, MessageRecord{Key: id, Size: 40000 + int64(m), UIDL: id})
			if m%4 == 0 {
				c.AddTombstones = append(c.AddTombstones, id)
			}
		}
		mustApply(t, s, name, c)
	}
	if _, err := s.pool.Exec(t.Context(), "VACUUM ANALYZE"); err != nil {
		t.Fatal(err)
	}
	size := func(table string) int64 {
		var n int64
		if err := s.pool.QueryRow(t.Context(), "SELECT pg_total_relation_size($1)", table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	m, tb := size("message"), size("tombstone")
	t.Logf("replicas: database size: %d bytes per message record, %d per tombstone (indexes included; %d accounts of %d messages, Gmail-like ids)",
		m/(accounts*msgs), tb/(accounts*msgs/4), accounts, msgs)
}
