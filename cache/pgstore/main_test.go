package pgstore

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/popbridge/popbridge/internal/pgtest"
)

// pg is the package's PostgreSQL; every test gets a database of its own.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	var err error
	pg, err = pgtest.ForPackage()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if pg != nil {
		pg.Close()
	}
	os.Exit(code)
}

// newDB returns the DSN of a fresh database.
func newDB(t testing.TB) string {
	t.Helper()
	if pg == nil {
		t.Skip(pgtest.ErrNotInstalled)
	}
	return pg.CreateDB(t)
}

// openDSN opens a Store on dsn, closed when the test ends: one replica.
func openDSN(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openTemp opens a Store on a fresh database.
func openTemp(t testing.TB) (*Store, string) {
	t.Helper()
	dsn := newDB(t)
	return openDSN(t, dsn), dsn
}

// reopen closes s and opens its database again, as a restarted replica.
func reopen(t testing.TB, s *Store, dsn string) *Store {
	t.Helper()
	s.Close()
	return openDSN(t, dsn)
}
