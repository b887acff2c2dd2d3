package app

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/pgtest"
)

// TestPostgresLockAcrossReplicas: under state.driver postgres the
// maildrop lock is a lease of state.lease_ttl in the database, so a
// second session on another replica gets IN-USE; QUIT frees it at once.
func TestPostgresLockAcrossReplicas(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDB(t)
	env := pgEnv(t, dsn)
	mail := pgMaildir(t)
	r1 := startReplica(t, pgConfig(t, mail, env, "")) // lease_ttl: 3s
	r2 := startReplica(t, pgConfig(t, mail, env, ""))

	p := dialPOP3(t, r1.app.Addr("pop3").String())
	p.cmd("USER alice")
	if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS on replica 1: %q", s)
	}
	c, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var left float64
	if err := c.QueryRow(t.Context(), "SELECT extract(epoch FROM expires_at - clock_timestamp())::float8 FROM maildrop_lease WHERE account = 'alice'").Scan(&left); err != nil {
		t.Fatalf("alice's lease: %v", err)
	}
	if left <= 1 || left > 3 {
		t.Errorf("alice's lease ends in %.1fs, want up to lease_ttl (3s)", left)
	}

	q := dialPOP3(t, r2.app.Addr("pop3").String())
	q.cmd("USER alice")
	if s := q.cmd("PASS s3cret"); s != "-ERR [IN-USE] Mailbox is locked by another POP3 session." {
		t.Fatalf("PASS on replica 2 while replica 1 holds alice: %q", s)
	}
	if s := p.cmd("QUIT"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("QUIT: %q", s)
	}
	q.cmd("USER alice")
	if s := q.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS on replica 2 after the QUIT on replica 1: %q", s)
	}
	q.cmd("QUIT")
}

// TestBboltKeepsLocalLock: under bbolt the server keeps the in-process
// maildrop lock.
func TestBboltKeepsLocalLock(t *testing.T) {
	cfg, err := config.Load(writeConfig(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	st, err := openStateConfig(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.Nop()
	defer st.close(log)
	srv, err := newServer(cfg, &log, st)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Locker != nil {
		t.Errorf("Locker = %T under bbolt, want nil (in-process)", srv.Locker)
	}
}
