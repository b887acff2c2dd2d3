package main

import (
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/control"
)

// startServe runs serve -config path in process and returns its POP3
// address.
func startServe(t *testing.T, path string) (addr string, stderr *syncBuffer, stop func() int) {
	t.Helper()
	_, stderr, stop = startRun(t, "serve", "-config", path)
	return listenerAddr(t, stderr, "pop3"), stderr, stop
}

// statsJSON runs cache stats -json with args and decodes its output.
func statsJSON(t *testing.T, args ...string) statsOutput {
	t.Helper()
	r := runCmd(t, "", append([]string{"cache", "stats", "-json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("cache stats -json %v: exit %d, stderr %q", args, r.code, r.stderr)
	}
	var out statsOutput
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("cache stats -json: %v\n%s", err, r.stdout)
	}
	return out
}

func account(r statsOutput, name string) control.AccountStats {
	for _, a := range r.Accounts {
		if a.Account == name {
			return a
		}
	}
	return control.AccountStats{Account: "(missing)"}
}

// login opens a POP3 session of alice, password s3cret.
func loginAlice(t *testing.T, addr string) *pop3 {
	t.Helper()
	p := dialPOP3(t, addr)
	p.cmd("USER alice")
	if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS: %q", s)
	}
	return p
}

// statTotal parses "+OK n size" into its numbers.
func statTotal(t *testing.T, p *pop3) (n, size int64) {
	t.Helper()
	f := strings.Fields(p.cmd("STAT"))
	if len(f) != 3 || f[0] != "+OK" {
		t.Fatalf("STAT: %q", f)
	}
	n, _ = strconv.ParseInt(f[1], 10, 64)
	size, _ = strconv.ParseInt(f[2], 10, 64)
	return n, size
}

// TestCacheViaServer runs cache stats and forget against a running
// serve, over the control socket, then against the file once it stopped.
func TestCacheViaServer(t *testing.T) {
	path := writeConfig(t, "")
	state := filepath.Join(filepath.Dir(path), "state")
	addr, stderr, stop := startServe(t, path)

	// alice (on_delete: keep) lists 5 messages and hides the first.
	p := loginAlice(t, addr)
	n, size := statTotal(t, p)
	if n != 5 {
		t.Fatalf("STAT: %d messages, want 5", n)
	}
	if s := p.cmd("DELE 1"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("DELE 1: %q", s)
	}
	if s := p.cmd("QUIT"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("QUIT: %q", s)
	}

	sock := filepath.Join(state, control.File)
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket: %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}

	r := runCmd(t, "", "cache", "stats", "-config", path)
	want := []*regexp.Regexp{
		regexp.MustCompile(`^ACCOUNT +MESSAGES +TOMBSTONES +BYTES +DISK$`),
		regexp.MustCompile(`^alice +5 +1 +` + strconv.FormatInt(size, 10) + ` +[1-9]\d*$`),
		regexp.MustCompile(`^bob +0 +0 +0 +0$`), // configured, no data
		regexp.MustCompile(`^$`),
		regexp.MustCompile(`^From the running popbridge \(pid ` + strconv.Itoa(os.Getpid()) + `\); its body cache holds 0 message\(s\), 0 bytes\.$`),
	}
	if r.code != 0 || r.stderr != "" {
		t.Errorf("cache stats: exit %d, stderr %q", r.code, r.stderr)
	}
	checkLines(t, r.stdout, want)
	js := statsJSON(t, "-state", state)
	if js.Source != "server" || js.PID != os.Getpid() || js.StateDir != state || len(js.Accounts) != 1 || js.Bodies == nil {
		t.Errorf("cache stats -json -state: %+v", js)
	}
	if a := account(js, "alice"); a.Messages != 5 || a.Tombstones != 1 || a.Bytes != size {
		t.Errorf("alice: %+v, want 5 messages, 1 tombstone, %d bytes", a, size)
	}

	// check sees the running server.
	r = runCmd(t, "", "check", "-config", path)
	if !regexp.MustCompile(`(?m)^OK +state +` + regexp.QuoteMeta(state) + `, in use by the running popbridge \(pid \d+\), 1 account\(s\) cached$`).MatchString(r.stdout) {
		t.Errorf("check during serve:\n%s", r.stdout)
	}

	// forget is refused while alice has a session, then works.
	p = loginAlice(t, addr)
	if n, _ := statTotal(t, p); n != 4 {
		t.Errorf("STAT after hiding one: %d messages, want 4", n)
	}
	r = runCmd(t, "", "cache", "forget", "-config", path, "alice")
	if r.code != 1 || r.stderr != "popbridge cache: account \"alice\" has an open POP3 session; try again when it has ended\n" {
		t.Errorf("forget during a session: exit %d, stderr %q", r.code, r.stderr)
	}
	p.cmd("QUIT")
	r = runCmd(t, "", "cache", "forget", "alice", "-config", path) // the account first works too
	if r.code != 0 || r.stdout != "Forgot account \"alice\" (in the running popbridge, pid "+strconv.Itoa(os.Getpid())+").\n" {
		t.Errorf("forget: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if a := account(statsJSON(t, "-state", state), "alice"); a.Account != "(missing)" {
		t.Errorf("alice still in the store after forget: %+v", a)
	}
	r = runCmd(t, "", "cache", "forget", "-state", state, "nobody")
	if r.code != 1 || !strings.Contains(r.stderr, `no data for account "nobody" in `+filepath.Join(state, app.StoreFile)) {
		t.Errorf("forget of an unknown account: exit %d, stderr %q", r.code, r.stderr)
	}
	if !regexp.MustCompile(`"account":"alice".*"message":"cache forgotten"`).MatchString(stderr.String()) {
		t.Errorf("log lacks the forget:\n%s", stderr)
	}

	// Forgotten tombstones: the hidden message shows again, and the new
	// listing is recorded.
	p = loginAlice(t, addr)
	if n, _ := statTotal(t, p); n != 5 {
		t.Errorf("STAT after forget: %d messages, want 5", n)
	}
	p.cmd("QUIT")

	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, stderr)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket left after shutdown: %v", err)
	}

	// Without a server, the file is read directly, read-only by check.
	r = runCmd(t, "", "check", "-config", path)
	if !regexp.MustCompile(`(?m)^OK +state +` + regexp.QuoteMeta(filepath.Join(state, app.StoreFile)) + `, 1 account\(s\) cached$`).MatchString(r.stdout) {
		t.Errorf("check after serve:\n%s", r.stdout)
	}
	r = runCmd(t, "", "cache", "stats", "-config", path)
	want[1] = regexp.MustCompile(`^alice +5 +0 +` + strconv.FormatInt(size, 10) + ` +[1-9]\d*$`)
	want[4] = regexp.MustCompile(`^From ` + regexp.QuoteMeta(filepath.Join(state, app.StoreFile)) + ` \(no popbridge running\)\.$`)
	checkLines(t, r.stdout, want)
	if js := statsJSON(t, "-state", state); js.Source != "file" || js.PID != 0 || js.Bodies != nil || account(js, "alice").Messages != 5 {
		t.Errorf("cache stats -json from the file: %+v", js)
	}
	r = runCmd(t, "", "cache", "forget", "-state", state, "alice")
	if r.code != 0 || r.stdout != "Forgot account \"alice\" in "+filepath.Join(state, app.StoreFile)+".\n" {
		t.Errorf("forget from the file: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, "", "cache", "forget", "-state", state, "alice")
	if r.code != 1 || !strings.Contains(r.stderr, `no data for account "alice"`) {
		t.Errorf("second forget from the file: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runCmd(t, "", "cache", "stats", "-json", "-state", state)
	if !strings.Contains(r.stdout, `"accounts": []`) {
		t.Errorf("stats of an empty store:\n%s\nwant an empty list of accounts", r.stdout)
	}
}

// TestControlSocketStale starts serve over a socket file left by a
// crashed process, then over a file that is not a socket.
func TestControlSocketStale(t *testing.T) {
	path := writeConfig(t, "")
	state := filepath.Join(filepath.Dir(path), "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(state, control.File)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("stale socket: %v", err)
	}

	_, stderr, stop := startServe(t, path)
	if js := statsJSON(t, "-state", state); js.Source != "server" {
		t.Errorf("stats over a replaced stale socket: %+v", js)
	}
	// A second server on the same state directory is refused.
	r := runCmd(t, "", "serve", "-config", path)
	if r.code != 1 || !strings.Contains(r.stderr, "still locked by another process") {
		t.Errorf("second serve: exit %d, stderr %q", r.code, r.stderr)
	}
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, stderr)
	}

	// Not a socket: the server runs without one and says so; the CLI
	// explains why it cannot read the store.
	if err := os.WriteFile(sock, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop = startServe(t, path)
	if !strings.Contains(stderr.String(), "exists and is not a socket; remove it") {
		t.Errorf("log lacks the control socket warning:\n%s", stderr)
	}
	r = runCmd(t, "", "cache", "stats", "-state", state)
	if r.code != 1 || !strings.Contains(r.stderr, "still locked by another process") || !strings.Contains(r.stderr, "nothing answers on "+sock) {
		t.Errorf("stats with the store held and no socket: exit %d, stderr %q", r.code, r.stderr)
	}
	stop()
	if data, err := os.ReadFile(sock); err != nil || string(data) != "mine" {
		t.Errorf("serve changed the file in the socket's place: %q, %v", data, err)
	}
}

func TestCacheUsage(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none")
	tests := []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"cache"}, 2, "Usage: popbridge cache stats"},
		{[]string{"cache", "-h"}, 0, "popbridge cache forget (-config FILE | -state DIR) ACCOUNT"},
		{[]string{"cache", "frob"}, 2, `popbridge cache: unknown subcommand "frob" (want stats, forget or verify)`},
		{[]string{"cache", "stats"}, 2, "popbridge cache: -config or -state is required"},
		{[]string{"cache", "stats", "-state", "a", "-config", "b"}, 2, "give -config or -state, not both"},
		{[]string{"cache", "stats", "-state", "a", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"cache", "stats", "-h"}, 0, "Usage: popbridge cache stats [-json] (-config FILE | -state DIR)"},
		{[]string{"cache", "forget", "-state", "a"}, 2, "popbridge cache: ACCOUNT is required"},
		{[]string{"cache", "forget", "-state", "a", "x", "y"}, 2, `unexpected argument "y"`},
		{[]string{"cache", "forget", "-nope"}, 2, "flag provided but not defined: -nope"},
		{[]string{"cache", "verify"}, 2, "popbridge cache: -config or -state is required"},
		{[]string{"cache", "verify", "-h"}, 0, "Usage: popbridge cache verify (-config FILE | -state DIR)"},
		{[]string{"cache", "verify", "-state", missing}, 1, "popbridge cache: no cache in " + missing + ": cache.db does not exist"},
		{[]string{"cache", "stats", "-state", missing}, 1, "popbridge cache: no cache in " + missing + ": cache.db does not exist"},
		{[]string{"cache", "forget", "-state", missing, "alice"}, 1, "no cache in " + missing},
		{[]string{"cache", "stats", "-config", missing + ".yaml"}, 1, "no such file or directory"},
	}
	for _, tt := range tests {
		r := runCmd(t, "", tt.args...)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tt.args, r.code, r.stderr, tt.code, tt.stderr)
		}
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("cache on a missing state directory created it: %v", err)
	}
}
