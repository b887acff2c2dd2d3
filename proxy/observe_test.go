package proxy_test

import (
	"strings"
	"sync"
	"testing"

	. "github.com/popbridge/popbridge/proxy"
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
