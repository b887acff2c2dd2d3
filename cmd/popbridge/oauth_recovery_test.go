package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/app"
)

// TestServeOAuthRecovery runs serve with a gmail account whose access
// token Gmail stops accepting while the refresh token stays valid: the
// next login refreshes once and works, and /status and the re-auth
// metric stay calm. With the refresh token revoked too, the client gets
// -ERR [SYS/PERM], /status says reauth_needed and the metric is 1; then
// "popbridge auth" run while the server runs makes the next login work.
func TestServeOAuthRecovery(t *testing.T) {
	tokens := oauthtest.Start(t)
	fake := gmailtest.Start(t)
	fake.SetValidToken(tokens.ValidAccess)
	fake.Add([]byte("From: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n"), "INBOX")

	httpAddr := "127.0.0.1:" + strconv.Itoa(opsPort(t))
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
  http: %s
log: {format: json}
state_dir: state
accounts:
  - user: gina
    password_hash: %q
    backend:
      type: gmail
      api_endpoint: %s
      oauth2:
        provider: custom
        client_id: %s
        auth_url: %s
        token_url: %s
        scopes: [https://www.googleapis.com/auth/gmail.modify]
`, httpAddr, testHash(t), fake.Endpoint(), tokens.ClientID, tokens.AuthURL, tokens.TokenURL)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir)}
	at, rt, exp := tokens.Issue()
	if err := store.Save("gina", &oauth2.Token{AccessToken: at, RefreshToken: rt, Expiry: exp}); err != nil {
		t.Fatal(err)
	}

	_, stderr, stop := startRun(t, "serve", "-config", path)
	addr := listenerAddr(t, stderr, "pop3")
	pass := func() string {
		p := dialPOP3(t, addr)
		p.cmd("USER gina")
		r := p.cmd("PASS s3cret")
		if strings.HasPrefix(r, "+OK") {
			if s := p.cmd("STAT"); !strings.HasPrefix(s, "+OK 1 ") {
				t.Fatalf("STAT: %q", s)
			}
		}
		p.cmd("QUIT")
		return r
	}
	health := func() (state string, reauth float64) {
		t.Helper()
		_, body := httpGet(t, "http://"+httpAddr+"/status", "")
		var st app.StatusReply
		if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.Accounts) != 1 || st.Accounts[0].Token == nil {
			t.Fatalf("/status: %v\n%s", err, body)
		}
		_, metrics := httpGet(t, "http://"+httpAddr+"/metrics", "")
		v, ok := metricValue(metrics, `popbridge_oauth_reauth_needed{account="gina"}`)
		if !ok {
			t.Fatalf("no popbridge_oauth_reauth_needed for gina")
		}
		return st.Accounts[0].Token.State, v
	}

	if r := pass(); r != "+OK Logged in." {
		t.Fatalf("PASS: %q\n%s", r, stderr)
	}
	tokens.RevokeAccess()
	if r := pass(); r != "+OK Logged in." {
		t.Fatalf("PASS after Gmail stopped accepting the access token: %q\n%s", r, stderr)
	}
	if state, v := health(); state != app.TokenOK || v != 0 || tokens.Refreshes() != 1 {
		t.Fatalf("after the recovery: token %s, metric %v, %d refreshes", state, v, tokens.Refreshes())
	}
	t.Logf("oauth: serve: Gmail 401 with a valid refresh token: one refresh, +OK, /status token ok, metric 0")

	tokens.RevokeAccess()
	tokens.RevokeAll()
	if r := pass(); r != oauthtest.GrantText {
		t.Fatalf("PASS with the grant revoked: %q", r)
	}
	if state, v := health(); state != app.TokenReauth || v != 1 {
		t.Fatalf("grant revoked: token %s, metric %v", state, v)
	}
	t.Logf("oauth: serve: grant revoked: %q, /status token reauth_needed, popbridge_oauth_reauth_needed 1", oauthtest.GrantText)

	// The owner runs popbridge auth while the server runs.
	authPasted(t, "gina", path)
	n := tokens.Refreshes()
	if r := pass(); r != "+OK Logged in." {
		t.Fatalf("PASS after popbridge auth: %q\n%s", r, stderr)
	}
	if state, v := health(); state != app.TokenOK || v != 0 || tokens.Refreshes() != n {
		t.Fatalf("after popbridge auth: token %s, metric %v, %d refreshes", state, v, tokens.Refreshes()-n)
	}
	t.Logf("oauth: serve: popbridge auth run while the server runs: the next login uses the new grant, metric back to 0")
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	if strings.Contains(stderr.String(), rt) || strings.Contains(stderr.String(), at) {
		t.Fatal("a token appears in the log")
	}
}

// TestTokenFileOpenWarning starts serve with an OAuth2 token store file
// and an upstream token_file that every user may read: each gets a
// warning at start naming the file and the chmod that fixes it; files
// of mode 0600, or 0640 (a group, as deploy.md grants), get none.
func TestTokenFileOpenWarning(t *testing.T) {
	tokens := oauthtest.Start(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "access-token")
	if err := os.WriteFile(tokenFile, []byte("ya29.x\n"), 0o604); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
log: {format: json}
state_dir: state
accounts:
  - user: gina
    password_hash: %[1]q
    backend:
      type: gmail
      oauth2:
        provider: custom
        client_id: %[2]s
        auth_url: %[3]s
        token_url: %[4]s
        scopes: [https://www.googleapis.com/auth/gmail.modify]
  - user: ian
    password_hash: %[1]q
    backend:
      type: imap
      addr: 127.0.0.1:1
      tls: none
      auth: xoauth2
      username: ian@example.org
      token_file: %[5]s
  - user: tom
    password_hash: %[1]q
    backend:
      type: gmail
      oauth2:
        provider: custom
        client_id: %[2]s
        auth_url: %[3]s
        token_url: %[4]s
        scopes: [https://www.googleapis.com/auth/gmail.modify]
`, testHash(t), tokens.ClientID, tokens.AuthURL, tokens.TokenURL, tokenFile)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir)}
	for user, mode := range map[string]os.FileMode{"gina": 0o644, "tom": 0o640} {
		if err := store.Save(user, &oauth2.Token{RefreshToken: "rt-" + user}); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(store.Path(user), mode); err != nil {
			t.Fatal(err)
		}
	}
	_, stderr, stop := startRun(t, "serve", "-config", path)
	listenerAddr(t, stderr, "pop3")
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d\n%s", code, stderr)
	}
	warned := map[string]string{}
	for _, l := range strings.Split(stderr.String(), "\n") {
		var e struct{ Level, Account, File, Message string }
		if json.Unmarshal([]byte(l), &e) == nil && e.Level == "warn" && e.File != "" {
			warned[e.Account] = e.Message
		}
	}
	for user, file := range map[string]string{"gina": store.Path("gina"), "ian": tokenFile} {
		if m := warned[user]; !strings.Contains(m, "every user of this machine may read") || !strings.Contains(m, "chmod 600 "+file) {
			t.Errorf("%s: warning %q, want one naming chmod 600 %s\n%s", user, m, file, stderr)
		}
	}
	if m, ok := warned["tom"]; ok {
		t.Errorf("tom's token file is 0640 but got a warning: %q", m)
	}
	t.Logf("oauth: token files readable by every user warned about at start: %q", warned["gina"])
}
