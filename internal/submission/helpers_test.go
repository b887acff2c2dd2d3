package submission_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/submission"
	"github.com/popbridge/popbridge/proxy"
)

// accounts is a fake Authenticator and sender registry.
type accounts struct {
	mu        sync.Mutex
	passwords map[string]string
	senders   map[string]backends.Sender
	down      bool // Authenticate fails temporarily
	calls     int
}

func (a *accounts) Authenticate(ctx context.Context, user, pass string) (backends.Login, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if a.down {
		return backends.Login{}, errors.New("accounts: store unavailable")
	}
	if p, ok := a.passwords[user]; !ok || p != pass {
		return backends.Login{}, fmt.Errorf("accounts: login %q: %w", user, proxy.ErrAuthFailed)
	}
	return backends.Login{User: user}, nil
}

func (a *accounts) sender(ctx context.Context, l backends.Login) (backends.Sender, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.senders[l.User], nil
}

// fakeSender records what reaches the upstream side.
type fakeSender struct {
	mu       sync.Mutex
	from     []string
	begun    int
	rcpts    []string
	messages [][]byte
	beginErr error
	rcptErr  error
	dataErr  error // returned after reading the message
	allowed  string
}

func (f *fakeSender) MaySend(from string) bool { return strings.EqualFold(from, f.allowed) }

func (f *fakeSender) Begin(ctx context.Context, from string, opts backends.MailOptions) (backends.Transaction, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.begun++
	if f.beginErr != nil {
		return nil, f.beginErr
	}
	f.from = append(f.from, from)
	return &fakeTx{f: f}, nil
}

type fakeTx struct{ f *fakeSender }

func (t *fakeTx) Rcpt(ctx context.Context, to string) error {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	if t.f.rcptErr != nil {
		return t.f.rcptErr
	}
	t.f.rcpts = append(t.f.rcpts, to)
	return nil
}

func (t *fakeTx) Data(ctx context.Context, r io.Reader) (string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", fmt.Errorf("fake: reading the message: %w", err)
	}
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	if t.f.dataErr != nil {
		return "", t.f.dataErr
	}
	t.f.messages = append(t.f.messages, b)
	return "2.0.0 Ok: queued as FAKE", nil
}

func (t *fakeTx) Close() error { return nil }

func (f *fakeSender) got() (begun int, msgs [][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.begun, append([][]byte(nil), f.messages...)
}

// server runs a submission server with both listeners.
type server struct {
	*submission.Server
	addr, tlsAddr string
	pool          *x509.CertPool
}

func tlsConfig(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	certPEM, keyPEM, err := dovecottest.SelfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, pool
}

func start(t testing.TB, opts submission.Options) *server {
	t.Helper()
	var pool *x509.CertPool
	if opts.TLSConfig == nil {
		opts.TLSConfig, pool = tlsConfig(t)
	}
	s, err := submission.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeSubmission(ln1)
	go s.ServeSubmissions(ln2)
	t.Cleanup(func() { s.Close() })
	return &server{Server: s, addr: ln1.Addr().String(), tlsAddr: ln2.Addr().String(), pool: pool}
}

func (s *server) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: s.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// wire is a minimal SMTP client that shows every reply as sent.
type wire struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string, tlsConf *tls.Config) *wire {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if tlsConf != nil {
		conn = tls.Client(conn, tlsConf)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	w := &wire{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	if g := w.reply(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("greeting %q", g)
	}
	return w
}

// reply reads one reply; a multi-line reply is returned joined by "\n".
func (w *wire) reply() string {
	w.t.Helper()
	var lines []string
	for {
		line, err := w.r.ReadString('\n')
		if err != nil {
			w.t.Fatalf("read reply: %v (so far %q)", err, lines)
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

func (w *wire) write(s string) {
	w.t.Helper()
	if _, err := io.WriteString(w.conn, s); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wire) cmd(line string) string {
	w.t.Helper()
	w.write(line + "\r\n")
	return w.reply()
}

func (w *wire) expect(line, prefix string) string {
	w.t.Helper()
	r := w.cmd(line)
	if !strings.HasPrefix(r, prefix) {
		w.t.Fatalf("%q -> %q, want %s", line, r, prefix)
	}
	return r
}

func (w *wire) starttls(conf *tls.Config) {
	w.t.Helper()
	w.expect("STARTTLS", "220 ")
	w.handshake(conf)
}

func (w *wire) handshake(conf *tls.Config) {
	w.t.Helper()
	tc := tls.Client(w.conn, conf)
	if err := tc.Handshake(); err != nil {
		w.t.Fatal(err)
	}
	w.conn, w.r = tc, bufio.NewReader(tc)
	w.conn.SetDeadline(time.Now().Add(30 * time.Second))
}

// closed reports whether the server closed the connection.
func (w *wire) closed() bool {
	w.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := w.r.ReadByte()
	return errors.Is(err, io.EOF) || (err != nil && strings.Contains(err.Error(), "reset"))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// loggedIn returns a session after STARTTLS and AUTH PLAIN.
func loggedIn(t testing.TB, s *server, user, pass string) *wire {
	t.Helper()
	w := dial(t, s.addr, nil)
	w.expect("EHLO client.test", "250")
	w.starttls(s.clientTLS())
	w.expect("EHLO client.test", "250")
	w.expect("AUTH PLAIN "+b64("\x00"+user+"\x00"+pass), "235 ")
	return w
}

func loopback(netip.Addr) bool { return true }

// dial2 connects, returns the first line the server sends, and closes.
func dial2(t testing.TB, addr string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimRight(line, "\r\n")
}

func tlsDial(addr string, conf *tls.Config) (*tls.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
