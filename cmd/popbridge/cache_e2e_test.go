package main_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCacheE2E runs the built binary as a new user would: popbridge demo
// in an empty directory, curl and poplib as clients, then popbridge cache
// stats -state on the demo's directory while the demo runs (over its
// control socket) and after it stopped (from the file).
func TestCacheE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end tests skipped in -short mode")
	}
	curl := need(t, "curl", "curl")
	python := need(t, "python3", "python3")
	bin := buildPopbridge(t)
	dir := t.TempDir()

	port := strconv.Itoa(freePort(t))
	demo := exec.Command(bin, "demo", "-listen", "127.0.0.1:"+port)
	demo.Dir = dir
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	demo.Stdout, demo.Stderr = stdout, stderr
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	stop := stopOnCleanup(t, demo, stderr)
	re := regexp.MustCompile(`curl (pop3://demo:demo@127\.0\.0\.1:\d+/1)\n`)
	var url string
	for deadline := time.Now().Add(20 * time.Second); url == ""; time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(stdout.String()); m != nil {
			url = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("popbridge demo printed no curl command in 20 s; stdout:\n%s\nstderr:\n%s", stdout, stderr)
		}
	}

	// curl reads message 1; poplib deletes it.
	if got := run(t, curl, "-sS", url); !bytes.Contains(got, []byte("\r\nSubject: ")) {
		t.Fatalf("curl got no message:\n%s", got)
	}
	script := `import poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=10)
p.user("demo"); p.pass_("demo")
print(p.dele(1).decode())
print(p.quit().decode())`
	if out := run(t, python, "-c", script, port); !bytes.HasPrefix(out, []byte("+OK")) || !bytes.Contains(out, []byte("\n+OK")) {
		t.Fatalf("poplib DELE 1 and QUIT:\n%s", out)
	}

	// What the demo's Maildir now holds, as sizes on the wire.
	var n, size int
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(dir, "popbridge-demo", "Maildir", sub, "*"))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			n++
			size += len(wire(data))
		}
	}
	if n != 4 {
		t.Fatalf("demo Maildir holds %d messages after DELE+QUIT, want 4", n)
	}
	row := regexp.MustCompile(`(?m)^demo +` + strconv.Itoa(n) + ` +0 +` + strconv.Itoa(size) + ` +[1-9]\d*$`)

	// While the demo runs: its control socket answers, by a relative path.
	live := runIn(t, dir, bin, "cache", "stats", "-state", "popbridge-demo")
	if !row.Match(live) || !strings.Contains(string(live), "From the running popbridge (pid "+strconv.Itoa(demo.Process.Pid)+")") {
		t.Errorf("cache stats during the demo:\n%s\nwant a row matching %s", live, row)
	}
	var js struct {
		Source   string
		PID      int
		Accounts []struct {
			Account  string
			Messages int
			Bytes    int
		}
	}
	out := runIn(t, dir, bin, "cache", "stats", "-json", "-state", "popbridge-demo")
	if err := json.Unmarshal(out, &js); err != nil || js.Source != "server" || js.PID != demo.Process.Pid ||
		len(js.Accounts) != 1 || js.Accounts[0].Account != "demo" || js.Accounts[0].Messages != n || js.Accounts[0].Bytes != size {
		t.Errorf("cache stats -json during the demo (%v):\n%s", err, out)
	}

	if code := stop(); code != 0 {
		t.Fatalf("popbridge demo exited with status %d after SIGTERM", code)
	}
	if _, err := os.Lstat(filepath.Join(dir, "popbridge-demo", "control.sock")); !os.IsNotExist(err) {
		t.Errorf("control socket left after the demo stopped: %v", err)
	}

	// After it stopped: the same figures, from the file.
	after := runIn(t, dir, bin, "cache", "stats", "-state", "popbridge-demo")
	if !row.Match(after) || !strings.Contains(string(after), "From popbridge-demo/cache.db (no popbridge running).") {
		t.Errorf("cache stats after the demo:\n%s\nwant a row matching %s", after, row)
	}
	if t.Failed() {
		return
	}
	t.Logf("e2e: after curl RETR and poplib DELE+QUIT on popbridge demo, `popbridge cache stats -state popbridge-demo` "+
		"showed the demo account's %d messages (%d octets) over the control socket while it ran and from cache.db after it stopped", n, size)
}

// runIn runs a command in dir and returns its standard output; it fails
// the test on a non-zero exit status.
func runIn(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}
