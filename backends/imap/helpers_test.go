package imap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends"
	imapb "github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/proxy"
)

// logRecorder collects the backend's JSON log lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (r *logRecorder) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err == nil {
		r.mu.Lock()
		r.lines = append(r.lines, m)
		r.mu.Unlock()
	}
	return len(p), nil
}

func (r *logRecorder) logger() *zerolog.Logger {
	l := zerolog.New(r).Level(zerolog.DebugLevel)
	return &l
}

// find returns the lines whose message is msg.
func (r *logRecorder) find(msg string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, l := range r.lines {
		if l["message"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// last returns the last line whose message is msg, or nil.
func (r *logRecorder) last(msg string) map[string]any {
	all := r.find(msg)
	if len(all) == 0 {
		return nil
	}
	return all[len(all)-1]
}

// text returns every line, for failure messages and secret checks.
func (r *logRecorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, l := range r.lines {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// syncLine summarises the last "listed folder" line: sync mode, messages
// fetched, whether UID SEARCH ran.
func (r *logRecorder) syncLine(t *testing.T) string {
	t.Helper()
	l := r.last("listed folder")
	if l == nil {
		t.Fatalf("no \"listed folder\" log line:\n%s", r.text())
	}
	return fmt.Sprintf("%v fetched=%v search=%v", l["sync"], l["fetched"], l["search"])
}

// openStore opens a cache store in dir.
func openStore(t testing.TB, dir string) *cache.Store {
	t.Helper()
	st, err := cache.Open(filepath.Join(dir, "cache.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newBackend returns a Backend, failing the test on error.
func newBackend(t testing.TB, opts imapb.Options) *imapb.Backend {
	t.Helper()
	b, err := imapb.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serve runs a proxy.Server for b on a loopback port and returns its
// address.
func serve(t testing.TB, b backends.Opener) string {
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

// popLogin connects to a POP3 server and logs in.
func popLogin(t testing.TB, addr, user, pass string) *pop3test.Client {
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

func cmd(t testing.TB, c *pop3test.Client, line string) string {
	t.Helper()
	reply, err := c.Cmd(line)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return reply
}

// multi sends line and returns the unstuffed multi-line body.
func multi(t testing.TB, c *pop3test.Client, line string) []byte {
	t.Helper()
	cmd(t, c, line)
	body, err := c.MultiLine()
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return body
}

// multiRaw sends line and returns the multi-line body as sent (stuffed).
func multiRaw(t testing.TB, c *pop3test.Client, line string) []byte {
	t.Helper()
	cmd(t, c, line)
	body, err := c.MultiLineRaw()
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return body
}

func quit(t testing.TB, c *pop3test.Client) string {
	t.Helper()
	reply, err := c.Cmd("QUIT")
	if err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	c.Close()
	return reply
}

// uidlList returns the unique-ids of a UIDL listing, in order.
func uidlList(t testing.TB, c *pop3test.Client) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSuffix(string(multi(t, c, "UIDL")), "\r\n"), "\r\n") {
		if line == "" {
			continue
		}
		_, u, _ := strings.Cut(line, " ")
		out = append(out, u)
	}
	return out
}

// unstuff removes the dot-stuffing of a raw multi-line body.
func unstuff(raw []byte) []byte {
	var out []byte
	for len(raw) > 0 {
		i := bytes.Index(raw, []byte("\r\n"))
		line := raw[:i+2]
		raw = raw[i+2:]
		if line[0] == '.' {
			line = line[1:]
		}
		out = append(out, line...)
	}
	return out
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func around(b []byte, i int) []byte {
	lo, hi := max(0, i-40), min(len(b), i+40)
	return b[lo:hi]
}

// imapDial logs in to the Dovecot IMAP server as user, for checking what
// the backend did from the IMAP side.
func imapDial(t testing.TB, d *dovecottest.Dovecot, user string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(d.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, d.Users[user]).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

// folderState returns UID -> flags of every message in folder.
func folderState(t testing.TB, c *imapclient.Client, folder string) map[imap.UID][]imap.Flag {
	t.Helper()
	sel, err := c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("EXAMINE %s: %v", folder, err)
	}
	out := map[imap.UID][]imap.Flag{}
	if sel.NumMessages == 0 {
		return out
	}
	bufs, err := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bufs {
		out[b.UID] = b.Flags
	}
	return out
}

func hasFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, x := range flags {
		if strings.EqualFold(string(x), string(f)) {
			return true
		}
	}
	return false
}

// appendMessages appends n small messages to folder of user.
func appendMessages(t testing.TB, c *imapclient.Client, folder string, n, size int) {
	t.Helper()
	body := strings.Repeat("x", max(0, size-80)) + "\r\n"
	for i := range n {
		msg := fmt.Sprintf("From: a@example.org\r\nSubject: message %d\r\n\r\n%s", i, body)
		cmd := c.Append(folder, int64(len(msg)), nil)
		if _, err := cmd.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
	}
}

// isPOPErr reports whether err is a -ERR reply starting with prefix.
func isPOPErr(err error, prefix string) bool {
	var re *pop3test.ResponseError
	return errors.As(err, &re) && strings.HasPrefix(re.Line, prefix)
}

// countMaildir counts the message files of a Maildir.
func countMaildir(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		n += len(ents)
	}
	return n
}

// within fails the test if f takes longer than d.
func within(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	start := time.Now()
	f()
	if el := time.Since(start); el > d {
		t.Fatalf("%s took %v, want under %v", what, el, d)
	}
}
