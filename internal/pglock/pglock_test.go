package pglock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/internal/memback"
	"github.com/popbridge/popbridge/internal/pgtest"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/proxy"
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

func newDB(t *testing.T) string {
	t.Helper()
	if pg == nil {
		t.Skip(pgtest.ErrNotInstalled)
	}
	return pg.CreateDB(t)
}

var passwords = map[string]string{"alice": "secret", "bob": "secret"}

// newUpstream returns the maildrops every replica serves: alice has
// three messages.
func newUpstream(commit bool) *memback.Backend {
	b := memback.New()
	b.Commit = commit
	b.Set("alice",
		memback.Message{UID: "uid-1", Body: "Subject: one\r\n\r\n1\r\n"},
		memback.Message{UID: "uid-2", Body: "Subject: two\r\n\r\n2\r\n"},
		memback.Message{UID: "uid-3", Body: "Subject: three\r\n\r\n3\r\n"})
	return b
}

// replica is one popbridge's POP3 server on the shared database.
type replica struct {
	addr   string
	store  *pgstore.Store
	locker *Locker
	srv    *proxy.Server
}

// startReplica serves b on a loopback port with a Locker on its own
// Store of dsn, as another process would.
func startReplica(t *testing.T, dsn string, ttl time.Duration, b *memback.Backend, keepAlive bool, opts ...func(*proxy.Server)) *replica {
	t.Helper()
	st, err := pgstore.Open(context.Background(), dsn, &pgstore.Options{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lk := New(st, ttl)
	lk.noKeepAlive = !keepAlive
	srv := &proxy.Server{Backend: memback.AuthForTest(b, passwords), Locker: lk, AuthFailureDelay: -1}
	for _, o := range opts {
		o(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
		st.Close()
	})
	return &replica{addr: ln.Addr().String(), store: st, locker: lk, srv: srv}
}

func dial(t *testing.T, r *replica) *pop3test.Client {
	t.Helper()
	c, err := pop3test.Dial(r.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 15 * time.Second
	t.Cleanup(func() { c.Close() })
	return c
}

// login logs user in and returns the PASS reply.
func login(t *testing.T, c *pop3test.Client, user string) string {
	t.Helper()
	if _, err := c.Cmd("USER " + user); err != nil {
		t.Fatal(err)
	}
	reply, err := c.Cmd("PASS " + passwords[user])
	var re *pop3test.ResponseError
	if err != nil && !errors.As(err, &re) {
		t.Fatal(err)
	}
	return reply
}

func mustLogin(t *testing.T, c *pop3test.Client, user string) {
	t.Helper()
	if reply := login(t, c, user); reply != "+OK Logged in." {
		t.Fatalf("login %s: %q", user, reply)
	}
}

func cmd(t *testing.T, c *pop3test.Client, line, want string) {
	t.Helper()
	got, err := c.Cmd(line)
	var re *pop3test.ResponseError
	if err != nil && !errors.As(err, &re) {
		t.Fatalf("%s: %v", line, err)
	}
	if !strings.HasPrefix(got, want) {
		t.Fatalf("%s: %q, want %q...", line, got, want)
	}
}

// leases returns the account's lease rows in dsn.
func leases(t *testing.T, dsn, account string) int {
	t.Helper()
	c, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(t.Context(), "SELECT count(*) FROM maildrop_lease WHERE account = $1", account).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func exec(t *testing.T, dsn, sql string) {
	t.Helper()
	c, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(t.Context(), sql); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const inUse = "-ERR [IN-USE] Mailbox is locked by another POP3 session."

// TestInUseAcrossReplicas: a maildrop locked on one server is IN-USE on
// the other; QUIT releases the lease before its reply, so the other
// server lets the client in at once.
func TestInUseAcrossReplicas(t *testing.T) {
	dsn := newDB(t)
	b := newUpstream(false)
	r0 := startReplica(t, dsn, time.Minute, b, true)
	r1 := startReplica(t, dsn, time.Minute, b, true)

	a := dial(t, r0)
	mustLogin(t, a, "alice")
	for _, r := range []*replica{r1, r0} {
		if got := login(t, dial(t, r), "alice"); got != inUse {
			t.Errorf("second session on %s: %q, want IN-USE", r.addr, got)
		}
	}
	other := dial(t, r1)
	mustLogin(t, other, "bob") // another maildrop is not affected
	cmd(t, a, "DELE 1", "+OK")
	cmd(t, a, "QUIT", "+OK Logging out, 1 messages deleted.")
	if n := leases(t, dsn, "alice"); n != 0 {
		t.Errorf("%d leases of alice after QUIT, want 0", n)
	}
	c := dial(t, r1)
	mustLogin(t, c, "alice")
	cmd(t, c, "STAT", "+OK 2 ")
	cmd(t, c, "QUIT", "+OK")
	if d := b.Stats().Deleted; fmt.Sprint(d) != "[uid-1]" {
		t.Errorf("deleted %v, want [uid-1]", d)
	}
	t.Log("replicas: IN-USE across two servers on one PostgreSQL; QUIT releases the lease before +OK")
}

// TestTakenOverLeaseQuitDeletesNothing: a replica that stalled past its
// lease (no renewals, as in a pause) cannot apply its QUIT, whether
// another session took the maildrop over meanwhile or not; the new
// holder's QUIT works.
func TestTakenOverLeaseQuitDeletesNothing(t *testing.T) {
	for _, commit := range []bool{false, true} {
		for _, takeover := range []bool{true, false} {
			t.Run(fmt.Sprintf("commit=%v/takeover=%v", commit, takeover), func(t *testing.T) {
				testStalledQuit(t, commit, takeover)
			})
		}
	}
}

func testStalledQuit(t *testing.T, commit, takeover bool) {
	dsn := newDB(t)
	b := newUpstream(commit)
	const ttl = time.Second
	stalled := startReplica(t, dsn, ttl, b, false) // renews nothing
	r1 := startReplica(t, dsn, ttl, b, true)

	a := dial(t, stalled)
	mustLogin(t, a, "alice")
	cmd(t, a, "DELE 1", "+OK")
	cmd(t, a, "DELE 2", "+OK")
	if got := login(t, dial(t, r1), "alice"); got != inUse {
		t.Fatalf("within the lease: %q, want IN-USE", got)
	}
	time.Sleep(ttl + 300*time.Millisecond) // the lease expires
	var c *pop3test.Client
	if takeover {
		c = dial(t, r1)
		mustLogin(t, c, "alice")
		cmd(t, c, "DELE 3", "+OK")
	}
	cmd(t, a, "QUIT", "-ERR [SYS/TEMP] Could not confirm the lock on the mailbox; no messages were deleted.")
	st := b.Stats()
	if len(st.Deleted) != 0 || len(st.Commits) != 0 || st.Calls[memback.OpDelete]+st.Calls[memback.OpCommit] != 0 {
		t.Fatalf("the stalled session's QUIT reached upstream: deleted %v, commits %v", st.Deleted, st.Commits)
	}
	if takeover {
		cmd(t, c, "QUIT", "+OK Logging out, 1 messages deleted.")
		st = b.Stats()
		if commit {
			if len(st.Commits) != 1 || fmt.Sprint(st.Commits[0].Deleted) != "[uid-3]" {
				t.Errorf("commits %v, want the new holder's [uid-3] only", st.Commits)
			}
		} else if fmt.Sprint(st.Deleted) != "[uid-3]" {
			t.Errorf("deleted %v, want the new holder's [uid-3] only", st.Deleted)
		}
	}
	if n, want := len(b.Messages("alice")), 3-btoi(takeover); n != want {
		t.Errorf("alice has %d messages, want %d", n, want)
	}
	t.Log("replicas: a session whose lease expired (taken over or not) cannot commit its QUIT; nothing reached upstream")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestLostLeaseEndsSession: when a renewal finds the lease taken over,
// the session ends at once without deleting anything.
func TestLostLeaseEndsSession(t *testing.T) {
	dsn := newDB(t)
	b := newUpstream(false)
	const ttl = 900 * time.Millisecond
	r0 := startReplica(t, dsn, ttl, b, true)
	a := dial(t, r0)
	mustLogin(t, a, "alice")
	cmd(t, a, "DELE 1", "+OK")
	exec(t, dsn, "UPDATE maildrop_lease SET fence = nextval('lease_fence') WHERE account = 'alice'")
	start := time.Now()
	line, err := a.ReadLine() // unsolicited
	if err != nil {
		t.Fatal(err)
	}
	if want := "-ERR [SYS/TEMP] Lost the lock on the mailbox; no messages were deleted. Log in again."; line != want {
		t.Fatalf("after the takeover: %q, want %q", line, want)
	}
	if d := time.Since(start); d > ttl+time.Second {
		t.Errorf("the session ended %v after the takeover; renewals are every %v", d, ttl/3)
	}
	if _, err := a.ReadLine(); err == nil {
		t.Error("the connection stayed open")
	}
	if st := b.Stats(); len(st.Deleted) != 0 || st.Calls[memback.OpDelete] != 0 {
		t.Errorf("deleted %v", st.Deleted)
	}
}

// TestReleaseOnDrop: a dropped connection releases its lease at once
// (long before the TTL); the other replica lets the client in.
func TestReleaseOnDrop(t *testing.T) {
	dsn := newDB(t)
	b := newUpstream(false)
	r0 := startReplica(t, dsn, time.Minute, b, true)
	r1 := startReplica(t, dsn, time.Minute, b, true)
	a := dial(t, r0)
	mustLogin(t, a, "alice")
	cmd(t, a, "DELE 1", "+OK")
	if n := leases(t, dsn, "alice"); n != 1 {
		t.Fatalf("%d leases while logged in, want 1", n)
	}
	a.Close()
	waitFor(t, 5*time.Second, "lease released after the drop", func() bool { return leases(t, dsn, "alice") == 0 })
	c := dial(t, r1)
	mustLogin(t, c, "alice")
	cmd(t, c, "QUIT", "+OK Logging out, 0 messages deleted.")
	if d := b.Stats().Deleted; len(d) != 0 {
		t.Errorf("deleted %v", d)
	}
}

// TestVanishedHolderExpires: a replica that took a lease and then
// vanished (its keepalive stopped, nothing released) keeps the maildrop
// IN-USE until the TTL, and no longer.
func TestVanishedHolderExpires(t *testing.T) {
	dsn := newDB(t)
	b := newUpstream(false)
	const ttl = 2 * time.Second
	r1 := startReplica(t, dsn, ttl, b, true)

	dead, err := pgstore.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	acquired := time.Now()
	lk, err := New(dead, ttl).Lock(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	dead.Close() // the process is gone: no renewal, no Release
	_ = lk

	if got := login(t, dial(t, r1), "alice"); got != inUse {
		t.Fatalf("right after the holder vanished: %q, want IN-USE", got)
	}
	var in time.Duration
	waitFor(t, ttl+3*time.Second, "login after the TTL", func() bool {
		c := dial(t, r1)
		defer c.Close()
		got := login(t, c, "alice")
		if got == inUse {
			return false
		}
		if got != "+OK Logged in." {
			t.Fatalf("login: %q", got)
		}
		in = time.Since(acquired)
		c.Quit()
		return true
	})
	if in < ttl {
		t.Errorf("logged in %v after the vanished holder's Acquire, before its TTL %v", in, ttl)
	}
	t.Logf("replicas: a vanished holder's lease (TTL %v) freed the maildrop after %v", ttl, in.Round(10*time.Millisecond))
}

// TestPostgresDown: with PostgreSQL stopped, logins get SYS/TEMP and a
// session in progress ends without deleting once its lease can no
// longer be renewed; after a restart logins work again by themselves.
func TestPostgresDown(t *testing.T) {
	srv := pgtest.Start(t) // a server of its own: this test stops it
	dsn := srv.CreateDB(t)
	b := newUpstream(false)
	const ttl = time.Second
	r0 := startReplica(t, dsn, ttl, b, true)
	r1 := startReplica(t, dsn, ttl, b, true)
	a := dial(t, r0)
	mustLogin(t, a, "alice")
	cmd(t, a, "DELE 1", "+OK")

	srv.Shutdown()
	if got := login(t, dial(t, r1), "bob"); got != "-ERR [SYS/TEMP] Cannot lock the mailbox right now, try again later." {
		t.Errorf("login with PostgreSQL down: %q", got)
	}
	line, err := a.ReadLine() // unsolicited, once no renewal worked for a TTL
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, "-ERR [SYS/TEMP] Lost the lock on the mailbox; no messages were deleted.") {
		t.Errorf("session in progress: %q", line)
	}
	if d := b.Stats().Deleted; len(d) != 0 {
		t.Errorf("deleted %v", d)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// alice's lease may still run until its TTL.
	waitFor(t, ttl+5*time.Second, "login after the restart", func() bool {
		c := dial(t, r1)
		defer c.Close()
		if login(t, c, "alice") != "+OK Logged in." {
			return false
		}
		cmd(t, c, "DELE 2", "+OK")
		cmd(t, c, "QUIT", "+OK Logging out, 1 messages deleted.")
		return true
	})
	if d := b.Stats().Deleted; fmt.Sprint(d) != "[uid-2]" {
		t.Errorf("deleted %v, want [uid-2]", d)
	}
}

// TestCheckHoldsLeaseDuringDeletes: Check extends the lease over the
// deletes' deadline, so a slow Delete that outlasts the TTL, on a
// replica that renews nothing else, keeps the maildrop from being taken
// over while it runs.
func TestCheckHoldsLeaseDuringDeletes(t *testing.T) {
	dsn := newDB(t)
	b := newUpstream(false)
	started, proceed := make(chan struct{}), make(chan struct{})
	b.Hook = func(_ context.Context, op memback.Op, _ string) error {
		if op == memback.OpDelete {
			close(started)
			<-proceed
		}
		return nil
	}
	const ttl = time.Second
	r0 := startReplica(t, dsn, ttl, b, false, func(s *proxy.Server) { s.BackendTimeout = 10 * time.Second }) // no KeepAlive: only Check extends
	r1 := startReplica(t, dsn, ttl, b, true)
	a := dial(t, r0)
	mustLogin(t, a, "alice")
	cmd(t, a, "DELE 1", "+OK")
	if err := a.Send("QUIT"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		line, err := a.ReadLine()
		t.Fatalf("QUIT did not reach the Delete: %q, %v", line, err)
	}
	time.Sleep(2 * ttl)
	if got := login(t, dial(t, r1), "alice"); got != inUse {
		t.Errorf("during the deletes, past the TTL: %q, want IN-USE", got)
	}
	close(proceed)
	if line, err := a.ReadLine(); err != nil || line != "+OK Logging out, 1 messages deleted." {
		t.Fatalf("QUIT: %q, %v", line, err)
	}
	c := dial(t, r1)
	mustLogin(t, c, "alice")
	c.Quit()
}
