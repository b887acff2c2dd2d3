package replicas

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/pgtest"
	"github.com/popbridge/popbridge/internal/pop3test"
)

// TestReplicasPostgresRestart: sessions run on three replicas while their
// PostgreSQL is stopped and started again. While it is down, new logins
// get -ERR [SYS/TEMP] and /readyz answers 503; afterwards every replica
// is ready again by itself and serves. Nothing is lost: exactly the
// messages whose DELE was followed by a QUIT answered +OK are gone from
// Dovecot (a QUIT without any answer may go either way).
func TestReplicasPostgresRestart(t *testing.T) {
	if pg == nil {
		t.Skip(pgtest.ErrNotInstalled)
	}
	srv := pgtest.Start(t) // its own server: this test stops it
	dsn := srv.CreateDB(t)
	var users []string
	for i := 1; i <= 6; i++ {
		users = append(users, fmt.Sprintf("u%d", i))
	}
	d := startDovecot(t, append(users, "held"), 20, "")
	accounts, files := imapAccounts(t, d, append(users, "held"))
	rs := startCluster(t, clusterOptions{dsn: dsn, accounts: accounts, files: files})
	before := map[string][]string{}
	for _, u := range users {
		before[u] = d.pop3Listing(t, u).UIDLs
	}

	var (
		mu       sync.Mutex
		sessions []session
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := i; !stop.Load(); n++ {
				s := runSession(rs[n%len(rs)], u, n%5 == 0)
				mu.Lock()
				sessions = append(sessions, s)
				mu.Unlock()
				time.Sleep(30 * time.Millisecond)
			}
		}()
	}
	count := func(f func(session) bool) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range sessions {
			if f(s) {
				n++
			}
		}
		return n
	}
	served := func(s session) bool { return strings.HasPrefix(s.login, "+OK") }
	time.Sleep(1500 * time.Millisecond)
	servedBefore := count(served)
	// A session in progress across the stop, outside the load.
	held := rs[0].mustLogin(t, "held", "pop-held")
	heldBefore := list(t, held)
	if _, err := held.Cmd("DELE 1"); err != nil {
		t.Fatal(err)
	}

	srv.Shutdown()
	down := time.Now()
	for _, r := range rs {
		if !eventually(15*time.Second, func() bool { return r.ready() == 503 }) {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("replica %s: /readyz answers %d, not 503, %v after PostgreSQL stopped", r.name, r.ready(), time.Since(down))
		}
	}
	notReady := time.Since(down)
	for _, r := range rs {
		_, reply := r.login(t, "u1", "pop-u1")
		if !strings.HasPrefix(reply, "-ERR [SYS/TEMP]") {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("replica %s: login while PostgreSQL is down: %q, want -ERR [SYS/TEMP]", r.name, reply)
		}
	}
	heldQuit, _ := held.Cmd("QUIT")
	if !strings.HasPrefix(heldQuit, "-ERR") {
		stop.Store(true)
		wg.Wait()
		t.Fatalf("QUIT after DELE of a session in progress while PostgreSQL is down: %q, want -ERR", heldQuit)
	}
	time.Sleep(time.Second)
	if err := srv.Restart(); err != nil {
		stop.Store(true)
		wg.Wait()
		t.Fatal(err)
	}
	up := time.Now()
	for _, r := range rs {
		if !eventually(30*time.Second, func() bool { return r.ready() == 200 }) {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("replica %s: /readyz answers %d, not 200, %v after PostgreSQL came back", r.name, r.ready(), time.Since(up))
		}
	}
	ready := time.Since(up)
	servedAt := count(served)
	if !eventually(20*time.Second, func() bool { return count(served) >= servedAt+len(users) }) {
		stop.Store(true)
		wg.Wait()
		t.Fatalf("replicas served %d sessions in 20 s after PostgreSQL came back", count(served)-servedAt)
	}
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()

	// What must be gone: DELE then QUIT +OK. What may be gone: DELE then
	// a QUIT without an answer.
	mustGo, mayGo := map[string]bool{}, map[string]bool{}
	temp := 0
	for _, s := range sessions {
		if strings.HasPrefix(s.login, "-ERR [SYS/TEMP]") {
			temp++
		}
		switch {
		case s.deleted == "":
		case strings.HasPrefix(s.quit, "+OK"):
			mustGo[s.deleted] = true
		case s.quit == "":
			mayGo[s.deleted] = true
		}
	}
	if now := d.pop3Listing(t, "held"); !slices.Equal(now.UIDLs, heldBefore.UIDLs) {
		t.Errorf("held: Dovecot lists %v after the QUIT answered %q; want all of %v", now, heldQuit, heldBefore)
	}
	removed := 0
	for _, u := range users {
		now := d.pop3Listing(t, u).UIDLs
		for _, uidl := range before[u] {
			gone := !slices.Contains(now, uidl)
			key := u + " " + uidl
			if gone {
				removed++
			}
			switch {
			case gone && !mustGo[key] && !mayGo[key]:
				t.Errorf("%s: message %s was removed upstream without a DELE and a successful QUIT", u, uidl)
			case !gone && mustGo[key]:
				t.Errorf("%s: message %s is still upstream after DELE and QUIT +OK", u, uidl)
			}
		}
	}
	if t.Failed() {
		for _, s := range sessions {
			t.Log(s)
		}
		t.FailNow()
	}
	if servedBefore == 0 || removed == 0 {
		t.Fatalf("the load did too little: %d sessions served before the stop, %d messages removed", servedBefore, removed)
	}
	t.Logf("replicas: PostgreSQL stopped and restarted under load (%d sessions on 3 replicas, %d logins answered -ERR [SYS/TEMP]): /readyz 503 on all %v after the stop, 200 %v after the restart by itself; a session in progress got %q at QUIT and kept its mail; %d messages removed, each after DELE and QUIT +OK, none else (%d with a QUIT left unanswered)",
		len(sessions), temp, notReady.Round(time.Millisecond), ready.Round(time.Millisecond), heldQuit, removed, len(slices.Collect(maps.Keys(mayGo))))
}

// runSession logs in as user on r, lists, retrieves the first message
// and, with dele, deletes it, then says QUIT. It records what it got.
func runSession(r *replica, user string, dele bool) session {
	s := session{replica: r.name}
	c, err := pop3test.Dial(r.addr)
	if err != nil {
		s.login = err.Error()
		return s
	}
	defer c.Close()
	c.Timeout = 10 * time.Second
	if _, err := c.Cmd("USER " + user); err != nil {
		s.login = "USER: " + err.Error()
		return s
	}
	s.login, _ = c.Cmd("PASS pop-" + user)
	if !strings.HasPrefix(s.login, "+OK") {
		return s
	}
	reply, err := c.Cmd("UIDL 1")
	if err != nil {
		c.Cmd("QUIT")
		return s
	}
	f := strings.Fields(reply)
	if len(f) != 3 {
		c.Cmd("QUIT")
		return s
	}
	if _, _, err := c.CmdMulti("RETR 1"); err != nil {
		c.Cmd("QUIT")
		return s
	}
	if dele {
		if _, err := c.Cmd("DELE 1"); err != nil {
			c.Cmd("QUIT")
			return s
		}
		s.deleted = user + " " + f[2]
	}
	s.quit, _ = c.Cmd("QUIT")
	return s
}
