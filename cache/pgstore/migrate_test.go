package pgstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"
)

func schemaVersion(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var v int
	if err := pool.QueryRow(t.Context(), "SELECT max(version) FROM schema_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrateFresh(t *testing.T) {
	s, _ := openTemp(t)
	if v := schemaVersion(t, s.pool); v != SchemaVersion || SchemaVersion < 1 {
		t.Errorf("schema version %d, want %d", v, SchemaVersion)
	}
	for _, table := range []string{"account", "message", "tombstone", "sync_state", "sync_cursor", "maildrop_lease", "oauth_token"} {
		var ok bool
		if err := s.pool.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s missing (%v)", table, err)
		}
	}
	var rows int
	s.pool.QueryRow(t.Context(), "SELECT count(*) FROM schema_version").Scan(&rows)
	if rows != 1 {
		t.Errorf("schema_version has %d rows, want 1", rows)
	}
}

// TestMigrateConcurrentAndIdempotent starts four replicas on an empty
// database at once, then again: one migration, no error.
func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	dsn := newDB(t)
	for round := range 2 {
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := Open(context.Background(), dsn, nil)
				if err == nil {
					s.Close()
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d, replica %d: %v", round, i, err)
			}
		}
	}
	s := openDSN(t, dsn)
	if v := schemaVersion(t, s.pool); v != SchemaVersion {
		t.Errorf("schema version %d, want %d", v, SchemaVersion)
	}
	mustApply(t, s, "a", Change{Put: []MessageRecord{{Key: "k", Size: 1}}})
	// Migrating a database in use changes nothing.
	if err := Migrate(t.Context(), s.pool); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Message("a", "k"); !ok {
		t.Error("a second Migrate lost data")
	}
}

func TestMigrateNewerRefused(t *testing.T) {
	s, dsn := openTemp(t)
	mustApply(t, s, "a", Change{Put: []MessageRecord{{Key: "k", Size: 1}}})
	if _, err := s.pool.Exec(t.Context(), "UPDATE schema_version SET version = $1", SchemaVersion+5); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), dsn, nil)
	if !errors.Is(err, ErrSchemaNewer) || IsTemporary(err) {
		t.Fatalf("Open of a newer schema: %v, want ErrSchemaNewer", err)
	}
	for _, want := range []string{"schema version 6", "up to 1", "upgrade popbridge"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if v := schemaVersion(t, s.pool); v != SchemaVersion+5 {
		t.Errorf("refusal changed the version to %d", v)
	}
	if _, err := Open(context.Background(), dsn, &Options{NoMigrate: true}); err == nil {
		t.Error("Open without migrating accepted a newer schema")
	}
}

// TestMigrateSteps applies numbered files one release at a time, and
// checks that a file is applied once and whole.
func TestMigrateSteps(t *testing.T) {
	dsn := newDB(t)
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	v1 := fstest.MapFS{"migrations/001_a.sql": {Data: []byte("CREATE TABLE a (x int); INSERT INTO a VALUES (1);")}}
	v2 := fstest.MapFS{
		"migrations/001_a.sql": v1["migrations/001_a.sql"],
		"migrations/002_b.sql": {Data: []byte("ALTER TABLE a ADD COLUMN y int DEFAULT 2; CREATE TABLE b (z int);")},
	}
	bad := fstest.MapFS{
		"migrations/001_a.sql": v1["migrations/001_a.sql"],
		"migrations/002_b.sql": v2["migrations/002_b.sql"],
		"migrations/003_c.sql": {Data: []byte("CREATE TABLE c (z int); SELECT nonsense_function();")},
	}
	for _, fs := range []fstest.MapFS{v1, v1, v2, v2} {
		if err := migrate(t.Context(), pool, fs); err != nil {
			t.Fatal(err)
		}
	}
	var n, y int
	if err := pool.QueryRow(t.Context(), "SELECT count(*), max(y) FROM a").Scan(&n, &y); err != nil || n != 1 || y != 2 {
		t.Errorf("a: %d rows, y=%d, %v; want migration 1 applied once, then 2", n, y, err)
	}
	if err := migrate(t.Context(), pool, bad); err == nil || !strings.Contains(err.Error(), "003_c.sql") {
		t.Errorf("failing migration: %v, want its name", err)
	}
	if v := schemaVersion(t, pool); v != 2 {
		t.Errorf("after a failing migration version %d, want 2", v)
	}
	var exists bool
	pool.QueryRow(t.Context(), "SELECT to_regclass('c') IS NOT NULL").Scan(&exists)
	if exists {
		t.Error("a failing migration left part of its work")
	}
	gap := fstest.MapFS{"migrations/001_a.sql": v1["migrations/001_a.sql"], "migrations/003_c.sql": bad["migrations/003_c.sql"]}
	if err := migrate(t.Context(), pool, gap); err == nil {
		t.Error("migrations with a gap in their numbers were accepted")
	}
}
