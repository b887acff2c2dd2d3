package replicas

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/pop3test"
)

// TestReplicasSameListing: three replicas on one PostgreSQL list the same
// UIDLs and sizes as Dovecot's own POP3, the records are in the database
// (not in a replica), and a DELE+QUIT on one replica is seen by the
// others.
func TestReplicasSameListing(t *testing.T) {
	dsn := newDB(t)
	users := []string{"ann"}
	d := startDovecot(t, users, 6, "")
	accounts, files := imapAccounts(t, d, users)
	rs := startCluster(t, clusterOptions{dsn: dsn, accounts: accounts, files: files})

	want := d.pop3Listing(t, "ann")
	if len(want.UIDLs) != 6 {
		t.Fatalf("dovecot lists %d messages: %v", len(want.UIDLs), want)
	}
	for _, r := range rs {
		c := r.mustLogin(t, "ann", "pop-ann")
		got := list(t, c)
		if _, err := c.Cmd("QUIT"); err != nil {
			t.Fatalf("replica %s: QUIT: %v", r.name, err)
		}
		if !slices.Equal(got.UIDLs, want.UIDLs) || !slices.Equal(got.Sizes, want.Sizes) {
			t.Fatalf("replica %s lists %v; dovecot %v", r.name, got, want)
		}
	}
	// The records live in PostgreSQL: one row per message, exact sizes.
	if n := query[int64](t, dsn, "SELECT count(*) FROM message WHERE account = 'ann'"); n != 6 {
		t.Fatalf("%d message rows for ann in PostgreSQL, want 6", n)
	}

	// A DELE+QUIT on A is seen by B and C.
	c := rs[0].mustLogin(t, "ann", "pop-ann")
	if _, err := c.Cmd("DELE 2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cmd("QUIT"); err != nil {
		t.Fatalf("QUIT after DELE: %v", err)
	}
	want = d.pop3Listing(t, "ann")
	if len(want.UIDLs) != 5 {
		t.Fatalf("dovecot lists %d messages after DELE 2 + QUIT on A, want 5", len(want.UIDLs))
	}
	for _, r := range rs[1:] {
		c := r.mustLogin(t, "ann", "pop-ann")
		got := list(t, c)
		c.Cmd("QUIT")
		if !slices.Equal(got.UIDLs, want.UIDLs) || !slices.Equal(got.Sizes, want.Sizes) {
			t.Fatalf("replica %s after A's DELE lists %v; dovecot %v", r.name, got, want)
		}
	}
	t.Logf("replicas: 3 popbridge processes on one PostgreSQL (imap upstream: private Dovecot) list the same UIDLs and sizes as Dovecot's POP3, records in the database; a DELE+QUIT on A is seen on B and C")
}

// TestReplicasInUse: while a session holds the maildrop on replica A, a
// login on B or C gets -ERR [IN-USE]; after A's QUIT, B serves it.
func TestReplicasInUse(t *testing.T) {
	dsn := newDB(t)
	users := []string{"ann"}
	d := startDovecot(t, users, 3, "")
	accounts, files := imapAccounts(t, d, users)
	rs := startCluster(t, clusterOptions{dsn: dsn, accounts: accounts, files: files})

	a := rs[0].mustLogin(t, "ann", "pop-ann")
	for _, r := range rs[1:] {
		_, reply := r.login(t, "ann", "pop-ann")
		if !strings.HasPrefix(reply, "-ERR [IN-USE]") {
			t.Fatalf("replica %s while A holds the maildrop: PASS %q, want -ERR [IN-USE]", r.name, reply)
		}
	}
	// A second session on A itself too.
	if _, reply := rs[0].login(t, "ann", "pop-ann"); !strings.HasPrefix(reply, "-ERR [IN-USE]") {
		t.Fatalf("replica A, second session: PASS %q, want -ERR [IN-USE]", reply)
	}
	if _, err := a.Cmd("QUIT"); err != nil {
		t.Fatal(err)
	}
	b := rs[1].mustLogin(t, "ann", "pop-ann")
	if got := list(t, b); len(got.UIDLs) != 3 {
		t.Fatalf("B after A's QUIT lists %v", got)
	}
	b.Cmd("QUIT")
	t.Logf("replicas: -ERR [IN-USE] on B and C (and a second session on A) while A holds the maildrop; B serves it after A's QUIT")
}

// TestReplicasKillHolder: the replica holding the maildrop is killed with
// SIGKILL after DELE, without QUIT. Another replica serves the account
// once the lease has run out (not before), and the message is still
// there: the dead session's delete is never applied.
func TestReplicasKillHolder(t *testing.T) {
	dsn := newDB(t)
	users := []string{"ann"}
	d := startDovecot(t, users, 4, "")
	accounts, files := imapAccounts(t, d, users)
	rs := startCluster(t, clusterOptions{dsn: dsn, accounts: accounts, files: files})
	before := d.pop3Listing(t, "ann")

	a := rs[0].mustLogin(t, "ann", "pop-ann")
	if _, err := a.Cmd("DELE 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Cmd("DELE 3"); err != nil {
		t.Fatal(err)
	}
	rs[0].kill9(t)
	killed := time.Now()

	// The lease outlives its holder until it runs out: at least 2/3 of
	// lease_ttl, since it is renewed every third. A login answered later
	// than that (a very loaded machine) may rightly find it expired.
	inUse := "[IN-USE] at once"
	if cl, reply := rs[1].login(t, "ann", "pop-ann"); !strings.HasPrefix(reply, "-ERR [IN-USE]") {
		if since := time.Since(killed); since < leaseTTL*2/3 {
			t.Fatalf("B %v after A was killed: PASS %q, want -ERR [IN-USE] (the lease is still live)", since, reply)
		}
		inUse = "B's login came after the lease's sure remainder, IN-USE not checked"
		if strings.HasPrefix(reply, "+OK") {
			cl.Cmd("QUIT") // deletes nothing: no DELE in this session
		}
	}
	var b, c = rs[1], rs[2]
	var took time.Duration
	ok := eventually(leaseTTL+10*time.Second, func() bool {
		cl, reply := b.login(t, "ann", "pop-ann")
		if !strings.HasPrefix(reply, "+OK") {
			cl.Close()
			b, c = c, b // try both
			return false
		}
		took = time.Since(killed)
		got := list(t, cl)
		if !slices.Equal(got.UIDLs, before.UIDLs) || !slices.Equal(got.Sizes, before.Sizes) {
			t.Fatalf("replica %s after the kill lists %v, want all of %v", b.name, got, before)
		}
		if _, err := cl.Cmd("QUIT"); err != nil {
			t.Fatal(err)
		}
		return true
	})
	if !ok {
		t.Fatalf("no replica served ann within %v of A's kill -9 (lease_ttl %v)", leaseTTL+10*time.Second, leaseTTL)
	}
	if after := d.pop3Listing(t, "ann"); !slices.Equal(after.UIDLs, before.UIDLs) {
		t.Fatalf("dovecot lists %v after the kill, want all of %v", after, before)
	}
	if n := query[int64](t, dsn, "SELECT count(*) FROM tombstone WHERE account = 'ann'"); n != 0 {
		t.Fatalf("%d tombstones for ann after the killed session", n)
	}
	t.Logf("replicas: kill -9 of the replica holding the maildrop after DELE (no QUIT): %s, replica %s served it %v later (lease_ttl %v), all %d messages still in Dovecot",
		inUse, b.name, took.Round(100*time.Millisecond), leaseTTL, len(before.UIDLs))
}

// TestReplicasPausedCannotCommit: replica A is paused (SIGSTOP) after
// DELE until its lease has run out; B takes the account; A resumes and
// its QUIT answers -ERR without deleting anything upstream.
func TestReplicasPausedCannotCommit(t *testing.T) {
	dsn := newDB(t)
	users := []string{"ann"}
	d := startDovecot(t, users, 4, "")
	accounts, files := imapAccounts(t, d, users)
	rs := startCluster(t, clusterOptions{dsn: dsn, accounts: accounts, files: files})
	before := d.pop3Listing(t, "ann")

	a := rs[0].mustLogin(t, "ann", "pop-ann")
	if _, err := a.Cmd("DELE 2"); err != nil {
		t.Fatal(err)
	}
	rs[0].pause(t)
	paused := time.Now()
	var b *pop3test.Client
	if !eventually(leaseTTL+10*time.Second, func() bool {
		cl, reply := rs[1].login(t, "ann", "pop-ann")
		if strings.HasPrefix(reply, "+OK") {
			b = cl
			return true
		}
		cl.Close()
		return false
	}) {
		rs[0].resume(t)
		t.Fatalf("B could not take ann within %v of A's SIGSTOP (lease_ttl %v)", leaseTTL+10*time.Second, leaseTTL)
	}
	took := time.Since(paused)
	if got := list(t, b); !slices.Equal(got.UIDLs, before.UIDLs) {
		t.Fatalf("B lists %v, want all of %v", got, before)
	}
	// A wakes up while B holds the maildrop, and says QUIT.
	rs[0].resume(t)
	reply, err := a.Cmd("QUIT")
	if err == nil || !strings.HasPrefix(reply, "-ERR") {
		t.Fatalf("A's QUIT after losing its lease: %q, %v; want -ERR", reply, err)
	}
	if after := d.pop3Listing(t, "ann"); !slices.Equal(after.UIDLs, before.UIDLs) {
		t.Fatalf("dovecot lists %v after A's QUIT, want all of %v", after, before)
	}
	if got := list(t, b); !slices.Equal(got.UIDLs, before.UIDLs) {
		t.Fatalf("B after A's QUIT lists %v, want all of %v", got, before)
	}
	if _, err := b.Cmd("QUIT"); err != nil {
		t.Fatalf("B's QUIT: %v", err)
	}
	t.Logf("replicas: replica A paused (SIGSTOP) after DELE past its lease; B took the account %v later; A resumed and its QUIT answered %q; all %d messages still in Dovecot",
		took.Round(100*time.Millisecond), reply, len(before.UIDLs))
}

// session is one POP3 session's outcome in the load of
// TestReplicasPostgresRestart.
type session struct {
	replica string
	login   string // the PASS reply
	deleted string // the UIDL DELEted, if any
	quit    string // the QUIT reply; "" when none came
}

func (s session) String() string {
	return fmt.Sprintf("%s: %q dele %s quit %q", s.replica, s.login, s.deleted, s.quit)
}
