package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/graph/graphtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/app"
)

// TestCheckSyncGraph runs check and sync on a graph account against the
// fake Graph API and Microsoft token endpoint: check reads the folder
// with the token popbridge auth stored, sync sizes every message so that
// the first login needs no $value, and check names the fix once the
// token is gone or the grant revoked.
func TestCheckSyncGraph(t *testing.T) {
	const messages = 30
	fake := graphtest.Start(t)
	rt := fake.Grant()
	for i := range messages {
		fake.Add("inbox", fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\nbody %d\r\n", i, i))
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "popbridge.yaml")
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
log: {level: info, format: json}
state_dir: state
accounts:
  - user: gwen
    password_hash: %q
    backend:
      type: graph
      api_endpoint: %s
      oauth2:
        provider: microsoft
        tenant: consumers
        client_id: %s
        token_url: %s
`, testHash(t), fake.Endpoint(), graphtest.ClientID, fake.TokenURL("consumers"))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir)}
	if err := store.Save("gwen", &oauth2.Token{RefreshToken: rt}); err != nil {
		t.Fatal(err)
	}

	r := runCmd(t, "", "check", "-config", path)
	if r.code != 0 {
		t.Fatalf("check: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	checkLines(t, r.stdout, []*regexp.Regexp{
		regexp.MustCompile(`configuration valid`),
		regexp.MustCompile(`^OK +state `),
		regexp.MustCompile(`^OK +gwen +graph ` + regexp.QuoteMeta(fake.Endpoint()) + `, mailbox me, folder inbox, on_delete deleteditems, download_once false$`),
	})
	if n := fake.Calls()[graphtest.EFolder]; n == 0 {
		t.Errorf("check did not read the folder: calls %v", fake.Calls())
	}

	r = runCmd(t, "", "sync", "gwen", "-config", path)
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, fmt.Sprintf("%d/%d messages", messages, messages)) {
		t.Errorf("sync output:\n%s", r.stdout)
	}
	if n := fake.Calls()[graphtest.EValue]; n != messages {
		t.Errorf("sync fetched $value %d times, want %d", n, messages)
	}

	// The first login is served from what sync learnt: no $value.
	fake.ResetStats()
	_, stderr, stop := startRun(t, "serve", "-config", path)
	p := dialPOP3(t, listenerAddr(t, stderr, "pop3"))
	p.cmd("USER gwen")
	if s := p.cmd("PASS s3cret"); s != "+OK Logged in." {
		t.Fatalf("PASS: %q\n%s", s, stderr)
	}
	if s := p.cmd("STAT"); !strings.HasPrefix(s, fmt.Sprintf("+OK %d ", messages)) {
		t.Fatalf("STAT: %q", s)
	}
	p.cmd("QUIT")
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	if n := fake.Calls()[graphtest.EValue]; n != 0 {
		t.Errorf("the login after sync fetched $value %d times, want 0", n)
	}

	// Graph refuses the mailbox: check says which permission to grant.
	fake.FailNext(graphtest.Failure{N: 1, Endpoint: graphtest.EFolder, Status: 403})
	r = runCmd(t, "", "check", "-config", path)
	if r.code != 1 || !regexp.MustCompile(`(?m)^FAIL +gwen +graph .*grant Mail.ReadWrite`).MatchString(r.stdout) ||
		strings.Contains(r.stdout, "[SYS/PERM]") {
		t.Errorf("check with a 403: exit %d\n%s", r.code, r.stdout)
	}

	// Nothing answers at api_endpoint: check names the host and the key.
	dead := strings.Replace(cfg, fake.Endpoint(), "http://127.0.0.1:1/v1.0", 1)
	deadPath := filepath.Join(dir, "dead.yaml")
	if err := os.WriteFile(deadPath, []byte(dead), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, "", "check", "-config", deadPath)
	if r.code != 1 || !regexp.MustCompile(`(?m)^FAIL +gwen +graph .*nothing answers at 127\.0\.0\.1:1 \(connection refused\); check api_endpoint`).MatchString(r.stdout) {
		t.Errorf("check with nothing at api_endpoint: exit %d\n%s", r.code, r.stdout)
	}

	// A revoked grant, then no token at all: check names the fix.
	fake.Revoke()
	r = runCmd(t, "", "check", "-config", path)
	if r.code != 1 || !regexp.MustCompile(`(?m)^FAIL +gwen +graph .*popbridge auth`).MatchString(r.stdout) {
		t.Errorf("check with a revoked grant: exit %d\n%s", r.code, r.stdout)
	}
	if err := os.Remove(store.Path("gwen")); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, "", "check", "-config", path)
	if r.code != 1 || !regexp.MustCompile(`(?m)^FAIL +gwen +graph .*run popbridge auth`).MatchString(r.stdout) {
		t.Fatalf("check without a token: exit %d\n%s", r.code, r.stdout)
	}
	if strings.Contains(stderr.String()+r.stdout, rt) {
		t.Errorf("the refresh token appears in the output")
	}
	t.Logf("graph: check (folder read with the stored Microsoft token), sync (%d messages sized, the next login fetched no $value), "+
		"check naming the fix for a 403 (the permission), a dead api_endpoint, a revoked grant and a missing token", messages)
}

// TestAuthGraph runs popbridge auth for a graph account (provider
// microsoft, tenant consumers, endpoints overridden by the fake
// authorization server): the device flow by default and the loopback
// flow with PKCE, each asking for the Graph scopes and storing a token.
func TestAuthGraph(t *testing.T) {
	f := oauthtest.Start(t)
	f.DevicePending = 1
	dir := t.TempDir()
	path := filepath.Join(dir, "popbridge.yaml")
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
state_dir: state
accounts:
  - user: gwen
    password_hash: %q
    backend:
      type: graph
      oauth2:
        provider: microsoft
        tenant: consumers
        client_id: %s
        auth_url: %s
        device_url: %s
        token_url: %s
`, testHash(t), f.ClientID, f.AuthURL, f.DeviceURL, f.TokenURL)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir)}
	const scopes = "offline_access https://graph.microsoft.com/Mail.ReadWrite https://graph.microsoft.com/Mail.Send" // it sends through Graph by default

	r := runCmd(t, "", "auth", "gwen", "-config", path)
	if r.code != 0 || !strings.Contains(r.stdout, "(microsoft, device flow, scopes "+scopes+")") || !strings.Contains(r.stdout, "ABCD-EFGH") {
		t.Fatalf("auth (device): %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := strings.Join(f.Scopes(), " "); got != scopes {
		t.Errorf("device flow asked for %q, want %q", got, scopes)
	}
	tok, err := store.Load("gwen")
	if err != nil || !f.ValidAccess(tok.AccessToken) || tok.RefreshToken == "" {
		t.Fatalf("token stored by the device flow: %v", err)
	}
	if err := os.Remove(store.Path("gwen")); err != nil {
		t.Fatal(err)
	}

	// Loopback with PKCE (the fake refuses an authorize request without
	// an S256 code_challenge); the browser's last URL is pasted.
	pr, pw := io.Pipe()
	defer pw.Close()
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(context.Background(), []string{"auth", "gwen", "-config", path, "-flow", "loopback"}, pr, stdout, stderr)
	}()
	authURL := authURLFrom(t, stdout)
	if !strings.Contains(authURL, "code_challenge_method=S256") {
		t.Errorf("authorization URL without PKCE: %s", authURL)
	}
	io.WriteString(pw, browserRedirect(t, authURL)+"\n")
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("auth -flow loopback exited %d\n%s\n%s", code, stdout, stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("auth -flow loopback did not finish:\n%s", stdout)
	}
	if got := strings.Join(f.Scopes(), " "); got != scopes {
		t.Errorf("loopback flow asked for %q, want %q", got, scopes)
	}
	if tok, err := store.Load("gwen"); err != nil || !f.ValidAccess(tok.AccessToken) || tok.RefreshToken == "" {
		t.Fatalf("token stored by the loopback flow: %v", err)
	}
	t.Logf("oauth: popbridge auth for a graph account (microsoft, tenant consumers): device flow and loopback with PKCE, scopes %s", scopes)
}
