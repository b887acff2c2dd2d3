package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	. "github.com/popbridge/popbridge/proxy"

	"github.com/popbridge/popbridge/internal/memback"
	"github.com/popbridge/popbridge/internal/pop3wire"
	"github.com/popbridge/popbridge/internal/testcert"
)

// memBackend is the test users' maildrops in memback, behind their
// passwords: alice/secret with three messages and bob/"pass word" with
// none. Its memback fields switch the optional interfaces and inject
// faults.
type memBackend struct {
	*memback.Backend
}

var testPasswords = map[string]string{"alice": "secret", "bob": "pass word"}

// aliceMessages are alice's messages.
func aliceMessages() []memback.Message {
	return []memback.Message{
		{UID: "uid-1", Body: "Subject: one\r\n\r\nHello\r\n"},
		{UID: "uid-2", Body: "Subject: two\n\nline 1\n.dot line\nline 3\n"},
		{UID: "uid-3", Body: "Subject: three\r\n\r\nno final newline"},
	}
}

func newMemBackend() *memBackend {
	b := memback.New()
	b.Set("alice", aliceMessages()...)
	return &memBackend{b}
}

func (b *memBackend) Login(ctx context.Context, user, pass string) (Mailbox, error) {
	return memback.AuthForTest(b.Backend, testPasswords).Login(ctx, user, pass)
}

// deleted returns the UIDs passed to Delete so far.
func (b *memBackend) deleted() []string { return b.Stats().Deleted }

// closed returns how many mailboxes were closed so far.
func (b *memBackend) closed() int { return b.Stats().Calls[memback.OpClose] }

// errBroken is the error of a stream broken by Faults.BreakAfter.
var errBroken = errors.New("upstream broke: secret detail")

// startServer serves srv on a loopback port and returns its address.
func startServer(t *testing.T, srv *Server) string {
	t.Helper()
	if srv.AuthFailureDelay == 0 {
		srv.AuthFailureDelay = -1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String()
}

// client is a raw test client.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
	r  *pop3wire.Reader // reads br
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return newClient(t, c)
}

func newClient(t *testing.T, c net.Conn) *client {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	return &client{t: t, c: c, br: br, r: pop3wire.NewReader(br, 64<<20)}
}

func (cl *client) send(s string) {
	cl.t.Helper()
	if _, err := io.WriteString(cl.c, s); err != nil {
		cl.t.Fatalf("send %q: %v", s, err)
	}
}

func (cl *client) line() string {
	cl.t.Helper()
	l, err := cl.r.ReadLineEnd()
	if err != nil {
		cl.t.Fatalf("read: %v", err)
	}
	if !bytes.HasSuffix(l, []byte("\r\n")) {
		cl.t.Fatalf("line %q does not end in CRLF", l)
	}
	return string(l[:len(l)-2])
}

// multi reads a multi-line body up to the final ".", unstuffed, lines
// joined with CRLF.
func (cl *client) multi() string {
	cl.t.Helper()
	var b strings.Builder
	for {
		l, last := pop3wire.Unstuff([]byte(cl.line()))
		if last {
			return b.String()
		}
		b.Write(l)
		b.WriteString("\r\n")
	}
}

// expectEOF checks that the server closed the connection.
func (cl *client) expectEOF() {
	cl.t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(cl.br)
	if err != nil && !isReset(err) {
		cl.t.Fatalf("want EOF, got %v after %q", err, rest)
	}
	if len(rest) > 0 {
		cl.t.Fatalf("want EOF, got %q", rest)
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// step is one exchange: send a line (CRLF added) and want the reply
// lines. A want line ending in "*" matches as a prefix.
type step struct {
	send string
	want []string
}

func converse(t *testing.T, cl *client, steps []step) {
	t.Helper()
	for i, s := range steps {
		if s.send != "" {
			cl.send(s.send + "\r\n")
		}
		for j, w := range s.want {
			got := cl.line()
			if !lineMatches(got, w) {
				t.Fatalf("step %d (%q) line %d: got %q, want %q", i, s.send, j, got, w)
			}
		}
	}
}

func lineMatches(got, want string) bool {
	if p, ok := strings.CutSuffix(want, "*"); ok {
		return strings.HasPrefix(got, p)
	}
	return got == want
}

func login(t *testing.T, cl *client, user, pass string) {
	t.Helper()
	converse(t, cl, []step{
		{"", []string{"+OK*"}},
		{"USER " + user, []string{"+OK*"}},
		{"PASS " + pass, []string{"+OK Logged in."}},
	})
}

// testTLSConfig returns a server config with a fresh self-signed
// certificate for localhost and 127.0.0.1, and a pool that trusts it.
func testTLSConfig(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	c := testcert.New(t)
	return c.ServerConfig(), c.Pool()
}
