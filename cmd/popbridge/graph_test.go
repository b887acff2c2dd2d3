package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/graph/graphtest"
	"github.com/popbridge/popbridge/backends/oauth"
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
		"check naming popbridge auth after a revoked grant and without a token", messages)
}
