package pop3

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3wire"
	"github.com/popbridge/popbridge/proxy"
)

// fakeMsg is one message of a fake upstream: its UIDL, the size LIST
// claims (-1: the true wire size) and its wire form (CRLF, stuffed).
type fakeMsg struct {
	uidl     string
	listSize int64
	wire     string
}

// fake is a small scripted POP3 server. It checks the client's protocol
// steps and records what it saw.
type fake struct {
	t  testing.TB
	ln net.Listener

	xoauth2 string // "", "one-line" or "two-line": the AUTH form required
	user    string
	secret  string // password or token
	noUIDL  bool
	noTop   bool // CAPA does not list TOP
	inUse   bool // PASS gets -ERR [IN-USE]
	msgs    []fakeMsg
	// pipelining: CAPA lists PIPELINING.
	pipelining bool
	// gone: RETR and TOP of these message numbers get -ERR, as for a
	// message another session removed after the listings.
	gone map[int]bool

	mu       sync.Mutex
	commands []string
	deleted  []string // UIDLs removed by a committed QUIT
	desync   []string // protocol errors by the client
}

func newFake(t testing.TB, f *fake) *fake {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.t, f.ln = t, ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *fake) addr() string { return f.ln.Addr().String() }

func (f *fake) note(list *[]string, s string) {
	f.mu.Lock()
	*list = append(*list, s)
	f.mu.Unlock()
}

func (f *fake) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := pop3wire.NewReader(bufio.NewReader(c), 0) // command lines, bounded
	w := bufio.NewWriter(c)
	out := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
	out("+OK fake ready")
	authed := false
	var user string
	marked := map[int]bool{}
	for {
		l, err := r.ReadLine()
		if err != nil {
			return
		}
		line := string(l)
		f.note(&f.commands, line)
		kw, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(kw) {
		case "CAPA":
			out("+OK")
			if !f.noUIDL {
				out("UIDL")
			}
			if !f.noTop {
				out("TOP")
			}
			if f.pipelining {
				out("PIPELINING")
			}
			if f.xoauth2 != "" {
				out("SASL XOAUTH2")
			} else {
				out("USER")
			}
			out(".")
		case "USER":
			user = arg
			out("+OK")
		case "PASS":
			switch {
			case f.inUse:
				out("-ERR [IN-USE] Mailbox is locked.")
			case f.xoauth2 == "" && user == f.user && arg == f.secret:
				authed = true
				out("+OK logged in")
			default:
				out("-ERR [AUTH] Authentication failed.")
			}
		case "AUTH":
			mech, ir, inline := strings.Cut(arg, " ")
			if !strings.EqualFold(mech, "XOAUTH2") || f.xoauth2 == "" {
				out("-ERR Unsupported mechanism")
				continue
			}
			if inline != (f.xoauth2 == "one-line") {
				f.note(&f.desync, "wrong XOAUTH2 form: "+line)
			}
			if !inline {
				out("+ ")
				l, err := r.ReadLine()
				if err != nil {
					return
				}
				ir = string(l)
			}
			raw, err := base64.StdEncoding.DecodeString(ir)
			if err != nil {
				out("-ERR bad base64")
				continue
			}
			want := "user=" + f.user + "\x01auth=Bearer " + f.secret + "\x01\x01"
			if string(raw) != want {
				// Google's error challenge; the client must answer with
				// an empty line before it gets the -ERR.
				out("+ " + base64.StdEncoding.EncodeToString([]byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`)))
				l, err := r.ReadLineEnd()
				if err != nil {
					return
				}
				if string(l) != "\r\n" {
					f.note(&f.desync, "answer to error challenge: "+strconv.Quote(string(l)))
				}
				out("-ERR [AUTH] Invalid credentials")
				continue
			}
			authed = true
			out("+OK Welcome.")
		case "UIDL", "LIST", "RETR", "TOP", "DELE", "RSET", "NOOP", "STAT":
			if !authed {
				out("-ERR not authenticated")
				continue
			}
			f.transaction(strings.ToUpper(kw), arg, marked, w, out)
		case "QUIT":
			if authed {
				for i := range f.msgs {
					if marked[i+1] {
						f.note(&f.deleted, f.msgs[i].uidl)
					}
				}
			}
			out("+OK bye")
			return
		default:
			out("-ERR unknown command")
		}
	}
}

func (f *fake) transaction(kw, arg string, marked map[int]bool, w *bufio.Writer, out func(string)) {
	num := func() (int, bool) {
		s, _, _ := strings.Cut(arg, " ")
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > len(f.msgs) || marked[n] {
			out("-ERR no such message")
			return 0, false
		}
		return n, true
	}
	size := func(m fakeMsg) int64 {
		if m.listSize >= 0 {
			return m.listSize
		}
		return int64(len(unstuffWire(m.wire)))
	}
	switch kw {
	case "UIDL":
		if f.noUIDL {
			out("-ERR UIDL not supported")
			return
		}
		out("+OK")
		for i, m := range f.msgs {
			if !marked[i+1] {
				out(fmt.Sprintf("%d %s", i+1, m.uidl))
			}
		}
		out(".")
	case "LIST":
		out("+OK")
		for i, m := range f.msgs {
			if !marked[i+1] {
				out(fmt.Sprintf("%d %d", i+1, size(m)))
			}
		}
		out(".")
	case "STAT":
		out(fmt.Sprintf("+OK %d 0", len(f.msgs)))
	case "RETR", "TOP":
		if n, ok := num(); ok && f.gone[n] {
			out("-ERR Message was removed by another session.")
		} else if ok {
			// One write, no copy: the benchmark's upstream.
			w.WriteString("+OK\r\n")
			w.WriteString(f.msgs[n-1].wire)
			out(".")
		}
	case "DELE":
		if n, ok := num(); ok {
			marked[n] = true
			out("+OK marked")
		}
	case "RSET":
		clear(marked)
		out("+OK")
	case "NOOP":
		out("+OK")
	}
}

// unstuffWire removes the stuffing of a wire body.
func unstuffWire(w string) string {
	var sb strings.Builder
	for _, l := range strings.SplitAfter(w, "\r\n") {
		sb.WriteString(strings.TrimPrefix(l, "."))
	}
	return sb.String()
}

var fakeMsgs = []fakeMsg{
	{uidl: "a1", listSize: -1, wire: "Subject: one\r\n\r\n..dot\r\n...\r\nplain\r\n"},
	// A UIDL with a character outside 0x21-0x7E, and a repeated one.
	{uidl: "bad\x7fuid", listSize: -1, wire: "Subject: two\r\n\r\nbody\r\n"},
	{uidl: "a1", listSize: -1, wire: "Subject: three\r\n\r\nbody\r\n"},
	// LIST lies: 5 octets.
	{uidl: strings.Repeat("L", 71), listSize: 5, wire: "Subject: four\r\n\r\n..\r\nend\r\n"},
}

// unchecked serves an Opener to a proxy.Server in tests, the way the
// accounts router serves a passthrough account without a password hash:
// each login is opened with the client's user name and password.
type unchecked struct{ backends.Opener }

func (u unchecked) Login(ctx context.Context, user, pass string) (proxy.Mailbox, error) {
	return u.OpenMaildrop(ctx, backends.Login{User: user, Password: pass})
}

// serveOne starts a proxy.Server over b on loopback and returns its address.
func serveOne(t testing.TB, b backends.Opener) string {
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

func TestXOAUTH2Forms(t *testing.T) {
	for _, form := range []string{"one-line", "two-line"} {
		t.Run(form, func(t *testing.T) {
			f := newFake(t, &fake{xoauth2: form, user: "u@example.com", secret: "good-token", msgs: fakeMsgs[:1]})
			ctx := context.Background()
			for _, tc := range []struct {
				token string
				ok    bool
			}{{"bad-token", false}, {"good-token", true}} {
				b, err := New(Options{
					Addr: f.addr(), TLS: modes.TLSNone, Auth: modes.AuthXOAUTH2, Username: "u@example.com",
					TokenSource:    oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tc.token}),
					XOAUTH2TwoLine: form == "two-line",
				})
				if err != nil {
					t.Fatal(err)
				}
				mb, err := b.OpenMaildrop(ctx, backends.Login{})
				if tc.ok {
					if err != nil {
						t.Fatalf("good token: %v", err)
					}
					list, _ := mb.List(ctx)
					if len(list) != 1 || list[0].UID != "a1" {
						t.Errorf("list %+v", list)
					}
					mb.Close()
					continue
				}
				if !errors.Is(err, proxy.ErrAuthFailed) {
					t.Fatalf("bad token: err %v, want ErrAuthFailed", err)
				}
			}
			// The bad-token session stayed in step: the fake saw the empty
			// line, and nothing else, after the error challenge.
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.desync) > 0 {
				t.Errorf("client out of step: %q", f.desync)
			}
		})
	}
}

// TestXOAUTH2ErrorChallengeInStep checks at the Client level that after a
// rejected token the connection still answers the next command.
func TestXOAUTH2ErrorChallengeInStep(t *testing.T) {
	f := newFake(t, &fake{xoauth2: "two-line", user: "u", secret: "tok"})
	ctx := context.Background()
	c, err := Dial(ctx, ClientOptions{Addr: f.addr(), TLS: modes.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.HasSASL("xoauth2") {
		t.Fatalf("CAPA: %v", c.caps)
	}
	var re *ResponseError
	if err := c.AuthXOAUTH2(ctx, "u", "wrong", false); !errors.As(err, &re) || re.Code != "AUTH" {
		t.Fatalf("wrong token: %v", err)
	}
	if err := c.AuthXOAUTH2(ctx, "u", "tok", false); err != nil {
		t.Fatalf("retry in the same session: %v", err)
	}
	if err := c.Noop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestFakeSnapshotAndSizes(t *testing.T) {
	f := newFake(t, &fake{user: "u", secret: "p", msgs: fakeMsgs})
	store, err := cache.Open(t.TempDir()+"/cache.db", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	b, err := New(Options{Addr: f.addr(), TLS: modes.TLSNone, Username: "u", Password: "p", Store: store, Account: "acct"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mb, err := b.OpenMaildrop(ctx, backends.Login{User: "x", Password: "y"})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := mb.List(ctx)
	if len(list) != 4 {
		t.Fatalf("list %+v", list)
	}
	seen := map[string]bool{}
	for i, m := range list {
		if !proxy.ValidUID(m.UID) || seen[m.UID] {
			t.Errorf("message %d: UID %q invalid or repeated", i+1, m.UID)
		}
		seen[m.UID] = true
	}
	if list[0].UID != "a1" {
		t.Errorf("valid UIDL not passed through: %q", list[0].UID)
	}
	if list[3].Size != 5 {
		t.Errorf("first session size %d, want LIST's 5", list[3].Size)
	}
	// RETR unstuffs and measures.
	rc, err := mb.Open(ctx, list[0].UID)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(rc)
	rc.Close()
	if want := "Subject: one\r\n\r\n.dot\r\n..\r\nplain\r\n"; string(body) != want || err != nil {
		t.Errorf("RETR 1 = %q, %v; want %q", body, err, want)
	}
	// TOP-like partial read: Close drains, the next command is in step.
	rc, err = mb.Open(ctx, list[3].UID)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	io.ReadFull(rc, buf)
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	mb.Close()

	// The lying LIST size was corrected, in the store, for the next login.
	mb, err = b.OpenMaildrop(ctx, backends.Login{User: "x", Password: "y"})
	if err != nil {
		t.Fatal(err)
	}
	list2, _ := mb.List(ctx)
	want := int64(len("Subject: four\r\n\r\n.\r\nend\r\n"))
	if list2[3].Size != want {
		t.Errorf("second session size %d, want %d", list2[3].Size, want)
	}
	for i := range list {
		if list[i].UID != list2[i].UID {
			t.Errorf("UID %d changed across sessions: %q -> %q", i+1, list[i].UID, list2[i].UID)
		}
	}
	// Delete sends DELE and QUIT; the fake commits.
	if err := mb.Delete(ctx, []string{list2[1].UID, list2[3].UID}); err != nil {
		t.Fatal(err)
	}
	mb.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := strings.Join(f.deleted, ","); got != "bad\x7fuid,"+strings.Repeat("L", 71) {
		t.Errorf("deleted upstream %q", got)
	}
}

func TestFakeErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("no UIDL", func(t *testing.T) {
		f := newFake(t, &fake{user: "u", secret: "p", noUIDL: true, msgs: fakeMsgs})
		b, _ := New(Options{Addr: f.addr(), TLS: modes.TLSNone, Username: "u", Password: "p"})
		_, err := b.OpenMaildrop(ctx, backends.Login{})
		if err == nil || !strings.Contains(err.Error(), "UIDL") || !errors.Is(err, proxy.ErrPermanent) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("in use", func(t *testing.T) {
		f := newFake(t, &fake{user: "u", secret: "p", inUse: true})
		b, _ := New(Options{Addr: f.addr(), TLS: modes.TLSNone, Username: "u", Password: "p"})
		if _, err := b.OpenMaildrop(ctx, backends.Login{}); !errors.Is(err, proxy.ErrInUse) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("bad password", func(t *testing.T) {
		f := newFake(t, &fake{user: "u", secret: "p"})
		b, _ := New(Options{Addr: f.addr(), TLS: modes.TLSNone, Auth: modes.AuthPassthrough})
		if _, err := b.OpenMaildrop(ctx, backends.Login{User: "u", Password: "wrong"}); !errors.Is(err, proxy.ErrAuthFailed) {
			t.Fatalf("err %v", err)
		}
		if mb, err := b.OpenMaildrop(ctx, backends.Login{User: "u", Password: "p"}); err != nil {
			t.Fatalf("passthrough: %v", err)
		} else {
			mb.Close()
		}
	})
	t.Run("down", func(t *testing.T) {
		// Port 1, not a port just freed: a test process beside this one
		// may listen on that.
		b, _ := New(Options{Addr: "127.0.0.1:1", TLS: modes.TLSNone, Username: "u", Password: "p"})
		if _, err := b.OpenMaildrop(ctx, backends.Login{}); !errors.Is(err, proxy.ErrTemporary) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("silent", func(t *testing.T) {
		// A server that accepts and never greets (for 20 s): the dial
		// timeout of 200 ms ends it. The bound is loose for loaded
		// machines but far below the server's 20 s.
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				defer c.Close()
				time.Sleep(20 * time.Second)
			}
		}()
		b, _ := New(Options{Addr: ln.Addr().String(), TLS: modes.TLSNone, Username: "u", Password: "p", DialTimeout: 200 * time.Millisecond})
		start := time.Now()
		if _, err := b.OpenMaildrop(ctx, backends.Login{}); !errors.Is(err, proxy.ErrTemporary) || time.Since(start) > 5*time.Second {
			t.Fatalf("err %v after %v", err, time.Since(start))
		}
	})
}

// TestDotReader feeds multi-line bodies in small writes and checks the
// unstuffing, the line-length independence and that a cut gives an error.
func TestDotReader(t *testing.T) {
	long := strings.Repeat("x", 200000)
	for _, tc := range []struct {
		wire, want string
		cut        bool
	}{
		{wire: ".\r\n", want: ""},
		{wire: "a\r\n.\r\n", want: "a\r\n"},
		{wire: "..\r\n...x\r\n.b\r\n.\r\n", want: ".\r\n..x\r\nb\r\n"},
		{wire: long + "\r\n." + long + "\r\n.\r\n", want: long + "\r\n" + long + "\r\n"},
		{wire: "a\n.\n", want: "a\n"},
		{wire: "a\r\nb\r\n", cut: true},
		{wire: "a\r\n.", cut: true},
		{wire: "a\r\n.\r", cut: true},
	} {
		c, rc := pipeRetr(t, tc.wire, 7, tc.cut)
		got, err := io.ReadAll(rc)
		if tc.cut {
			if err == nil {
				t.Errorf("%q: cut stream ended without error", clip([]byte(tc.wire)))
			}
			c.conn.Close()
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("%q: got %q, %v; want %q", clip([]byte(tc.wire)), clip(got), err, clip([]byte(tc.want)))
		}
		// The reply after the terminator is intact.
		if l, err := c.readLine(); err != nil || string(l) != "+OK next" {
			t.Errorf("%q: next line %q, %v", clip([]byte(tc.wire)), l, err)
		}
		c.conn.Close()
	}
}

func TestResponseCodes(t *testing.T) {
	for line, want := range map[string]ResponseError{
		"-ERR [IN-USE] locked":  {Code: "IN-USE", Text: "locked"},
		"-ERR [sys/temp] later": {Code: "SYS/TEMP", Text: "later"},
		"-ERR":                  {},
		"-ERR plain text":       {Text: "plain text"},
	} {
		got := parseErr("X", []byte(line))
		if got.Code != want.Code || got.Text != want.Text {
			t.Errorf("%q: %+v", line, got)
		}
	}
}

func TestLongResponseLine(t *testing.T) {
	server, client := net.Pipe()
	go func() {
		server.Write([]byte("+OK " + strings.Repeat("y", maxLine+10) + "\r\n"))
		server.Close()
	}()
	c := &Client{timeout: 5 * time.Second}
	c.setConn(client)
	if _, err := c.cmd(context.Background(), "greeting", ""); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("err %v", err)
	}
}

func TestFakeKeepPolicy(t *testing.T) {
	f := newFake(t, &fake{user: "u", secret: "p", msgs: fakeMsgs})
	store, err := cache.Open(t.TempDir()+"/cache.db", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := New(Options{Addr: f.addr(), Username: "u", OnDelete: modes.Keep}); err == nil {
		t.Fatal("keep without a store accepted")
	}
	b, err := New(Options{Addr: f.addr(), TLS: modes.TLSNone, Username: "u", Password: "p", Store: store, OnDelete: modes.Keep})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mb, err := b.OpenMaildrop(ctx, backends.Login{})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := mb.List(ctx)
	if err := mb.Delete(ctx, []string{list[0].UID}); err != nil {
		t.Fatal(err)
	}
	mb.Close()
	mb, err = b.OpenMaildrop(ctx, backends.Login{})
	if err != nil {
		t.Fatal(err)
	}
	list2, _ := mb.List(ctx)
	mb.Close()
	if len(list2) != len(list)-1 || list2[0].UID != list[1].UID {
		t.Errorf("after keep-delete: %+v", list2)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.deleted) > 0 {
		t.Errorf("keep policy deleted upstream: %q", f.deleted)
	}
	for _, c := range f.commands {
		if strings.HasPrefix(c, "DELE") {
			t.Errorf("keep policy sent %q", c)
		}
	}
}

// TestWireWriterTo: WriteWireTo writes a prefix of the wire made of
// complete clean lines, msg counts them unstuffed, and Read returns the
// rest, so that the two together are the message.
func TestWireWriterTo(t *testing.T) {
	long := strings.Repeat("x", 100000)
	for _, tc := range []struct {
		wire, want string
		cut        bool
	}{
		{wire: ".\r\n", want: ""},
		{wire: "a\r\n.\r\n", want: "a\r\n"},
		{wire: "..\r\n...x\r\n.b\r\n\r\n.\r\n", want: ".\r\n..x\r\nb\r\n\r\n"},
		{wire: "a\r\nb\nc\r\n..d\r\n.\r\n", want: "a\r\nb\nc\r\n.d\r\n"},
		{wire: "a\r\nb\rc\r\nd\r\n.\r\n", want: "a\r\nb\rc\r\nd\r\n"},
		{wire: "a\r\n\r\r\n.\r\n", want: "a\r\n\r\r\n"},
		{wire: "a\r\n" + long + "\r\n" + long + long + "\r\n.\r\n", want: "a\r\n" + long + "\r\n" + long + long + "\r\n"},
		{wire: "a\r\nb\r\n.\n", want: "a\r\nb\r\n"},
		{wire: "a\r\nb\r\n", cut: true},
		{wire: "a\r\nb", cut: true},
		{wire: "a\r\n.", cut: true},
	} {
		c, rc := pipeRetr(t, tc.wire, 5, tc.cut)
		var out bytes.Buffer
		msg, eof, err := rc.(*dotReader).WriteWireTo(&out)
		if err == nil && !eof {
			var rest []byte
			rest, err = io.ReadAll(rc)
			if err == nil {
				// Unstuff what went out as it is, then append the rest.
				var un []byte
				for _, l := range strings.SplitAfter(out.String(), "\r\n") {
					un = append(un, strings.TrimPrefix(l, ".")...)
				}
				if int64(len(un)) != msg {
					t.Errorf("%q: msg %d, unstuffed %d", clip([]byte(tc.wire)), msg, len(un))
				}
				out.Reset()
				out.Write(un)
				out.Write(rest)
				msg = int64(out.Len())
			}
		}
		if tc.cut {
			if err == nil {
				t.Errorf("%q: cut stream ended without error", clip([]byte(tc.wire)))
			}
			c.conn.Close()
			continue
		}
		if eof {
			// All of it went out as it is: check it against the wire.
			if got := out.String() + ".\r\n"; got != tc.wire {
				t.Errorf("%q: pass-through wrote %q", clip([]byte(tc.wire)), clip(out.Bytes()))
			}
			if msg != int64(len(tc.want)) {
				t.Errorf("%q: msg %d, want %d", clip([]byte(tc.wire)), msg, len(tc.want))
			}
		} else if err != nil || out.String() != tc.want || msg != int64(len(tc.want)) {
			t.Errorf("%q: got %q (%d), %v; want %q", clip([]byte(tc.wire)), clip(out.Bytes()), msg, err, clip([]byte(tc.want)))
		}
		if l, err := c.readLine(); err != nil || string(l) != "+OK next" {
			t.Errorf("%q: next line %q, %v", clip([]byte(tc.wire)), l, err)
		}
		c.conn.Close()
	}
}

// TestBodiesKeptAfterTopOnly: with an upstream without TOP, a TOP fetches
// the whole message and keeps it, so the RETR that follows costs no
// upstream RETR; a plain RETR is not kept.
func TestBodiesKeptAfterTopOnly(t *testing.T) {
	f := newFake(t, &fake{user: "u", secret: "p", msgs: fakeMsgs, noTop: true})
	b, err := New(Options{Addr: f.addr(), TLS: modes.TLSNone, Username: "u", Password: "p", Bodies: &cache.Bodies{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mb, err := b.OpenMaildrop(ctx, backends.Login{User: "x", Password: "y"})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	list, _ := mb.List(ctx)
	read := func(rc io.ReadCloser, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		body, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return string(body)
	}
	top := read(mb.(proxy.TopOpener).OpenTop(ctx, list[0].UID, 0))
	whole := read(mb.Open(ctx, list[0].UID))
	if top != whole || whole != "Subject: one\r\n\r\n.dot\r\n..\r\nplain\r\n" {
		t.Errorf("TOP gave %q, RETR %q", top, whole)
	}
	read(mb.Open(ctx, list[1].UID))
	read(mb.Open(ctx, list[1].UID))
	f.mu.Lock()
	defer f.mu.Unlock()
	retrs := map[string]int{}
	for _, c := range f.commands {
		if strings.HasPrefix(c, "RETR ") {
			retrs[c]++
		}
	}
	if retrs["RETR 1"] != 1 || retrs["RETR 2"] != 2 {
		t.Errorf("upstream RETRs %v: want RETR 1 once (TOP, then RETR from the cache) and RETR 2 twice (plain RETR not kept)", retrs)
	}
}

// endCounter records the calls of the pass-through writer (an endWriter).
type endCounter struct {
	bytes.Buffer
	writes, ends int
}

func (e *endCounter) Write(b []byte) (int, error) { e.writes++; return e.Buffer.Write(b) }
func (e *endCounter) WriteEnd(b []byte) error {
	e.ends++
	e.Buffer.Write(b)
	e.Buffer.WriteString(".\r\n")
	return nil
}

// TestWireWriterToWhole: a message whose start came with the status line
// (the rest of a read that ended the previous message) is topped up until
// its end is buffered and goes out in one call, not a part and then the
// rest; and a message whose end is buffered already, in either form Read
// accepts, goes out without waiting for more octets the server never
// sends.
func TestWireWriterToWhole(t *testing.T) {
	body := strings.Repeat("a line of an ordinary message\r\n", 600) // 18 KB
	for _, tc := range []struct {
		name   string
		pieces []string // what the server writes after RETR, one write each
		want   string   // what the pass-through writes
	}{
		{"start, then the rest", []string{"+OK\r\n" + body[:5000], body[5000:12001], body[12001:] + ".\r\n"}, body + ".\r\n"},
		{"start up to a line end", []string{"+OK\r\n" + body[:3100], body[3100:] + ".\r\n"}, body + ".\r\n"},
		{"start up to a dot", []string{"+OK\r\n" + body + ".", "\r\n"}, body + ".\r\n"},
		{"all of it", []string{"+OK\r\n" + body + ".\r\n"}, body + ".\r\n"},
		{"all of it, LF end", []string{"+OK\r\n" + body + ".\n"}, body},
		{"empty", []string{"+OK\r\n.\r\n"}, ".\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, client := net.Pipe()
			defer server.Close()
			go io.Copy(io.Discard, server)
			go func() {
				for _, p := range tc.pieces {
					if _, err := server.Write([]byte(p)); err != nil {
						return
					}
				}
			}()
			c := &Client{timeout: 2 * time.Second}
			c.setConn(client)
			defer c.Close()
			rc, err := c.Retr(context.Background(), 1)
			if err != nil {
				t.Fatal(err)
			}
			var w endCounter
			_, eof, err := rc.(*dotReader).WriteWireTo(&w)
			if err != nil {
				t.Fatalf("WriteWireTo: %v", err)
			}
			if !eof {
				rest, err := io.ReadAll(rc)
				if err != nil {
					t.Fatal(err)
				}
				w.Write(rest)
			}
			if w.String() != tc.want {
				t.Fatalf("wrote %q, want %q", clip(w.Bytes()), clip([]byte(tc.want)))
			}
			if eof && (w.writes != 0 || w.ends != 1) {
				t.Errorf("%d writes and %d ends, want the whole message in one WriteEnd", w.writes, w.ends)
			}
		})
	}
}
