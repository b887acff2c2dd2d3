package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/testcert"
)

// fakeMsg is one message of the fake server: the LIST size it announces
// and the exact bytes it sends after "+OK" to RETR, terminator included.
type fakeMsg struct {
	uid  string
	size int64
	wire string
	err  bool // RETR gets -ERR
	cut  bool // the server closes the connection after wire
}

// fakeServer answers a fixed script of POP3 responses on 127.0.0.1.
type fakeServer struct {
	t        *testing.T
	ln       net.Listener
	msgs     []fakeMsg
	pass     string      // every user's password
	tlsConf  *tls.Config // for STLS, or for all connections if implicit
	implicit bool
	stlsJunk bool // send an extra line right after +OK to STLS

	mu          sync.Mutex
	loggedIn    int // sessions logged in now
	peak        int
	users       map[string]int // logins per user
	active      map[string]int // sessions logged in now per user
	userPeak    int            // most sessions one user had at once
	noops, quit int
}

// msgs3 is a small maildrop with stuffed lines and an empty body.
var msgs3 = []fakeMsg{
	{uid: "uid-1", size: 17, wire: "Subject: a\r\n\r\nb\r\n.\r\n"},
	{uid: "uid-2", size: 21, wire: "Subject: b\r\n\r\n..x\r\n..\r\n.\r\n"},
	{uid: "uid-3", size: 14, wire: "Subject: c\r\n\r\n.\r\n"},
}

func startFake(t *testing.T, f *fakeServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.t, f.ln, f.users, f.active = t, ln, map[string]int{}, map[string]int{}
	if f.pass == "" {
		f.pass = "secret"
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { f.serve(c) })
		}
	})
	return ln.Addr().String()
}

func (f *fakeServer) serve(nc net.Conn) {
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if f.implicit {
		nc = tls.Server(nc, f.tlsConf)
	}
	r, w := bufio.NewReader(nc), bufio.NewWriter(nc)
	say := func(s string) { w.WriteString(s); w.Flush() }
	say("+OK fake POP3 ready\r\n")
	user, authed := "", false
	defer func() {
		if authed {
			f.mu.Lock()
			f.loggedIn--
			f.active[user]--
			f.mu.Unlock()
		}
	}()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		switch verb {
		case "STLS":
			if f.stlsJunk {
				say("+OK begin TLS\r\n+OK injected\r\n")
			} else {
				say("+OK begin TLS\r\n")
			}
			nc = tls.Server(nc, f.tlsConf)
			r, w = bufio.NewReader(nc), bufio.NewWriter(nc)
		case "USER":
			user = arg
			say("+OK\r\n")
		case "PASS":
			if arg != f.pass {
				say("-ERR [AUTH] invalid login\r\n")
				continue
			}
			f.mu.Lock()
			f.loggedIn++
			f.peak = max(f.peak, f.loggedIn)
			f.users[user]++
			f.active[user]++
			f.userPeak = max(f.userPeak, f.active[user])
			f.mu.Unlock()
			authed = true
			say("+OK logged in\r\n")
		case "UIDL", "LIST":
			var b strings.Builder
			b.WriteString("+OK\r\n")
			for i, m := range f.msgs {
				if verb == "UIDL" {
					fmt.Fprintf(&b, "%d %s\r\n", i+1, m.uid)
				} else {
					fmt.Fprintf(&b, "%d %d\r\n", i+1, m.size)
				}
			}
			b.WriteString(".\r\n")
			say(b.String())
		case "RETR":
			n, err := strconv.Atoi(arg)
			if err != nil || n < 1 || n > len(f.msgs) {
				say("-ERR no such message\r\n")
				continue
			}
			m := f.msgs[n-1]
			if m.err {
				say("-ERR no such message\r\n")
				continue
			}
			say(fmt.Sprintf("+OK %d octets\r\n", m.size) + m.wire)
			if m.cut {
				return
			}
		case "NOOP":
			f.mu.Lock()
			f.noops++
			f.mu.Unlock()
			say("+OK\r\n")
		case "QUIT":
			f.mu.Lock()
			f.quit++
			f.mu.Unlock()
			say("+OK bye\r\n")
			return
		default:
			say("-ERR unknown command\r\n")
		}
	}
}

// runJSON runs popbench with -json and decodes the report.
func runJSON(t *testing.T, args ...string) (*Result, int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"-json", "-timeout", "5s"}, args...), &out, &errOut)
	var r Result
	if code != 2 {
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("bad JSON %q: %v (stderr %s)", out.String(), err, errOut.String())
		}
	}
	return &r, code, errOut.String()
}

func TestSessionsClean(t *testing.T) {
	f := &fakeServer{msgs: msgs3}
	addr := startFake(t, f)
	r, code, stderr := runJSON(t, "-addr", addr, "-user", "u%d", "-pass", "secret", "-accounts", "2", "-c", "2", "-n", "6")
	if code != 0 || r.Errors != 0 {
		t.Fatalf("exit %d, errors %d %q, stderr %s", code, r.Errors, r.ErrorSamples, stderr)
	}
	if r.Sessions != 6 || r.SessionsOK != 6 || r.SessionsFailed != 0 {
		t.Errorf("sessions %d ok %d failed %d, want 6 6 0", r.Sessions, r.SessionsOK, r.SessionsFailed)
	}
	if r.Messages != 18 {
		t.Errorf("messages = %d, want 18", r.Messages)
	}
	if want := int64(6 * (17 + 21 + 14)); r.Bytes != want {
		t.Errorf("bytes = %d, want %d", r.Bytes, want)
	}
	if r.SessionLatency.Count != 6 || r.RetrLatency.Count != 18 || r.RetrLatency.P99 <= 0 || r.SessionsPerSec <= 0 || r.MBPerSec <= 0 {
		t.Errorf("latency/rates not filled in: %+v", r)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.users["u1"]+f.users["u2"] != 6 || len(f.users) != 2 || f.quit != 6 {
		t.Errorf("logins %v, quits %d; want 6 logins as u1 and u2, 6 quits", f.users, f.quit)
	}
	if f.userPeak != 1 {
		t.Errorf("one account had %d sessions at once; workers must not share accounts", f.userPeak)
	}
	if f.peak > 2 {
		t.Errorf("peak concurrent sessions %d > -c 2", f.peak)
	}
}

func TestSizeMismatchIsAnError(t *testing.T) {
	msgs := append([]fakeMsg(nil), msgs3...)
	msgs[1].size++ // LIST claims one octet more than RETR sends
	addr := startFake(t, &fakeServer{msgs: msgs})
	r, code, _ := runJSON(t, "-addr", addr, "-user", "u", "-pass", "secret", "-n", "3")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if r.Errors != 3 || r.SessionsFailed != 3 || r.SessionsOK != 0 {
		t.Errorf("errors %d failed %d ok %d, want 3 3 0", r.Errors, r.SessionsFailed, r.SessionsOK)
	}
	if r.Messages != 9 {
		t.Errorf("messages = %d, want 9 (a mismatch does not stop the session)", r.Messages)
	}
	if len(r.ErrorSamples) == 0 || r.ErrorSamples[0] != "RETR 2: got 21 octets, LIST said 22" {
		t.Errorf("error samples %q", r.ErrorSamples)
	}
}

func TestAddedFinalCRLF(t *testing.T) {
	// LIST leaves out the CRLF added after a last line without one.
	msgs := []fakeMsg{{uid: "u1", size: 4, wire: "a\r\nb\r\n.\r\n"}}
	addr := startFake(t, &fakeServer{msgs: msgs})
	r, code, _ := runJSON(t, "-addr", addr, "-user", "u", "-pass", "secret", "-n", "2")
	if code != 0 || r.Errors != 0 || r.AddedCRLF != 2 || r.SessionsOK != 2 {
		t.Errorf("exit %d errors %d added %d ok %d; want 0 0 2 2", code, r.Errors, r.AddedCRLF, r.SessionsOK)
	}
	r, code, _ = runJSON(t, "-addr", addr, "-user", "u", "-pass", "secret", "-n", "2", "-strict")
	if code != 1 || r.Errors != 2 || r.AddedCRLF != 0 {
		t.Errorf("-strict: exit %d errors %d added %d; want 1 2 0", code, r.Errors, r.AddedCRLF)
	}
	// One octet over, or 2 under, is never accepted.
	for _, size := range []int64{5, 8} {
		msgs[0].size = size
		addr := startFake(t, &fakeServer{msgs: msgs})
		if r, code, _ := runJSON(t, "-addr", addr, "-user", "u", "-pass", "secret", "-n", "1"); code != 1 || r.Errors != 1 {
			t.Errorf("size %d: exit %d errors %d; want 1 1", size, code, r.Errors)
		}
	}
}

func TestBadWireIsAnError(t *testing.T) {
	for _, tt := range []struct {
		name string
		msg  fakeMsg
		want string
	}{
		{"bare LF", fakeMsg{wire: "a\nb\r\n.\r\n"}, "RETR 1: bare CR or LF on the wire"},
		{"bare CR", fakeMsg{wire: "a\rb\r\n.\r\n"}, "RETR 1: bare CR or LF on the wire"},
		{"truncated", fakeMsg{wire: "a\r\nb", cut: true}, "RETR 1: EOF"},
		{"-ERR", fakeMsg{err: true}, "RETR: -ERR no such message"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.msg.uid, tt.msg.size = "u1", 5
			addr := startFake(t, &fakeServer{msgs: []fakeMsg{tt.msg}})
			r, code, _ := runJSON(t, "-addr", addr, "-user", "u", "-pass", "secret", "-n", "1")
			if code != 1 || r.Errors == 0 || r.SessionsFailed != 1 {
				t.Fatalf("exit %d errors %d failed %d", code, r.Errors, r.SessionsFailed)
			}
			if !strings.Contains(strings.Join(r.ErrorSamples, "|"), tt.want) {
				t.Errorf("error samples %q, want %q", r.ErrorSamples, tt.want)
			}
		})
	}
}

func TestLoginFailure(t *testing.T) {
	addr := startFake(t, &fakeServer{msgs: msgs3})
	r, code, _ := runJSON(t, "-addr", addr, "-user", "u", "-pass", "wrong", "-n", "2")
	if code != 1 || r.Errors != 2 || r.SessionsFailed != 2 || r.Messages != 0 {
		t.Fatalf("exit %d errors %d failed %d messages %d", code, r.Errors, r.SessionsFailed, r.Messages)
	}
	if r.ErrorSamples[0] != "PASS: -ERR [AUTH] invalid login" {
		t.Errorf("error sample %q", r.ErrorSamples[0])
	}
	for _, s := range r.ErrorSamples {
		if strings.Contains(s, "wrong") {
			t.Errorf("the password leaked into an error: %q", s)
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	// Port 1, not a port just freed, which a test process beside this
	// one may have taken.
	r, code, _ := runJSON(t, "-addr", "127.0.0.1:1", "-user", "u", "-pass", "p", "-n", "2", "-c", "2")
	if code != 1 || r.Errors != 2 || r.SessionsOK != 0 {
		t.Fatalf("exit %d errors %d ok %d", code, r.Errors, r.SessionsOK)
	}
}

func TestDuration(t *testing.T) {
	addr := startFake(t, &fakeServer{msgs: msgs3})
	t0 := time.Now()
	r, code, _ := runJSON(t, "-addr", addr, "-user", "u%d", "-accounts", "2", "-pass", "secret", "-c", "2", "-d", "300ms")
	if el := time.Since(t0); el > 3*time.Second {
		t.Errorf("a 300ms run took %s", el)
	}
	if code != 0 || r.SessionsOK == 0 || r.Sessions != r.SessionsOK {
		t.Errorf("exit %d sessions %d ok %d", code, r.Sessions, r.SessionsOK)
	}
}

func TestIdle(t *testing.T) {
	f := &fakeServer{msgs: msgs3}
	addr := startFake(t, f)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-addr", addr, "-user", "idle%d", "-accounts", "5", "-pass", "secret", "-idle", "5", "-c", "3", "-hold", "200ms"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
	}
	if !strings.Contains(errOut.String(), "5 of 5 sessions logged in; holding them for 200ms") {
		t.Errorf("stderr %q lacks the holding notice", errOut.String())
	}
	for _, want := range []string{"logged in", "5 of 5", "NOOP ok", "QUIT ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.peak != 5 || f.noops != 5 || f.quit != 5 || len(f.users) != 5 {
		t.Errorf("peak %d noops %d quits %d users %d; want 5 each", f.peak, f.noops, f.quit, len(f.users))
	}
}

func TestTLS(t *testing.T) {
	cert := testcert.New(t)
	tc := cert.ServerConfig()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, cert.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name               string
		implicit, stlsJunk bool
		args               []string
		ok                 bool
	}{
		{"implicit insecure", true, false, []string{"-tls", "implicit", "-insecure"}, true},
		{"implicit cafile", true, false, []string{"-tls", "implicit", "-cafile", caFile}, true},
		{"implicit unverified", true, false, []string{"-tls", "implicit"}, false},
		{"stls", false, false, []string{"-tls", "stls", "-cafile", caFile, "-servername", "localhost"}, true},
		{"stls injection", false, true, []string{"-tls", "stls", "-insecure"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeServer{msgs: msgs3, tlsConf: tc, implicit: tt.implicit, stlsJunk: tt.stlsJunk}
			addr := startFake(t, f)
			r, code, _ := runJSON(t, append([]string{"-addr", addr, "-user", "u", "-pass", "secret", "-n", "2"}, tt.args...)...)
			if tt.ok && (code != 0 || r.SessionsOK != 2 || r.Messages != 6) {
				t.Errorf("exit %d ok %d messages %d errors %q", code, r.SessionsOK, r.Messages, r.ErrorSamples)
			}
			if !tt.ok && (code != 1 || r.SessionsOK != 0) {
				t.Errorf("exit %d ok %d, want failures", code, r.SessionsOK)
			}
		})
	}
}

// pipeClient returns a client reading wire through a bufio.Reader of the
// given size, so long lines arrive in fragments.
func pipeClient(wire string, size int) *client {
	return &client{r: bufio.NewReaderSize(strings.NewReader(wire), size)}
}

func TestReadMessage(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, tt := range []struct {
		name    string
		wire    string
		octets  int64
		badEnds bool
	}{
		{"empty", ".\r\n", 0, false},
		{"lines", "a\r\nbc\r\n.\r\n", 7, false},
		{"stuffed", "..a\r\n..\r\n...\r\n.\r\n", 4 + 3 + 4, false},
		{"blank lines", "\r\n\r\n.\r\n", 4, false},
		{"long line", long + "\r\n.\r\n", 102, false},
		{"long stuffed line", "." + long + "\r\n.\r\n", 102, false},
		{"crlf across fragments", strings.Repeat("y", 15) + "\r\n" + "z\r\n.\r\n", 17 + 3, false},
		{"dot line after long line", long + "\r\n..\r\n.\r\n", 102 + 3, false},
		{"bare LF", "a\nb\r\n.\r\n", 5, true},
		{"bare CR", "a\rb\r\n.\r\n", 5, true},
		{"bare CR at fragment end", strings.Repeat("y", 15) + "\rz\r\n.\r\n", 16 + 3, true},
		{"LF terminator", "a\r\n.\n", 3, true},
		{"dot text is not the end", ".x\r\n.\r\n", 3, false},
	} {
		for _, size := range []int{16, 4096} {
			c := pipeClient(tt.wire, size)
			octets, bad, err := c.readMessage()
			if err != nil || octets != tt.octets || bad != tt.badEnds {
				t.Errorf("%s (buffer %d): got %d, %v, %v; want %d, %v", tt.name, size, octets, bad, err, tt.octets, tt.badEnds)
			}
			if rest, _ := c.r.Peek(1); len(rest) != 0 {
				t.Errorf("%s (buffer %d): read past the terminator", tt.name, size)
			}
		}
	}
	if _, _, err := pipeClient("a\r\nb\r\n", 16).readMessage(); err == nil {
		t.Error("a message without terminator gave no error")
	}
}

func TestStatus(t *testing.T) {
	for _, tt := range []struct {
		wire, text, err string
	}{
		{"+OK\r\n", "", ""},
		{"+OK 3 200\r\n", "3 200", ""},
		{"+OK no CR\n", "no CR", ""},
		{"-ERR [AUTH] nope\r\n", "", "X: -ERR [AUTH] nope"},
		{"-ERR\r\n", "", "X: -ERR "},
		{"* BYE\r\n", "", `X: unexpected response "* BYE"`},
		{"+OKAY\r\n", "", `X: unexpected response "+OKAY"`},
		{"+OK " + strings.Repeat("a", maxResponseLine) + "\r\n", "", "X: response line too long"},
		{"+OK", "", "X: EOF"},
	} {
		text, err := pipeClient(tt.wire, 64<<10).status("X")
		got := ""
		if err != nil {
			got = err.Error()
		}
		if text != tt.text || got != tt.err {
			t.Errorf("status(%.20q) = %q, %q; want %q, %q", tt.wire, text, got, tt.text, tt.err)
		}
	}
}

func TestParseEntry(t *testing.T) {
	for _, tt := range []struct {
		line  string
		size  bool
		want  listEntry
		isErr bool
	}{
		{"1 200", true, listEntry{n: 1, size: 200}, false},
		{"12 0", true, listEntry{n: 12, size: 0}, false},
		{"2 300 extra", true, listEntry{n: 2, size: 300}, false},
		{"3 abc-XYZ", false, listEntry{n: 3, uid: "abc-XYZ"}, false},
		{"1 " + strings.Repeat("u", 70), false, listEntry{n: 1, uid: strings.Repeat("u", 70)}, false},
		{"1 " + strings.Repeat("u", 71), false, listEntry{}, true},
		{"1", true, listEntry{}, true},
		{"0 5", true, listEntry{}, true},
		{"x 5", true, listEntry{}, true},
		{"1 -5", true, listEntry{}, true},
		{"1 5x", true, listEntry{}, true},
		{"1 ", false, listEntry{}, true},
	} {
		got, err := parseEntry([]byte(tt.line), tt.size)
		if (err != nil) != tt.isErr || got != tt.want {
			t.Errorf("parseEntry(%q) = %+v, %v", tt.line, got, err)
		}
	}
}

func TestReadMulti(t *testing.T) {
	c := pipeClient("1 a\r\n..b\r\n\r\n.\r\nrest", 64)
	var got []string
	if err := c.readMulti(func(l []byte) error { got = append(got, string(l)); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1 a", ".b", ""}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("lines %q, want %q", got, want)
	}
	if rest, _ := c.r.Peek(4); string(rest) != "rest" {
		t.Errorf("left %q after the listing", rest)
	}
}

func TestHist(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	near := func(got, want time.Duration) bool {
		return got >= want && float64(got) <= float64(want)*1.011
	}
	if p := h.quantile(0.5); !near(p, 500*time.Millisecond) {
		t.Errorf("p50 = %s, want about 500ms", p)
	}
	if p := h.quantile(0.99); !near(p, 990*time.Millisecond) {
		t.Errorf("p99 = %s, want about 990ms", p)
	}
	s := h.summary()
	if s.Count != 1000 || s.Max != 1000 || s.Mean != 500.5 {
		t.Errorf("summary %+v", s)
	}
	var empty hist
	if empty.quantile(0.5) != 0 || empty.summary().Count != 0 {
		t.Error("empty histogram is not zero")
	}
}

func TestFlags(t *testing.T) {
	usersFile := filepath.Join(t.TempDir(), "users")
	os.WriteFile(usersFile, []byte("# test\nalice:pa:ss\r\n\nbob:\n"), 0o600)
	for _, tt := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"-addr", "127.0.0.1:1", "-user", "u", "-pass", "p"}, true},
		{[]string{"-user", "u"}, false},
		{[]string{"-addr", "nohostport", "-user", "u"}, false},
		{[]string{"-addr", "127.0.0.1:1"}, false},
		{[]string{"-addr", "127.0.0.1:1", "-user", "u", "-c", "0"}, false},
		{[]string{"-addr", "127.0.0.1:1", "-user", "u", "-c", "10001"}, false},
		{[]string{"-addr", "127.0.0.1:1", "-user", "u", "-n", "-1"}, false},
		{[]string{"-addr", "127.0.0.1:1", "-user", "u", "-d", "25h"}, false},
		{[]string{"-addr", "127.0.0.1:1", "-user", "u", "-tls", "ssl"}, false},
		{[]string{"-addr", "127.0.0.1:1", "-user", "u", "-accounts", "3"}, false},
		{[]string{"-addr", "127.0.0.1:1", "-user", "u%s", "-accounts", "3"}, false},
		{[]string{"-addr", "127.0.0.1:1", "-user", "u%d", "-accounts", "0"}, false},
		{[]string{"-addr", "127.0.0.1:1", "-users", usersFile}, true},
		{[]string{"-addr", "127.0.0.1:1", "-users", usersFile, "-user", "x"}, false},
		{[]string{"-addr", "127.0.0.1:1", "-user", "u", "extra"}, false},
	} {
		_, _, err := parseFlags(tt.args, new(bytes.Buffer))
		if (err == nil) != tt.ok {
			t.Errorf("parseFlags(%q) err = %v", tt.args, err)
		}
	}

	cfg, _, err := parseFlags([]string{"-addr", "127.0.0.1:1", "-users", usersFile}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	if want := []account{{"alice", "pa:ss"}, {"bob", ""}}; fmt.Sprint(cfg.accounts) != fmt.Sprint(want) || cfg.n != 100 {
		t.Errorf("accounts %v n %d, want %v and the default 100", cfg.accounts, cfg.n, want)
	}
	cfg, _, err = parseFlags([]string{"-addr", "127.0.0.1:1", "-user", "u%03d", "-pass", "p%d", "-accounts", "2", "-first", "9", "-d", "1s"}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	if want := []account{{"u009", "p9"}, {"u010", "p10"}}; fmt.Sprint(cfg.accounts) != fmt.Sprint(want) || cfg.n != 0 {
		t.Errorf("accounts %v n %d, want %v and no -n", cfg.accounts, cfg.n, want)
	}
	if cfg.accountFor(0) != cfg.accountFor(2) || cfg.accountFor(0) == cfg.accountFor(1) {
		t.Error("accountFor does not cycle through the accounts")
	}
}

// oracleMessage is the plain reading of a multi-line response: line by
// line over the whole input. ok is false when there is no terminator.
func oracleMessage(wire []byte) (octets int64, bad bool, used int, ok bool) {
	for pos := 0; ; {
		j := bytes.IndexByte(wire[pos:], '\n')
		if j < 0 {
			return 0, false, 0, false
		}
		line := wire[pos : pos+j+1]
		pos += j + 1
		switch string(line) {
		case ".\r\n":
			return octets, bad, pos, true
		case ".\n":
			return octets, true, pos, true
		}
		if line[0] == '.' {
			line = line[1:]
		}
		octets += int64(len(line))
		if !bytes.HasSuffix(line, []byte("\r\n")) || bytes.IndexByte(line[:len(line)-1], '\r') != len(line)-2 {
			bad = true
		}
	}
}

// checkReadMessage compares readMessage through a buffer of size with
// the oracle, including where it stops reading.
func checkReadMessage(t *testing.T, wire []byte, size int) {
	t.Helper()
	c := &client{r: bufio.NewReaderSize(bytes.NewReader(wire), size)}
	octets, bad, err := c.readMessage()
	wOctets, wBad, used, ok := oracleMessage(wire)
	if !ok {
		if err == nil {
			t.Fatalf("buffer %d, %q: no terminator but no error", size, wire)
		}
		return
	}
	rest, _ := io.ReadAll(c.r)
	if err != nil || octets != wOctets || bad != wBad || !bytes.Equal(rest, wire[used:]) {
		t.Fatalf("buffer %d, %q:\ngot  %d %v %v rest %q\nwant %d %v rest %q", size, wire, octets, bad, err, rest, wOctets, wBad, wire[used:])
	}
}

func TestReadMessageOracle(t *testing.T) {
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	const alphabet = "ab..\r\n\r\n"
	for range 20000 {
		n := rng.IntN(120)
		wire := make([]byte, n, n+8)
		for i := range wire {
			wire[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if rng.IntN(4) > 0 {
			wire = append(wire, "\r\n.\r\n+OK"...)
		}
		checkReadMessage(t, wire, 16+rng.IntN(40))
	}
}

func FuzzReadMessage(f *testing.F) {
	f.Add([]byte("a\r\n..b\r\n.\r\n+OK"), uint8(0))
	f.Add([]byte(".\r\n"), uint8(3))
	f.Add([]byte("x\r\r\n.\n"), uint8(1))
	f.Add([]byte(strings.Repeat("y", 15)+"\r\n.\r\n"), uint8(0))
	f.Fuzz(func(t *testing.T, wire []byte, size uint8) {
		checkReadMessage(t, wire, 16+int(size))
	})
}
