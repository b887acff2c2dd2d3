package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	. "github.com/popbridge/popbridge/proxy"

	"github.com/popbridge/popbridge/internal/memback"
)

// recObserver records what an Observer is told.
type recObserver struct {
	mu       sync.Mutex
	started  int
	ended    []SessionSummary
	commands []string // "NAME ok" or "NAME err"
	authFail int
	bytes    int64
}

func (o *recObserver) SessionStart() { o.mu.Lock(); o.started++; o.mu.Unlock() }
func (o *recObserver) SessionEnd(s SessionSummary) {
	o.mu.Lock()
	o.ended = append(o.ended, s)
	o.mu.Unlock()
}
func (o *recObserver) Command(name string, ok bool) {
	res := " ok"
	if !ok {
		res = " err"
	}
	o.mu.Lock()
	o.commands = append(o.commands, name+res)
	o.mu.Unlock()
}
func (o *recObserver) AuthFailure()      { o.mu.Lock(); o.authFail++; o.mu.Unlock() }
func (o *recObserver) BytesSent(n int64) { o.mu.Lock(); o.bytes += n; o.mu.Unlock() }

func (o *recObserver) endedCount() int { o.mu.Lock(); defer o.mu.Unlock(); return len(o.ended) }

func TestObserver(t *testing.T) {
	obs := &recObserver{}
	addr := startServer(t, &Server{Backend: newMemBackend(), Observer: obs})

	cl := dial(t, addr)
	converse(t, cl, []step{
		{"", []string{"+OK*"}},
		{"USER alice", []string{"+OK"}},
		{"PASS wrong", []string{"-ERR [AUTH]*"}},
		{"XYZZY secret", []string{"-ERR*"}},
		{"user alice", []string{"+OK"}},
		{"PASS secret", []string{"+OK Logged in."}},
		{"RETR 1", []string{"+OK 23 octets"}},
	})
	cl.multi()
	converse(t, cl, []step{
		{"TOP 2 0", []string{"+OK"}},
	})
	cl.multi()
	converse(t, cl, []step{
		{"RETR 9", []string{"-ERR No such message."}},
		{"DELE 1", []string{"+OK*"}},
		{"QUIT", []string{"+OK*"}},
	})
	cl.expectEOF()
	waitFor(t, func() bool { return obs.endedCount() == 1 })

	// A session that fails to log in and hangs up.
	cl = dial(t, addr)
	converse(t, cl, []step{{"", []string{"+OK*"}}, {"AUTH PLAIN " + b64("\x00alice\x00nope"), []string{"-ERR [AUTH]*"}}})
	cl.c.Close()
	// And one that just hangs up.
	cl = dial(t, addr)
	converse(t, cl, []step{{"", []string{"+OK*"}}})
	cl.c.Close()
	waitFor(t, func() bool { return obs.endedCount() == 3 })

	obs.mu.Lock()
	defer obs.mu.Unlock()
	wantCmds := "USER ok,PASS err,other err,USER ok,PASS ok,RETR ok,TOP ok,RETR err,DELE ok,QUIT ok,AUTH err"
	if got := strings.Join(obs.commands, ","); got != wantCmds {
		t.Errorf("commands:\n got %s\nwant %s", got, wantCmds)
	}
	if obs.started != 3 {
		t.Errorf("started %d sessions, want 3", obs.started)
	}
	if obs.authFail != 2 {
		t.Errorf("auth failures %d, want 2", obs.authFail)
	}
	s := obs.ended[0]
	if s.Outcome != OutcomeQuit || !s.LoggedIn || s.Retrieved != 1 || s.Topped != 1 || s.Deleted != 1 || s.Bytes != obs.bytes {
		t.Errorf("first session summary %+v (bytes reported %d)", s, obs.bytes)
	}
	if s.Bytes != 23+16 { // RETR 1, and TOP 2 0 sends the header and blank line
		t.Errorf("first session sent %d bytes", s.Bytes)
	}
	outcomes := map[string]bool{}
	for _, e := range obs.ended[1:] {
		outcomes[e.Outcome] = true
	}
	if !outcomes[OutcomeAuthFailed] || !outcomes[OutcomeDropped] {
		t.Errorf("outcomes of the other sessions: %v, want auth_failed and dropped", outcomes)
	}
}

func TestCommandName(t *testing.T) {
	for line, want := range map[string]string{
		"retr 1": "RETR", "PASS a b c": "PASS", "Top 1 2": "TOP", "": CommandOther,
		"RETRX 1": CommandOther, "STLS": "STLS",
	} {
		if got := CommandNameForTest(line); got != want {
			t.Errorf("commandName(%q) = %q, want %q", line, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { CommandNameForTest("uidl 1") }); n != 0 {
		t.Errorf("commandName allocates %v times", n)
	}
}

// callObserver is a BackendObserver that records the calls.
type callObserver struct {
	recObserver
	calls []string // "op account ok" or "op account err: text"
}

func (o *callObserver) BackendCall(c BackendCall) {
	s := c.Op + " " + c.Account + " ok"
	if c.Err != nil {
		s = c.Op + " " + c.Account + " err: " + c.Err.Error()
	}
	if c.Duration < 0 {
		s += " (negative duration)"
	}
	o.mu.Lock()
	o.calls = append(o.calls, s)
	o.mu.Unlock()
}

// take returns the calls recorded since the last take.
func (o *callObserver) take() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := strings.Join(o.calls, "; ")
	o.calls = nil
	return s
}

// checkingBackend checks the password itself, then names the maildrop
// with OpeningMaildrop before opening it, as backends/accounts does.
type checkingBackend struct{ *memBackend }

func (b checkingBackend) Login(ctx context.Context, user, pass string) (Mailbox, error) {
	if p, ok := testPasswords[user]; !ok || p != pass {
		return nil, fmt.Errorf("check: %w", ErrAuthFailed)
	}
	OpeningMaildrop(ctx, "drop-"+user)
	return b.memBackend.Login(ctx, user, pass)
}

// TestBackendObserver checks that a BackendObserver is told about every
// backend call with its outcome, under the maildrop's name, and about no
// login that failed its password check.
func TestBackendObserver(t *testing.T) {
	obs := &callObserver{}
	mem := newMemBackend()
	openErr := map[string]error{"uid-2": errors.New("upstream fell over")}
	mem.Inject(memback.Faults{Open: openErr})
	addr := startServer(t, &Server{Backend: checkingBackend{mem}, Observer: obs, AuthFailureDelay: -1})
	ended := 0
	session := func(steps []step) string {
		t.Helper()
		cl := dial(t, addr)
		converse(t, cl, append([]step{{"", []string{"+OK*"}}}, steps...))
		cl.c.Close()
		ended++
		waitFor(t, func() bool { return obs.endedCount() == ended })
		return obs.take()
	}

	if got := session([]step{{"USER alice", []string{"+OK"}}, {"PASS wrong", []string{"-ERR [AUTH]*"}}}); got != "" {
		t.Errorf("a wrong password was reported as a backend call: %s", got)
	}

	cl := dial(t, addr)
	login(t, cl, "alice", "secret")
	cl.send("RETR 1\r\n")
	cl.multi()
	converse(t, cl, []step{{"RETR 2", []string{"-ERR [SYS/TEMP]*"}}})
	cl.send("TOP 3 0\r\n") // no TopOpener: Open
	cl.multi()
	mem.Inject(memback.Faults{Open: openErr, Delete: errors.New("upstream refused")})
	converse(t, cl, []step{{"DELE 1", []string{"+OK*"}}, {"QUIT", []string{"-ERR*"}}})
	cl.c.Close()
	ended++
	waitFor(t, func() bool { return obs.endedCount() == ended })
	// Once logged in, the account is the lock key: the user name, as
	// memMailbox has no MaildropID.
	want := "login alice ok; list alice ok; open alice ok; open alice err: upstream fell over; " +
		"open alice ok; delete alice err: upstream refused"
	if got := obs.take(); got != want {
		t.Errorf("backend calls:\n got %s\nwant %s", got, want)
	}

	mem.Inject(memback.Faults{List: errors.New("cannot list")})
	if got, want := session([]step{{"USER alice", []string{"+OK"}}, {"PASS secret", []string{"-ERR*"}}}),
		"login alice ok; list alice err: cannot list"; got != want {
		t.Errorf("failed list:\n got %s\nwant %s", got, want)
	}
	mem.Inject(memback.Faults{OpenMaildrop: fmt.Errorf("upstream down: %w", ErrTemporary)})
	if got, want := session([]step{{"USER alice", []string{"+OK"}}, {"PASS secret", []string{"-ERR [SYS/TEMP]*"}}}),
		"login drop-alice err: upstream down: [SYS/TEMP] Temporary server failure, try again later."; got != want {
		t.Errorf("failed login after the password check:\n got %s\nwant %s", got, want)
	}
}

// TestBackendObserverOptional checks TOP and Commit, and a Backend that
// does not call OpeningMaildrop: its logins are timed whole, and one that
// fails is not reported, as the server cannot tell whose it was.
func TestBackendObserverOptional(t *testing.T) {
	topMem := func() *memBackend { b := newMemBackend(); b.Top = true; return b }
	commitMem := func() *memBackend { b := newMemBackend(); b.Commit = true; return b }
	for _, tc := range []struct {
		name string
		b    Backend
		want string
	}{
		{"top", topMem(), "login alice ok; list alice ok; top alice ok; delete alice ok"},
		{"commit", wrapBackend{commitMem()}, "login alice ok; list alice ok; open alice ok; commit alice ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := &callObserver{}
			addr := startServer(t, &Server{Backend: tc.b, Observer: obs, AuthFailureDelay: -1})
			cl := dial(t, addr)
			login(t, cl, "alice", "secret")
			cl.send("TOP 1 0\r\n")
			cl.multi()
			converse(t, cl, []step{{"DELE 1", []string{"+OK*"}}, {"QUIT", []string{"+OK*"}}})
			waitFor(t, func() bool { return obs.endedCount() == 1 })
			if got := obs.take(); got != tc.want {
				t.Errorf("backend calls:\n got %s\nwant %s", got, tc.want)
			}
		})
	}

	obs := &callObserver{}
	mem := newMemBackend()
	mem.Inject(memback.Faults{OpenMaildrop: errors.New("upstream down")})
	addr := startServer(t, &Server{Backend: mem, Observer: obs, AuthFailureDelay: -1})
	cl := dial(t, addr)
	converse(t, cl, []step{{"", []string{"+OK*"}}, {"USER alice", []string{"+OK"}}, {"PASS secret", []string{"-ERR*"}}, {"QUIT", []string{"+OK*"}}})
	waitFor(t, func() bool { return obs.endedCount() == 1 })
	if got := obs.take(); got != "" {
		t.Errorf("a failed login of a Backend without OpeningMaildrop was reported: %s", got)
	}
}
