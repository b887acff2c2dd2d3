package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/pop3wire"
)

// memBackend is an in-memory Backend whose fields inject failures.
type memBackend struct {
	mu       sync.Mutex
	users    map[string]string       // user -> password
	boxes    map[string][]memMessage // user -> messages
	loginErr error                   // returned by Login after a good password
	listErr  error
	delErr   error
	openErr  map[string]error // uid -> error from Open
	// breakAfter makes a stream fail after that many octets (0: never).
	breakAfter int
	panicOn    string // uid whose Open panics
	deleted    []string
	closed     int
}

type memMessage struct {
	uid  string
	body string
}

func newMemBackend() *memBackend {
	return &memBackend{
		users: map[string]string{"alice": "secret", "bob": "pass word"},
		boxes: map[string][]memMessage{
			"alice": {
				{"uid-1", "Subject: one\r\n\r\nHello\r\n"},
				{"uid-2", "Subject: two\n\nline 1\n.dot line\nline 3\n"},
				{"uid-3", "Subject: three\r\n\r\nno final newline"},
			},
			"bob": {},
		},
		openErr: map[string]error{},
	}
}

func (b *memBackend) Login(ctx context.Context, user, pass string) (Mailbox, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.users[user]; !ok || p != pass {
		return nil, fmt.Errorf("mem: %w", ErrAuthFailed)
	}
	if b.loginErr != nil {
		return nil, b.loginErr
	}
	return &memMailbox{b: b, user: user}, nil
}

type memMailbox struct {
	b    *memBackend
	user string
}

func (m *memMailbox) List(ctx context.Context) ([]MessageInfo, error) {
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	if m.b.listErr != nil {
		return nil, m.b.listErr
	}
	var out []MessageInfo
	for _, msg := range m.b.boxes[m.user] {
		n, _ := CRLFSize(strings.NewReader(msg.body))
		out = append(out, MessageInfo{UID: msg.uid, Size: n})
	}
	return out, nil
}

func (m *memMailbox) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	if uid == m.b.panicOn {
		panic("injected panic")
	}
	if err := m.b.openErr[uid]; err != nil {
		return nil, err
	}
	for _, msg := range m.b.boxes[m.user] {
		if msg.uid == uid {
			var r io.Reader = strings.NewReader(msg.body)
			if m.b.breakAfter > 0 {
				r = io.MultiReader(io.LimitReader(r, int64(m.b.breakAfter)), errReader{})
			}
			return io.NopCloser(r), nil
		}
	}
	return nil, fmt.Errorf("mem: %s: %w", uid, ErrNoMessage)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("upstream broke: secret detail") }

func (m *memMailbox) Delete(ctx context.Context, uids []string) error {
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	if m.b.delErr != nil {
		return m.b.delErr
	}
	m.b.deleted = append(m.b.deleted, uids...)
	return nil
}

func (m *memMailbox) Close() error {
	m.b.mu.Lock()
	m.b.closed++
	m.b.mu.Unlock()
	return nil
}

var _ Mailbox = (*memMailbox)(nil)

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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}
