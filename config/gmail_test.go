package config

import (
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/modes"
)

func TestGmailBackend(t *testing.T) {
	c, err := parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    password_hash: "HASH"
    backend:
      type: gmail
      oauth2: {provider: google, client_id: id.apps.googleusercontent.com, client_secret: s}
  - user: bob
    password_hash: "HASH"
    backend:
      type: gmail
      oauth2:
        provider: custom
        client_id: test
        auth_url: http://127.0.0.1:8085/authorize
        token_url: http://127.0.0.1:8085/token
        scopes: [https://mail.google.com/]
      api_endpoint: http://127.0.0.1:8085/
      labels: [INBOX, UNREAD]
      query: -category:promotions
      window: {batch: 250}
      on_delete: delete
      download_once: true
      exact_sizes: false
      max_concurrent: 3
      call_timeout: 10s
      login_wait: 20s
  - user: carol
    password_hash: "HASH"
    backend:
      type: gmail
      oauth2: {provider: google, client_id: id}
      window: {since: 30d}
  - user: dave
    password_hash: "HASH"
    backend:
      type: gmail
      oauth2: {provider: google, client_id: id}
      window: all
`)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Accounts[0].Backend.Gmail
	if a == nil || !a.Exact() || a.OnDelete != "" || a.Window != (GmailWindow{}) || c.Accounts[0].Passthrough() {
		t.Errorf("alice: %+v", a)
	}
	b := c.Accounts[1].Backend.Gmail
	if b == nil || b.Exact() || !b.DownloadOnce || b.Window.Batch != 250 || b.OnDelete != modes.Delete ||
		strings.Join(b.Labels, ",") != "INBOX,UNREAD" || b.Query != "-category:promotions" || b.MaxConcurrent != 3 ||
		b.LoginWait != "20s" {
		t.Errorf("bob: %+v", b)
	}
	now := time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC)
	if cut, err := c.Accounts[2].Backend.Gmail.Window.Cutoff(now); err != nil || !cut.Equal(now.AddDate(0, 0, -30)) {
		t.Errorf("since 30d: %v %v", cut, err)
	}
	if w := (GmailWindow{Since: "2026-01-02"}); w.check() != nil {
		t.Errorf("date window: %v", w.check())
	} else if cut, _ := w.Cutoff(now); !cut.Equal(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("date cutoff %v", cut)
	}

	_, err = parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    password_hash: "HASH"
    backend:
      type: gmail
      labels: ["", "A B"]
      window: {since: yesterday}
      on_delete: purge
      api_endpoint: "ftp://x"
      max_concurrent: -1
  - user: bob
    password_hash: "HASH"
    backend:
      type: gmail
      oauth2: {provider: google, client_id: id}
      on_delete: delete
      window: {since: 30d, batch: 10}
  - user: carol
    password_hash: "HASH"
    backend:
      type: gmail
      oauth2: {provider: microsoft, client_id: id}
      quota_per_minute: 5
      login_wait: -1s
  - user: dave
    password_hash: "HASH"
    backend:
      type: gmail
      oauth2: {provider: google, client_id: id}
      login_wait: soon
`)
	for _, want := range []string{
		"accounts[0].backend.oauth2: must be set", "accounts[0].backend.labels: label id",
		"accounts[0].backend.window: since \"yesterday\"", "accounts[0].backend.on_delete: unknown policy",
		"accounts[0].backend.api_endpoint: must be an http(s) base URL", "accounts[0].backend.max_concurrent",
		"accounts[1].backend.on_delete: delete needs oauth2.scopes", "accounts[1].backend.window: set since or batch",
		"accounts[2].backend.oauth2.provider: microsoft cannot", "accounts[2].backend.quota_per_minute",
		"accounts[2].backend.login_wait: must not be negative", `accounts[3].backend.login_wait: invalid duration "soon"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}

	_, err = parseString(t, `
listen:
  pop3: 127.0.0.1:1110
accounts:
  - user: alice
    password_hash: "HASH"
    backend:
      type: gmail
      oauth2: {provider: google, client_id: id}
      window: {days: 3}
`)
	if err == nil || !strings.Contains(err.Error(), `unknown key "days" in window`) {
		t.Errorf("unknown window key: %v", err)
	}
}
