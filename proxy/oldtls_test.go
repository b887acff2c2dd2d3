package proxy_test

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	. "github.com/popbridge/popbridge/proxy"
)

// logLines collects JSON log events.
type logLines struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (l *logLines) Write(p []byte) (int, error) {
	var e map[string]any
	if json.Unmarshal(p, &e) == nil {
		l.mu.Lock()
		l.lines = append(l.lines, e)
		l.mu.Unlock()
	}
	return len(p), nil
}

func (l *logLines) find(msg string) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.lines {
		if e["message"] == msg {
			return e
		}
	}
	return nil
}

// TestOldTLSClients: by default a TLS 1.0 client is refused and the log
// says why, at info, with the client's address and versions; with an
// explicit MinVersion TLS 1.0 it logs in, over pop3s and STLS.
func TestOldTLSClients(t *testing.T) {
	cfg, pool := testTLSConfig(t)
	old := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}

	logs := &logLines{}
	log := zerolog.New(logs).Level(zerolog.InfoLevel)
	srv := &Server{Backend: newMemBackend(), TLSConfig: cfg, Logger: &log, AuthFailureDelay: -1}
	ln := listenTLS(t, srv)
	if _, err := tls.Dial("tcp", ln, old); err == nil {
		t.Fatal("TLS 1.0 handshake succeeded at the default minimum")
	}
	var e map[string]any
	deadline := time.Now().Add(5 * time.Second)
	for e == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		e = logs.find("tls handshake failed")
	}
	if e == nil {
		t.Fatal("no tls handshake failed log line")
	}
	if e["level"] != "info" || !strings.HasPrefix(e["remote"].(string), "127.0.0.1:") ||
		e["reason"] != "the client offers only TLS 1.0, the minimum is TLS 1.2; an old client may need tls.min_version: 1.0" {
		t.Errorf("log line %v", e)
	}
	if v, _ := e["client_versions"].([]any); len(v) != 1 || v[0] != "TLS 1.0" {
		t.Errorf("client_versions %v", e["client_versions"])
	}

	legacy := cfg.Clone()
	legacy.MinVersion = tls.VersionTLS10
	srv = &Server{Backend: newMemBackend(), TLSConfig: legacy, AuthFailureDelay: -1}
	c, err := tls.Dial("tcp", listenTLS(t, srv), old)
	if err != nil {
		t.Fatalf("TLS 1.0 with MinVersion TLS 1.0: %v", err)
	}
	if v := c.ConnectionState().Version; v != tls.VersionTLS10 {
		t.Errorf("version %s", tls.VersionName(v))
	}
	cl := newClient(t, c)
	converse(t, cl, []step{
		{"", []string{"+OK*"}},
		{"USER alice", []string{"+OK"}},
		{"PASS secret", []string{"+OK Logged in."}},
		{"QUIT", []string{"+OK*"}},
	})

	cl = dial(t, startServer(t, srv))
	converse(t, cl, []step{{"", []string{"+OK*"}}, {"STLS", []string{"+OK Begin TLS negotiation now."}}})
	tc := tls.Client(cl.c, old)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("STLS with TLS 1.0: %v", err)
	}
}

func listenTLS(t *testing.T, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
