package pgtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func query(t *testing.T, dsn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var s string
	if err := c.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestServer starts a server, makes two databases, reaches them over
// TCP and the Unix socket, restarts the server with its data, and checks
// that Close removes everything.
func TestServer(t *testing.T) {
	s := Start(t)
	a, b := s.CreateDB(t), s.CreateDB(t)
	if a == b {
		t.Fatalf("two CreateDB gave the same DSN %s", a)
	}
	if v := query(t, a, "SHOW server_version"); v == "" {
		t.Error("no server_version")
	}
	if u := query(t, s.SocketDSN("postgres"), "SELECT current_user"); u != "postgres" {
		t.Errorf("current_user over the socket = %q", u)
	}
	ctx := context.Background()
	c, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE x (v text); INSERT INTO x VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("a query succeeded on a connection to a stopped server")
	}
	c.Close(ctx)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if v := query(t, a, "SELECT v FROM x"); v != "kept" {
		t.Errorf("after Restart: %q, want the row written before", v)
	}
	s.Close()
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s: %v", s.Dir, err)
	}
}
