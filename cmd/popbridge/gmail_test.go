package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/app"
)

// TestServeGmail runs serve with a gmail account against the fake Gmail
// API and token endpoint: a POP3 session, the account's quota units in
// /metrics, check with the token popbridge auth stored (check builds
// its backends on a scratch store, but the tokens are the real ones),
// and check failing clearly once the grant is gone.
func TestServeGmail(t *testing.T) {
	tokens := oauthtest.Start(t)
	tokens.AddRefreshToken("rt-gmail")
	fake := gmailtest.Start(t)
	fake.SetValidToken(tokens.ValidAccess)
	fake.Add([]byte("From: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n"), "INBOX")
	second := fake.Add([]byte("From: b@example.org\r\nSubject: two\r\n\r\nsecond\r\n"), "INBOX")

	httpAddr := "127.0.0.1:" + strconv.Itoa(opsPort(t))
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
  http: %s
log: {level: debug, format: json}
state_dir: state
accounts:
  - user: gina
    password_hash: %q
    backend:
      type: gmail
      api_endpoint: %s
      on_delete: trash
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
	if err := store.Save("gina", &oauth2.Token{RefreshToken: "rt-gmail"}); err != nil {
		t.Fatal(err)
	}

	fake.FailNext(1, 429, "", "0") // one backoff, counted in /metrics
	_, stderr, stop := startRun(t, "serve", "-config", path)
	addr := listenerAddr(t, stderr, "pop3")
	p := dialPOP3(t, addr)
	p.cmd("USER gina")
	if s := p.cmd("PASS s3cret"); s != "+OK Logged in." {
		t.Fatalf("PASS: %q\n%s", s, stderr)
	}
	if s := p.cmd("STAT"); !strings.HasPrefix(s, "+OK 2 ") {
		t.Fatalf("STAT: %q", s)
	}
	if got := p.multi("RETR 2"); got != "From: b@example.org\nSubject: two\n\nsecond\n" {
		t.Fatalf("RETR 2: %q", got)
	}
	p.cmd("DELE 2")
	if s := p.cmd("QUIT"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("QUIT: %q", s)
	}
	if m, _ := fake.Message(second); !m.Trashed {
		t.Errorf("DELE+QUIT with on_delete trash left %v", m.Labels)
	}
	_, metrics := httpGet(t, "http://"+httpAddr+"/metrics", "")
	units, ok := metricValue(metrics, `popbridge_gmail_quota_units_total{account="gina"}`)
	if !ok || units < float64(fake.Units()-5) || units > float64(fake.Units()) {
		t.Errorf("quota units metric %v (%v), the fake counted %d", units, ok, fake.Units())
	}
	if n, ok := metricValue(metrics, `popbridge_gmail_backoffs_total{account="gina"}`); !ok || n != 1 {
		t.Errorf("backoffs metric %v (%v), want 1 after one 429", n, ok)
	}

	r := runCmd(t, "", "check", "-config", path)
	if r.code != 0 {
		t.Fatalf("check: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	checkLines(t, r.stdout, []*regexp.Regexp{
		regexp.MustCompile(`configuration valid`),
		regexp.MustCompile(`^OK +state `),
		regexp.MustCompile(`^OK +gina +gmail ` + regexp.QuoteMeta(fake.Endpoint()) + `, labels INBOX, on_delete trash, download_once false$`),
	})
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}

	// Without a grant, check names the fix.
	if err := os.Remove(store.Path("gina")); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, "", "check", "-config", path)
	if r.code != 1 || !regexp.MustCompile(`(?m)^FAIL +gina +gmail .*run popbridge auth`).MatchString(r.stdout) {
		t.Fatalf("check without a token: exit %d\n%s", r.code, r.stdout)
	}
	if strings.Contains(stderr.String(), "rt-gmail") || strings.Contains(r.stdout, "rt-gmail") {
		t.Errorf("the refresh token appears in the output")
	}
	t.Logf("gmail: serve with a gmail account (OAuth2 refresh at a fake token endpoint, on_delete trash), quota units and a 429 backoff in /metrics, check with the stored token")
}
