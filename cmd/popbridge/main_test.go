package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/demomail"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/pop3wire"
	"github.com/popbridge/popbridge/internal/testcert"
)

// syncBuffer collects a server's log while the test reads it.
type syncBuffer = dovecottest.SyncBuffer

// result is the outcome of one run.
type result struct {
	code           int
	stdout, stderr string
}

func runCmd(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args       []string
		code       int
		stdout     string // substring; "" means empty
		stderr     string // substring; "" means empty
		stderrAlso string
	}{
		{nil, 2, "", "Usage:\n  popbridge serve -config FILE", ""},
		{[]string{"help"}, 0, "Usage:\n  popbridge serve", "", ""},
		{[]string{"--help"}, 0, "Usage:", "", ""},
		{[]string{"frobnicate"}, 2, "", `popbridge: unknown command "frobnicate"`, "Usage:"},
		{[]string{"serve"}, 2, "", "popbridge serve: -config is required\n", `Run "popbridge serve -h" for usage.`},
		{[]string{"check"}, 2, "", "popbridge check: -config is required\n", ""},
		{[]string{"serve", "-config", "x.yaml", "extra"}, 2, "", `popbridge serve: unexpected argument "extra"`, ""},
		{[]string{"serve", "-nope"}, 2, "", "flag provided but not defined: -nope", "Usage: popbridge serve -config FILE"},
		{[]string{"serve", "-h"}, 0, "", "Usage: popbridge serve -config FILE", "-config file"},
		{[]string{"demo", "-h"}, 0, "", "Usage: popbridge demo [-dir DIR] [-listen ADDR]", "-listen address"},
		{[]string{"hash-password", "-cost", "3"}, 2, "", "popbridge hash-password: -cost must be from 4 to 31", ""},
		{[]string{"hash-password", "-cost", "x"}, 2, "", `invalid value "x" for flag -cost`, ""},
		{[]string{"version", "extra"}, 2, "", `popbridge version: unexpected argument "extra"`, ""},
		{[]string{"serve", "-config", "/nonexistent/popbridge.yaml"}, 1, "",
			"popbridge serve: open /nonexistent/popbridge.yaml: no such file or directory\n", ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runCmd(t, "", tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d", r.code, tt.code)
			}
			for _, c := range []struct{ name, got, want string }{
				{"stdout", r.stdout, tt.stdout},
				{"stderr", r.stderr, tt.stderr},
				{"stderr", r.stderr, tt.stderrAlso},
			} {
				if c.want == "" && c.name == "stdout" && c.got != "" {
					t.Errorf("stdout = %q, want nothing", c.got)
				}
				if !strings.Contains(c.got, c.want) {
					t.Errorf("%s = %q, want it to contain %q", c.name, c.got, c.want)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	r := runCmd(t, "", "version")
	if r.code != 0 || !regexp.MustCompile(`^popbridge \S+ go1\.\S+ \w+/\w+\n$`).MatchString(r.stdout) {
		t.Errorf("version: exit %d, %q", r.code, r.stdout)
	}
	defer func(v string) { version = v }(version)
	version = "v1.2.3"
	if r := runCmd(t, "", "version"); !strings.HasPrefix(r.stdout, "popbridge v1.2.3 go") {
		t.Errorf("version with -ldflags version: %q", r.stdout)
	}
}

func TestHashPassword(t *testing.T) {
	tests := []struct {
		name, stdin, pass string // pass: what the hash must match
		cost              int
		err               string
	}{
		{"line", "s3cret\n", "s3cret", 4, ""},
		{"no final newline", "s3cret", "s3cret", 4, ""},
		{"CRLF", "s3cret\r\n", "s3cret", 4, ""},
		{"spaces kept", "  two words \n", "  two words ", 4, ""},
		{"first line only", "first\nsecond\n", "first", 4, ""},
		{"UTF-8", "pässwörd\n", "pässwörd", 5, ""},
		{"empty", "\n", "", 4, "popbridge hash-password: empty password\n"},
		{"no input", "", "", 4, "popbridge hash-password: empty password\n"},
		{"too long", strings.Repeat("x", 73) + "\n", "", 4,
			"popbridge hash-password: password longer than 72 bytes; bcrypt would ignore the rest\n"},
		{"line too long", strings.Repeat("x", 5000), "", 4, "popbridge hash-password: password line too long\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, tt.stdin, "hash-password", "-cost", fmt.Sprint(tt.cost))
			if tt.err != "" {
				if r.code != 1 || r.stderr != tt.err || r.stdout != "" {
					t.Errorf("exit %d, stdout %q, stderr %q; want 1 and %q", r.code, r.stdout, r.stderr, tt.err)
				}
				return
			}
			if r.code != 0 || !strings.HasSuffix(r.stdout, "\n") || strings.Count(r.stdout, "\n") != 1 {
				t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			hash := []byte(strings.TrimSuffix(r.stdout, "\n"))
			if err := bcrypt.CompareHashAndPassword(hash, []byte(tt.pass)); err != nil {
				t.Errorf("hash does not match %q: %v", tt.pass, err)
			}
			if cost, _ := bcrypt.Cost(hash); cost != tt.cost {
				t.Errorf("cost %d, want %d", cost, tt.cost)
			}
		})
	}
}

func TestHashPasswordDefaultCost(t *testing.T) {
	if testing.Short() {
		t.Skip("cost 12 takes a while")
	}
	r := runCmd(t, "pw\n", "hash-password")
	if cost, err := bcrypt.Cost([]byte(strings.TrimSpace(r.stdout))); err != nil || cost != 12 {
		t.Errorf("default cost %d, %v; want 12", cost, err)
	}
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

func TestCheck(t *testing.T) {
	path := writeConfig(t, "")
	dir := filepath.Dir(path)

	r := runCmd(t, "", "check", "-config", path)
	if r.code != 1 {
		t.Errorf("check with bob's Maildir missing: exit %d, want 1", r.code)
	}
	wantLines := []*regexp.Regexp{
		regexp.MustCompile(`^` + regexp.QuoteMeta(path) + `: configuration valid, 2 account\(s\)$`),
		regexp.MustCompile(`^OK +state +` + regexp.QuoteMeta(filepath.Join(dir, "state")) + ` \(cache\.db is created at the first start\)$`),
		regexp.MustCompile(`^OK +alice +maildir ` + regexp.QuoteMeta(filepath.Join(dir, "alice")) + `, on_delete keep$`),
		regexp.MustCompile(`^FAIL +bob +maildir ` + regexp.QuoteMeta(filepath.Join(dir, "bob")) + `, on_delete remove: .*no such file or directory$`),
	}
	checkLines(t, r.stdout, wantLines)

	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, "bob", sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeTestCert(t, dir)
	if err := os.WriteFile(path, append(must(os.ReadFile(path)), "tls: {cert_file: cert.pem, key_file: key.pem}\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, "", "check", "-config", path)
	if r.code != 0 || r.stderr != "" {
		t.Errorf("check of a good config: exit %d, stderr %q", r.code, r.stderr)
	}
	wantLines[3] = regexp.MustCompile(`^OK +bob +maildir .*, on_delete remove$`)
	wantLines = append(wantLines[:1], append([]*regexp.Regexp{
		regexp.MustCompile(`^OK +tls +` + regexp.QuoteMeta(filepath.Join(dir, "cert.pem")) + `, certificate for localhost, expires \d{4}-\d\d-\d\d$`),
	}, wantLines[1:]...)...)
	checkLines(t, r.stdout, wantLines)
}

func TestCheckInvalid(t *testing.T) {
	path := writeConfig(t, "cleartext_auth: [10.0.0.0/33]\nlimits: {idle_timeout: 5}\n")
	r := runCmd(t, "", "check", "-config", path)
	want := "popbridge check: 2 problems:\n" +
		"  " + path + `:13: cleartext_auth[0]: invalid network "10.0.0.0/33" (want a CIDR such as 10.0.0.0/8)` + "\n" +
		"  " + path + `:14: limits.idle_timeout: invalid duration "5" (want e.g. 90s, 10m, 1h)` + "\n"
	if r.code != 1 || r.stderr != want || r.stdout != "" {
		t.Errorf("check of an invalid config: exit %d, stdout %q, stderr\n%s\nwant 1 and\n%s", r.code, r.stdout, r.stderr, want)
	}

	path = writeConfig(t, "colour: blue\n")
	r = runCmd(t, "", "check", "-config", path)
	if want := fmt.Sprintf("popbridge check: %s:13: unknown key \"colour\"\n", path); r.code != 1 || r.stderr != want {
		t.Errorf("check with an unknown key: exit %d, stderr %q, want %q", r.code, r.stderr, want)
	}
}

func checkLines(t *testing.T, out string, want []*regexp.Regexp) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(want) {
		t.Errorf("output has %d lines, want %d:\n%s", len(lines), len(want), out)
		return
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d = %q, want match for %s", i+1, lines[i], re)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// startRun runs args in the background and returns a function that
// cancels the run and returns its exit status. runningApp returns the
// server it runs (serve, demo).
func startRun(t *testing.T, args ...string) (stdout, stderr *syncBuffer, stop func() int) {
	t.Helper()
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	r := &started{app: make(chan *app.App, 1), exited: make(chan struct{})}
	runs.Store(stderr, r)
	c := &cli{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr, onStart: func(a *app.App) { r.app <- a }}
	go func() {
		defer close(r.exited)
		done <- c.run(ctx, args)
	}()
	stopped := false
	stop = func() int {
		t.Helper()
		cancel()
		select {
		case code := <-done:
			stopped = true
			return code
		case <-time.After(10 * time.Second):
			t.Fatalf("%v did not stop; stderr:\n%s", args, stderr)
			return -1
		}
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	return stdout, stderr, stop
}

// started is the server of a run of startRun, once it serves.
type started struct {
	app    chan *app.App // holds it once it serves
	exited chan struct{} // closed when the run returned
}

// runs maps the stderr of each run of startRun to its *started.
var runs sync.Map

// runningApp waits for the run of startRun with stderr to serve and
// returns its server.
func runningApp(t *testing.T, stderr *syncBuffer) *app.App {
	t.Helper()
	v, ok := runs.Load(stderr)
	if !ok {
		t.Fatal("runningApp: not a run of startRun")
	}
	r := v.(*started)
	select {
	case a := <-r.app:
		r.app <- a // for the next call
		return a
	case <-r.exited:
		select {
		case a := <-r.app:
			r.app <- a
			return a
		default:
		}
		t.Fatalf("the run ended before serving; stderr:\n%s", stderr)
	case <-time.After(10 * time.Second):
		t.Fatalf("the server did not start in 10 s; stderr:\n%s", stderr)
	}
	return nil
}

// listenerAddr waits for the run of startRun with stderr to serve and
// returns the address of its listener name (pop3, pop3s, http).
func listenerAddr(t *testing.T, stderr *syncBuffer, name string) string {
	t.Helper()
	addr := runningApp(t, stderr).Addr(name)
	if addr == nil {
		t.Fatalf("no %s listener:\n%s", name, stderr)
	}
	return addr.String()
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
	c *textproto.Conn  // sends commands
	r *pop3wire.Reader // reads replies from c
}

func dialPOP3(t *testing.T, addr string) *pop3 {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	p := &pop3{t: t, c: textproto.NewConn(nc)}
	p.r = pop3wire.NewReader(p.c.R, 64<<20)
	t.Cleanup(func() { p.c.Close() })
	if g := p.line(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting %q", g)
	}
	return p
}

func (p *pop3) line() string {
	p.t.Helper()
	l, err := p.r.ReadLine()
	if err != nil {
		p.t.Fatalf("reading: %v", err)
	}
	return string(l)
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
	var b strings.Builder
	if err := p.r.ReadLines(func(l []byte) error {
		b.Write(l)
		b.WriteByte('\n')
		return nil
	}); err != nil {
		p.t.Fatal(err)
	}
	return b.String()
}

func TestServe(t *testing.T) {
	path := writeConfig(t, "")
	_, stderr, stop := startRun(t, "serve", "-config", path)

	addr := listenerAddr(t, stderr, "pop3")

	p := dialPOP3(t, addr)
	if s := p.cmd("USER alice"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("USER: %q", s)
	}
	if s := p.cmd("PASS wrong"); !strings.HasPrefix(s, "-ERR [AUTH]") {
		t.Fatalf("PASS with a wrong password: %q", s)
	}
	p = dialPOP3(t, addr)
	p.cmd("USER alice")
	if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS: %q", s)
	}
	if s := p.cmd("STAT"); !strings.HasPrefix(s, "+OK 5 ") {
		t.Errorf("STAT: %q", s)
	}
	want := must(os.ReadFile(firstMessage(t, filepath.Join(filepath.Dir(path), "alice"))))
	if got := p.multi("RETR 1"); got != string(want) {
		t.Errorf("RETR 1:\n%s\nwant\n%s", got, want)
	}
	if s := p.cmd("QUIT"); !strings.HasPrefix(s, "+OK") {
		t.Errorf("QUIT: %q", s)
	}

	if code := stop(); code != 0 {
		t.Errorf("serve exited %d after cancel; stderr:\n%s", code, stderr)
	}
	logs := stderr.String()
	for _, want := range []string{`"message":"popbridge starting"`, `"message":"stopped"`, `"user":"alice"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "s3cret") || strings.Contains(logs, "wrong") {
		t.Errorf("log contains a password:\n%s", logs)
	}
}

func TestServeListenError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	path := writeConfig(t, "")
	cfg := strings.Replace(string(must(os.ReadFile(path))), "127.0.0.1:0", l.Addr().String(), 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, "", "serve", "-config", path)
	if r.code != 1 || !strings.Contains(r.stderr, "popbridge serve: listen.pop3: listen tcp "+l.Addr().String()) {
		t.Errorf("serve on a busy address: exit %d, stderr %q", r.code, r.stderr)
	}
}

// firstMessage returns the file of the oldest message in a Maildir.
func firstMessage(t *testing.T, mdir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(mdir, "new", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no messages in %s: %v", mdir, err)
	}
	return files[0] // Glob sorts; names start with the delivery time
}

// writeTestCert writes a self-signed certificate for localhost to
// dir/cert.pem and dir/key.pem.
func writeTestCert(t *testing.T, dir string) {
	t.Helper()
	testcert.New(t).WriteFiles(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
}
