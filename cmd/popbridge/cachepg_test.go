package main

import (
	"context"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/internal/pgtest"
)

// TestCacheCommandsPostgres: with state.driver postgres and no server
// running, cache stats and cache forget act on the database (every
// replica's state), not on a cache.db in state_dir; cache verify says
// plainly that there is no file to verify.
func TestCacheCommandsPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDB(t)
	t.Setenv("POPBRIDGE_TEST_CACHE_DSN", dsn)
	path := writeConfig(t, "state: {driver: postgres, dsn_env: POPBRIDGE_TEST_CACHE_DSN}\n")

	s, err := pgstore.Open(context.Background(), dsn, nil) // creates the schema
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Apply("alice", cache.Change{Put: []cache.MessageRecord{{Key: "a", Size: 100, UIDL: "ua"}, {Key: "b", Size: 23, UIDL: "ub"}}, AddTombstones: []string{"a"}}); err != nil {
		t.Fatal(err)
	}

	r := runCmd(t, "", "cache", "stats", "-config", path)
	if r.code != 0 {
		t.Fatalf("cache stats: exit %d, stderr %q", r.code, r.stderr)
	}
	var alice string
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "alice ") {
			alice = strings.Join(strings.Fields(l)[:4], " ")
		}
	}
	if alice != "alice 2 1 123" || !strings.Contains(r.stdout, "From the PostgreSQL database") {
		t.Fatalf("cache stats: alice line %q in\n%s", alice, r.stdout)
	}
	if strings.Contains(r.stdout+r.stderr, dsn) {
		t.Fatal("cache stats printed the DSN")
	}

	if r := runCmd(t, "", "cache", "forget", "-config", path, "alice"); r.code != 0 || !strings.Contains(r.stdout, "PostgreSQL") {
		t.Fatalf("cache forget: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if msgs, err := s.Messages("alice"); err != nil || len(msgs) != 0 {
		t.Fatalf("after forget: %d records in the database (%v), want 0", len(msgs), err)
	}
	if r := runCmd(t, "", "cache", "forget", "-config", path, "alice"); r.code != 1 || !strings.Contains(r.stderr, "no data for account") {
		t.Fatalf("second forget: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := runCmd(t, "", "cache", "verify", "-config", path); r.code != 1 || !strings.Contains(r.stderr, "driver postgres") {
		t.Fatalf("cache verify: exit %d, stderr %q", r.code, r.stderr)
	}
}
