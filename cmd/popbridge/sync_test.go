package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/proxy"
)

// TestSyncGmail: with a mailbox that takes longer to size than a login
// waits, serve answers the first login at once with part of it and
// /status shows the sizing going on; serve stops cleanly while it runs;
// popbridge sync refuses to run beside a server, then sizes the rest with
// progress lines, and the next login offers every message without a
// request for a size.
func TestSyncGmail(t *testing.T) {
	const messages = 200
	tokens := oauthtest.Start(t)
	tokens.AddRefreshToken("rt-gmail")
	fake := gmailtest.Start(t)
	fake.SetValidToken(tokens.ValidAccess)
	for i := range messages {
		fake.Add(fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\nbody %d\r\n", i, i), "INBOX")
	}
	httpAddr := "127.0.0.1:" + strconv.Itoa(opsPort(t))
	dir := t.TempDir()
	path := filepath.Join(dir, "popbridge.yaml")
	writeCfg := func(quota int) {
		cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
  http: %s
log: {level: info, format: json}
state_dir: state
accounts:
  - user: gina
    password_hash: %q
    backend:
      type: gmail
      api_endpoint: %s
      window: all
      login_wait: 1s
      quota_per_minute: %d
      oauth2:
        provider: custom
        client_id: %s
        auth_url: %s
        token_url: %s
        scopes: [https://www.googleapis.com/auth/gmail.modify]
`, httpAddr, testHash(t), fake.Endpoint(), quota, tokens.ClientID, tokens.AuthURL, tokens.TokenURL)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir)}
	if err := store.Save("gina", &oauth2.Token{RefreshToken: "rt-gmail"}); err != nil {
		t.Fatal(err)
	}
	stat := func(p *pop3) int {
		t.Helper()
		s := p.cmd("STAT")
		f := strings.Fields(s)
		if len(f) != 3 || f[0] != "+OK" {
			t.Fatalf("STAT: %q", s)
		}
		n, _ := strconv.Atoi(f[1])
		return n
	}

	// 600 units a minute: about 2 messages a second after the first 20.
	writeCfg(600)
	_, stderr, stop := startRun(t, "serve", "-config", path)
	addr := listenerAddr(t, stderr, "pop3")
	p := dialPOP3(t, addr)
	p.cmd("USER gina")
	start := time.Now()
	if s := p.cmd("PASS s3cret"); s != "+OK Logged in." {
		t.Fatalf("PASS: %q\n%s", s, stderr)
	}
	took := time.Since(start)
	first := stat(p)
	if first == 0 || first >= messages || took > 5*time.Second {
		t.Fatalf("first login: %d of %d messages after %v", first, messages, took)
	}
	p.cmd("QUIT")

	_, body := httpGet(t, "http://"+httpAddr+"/status", "")
	var st app.StatusReply
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.Accounts) != 1 || st.Accounts[0].Sync == nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	s := st.Accounts[0].Sync
	if s.State != "running" || s.Total != messages || s.Done < first || s.QuotaUnits <= 0 || s.ETASeconds <= 0 || s.StartedAt == nil {
		t.Errorf("/status sync section: %s", body)
	}

	r := runCmd(t, "", "sync", "gina", "-config", path)
	if r.code != 1 || !strings.Contains(r.stderr, "a popbridge server is running") {
		t.Errorf("sync beside a server: exit %d\n%s", r.code, r.stderr)
	}
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d while sizing\n%s", code, stderr)
	}
	if !strings.Contains(stderr.String(), "sizing paused (backend closed)") || strings.Contains(stderr.String(), `"level":"error"`) {
		t.Errorf("shutdown while sizing:\n%s", stderr)
	}

	// popbridge sync sizes the rest, with progress lines.
	writeCfg(600_000)
	fake.SetLatency(20 * time.Millisecond)
	r = runCmd(t, "", "sync", "gina", "-config", path, "-every", "50ms")
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	progress := regexp.MustCompile(`^gina: \d+/\d+ messages \(\d+%\)(, \d+ quota units)?(, about \S+ left)?$`)
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "gina: listing the mailbox (gmail ") ||
		!regexp.MustCompile(`^gina: done in \d+s \(\d+/\d+ messages \(100%\), \d+ quota units\); the first login offers every message at once$`).MatchString(lines[len(lines)-1]) {
		t.Fatalf("sync output:\n%s", r.stdout)
	}
	for _, l := range lines[1 : len(lines)-1] {
		if !progress.MatchString(l) {
			t.Errorf("sync progress line %q", l)
		}
	}

	fake.SetLatency(0)
	_, stderr, stop = startRun(t, "serve", "-config", path)
	p = dialPOP3(t, listenerAddr(t, stderr, "pop3"))
	fake.ResetStats()
	p.cmd("USER gina")
	if s := p.cmd("PASS s3cret"); s != "+OK Logged in." {
		t.Fatalf("PASS after sync: %q", s)
	}
	if n := stat(p); n != messages {
		t.Errorf("after popbridge sync the login offers %d of %d", n, messages)
	}
	if calls := fake.Calls(); calls[gmailtest.MGet] != 0 {
		t.Errorf("the login after popbridge sync made requests %v", calls)
	}
	p.cmd("QUIT")
	stop()
	t.Logf("gmail: %d messages at 600 units/minute: first +OK after %v with %d; /status sync %+v; popbridge sync sized the rest:\n%s",
		messages, took.Round(time.Millisecond), first, *s, r.stdout)
}

// TestSyncUsage: popbridge sync names its mistakes, and works on any
// backend (a Maildir: a listing, nothing to size).
func TestSyncUsage(t *testing.T) {
	path := writeConfig(t, "")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"sync", "-config", path}, 2, "name the ACCOUNT"},
		{[]string{"sync", "alice"}, 2, "-config is required"},
		{[]string{"sync", "nobody", "-config", path}, 1, `no account "nobody"`},
		{[]string{"sync", "alice", "extra", "-config", path}, 2, `unexpected argument "extra"`},
	} {
		r := runCmd(t, "", tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want %d, %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	r := runCmd(t, "", "sync", "alice", "-config", path)
	if r.code != 0 || !regexp.MustCompile(`(?m)^alice: done in \d+s: \d+ messages listed, their sizes and UIDLs kept`).MatchString(r.stdout) {
		t.Errorf("sync alice: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// TestProgressBar: on a terminal popbridge sync redraws one line with a
// bar; elsewhere it prints plain lines.
func TestProgressBar(t *testing.T) {
	var out strings.Builder
	p := &progressPrinter{w: &out, account: "gina", tty: true}
	p.show(proxy.SyncProgress{Running: true, Done: 25, Total: 100, Units: 125, ETA: 90 * time.Second})
	p.show(proxy.SyncProgress{Running: true, Done: 50, Total: 100, Units: 250, ETA: 45 * time.Second})
	want := "\rgina [#######-----------------------] 25/100 messages (25%), 125 quota units, about 1m30s left\033[K" +
		"\rgina [###############---------------] 50/100 messages (50%), 250 quota units, about 45s left\033[K"
	if out.String() != want {
		t.Errorf("terminal output %q, want %q", out.String(), want)
	}
	out.Reset()
	p.tty = false
	p.show(proxy.SyncProgress{Running: true, Done: 50, Total: 100})
	if out.String() != "gina: 50/100 messages (50%)\n" {
		t.Errorf("plain output %q", out.String())
	}
}
