package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
)

// TestAuthPort: popbridge auth -port N sends the browser back to
// 127.0.0.1:N; a port in use and Ctrl-C are said in plain words.
func TestAuthPort(t *testing.T) {
	f := oauthtest.Start(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen: {pop3: 127.0.0.1:0}
state_dir: state
accounts:
  - user: ann
    password_hash: %q
    backend:
      type: imap
      addr: 127.0.0.1:1
      auth: xoauth2
      username: ann@example.org
      oauth2: {provider: custom, client_id: %s, auth_url: %q, token_url: %q, scopes: [mail]}
`, testHash(t), f.ClientID, f.AuthURL, f.TokenURL)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	freePort := func() (int, net.Listener) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return l.Addr().(*net.TCPAddr).Port, l
	}
	start := func(args ...string) (stdout, stderr *syncBuffer, cancel func(), done chan int) {
		stdout, stderr = &syncBuffer{}, &syncBuffer{}
		ctx, cancel := context.WithCancel(context.Background())
		done = make(chan int, 1)
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close(); cancel() })
		go func() {
			done <- run(ctx, append([]string{"auth", "ann", "-config", path}, args...), pr, stdout, stderr)
		}()
		return stdout, stderr, cancel, done
	}
	wait := func(done chan int, stdout, stderr *syncBuffer) int {
		select {
		case code := <-done:
			return code
		case <-time.After(10 * time.Second):
			t.Fatalf("auth did not finish:\n%s\n%s", stdout, stderr)
			return -1
		}
	}

	// -port N: the redirect goes to 127.0.0.1:N, and the browser's visit
	// there completes the flow.
	port, l := freePort()
	l.Close()
	stdout, stderr, _, done := start("-port", fmt.Sprint(port))
	u, err := url.Parse(authURLFrom(t, stdout))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.Query().Get("redirect_uri"), fmt.Sprintf("http://127.0.0.1:%d/", port); got != want {
		t.Errorf("redirect_uri %q, want %q", got, want)
	}
	loc := browserRedirect(t, u.String())
	if !strings.HasPrefix(loc, fmt.Sprintf("http://127.0.0.1:%d/?", port)) {
		t.Fatalf("the fake sent the browser to %q", loc)
	}
	resp, err := http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code := wait(done, stdout, stderr); code != 0 || !strings.Contains(stdout.String(), "Token for ann saved") {
		t.Fatalf("auth -port: exit %d\n%s\n%s", code, stdout, stderr)
	}

	// A port in use.
	port, l = freePort()
	defer l.Close()
	stdout, stderr, _, done = start("-port", fmt.Sprint(port))
	want := fmt.Sprintf("popbridge auth: account ann: port %d on 127.0.0.1 is in use by another program; choose another -port, or stop that program\n", port)
	if code := wait(done, stdout, stderr); code != 1 || stderr.String() != want {
		t.Errorf("auth on a busy port: exit %d, stderr %q, want %q", code, stderr, want)
	}

	// Ctrl-C while waiting for the browser.
	stdout, stderr, cancel, done := start()
	waitFor(t, "the wait", func() string {
		if strings.Contains(stdout.String(), "Waiting for the authorization...") {
			return "ok"
		}
		return ""
	})
	cancel()
	if code := wait(done, stdout, stderr); code != 1 || stderr.String() != "popbridge auth: account ann: interrupted; no token was saved\n" {
		t.Errorf("auth interrupted: exit %d, stderr %q", code, stderr)
	}

	// -port is for the loopback flow.
	r := runCmd(t, "", "auth", "ann", "-config", path, "-flow", "device", "-port", "8080")
	if r.code != 2 || !strings.Contains(r.stderr, "-port is for the loopback flow") {
		t.Errorf("auth -flow device -port: exit %d, stderr %q", r.code, r.stderr)
	}
}
