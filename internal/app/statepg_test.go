package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/demomail"
	"github.com/popbridge/popbridge/internal/pgtest"
)

// pgReplica is one popbridge built on a PostgreSQL state, serving.
type pgReplica struct {
	app *App
	log *syncBuffer
	cfg *config.Config
}

// pgConfig writes a configuration of alice (on_delete: keep) on the
// Maildir mail, with its state in PostgreSQL at the DSN in the
// environment variable env, and its own state_dir; extra is appended.
func pgConfig(t *testing.T, mail, env, extra string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
listen:
  pop3: 127.0.0.1:0
log: {level: debug, format: json}
state_dir: state
state:
  driver: postgres
  dsn_env: %s
  lease_ttl: 3s
accounts:
  - user: alice
    password_hash: %q
    backend: {type: maildir, path: %s, on_delete: keep}
%s`, env, testHash(t), mail, extra)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startReplica builds and serves the configuration at path until the
// test ends.
func startReplica(t *testing.T, path string) *pgReplica {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.HTTP = "127.0.0.1:0"
	buf := &syncBuffer{}
	log := zerolog.New(buf)
	a, err := Build(cfg, &log, Options{ConfigPath: path})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		a.Close()
	})
	return &pgReplica{app: a, log: buf, cfg: cfg}
}

// pgMaildir makes a Maildir with the demo messages for replicas to share.
func pgMaildir(t *testing.T) string {
	t.Helper()
	mail := filepath.Join(t.TempDir(), "alice")
	if _, err := demomail.Ensure(mail, time.Now()); err != nil {
		t.Fatal(err)
	}
	return mail
}

// pgEnv puts dsn into a fresh environment variable for the test.
func pgEnv(t *testing.T, dsn string) string {
	t.Helper()
	env := "POPBRIDGE_TEST_DSN_" + strings.ToUpper(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name()))
	t.Setenv(env, dsn)
	return env
}

// TestPostgresStateShared serves one Maildir account from two replicas on
// one database: a message deleted (kept upstream: a tombstone) through
// the first is gone from the second, with the same UIDLs and sizes.
func TestPostgresStateShared(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDB(t)
	env := pgEnv(t, dsn)
	mail := pgMaildir(t)
	r1 := startReplica(t, pgConfig(t, mail, env, ""))
	r2 := startReplica(t, pgConfig(t, mail, env, ""))

	p := dialPOP3(t, r1.app.Addr("pop3").String())
	p.cmd("USER alice")
	if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS on replica 1: %q", s)
	}
	uidl1 := p.multi("UIDL")
	list1 := p.multi("LIST")
	first := strings.Fields(strings.SplitN(uidl1, "\n", 2)[0])[1]
	if s := p.cmd("DELE 1"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("DELE: %q", s)
	}
	if s := p.cmd("QUIT"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("QUIT: %q", s)
	}

	q := dialPOP3(t, r2.app.Addr("pop3").String())
	q.cmd("USER alice")
	if s := q.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS on replica 2: %q", s)
	}
	uidl2 := q.multi("UIDL")
	list2 := q.multi("LIST")
	q.cmd("QUIT")
	if strings.Contains(uidl2, " "+first+"\n") {
		t.Errorf("replica 2 still lists %s, deleted through replica 1:\n%s", first, uidl2)
	}
	// The same messages but the first, renumbered.
	if want := renumber(t, uidl1); uidl2 != want {
		t.Errorf("UIDL on replica 2:\n%s\nwant\n%s", uidl2, want)
	}
	if want := renumber(t, list1); list2 != want {
		t.Errorf("LIST on replica 2:\n%s\nwant\n%s", list2, want)
	}
	st, err := pgstore.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if tombs, err := st.Tombstones("alice"); err != nil || len(tombs) != 1 {
		t.Errorf("tombstones in PostgreSQL: %v, %v; want 1", tombs, err)
	}
	if _, err := os.Stat(filepath.Join(r1.cfg.StateDir, StoreFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists under driver postgres (%v)", StoreFile, err)
	}
}

// renumber drops the first line of a UIDL or LIST listing and numbers the
// rest from 1.
func renumber(t *testing.T, listing string) string {
	t.Helper()
	var b strings.Builder
	lines := strings.Split(strings.TrimSuffix(listing, "\n"), "\n")
	for i, l := range lines[1:] {
		f := strings.Fields(l)
		fmt.Fprintf(&b, "%d %s\n", i+1, f[1])
	}
	return b.String()
}

// TestPostgresStateStart checks the refusals at start: a database whose
// schema is newer than the binary's, and a PostgreSQL that does not
// answer (after pgStartWait), each with a plain message and no DSN
// password in it.
func TestPostgresStateStart(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDB(t)
	st, err := pgstore.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(context.Background(), "INSERT INTO schema_version VALUES (999)"); err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	mail := pgMaildir(t)
	cfg := must(config.Load(pgConfig(t, mail, pgEnv(t, dsn), "")))
	log := zerolog.Nop()
	_, err = Build(cfg, &log, Options{})
	if !errors.Is(err, pgstore.ErrSchemaNewer) || !strings.Contains(err.Error(), "upgrade popbridge") {
		t.Errorf("Build on a newer schema: %v", err)
	}

	old := pgStartWait
	pgStartWait = time.Second
	t.Cleanup(func() { pgStartWait = old })
	down := fmt.Sprintf("postgres://popbridge:TopSecret@127.0.0.1:%d/x?sslmode=disable", srv.Port+1)
	cfg = must(config.Load(pgConfig(t, mail, pgEnv(t, down), "")))
	start := time.Now()
	_, err = Build(cfg, &log, Options{})
	if !pgstore.IsTemporary(err) || !strings.Contains(err.Error(), "PostgreSQL is unreachable") {
		t.Errorf("Build without PostgreSQL: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "TopSecret") {
		t.Errorf("the error shows the DSN's password: %v", err)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("Build gave up after %v, before pgStartWait", d)
	}
}

// TestPostgresOutage stops PostgreSQL under a serving replica: /readyz
// answers 503, a new login gets -ERR [SYS/TEMP], a session in progress
// cannot commit its deletes (nothing is hidden or removed); when the
// database is back the replica is ready again by itself and serves every
// message.
func TestPostgresOutage(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDB(t)
	r := startReplica(t, pgConfig(t, pgMaildir(t), pgEnv(t, dsn), ""))
	base := "http://" + r.app.Addr("http").String()
	addr := r.app.Addr("pop3").String()
	waitReady := func(want int) {
		t.Helper()
		waitFor(t, fmt.Sprintf("/readyz to answer %d", want), func() string {
			if code, _ := httpGet(t, base+"/readyz", ""); code == want {
				return "yes"
			}
			return ""
		})
	}
	waitReady(200)

	p := dialPOP3(t, addr)
	p.cmd("USER alice")
	if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS: %q", s)
	}
	all := p.multi("UIDL")
	if s := p.cmd("DELE 1"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("DELE: %q", s)
	}

	srv.Shutdown()
	waitReady(503)
	if s := p.cmd("QUIT"); !strings.HasPrefix(s, "-ERR [SYS/TEMP]") {
		t.Errorf("QUIT while PostgreSQL is down: %q, want -ERR [SYS/TEMP]", s)
	}
	q := dialPOP3(t, addr)
	q.cmd("USER alice")
	if s := q.cmd("PASS s3cret"); !strings.HasPrefix(s, "-ERR [SYS/TEMP]") {
		t.Errorf("login while PostgreSQL is down: %q, want -ERR [SYS/TEMP]", s)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitReady(200)
	// The first session's lease could not be released while PostgreSQL
	// was down: the maildrop is IN-USE until it expires (lease_ttl).
	waitFor(t, "a login after the restart", func() string {
		p = dialPOP3(t, addr)
		p.cmd("USER alice")
		s := p.cmd("PASS s3cret")
		if strings.HasPrefix(s, "-ERR [IN-USE]") {
			p.c.Close()
			return ""
		}
		if !strings.HasPrefix(s, "+OK") {
			t.Fatalf("PASS after the restart: %q", s)
		}
		return s
	})
	if got := p.multi("UIDL"); got != all {
		t.Errorf("after the outage UIDL is\n%s\nwant every message, as before:\n%s", got, all)
	}
	p.cmd("QUIT")
}
