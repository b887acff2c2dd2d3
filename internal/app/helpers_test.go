package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/internal/demomail"
	"github.com/popbridge/popbridge/internal/dovecottest"
)

// syncBuffer collects a log while the test reads it.
type syncBuffer = dovecottest.SyncBuffer

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// testHash hashes "s3cret" at the lowest cost.
func testHash(t *testing.T) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// writeConfig writes a config with alice on a Maildir holding the demo
// messages, and bob on a Maildir that may not exist; it returns its path.
func writeConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := demomail.Ensure(filepath.Join(dir, "alice"), time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
listen:
  pop3: 127.0.0.1:0
log: {level: debug, format: json}
state_dir: state
accounts:
  - user: alice
    password_hash: %q
    backend: {type: maildir, path: alice, on_delete: keep}
  - user: bob
    password_hash: %q
    backend: {type: maildir, path: bob}
%s`, testHash(t), testHash(t), extra)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// logEvents parses a JSON log, one event a line.
func logEvents(log string) []map[string]any {
	var events []map[string]any
	for _, line := range strings.Split(log, "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil {
			events = append(events, e)
		}
	}
	return events
}

// eventsWith returns the events whose message starts with msg.
func eventsWith(log, msg string) []map[string]any {
	var found []map[string]any
	for _, e := range logEvents(log) {
		if m, _ := e["message"].(string); strings.HasPrefix(m, msg) {
			found = append(found, e)
		}
	}
	return found
}

// waitFor polls f until it returns a non-empty string.
func waitFor(t *testing.T, what string, f func() string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s := f(); s != "" {
			return s
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
	return ""
}

// pop3 is a minimal POP3 client for the tests.
type pop3 struct {
	t *testing.T
	c *textproto.Conn
}

func dialPOP3(t *testing.T, addr string) *pop3 {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	p := &pop3{t: t, c: textproto.NewConn(nc)}
	t.Cleanup(func() { p.c.Close() })
	if g := p.line(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting %q", g)
	}
	return p
}

func (p *pop3) line() string {
	p.t.Helper()
	l, err := p.c.ReadLine()
	if err != nil {
		p.t.Fatalf("reading: %v", err)
	}
	return l
}

// httpGet returns the status code and body of GET url with the optional
// bearer token.
func httpGet(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// metricValue returns the value of the series (name and labels exactly
// as exposed, labels sorted by name) in a /metrics body.
func metricValue(body, series string) (float64, bool) {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// cmd sends a command and returns the status line.
func (p *pop3) cmd(format string, args ...any) string {
	p.t.Helper()
	if err := p.c.PrintfLine(format, args...); err != nil {
		p.t.Fatal(err)
	}
	return p.line()
}

// multi sends a command that must succeed and returns its body, unstuffed
// and with LF line ends.
func (p *pop3) multi(format string, args ...any) string {
	p.t.Helper()
	if s := p.cmd(format, args...); !strings.HasPrefix(s, "+OK") {
		p.t.Fatalf("%s: %q", fmt.Sprintf(format, args...), s)
	}
	b, err := p.c.ReadDotBytes()
	if err != nil {
		p.t.Fatal(err)
	}
	return string(b)
}
