package pop3_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/pop3"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/proxy"
)

func serve(t *testing.T, b backends.Opener) string {
	t.Helper()
	srv := &proxy.Server{Backend: unchecked{b}, AuthFailureDelay: -1}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// unchecked serves an Opener to a proxy.Server in tests, the way the
// accounts router serves a passthrough account without a password hash:
// each login is opened with the client's user name and password.
type unchecked struct{ backends.Opener }

func (u unchecked) Login(ctx context.Context, user, pass string) (proxy.Mailbox, error) {
	return u.OpenMaildrop(ctx, backends.Login{User: user, Password: pass})
}

func login(t *testing.T, addr, user, pass string) *pop3test.Client {
	t.Helper()
	c, err := pop3test.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(user, pass); err != nil {
		t.Fatalf("login at %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func cmd(t *testing.T, c *pop3test.Client, line string) string {
	t.Helper()
	r, err := c.Cmd(line)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return r
}

func multiRaw(t *testing.T, c *pop3test.Client, line string) []byte {
	t.Helper()
	cmd(t, c, line)
	b, err := c.MultiLineRaw()
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return b
}

func multi(t *testing.T, c *pop3test.Client, line string) []byte {
	t.Helper()
	cmd(t, c, line)
	b, err := c.MultiLine()
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return b
}

// present reports whether the Maildir still holds a file for unique.
func present(t *testing.T, maildir, unique string) bool {
	t.Helper()
	for _, sub := range []string{"new", "cur"} {
		m, err := filepath.Glob(filepath.Join(maildir, sub, unique+"*"))
		if err != nil {
			t.Fatal(err)
		}
		if len(m) > 0 {
			return true
		}
	}
	return false
}

// TestDovecotRelay relays a private Dovecot's POP3 through popbridge and
// compares every corpus message with what Dovecot sends directly.
func TestDovecotRelay(t *testing.T) {
	const user, pass = "alice", "alice-secret"
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{user: pass}})
	corpus, err := d.WriteCorpus(user)
	if err != nil {
		t.Fatal(err)
	}
	store, err := cache.Open(filepath.Join(t.TempDir(), "cache.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// Passthrough over implicit TLS: the client's USER/PASS go upstream.
	b, err := pop3.New(pop3.Options{
		Addr: d.POP3SAddr, TLS: modes.TLSImplicit, TLSConfig: d.TLSConfig(),
		Auth: modes.AuthPassthrough, Store: store,
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, b)

	pb := login(t, addr, user, pass)
	dc := login(t, d.POP3Addr, user, pass)
	same := func(what string, dv, pv []byte) {
		t.Helper()
		if !bytes.Equal(dv, pv) {
			i := 0
			for i < len(dv) && i < len(pv) && dv[i] == pv[i] {
				i++
			}
			t.Errorf("%s differs: Dovecot %d octets, popbridge %d octets, first difference at %d: %q vs %q",
				what, len(dv), len(pv), i, dv[i:min(i+40, len(dv))], pv[i:min(i+40, len(pv))])
		}
	}
	same("STAT", []byte(cmd(t, dc, "STAT")), []byte(cmd(t, pb, "STAT")))
	same("UIDL", multiRaw(t, dc, "UIDL"), multiRaw(t, pb, "UIDL"))
	same("LIST", multiRaw(t, dc, "LIST"), multiRaw(t, pb, "LIST"))
	compared := 0
	retr := make([][]byte, len(corpus))
	for i, m := range corpus {
		n := i + 1
		for _, c := range []string{"RETR %d", "TOP %d 0", "TOP %d 1", "TOP %d 5", "TOP %d 99999999"} {
			line := fmt.Sprintf(c, n)
			dv, pv := multiRaw(t, dc, line), multiRaw(t, pb, line)
			same(fmt.Sprintf("%s (%s)", line, m.Name), dv, pv)
			compared++
		}
		retr[i] = multi(t, pb, fmt.Sprintf("RETR %d", n))
	}
	cmd(t, pb, "QUIT")
	cmd(t, dc, "QUIT")

	// Second session: every LIST size is the octet count RETR sends, also
	// where Dovecot's LIST said otherwise (no final newline, empty file).
	pb = login(t, addr, user, pass)
	dc = login(t, d.POP3Addr, user, pass)
	corrected := 0
	for i := range corpus {
		n := i + 1
		var got, dsize int64
		fmt.Sscanf(cmd(t, pb, fmt.Sprintf("LIST %d", n)), "+OK %d %d", new(int), &got)
		fmt.Sscanf(cmd(t, dc, fmt.Sprintf("LIST %d", n)), "+OK %d %d", new(int), &dsize)
		if got != int64(len(retr[i])) {
			t.Errorf("message %d (%s): LIST %d after RETR of %d octets", n, corpus[i].Name, got, len(retr[i]))
		}
		if got != dsize {
			corrected++
		}
	}
	same("UIDL (second session)", multiRaw(t, dc, "UIDL"), multiRaw(t, pb, "UIDL"))
	cmd(t, dc, "QUIT")

	// Deletes reach the upstream at QUIT, and only then.
	cmd(t, pb, "DELE 1")
	cmd(t, pb, "DELE 3")
	if !present(t, d.MaildirPath(user), corpus[0].Unique) {
		t.Fatal("message 1 removed upstream before QUIT")
	}
	if r := cmd(t, pb, "QUIT"); !strings.Contains(r, "2 messages deleted") {
		t.Errorf("QUIT: %q", r)
	}
	for i, m := range corpus {
		gone := !present(t, d.MaildirPath(user), m.Unique)
		if gone != (i == 0 || i == 2) {
			t.Errorf("message %d (%s): gone upstream = %v after QUIT", i+1, m.Name, gone)
		}
	}

	// A dropped client session deletes nothing.
	pb = login(t, addr, user, pass)
	cmd(t, pb, "DELE 1")
	cmd(t, pb, "DELE 2")
	pb.Close()
	time.Sleep(300 * time.Millisecond)
	dc = login(t, d.POP3Addr, user, pass)
	if r := cmd(t, dc, "STAT"); !strings.HasPrefix(r, fmt.Sprintf("+OK %d ", len(corpus)-2)) {
		t.Errorf("STAT after dropped session: %q, want %d messages", r, len(corpus)-2)
	}
	for i, m := range corpus[3:] {
		if !present(t, d.MaildirPath(user), m.Unique) {
			t.Errorf("message %d (%s) removed by a dropped session", i+4, m.Name)
		}
	}
	cmd(t, dc, "QUIT")

	// STLS and plain connections, with configured (mapped) credentials.
	for _, mode := range []modes.TLS{modes.TLSStartTLS, modes.TLSNone} {
		addr := d.POP3Addr
		mb, err := mustNew(t, pop3.Options{Addr: addr, TLS: mode, TLSConfig: d.TLSConfig(), Username: user, Password: pass}).
			OpenMaildrop(context.Background(), backends.Login{User: "ignored", Password: "ignored"})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		list, _ := mb.List(context.Background())
		if len(list) != len(corpus)-2 {
			t.Errorf("%s: %d messages", mode, len(list))
		}
		mb.Close()
	}
	if t.Failed() {
		return
	}
	t.Logf("pop3: Dovecot relay verified: %d corpus messages, %d RETR/TOP replies byte-identical to direct Dovecot over implicit TLS (passthrough auth); UIDL passed through; %d LIST sizes corrected from RETR and served on the next login; 2 DELE committed upstream at QUIT (files gone); dropped session deleted nothing; STLS and plain logins with mapped credentials",
		len(corpus), compared, corrected)
}

func mustNew(t *testing.T, o pop3.Options) *pop3.Backend {
	t.Helper()
	b, err := pop3.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// relay forwards TCP connections to target; cut closes them after a
// given number of further octets from the server.
type relay struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	budget int64 // octets still allowed downstream; negative: unlimited
	conns  []net.Conn
	cutc   chan struct{}
}

func newRelay(t *testing.T, target string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: target, budget: -1, cutc: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); r.closeAll() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c, u)
			r.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go r.down(c, u)
		}
	}()
	return r
}

func (r *relay) down(c, u net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := u.Read(buf)
		r.mu.Lock()
		if r.budget >= 0 {
			if int64(n) > r.budget {
				n = int(r.budget)
			}
			r.budget -= int64(n)
		}
		over := r.budget == 0
		r.mu.Unlock()
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if over {
			r.closeAll()
			return
		}
		if err != nil {
			c.Close()
			return
		}
	}
}

// cutAfter lets n more octets through downstream, then kills everything.
func (r *relay) cutAfter(n int64) {
	r.mu.Lock()
	r.budget = n
	r.mu.Unlock()
}

func (r *relay) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
}

// TestDovecotUpstreamCut kills the upstream connection in the middle of
// the 5 MB message: the client's connection must close without the "."
// that ends a multi-line reply.
func TestDovecotUpstreamCut(t *testing.T) {
	const user, pass = "bob", "bob-secret"
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{user: pass}})
	corpus, err := d.WriteCorpus(user)
	if err != nil {
		t.Fatal(err)
	}
	big := -1
	for i, m := range corpus {
		if big < 0 || len(m.Data) > len(corpus[big].Data) {
			big = i
		}
	}
	r := newRelay(t, d.POP3Addr)
	addr := serve(t, mustNew(t, pop3.Options{Addr: r.ln.Addr().String(), TLS: modes.TLSNone, Auth: modes.AuthPassthrough}))
	pb := login(t, addr, user, pass)
	r.cutAfter(1 << 20)
	if err := pb.Send(fmt.Sprintf("RETR %d", big+1)); err != nil {
		t.Fatal(err)
	}
	conn := pb.Conn()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection not closed after the upstream cut (%d octets read)", len(got))
	}
	if !bytes.HasPrefix(got, []byte("+OK")) {
		t.Fatalf("reply starts %q", got[:min(len(got), 40)])
	}
	if bytes.HasSuffix(got, []byte("\r\n.\r\n")) || len(got) >= len(corpus[big].Data) {
		t.Fatalf("truncated message looks complete: %d octets, ends %q", len(got), got[max(0, len(got)-10):])
	}
	// The upstream still has everything.
	dc := login(t, d.POP3Addr, user, pass)
	if r := cmd(t, dc, "STAT"); !strings.HasPrefix(r, fmt.Sprintf("+OK %d ", len(corpus))) {
		t.Errorf("STAT %q", r)
	}
	if t.Failed() {
		return
	}
	t.Logf("pop3: upstream Dovecot connection cut after 1 MiB of the %d-octet message: client connection closed after %d octets without the final dot; nothing deleted",
		len(corpus[big].Data), len(got))
}
