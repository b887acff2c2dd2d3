package main_test

import (
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/internal/pop3wire"
)

// TestSIGHUP runs the built binary, sends it SIGHUP after writing an
// invalid and then a valid configuration, and checks who can log in:
// the invalid file changes nothing, the valid one changes alice's
// password and removes bob, and bob's session in progress goes on.
func TestSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end tests skipped in -short mode")
	}
	bin := buildPopbridge(t)
	dir := t.TempDir()
	for _, u := range []string{"alice", "bob"} {
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(dir, u, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(t, filepath.Join(dir, u, "new", "1.m"), 0o600, "Subject: hi "+u+"\n\nhello\n")
	}
	hash := func(pass string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	path := filepath.Join(dir, "popbridge.yaml")
	config := func(users map[string]string, extra string) {
		src := fmt.Sprintf("listen: {pop3: %q}\nlog: {format: json}\nlimits: {trusted_networks: [127.0.0.1]}\naccounts:\n", addr)
		for _, u := range []string{"alice", "bob"} {
			if pass, ok := users[u]; ok {
				src += fmt.Sprintf("  - user: %s\n    password_hash: %q\n    backend: {type: maildir, path: %s}\n", u, hash(pass), u)
			}
		}
		writeFile(t, path, 0o600, src+extra)
	}
	config(map[string]string{"alice": "s3cret", "bob": "b0b"}, "")

	cmd := exec.Command(bin, "serve", "-config", path)
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := stopOnCleanup(t, cmd, logs)
	waitLog := func(msg string, n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); strings.Count(logs.String(), `"message":"`+msg) < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no log %q (#%d) in 10 s:\n%s", msg, n, logs)
			}
		}
	}
	waitLog("listening", 1)
	hup := func() {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	bob := hupLogin(t, addr, "bob", "b0b")
	if bob == nil {
		t.Fatal("bob cannot log in")
	}

	// Invalid: alice's password changes, but so does an unknown key.
	config(map[string]string{"alice": "n3w", "bob": "b0b"}, "colour: blue\n")
	hup()
	waitLog("configuration not reloaded", 1)
	if !hupCanLogin(t, addr, "alice", "s3cret") || hupCanLogin(t, addr, "alice", "n3w") {
		t.Error("after SIGHUP with an invalid file, alice's password changed")
	}
	if !strings.Contains(logs.String(), `unknown key \"colour\"`) {
		t.Errorf("the log does not say what is wrong with the file:\n%s", logs)
	}

	// Valid: alice's password changes and bob is removed.
	config(map[string]string{"alice": "n3w"}, "")
	hup()
	waitLog("configuration reloaded", 1)
	if hupCanLogin(t, addr, "alice", "s3cret") || !hupCanLogin(t, addr, "alice", "n3w") {
		t.Error("after SIGHUP with a valid file, alice's new password does not work, or the old one still does")
	}
	if hupCanLogin(t, addr, "bob", "b0b") {
		t.Error("bob, removed from the file, can still log in")
	}
	if s := hupCmd(t, bob, "RETR 1"); !strings.HasPrefix(s, "+OK") {
		t.Errorf("bob's session after the reload: RETR 1: %q", s)
	} else if body, err := hupDot(bob); err != nil || !strings.Contains(body, "hi bob") {
		t.Errorf("bob's session after the reload: RETR 1 gave %q, %v", body, err)
	}
	if s := hupCmd(t, bob, "QUIT"); !strings.HasPrefix(s, "+OK") {
		t.Errorf("bob's QUIT after the reload: %q", s)
	}

	if code := stop(); code != 0 {
		t.Errorf("popbridge exited %d after SIGTERM", code)
	}
}

// hupLogin logs in over a new connection and returns it, or nil after
// -ERR (the connection is then closed).
func hupLogin(t *testing.T, addr, user, pass string) *textproto.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := textproto.NewConn(nc)
	t.Cleanup(func() { c.Close() })
	if g, err := pop3wire.NewReader(c.R, 0).ReadLine(); err != nil || !strings.HasPrefix(string(g), "+OK") {
		t.Fatalf("greeting %q, %v", g, err)
	}
	if s := hupCmd(t, c, "USER %s", user); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("USER: %q", s)
	}
	if s := hupCmd(t, c, "PASS %s", pass); !strings.HasPrefix(s, "+OK") {
		c.Close()
		return nil
	}
	return c
}

// hupCanLogin reports whether user can log in with pass; it logs out.
func hupCanLogin(t *testing.T, addr, user, pass string) bool {
	t.Helper()
	c := hupLogin(t, addr, user, pass)
	if c == nil {
		return false
	}
	hupCmd(t, c, "QUIT")
	c.Close()
	return true
}

// hupCmd sends a command and returns the status line.
func hupCmd(t *testing.T, c *textproto.Conn, format string, args ...any) string {
	t.Helper()
	if err := c.PrintfLine(format, args...); err != nil {
		t.Fatal(err)
	}
	s, err := pop3wire.NewReader(c.R, 0).ReadLine()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
	return string(s)
}

// hupDot reads a multi-line body, unstuffed, lines joined with LF.
func hupDot(c *textproto.Conn) (string, error) {
	var b strings.Builder
	err := pop3wire.NewReader(c.R, 64<<20).ReadLines(func(l []byte) error {
		b.Write(l)
		b.WriteByte('\n')
		return nil
	})
	return b.String(), err
}
