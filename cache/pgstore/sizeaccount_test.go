package pgstore

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/cache"
)

// TestSizePerAccount measures what the database spends per account, for
// the sizing part of docs/scale.md: POPBRIDGE_PG_SIZE_ACCOUNTS accounts
// (default 1000) of POPBRIDGE_PG_SIZE_MESSAGES message records (default
// 500, Gmail-like ids) with a tombstone for one in ten, a sync state and
// a sealed OAuth2 token each. Opt-in: POPBRIDGE_PG_SIZE=1.
func TestSizePerAccount(t *testing.T) {
	if os.Getenv("POPBRIDGE_PG_SIZE") == "" {
		t.Skip("set POPBRIDGE_PG_SIZE=1 to measure")
	}
	accounts, msgs := envInt(t, "POPBRIDGE_PG_SIZE_ACCOUNTS", 1000), envInt(t, "POPBRIDGE_PG_SIZE_MESSAGES", 500)
	s, _ := openTemp(t)
	key := new([32]byte)
	key[0] = 1
	tokens := &Tokens{Store: s, Key: key}
	ctx := t.Context()
	var dbBefore int64
	if err := s.pool.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&dbBefore); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for a := range accounts {
		name := fmt.Sprintf("user%05d@example.com", a)
		c := cache.Change{Sync: &cache.SyncState{HistoryID: 1234567 + uint64(a)}}
		for m := range msgs {
			id := fmt.Sprintf("18c%013x", a*msgs+m) // a Gmail message id
			c.Put = append(c.Put, cache.MessageRecord{Key: id, Size: 40000 + int64(m), UIDL: id})
			if m%10 == 0 {
				c.AddTombstones = append(c.AddTombstones, id)
			}
		}
		if err := s.Apply(name, c); err != nil {
			t.Fatal(err)
		}
		tok := &oauth2.Token{AccessToken: fmt.Sprintf("ya29.%0160d", a), RefreshToken: fmt.Sprintf("1//%0100d", a),
			TokenType: "Bearer", Expiry: time.Now().Add(time.Hour)}
		if err := tokens.Save(name, tok); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	if _, err := s.pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, table := range []string{"account", "message", "tombstone", "sync_state", "oauth_token"} {
		var size, rows int64
		err := s.pool.QueryRow(ctx, "SELECT pg_total_relation_size($1::regclass), (SELECT count(*) FROM "+table+")", table).Scan(&size, &rows)
		if err != nil {
			t.Fatal(err)
		}
		total += size
		t.Logf("sizing: %-11s %9d rows %11d bytes: %7.1f rows, %8.0f bytes per account", table, rows, size,
			float64(rows)/float64(accounts), float64(size)/float64(accounts))
	}
	var dbAfter int64
	if err := s.pool.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&dbAfter); err != nil {
		t.Fatal(err)
	}
	t.Logf("sizing: %d accounts of %d records: tables %d bytes (%d per account, indexes and TOAST included), database grew %d bytes (%d per account); written in %s",
		accounts, msgs, total, total/int64(accounts), dbAfter-dbBefore, (dbAfter-dbBefore)/int64(accounts), took.Round(time.Millisecond))
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
