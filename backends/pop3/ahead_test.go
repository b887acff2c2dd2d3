package pop3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/proxy"
)

// aheadMsgs returns n fake messages, each with a stuffed line.
func aheadMsgs(n int) []fakeMsg {
	var msgs []fakeMsg
	for i := 1; i <= n; i++ {
		msgs = append(msgs, fakeMsg{
			uidl:     fmt.Sprintf("m%d", i),
			listSize: -1,
			wire:     fmt.Sprintf("Subject: message %d\r\n\r\n..dot line of %d\r\n%s\r\n", i, i, strings.Repeat("x", 100*i)),
		})
	}
	return msgs
}

// sawCommand waits up to wait for the fake to receive line, and reports
// whether it did.
func (f *fake) sawCommand(line string, wait time.Duration) bool {
	for deadline := time.Now().Add(wait); ; time.Sleep(5 * time.Millisecond) {
		f.mu.Lock()
		ok := slices.Contains(f.commands, line)
		f.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return ok
		}
	}
}

func (f *fake) countCommand(line string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := 0
	for _, c := range f.commands {
		if c == line {
			k++
		}
	}
	return k
}

// readMsg opens uid and reads it whole.
func readMsg(t *testing.T, mb proxy.Mailbox, uid string) (string, error) {
	t.Helper()
	rc, err := mb.Open(context.Background(), uid)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", uid, err)
	}
	return string(b), nil
}

// TestRetrAhead: with PIPELINING upstream, the end of RETR n sends RETR
// n+1, and a RETR of a message sent ahead sends the next ones at once, so
// that the upstream has RETR n+1 before the client has read a byte of
// message n. Every message comes as it is, each RETR goes upstream once,
// a message removed upstream gives -ERR for it alone, and TOP, a message
// out of order and DELE/QUIT drop the RETRs sent ahead and stay in step.
func TestRetrAhead(t *testing.T) {
	msgs := aheadMsgs(8)
	f := newFake(t, &fake{user: "u", secret: "p", msgs: msgs, pipelining: true, gone: map[int]bool{4: true}})
	b, err := New(Options{Addr: f.addr(), TLS: modes.TLSNone, Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mb, err := b.OpenMaildrop(ctx, backends.Login{})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := mb.List(ctx)
	want := func(i int) string { return unstuffWire(msgs[i].wire) }

	// RETR 1 on its own; its end sends RETR 2.
	if got, err := readMsg(t, mb, list[0].UID); err != nil || got != want(0) {
		t.Fatalf("message 1: %q, %v", got, err)
	}
	if !f.sawCommand("RETR 2", 2*time.Second) {
		t.Fatalf("RETR 2 not sent ahead at the end of RETR 1; upstream saw %q", f.commands)
	}
	// RETR 2 was sent ahead: opening it sends RETR 3 before the client
	// reads any of message 2.
	rc, err := mb.Open(ctx, list[1].UID)
	if err != nil {
		t.Fatal(err)
	}
	if !f.sawCommand("RETR 3", 2*time.Second) {
		t.Fatalf("RETR 3 not sent while message 2 was unread; upstream saw %q", f.commands)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != want(1) {
		t.Fatalf("message 2: %q, %v", got, err)
	}
	if got, err := readMsg(t, mb, list[2].UID); err != nil || got != want(2) {
		t.Fatalf("message 3: %q, %v", got, err)
	}
	// Message 4 was removed upstream: -ERR for it alone.
	if _, err := readMsg(t, mb, list[3].UID); !errors.Is(err, proxy.ErrNoMessage) {
		t.Fatalf("message 4 (removed upstream): err %v, want ErrNoMessage", err)
	}
	if got, err := readMsg(t, mb, list[4].UID); err != nil || got != want(4) {
		t.Fatalf("message 5 after the removed one: %q, %v", got, err)
	}
	for n := 1; n <= 5; n++ {
		if k := f.countCommand(fmt.Sprintf("RETR %d", n)); k != 1 {
			t.Errorf("RETR %d sent %d times, want once", n, k)
		}
	}
	if !f.sawCommand("RETR 6", 0) {
		t.Errorf("RETR 6 not sent ahead; upstream saw %q", f.commands)
	}

	// TOP drops what was sent ahead; its own reply comes next.
	rc, err = mb.(*mailbox).OpenTop(ctx, list[0].UID, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != want(0) { // the fake's TOP sends it all
		t.Fatalf("TOP 1 after RETRs sent ahead: %q, %v", got, err)
	}
	// Out of order: message 7, then back to 6.
	if got, err := readMsg(t, mb, list[6].UID); err != nil || got != want(6) {
		t.Fatalf("message 7: %q, %v", got, err)
	}
	if got, err := readMsg(t, mb, list[5].UID); err != nil || got != want(5) {
		t.Fatalf("message 6 after 7: %q, %v", got, err)
	}
	// DELE and QUIT after RETRs sent ahead (the end of 6 sent RETR 7).
	if err := mb.Delete(ctx, []string{list[0].UID, list[5].UID}); err != nil {
		t.Fatal(err)
	}
	mb.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := strings.Join(f.deleted, ","); got != "m1,m6" {
		t.Errorf("deleted upstream %q, want m1,m6", got)
	}
	if len(f.desync) > 0 {
		t.Errorf("out of step: %q", f.desync)
	}
}

// TestRetrAheadBatched: a client reading 40 messages in order gets each
// as it is, every RETR goes upstream once, and the RETRs sent ahead go in
// batches: one write upstream carries several, not one per message (a
// write and an upstream wakeup per message cost CPU on both sides).
func TestRetrAheadBatched(t *testing.T) {
	msgs := aheadMsgs(40)
	f := newFake(t, &fake{user: "u", secret: "p", msgs: msgs, pipelining: true})
	b, err := New(Options{Addr: f.addr(), TLS: modes.TLSNone, Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mb, err := b.OpenMaildrop(ctx, backends.Login{})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	list, _ := mb.List(ctx)
	m := mb.(*mailbox)
	topUps := 0
	for i := range list {
		hi := m.aheadHi
		if got, err := readMsg(t, mb, list[i].UID); err != nil || got != unstuffWire(msgs[i].wire) {
			t.Fatalf("message %d: %q, %v", i+1, got, err)
		}
		if m.aheadHi != hi {
			topUps++
		}
	}
	for n := 1; n <= 40; n++ {
		if k := f.countCommand(fmt.Sprintf("RETR %d", n)); k != 1 {
			t.Errorf("RETR %d sent %d times, want once", n, k)
		}
	}
	// The window doubles (1, 2, 4, 8, 16 messages), then is topped up
	// when half of it is used: about 8 writes for 40 messages.
	if topUps > 10 {
		t.Errorf("RETRs sent ahead in %d writes for 40 messages, want at most 10", topUps)
	}
}

// TestRetrAheadDropped: RETRs sent ahead and never asked for are read and
// dropped before the next command, here the RSET and QUIT of Close, and
// nothing is sent ahead without PIPELINING upstream.
func TestRetrAheadDropped(t *testing.T) {
	for _, pipelining := range []bool{true, false} {
		t.Run(fmt.Sprintf("pipelining=%v", pipelining), func(t *testing.T) {
			msgs := aheadMsgs(5)
			f := newFake(t, &fake{user: "u", secret: "p", msgs: msgs, pipelining: pipelining})
			b, err := New(Options{Addr: f.addr(), TLS: modes.TLSNone, Username: "u", Password: "p"})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			mb, err := b.OpenMaildrop(ctx, backends.Login{})
			if err != nil {
				t.Fatal(err)
			}
			list, _ := mb.List(ctx)
			for i := 0; i < 2; i++ {
				if got, err := readMsg(t, mb, list[i].UID); err != nil || got != unstuffWire(msgs[i].wire) {
					t.Fatalf("message %d: %q, %v", i+1, got, err)
				}
			}
			if ahead := f.sawCommand("RETR 3", 200*time.Millisecond); ahead != pipelining {
				t.Errorf("RETR 3 sent ahead: %v, want %v", ahead, pipelining)
			}
			mb.Close()
			// Close waits for QUIT's reply: the fake has seen everything.
			f.mu.Lock()
			defer f.mu.Unlock()
			if n := len(f.commands); n < 2 || f.commands[n-2] != "RSET" || f.commands[n-1] != "QUIT" {
				t.Errorf("upstream saw %q, want RSET and QUIT last", f.commands)
			}
			if len(f.deleted) > 0 || len(f.desync) > 0 {
				t.Errorf("deleted %q, out of step %q", f.deleted, f.desync)
			}
		})
	}
}

// TestDovecotRetrAhead: a client downloading every message in order
// through the relay gets each byte for byte as from Dovecot directly,
// while the relay pipelines its RETRs upstream (Dovecot lists
// PIPELINING); a message another session removed after the login gets
// -ERR from both, and the messages after it come as they are.
func TestDovecotRetrAhead(t *testing.T) {
	const user, pass = "alice", "alice-secret"
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{user: pass}})
	corpus, err := d.WriteCorpus(user)
	if err != nil {
		t.Fatal(err)
	}
	log, lines := traced()
	b, err := New(Options{Addr: d.POP3Addr, TLS: modes.TLSNone, Auth: modes.AuthPassthrough, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveOne(t, b)
	dial := func(addr string) *pop3test.Client {
		t.Helper()
		c, err := pop3test.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Login(user, pass); err != nil {
			t.Fatalf("login at %s: %v", addr, err)
		}
		return c
	}
	pb, dc := dial(addr), dial(d.POP3Addr)
	// Another session removes message 5 after both listed it.
	const removed = 5
	other := dial(d.POP3Addr)
	if _, err := other.Cmd(fmt.Sprintf("DELE %d", removed)); err != nil {
		t.Fatal(err)
	}
	if err := other.Quit(); err != nil {
		t.Fatal(err)
	}
	retr := func(c *pop3test.Client, n int) (string, []byte) {
		t.Helper()
		status, err := c.Cmd(fmt.Sprintf("RETR %d", n))
		var re *pop3test.ResponseError
		if errors.As(err, &re) {
			return "-ERR", nil
		}
		if err != nil {
			t.Fatalf("RETR %d: %v", n, err)
		}
		body, err := c.MultiLineRaw()
		if err != nil {
			t.Fatalf("RETR %d: %v", n, err)
		}
		return status, body
	}
	for i, m := range corpus {
		n := i + 1
		ds, dv := retr(dc, n)
		ps, pv := retr(pb, n)
		if (ds == "-ERR") != (n == removed) || (ps == "-ERR") != (n == removed) {
			t.Errorf("RETR %d (%s): Dovecot %q, popbridge %q", n, m.Name, ds, ps)
		}
		if !bytes.Equal(dv, pv) {
			t.Errorf("RETR %d (%s): popbridge's %d octets differ from Dovecot's %d", n, m.Name, len(pv), len(dv))
		}
	}
	if err := pb.Quit(); err != nil {
		t.Fatal(err)
	}
	dc.Quit()

	// The upstream conversation: each RETR sent once, and RETRs sent
	// before the replies to earlier ones were read.
	trace, _, _ := lines()
	var queue []string // commands sent, replies not read
	sent := map[string]int{}
	maxRetrs := 0
	for _, l := range trace {
		dir, line, _ := strings.Cut(l, " ")
		switch {
		case dir == "out":
			queue = append(queue, line)
			if strings.HasPrefix(line, "RETR ") {
				sent[line]++
			}
		case len(queue) > 0:
			queue = queue[1:]
		}
		k := 0
		for _, q := range queue {
			if strings.HasPrefix(q, "RETR ") {
				k++
			}
		}
		maxRetrs = max(maxRetrs, k)
	}
	for n := 1; n <= len(corpus); n++ {
		if k := sent[fmt.Sprintf("RETR %d", n)]; k != 1 {
			t.Errorf("RETR %d sent upstream %d times, want once", n, k)
		}
	}
	if maxRetrs < 2 {
		t.Errorf("RETRs never pipelined upstream (at most %d outstanding):\n%s", maxRetrs, strings.Join(trace, "\n"))
	}
	if t.Failed() {
		return
	}
	t.Logf("pop3: Dovecot RETR pipelining verified: %d messages in order byte-identical to direct Dovecot, up to %d RETRs outstanding upstream, each sent once; message %d removed by another session: -ERR from both", len(corpus), maxRetrs, removed)
}

// endRecorder records the Write and WriteEnd calls of WriteWireTo.
type endRecorder struct {
	writes []string
	end    *string
}

func (e *endRecorder) Write(b []byte) (int, error) {
	e.writes = append(e.writes, string(b))
	return len(b), nil
}

func (e *endRecorder) WriteEnd(b []byte) error {
	s := string(b)
	e.end = &s
	return nil
}

// TestWireWriterToEnd: to a writer with WriteEnd (the proxy's), the last
// lines of a message go together with its end, so that the proxy sends
// them and the terminating "." in one write, not the "." on its own; the
// octets and the count are those of the pass-through.
func TestWireWriterToEnd(t *testing.T) {
	for _, step := range []int{1 << 20, 7} {
		wire := "Subject: x\r\n\r\n..dot\r\nlast line\r\n.\r\n"
		c, rc := pipeRetr(t, wire, step, false)
		var e endRecorder
		msg, eof, err := rc.(*dotReader).WriteWireTo(&e)
		if err != nil || !eof || e.end == nil {
			t.Fatalf("step %d: eof %v, err %v, WriteEnd called: %v", step, eof, err, e.end != nil)
		}
		if got := strings.Join(e.writes, "") + *e.end + ".\r\n"; got != wire {
			t.Errorf("step %d: wrote %q, want %q", step, got, wire)
		}
		if step > len(wire) && len(e.writes) > 0 {
			t.Errorf("one read of the whole reply: Write %q before WriteEnd, want WriteEnd alone", e.writes)
		}
		if want := int64(len("Subject: x\r\n\r\n.dot\r\nlast line\r\n")); msg != want {
			t.Errorf("step %d: msg %d, want %d", step, msg, want)
		}
		if l, err := c.readLine(); err != nil || string(l) != "+OK next" {
			t.Errorf("step %d: next line %q, %v: out of step", step, l, err)
		}
	}
}
