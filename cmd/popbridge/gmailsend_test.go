package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/app"
)

// TestServeGmailSend: a gmail account without a send section sends with
// users.messages.send of the fake Gmail API, with the token of its
// oauth2 grant: Python smtplib submits to listen.submission; the
// message arrives as given, the envelope-only recipient gets it without
// the others seeing a Bcc header; a 429 is a 451 the client retries; the
// spool in state_dir is empty afterwards.
func TestServeGmailSend(t *testing.T) {
	tokens := oauthtest.Start(t)
	tokens.AddRefreshToken("rt-gmail")
	fake := gmailtest.Start(t, gmailtest.WithEmail("gina@gmail.com"))
	fake.SetValidToken(tokens.ValidAccess)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
  submission: 127.0.0.1:0
tls: {self_signed: true}
log: {format: json}
state_dir: state
accounts:
  - user: gina@gmail.com
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
`, testHash(t), fake.Endpoint(), tokens.ClientID, tokens.AuthURL, tokens.TokenURL)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir)}
	if err := store.Save("gina@gmail.com", &oauth2.Token{RefreshToken: "rt-gmail"}); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop := startRun(t, "serve", "-config", path)
	sub := localhostAddr(listenerAddr(t, stderr, "submission"))
	ca := filepath.Join(dir, "state", "tls", "cert.pem")
	msg := []byte("From: gina@gmail.com\r\nTo: bob@example.com\r\nSubject: via the API\r\n\r\n\xc3\xa9t\xc3\xa9\r\n.dot\r\n")
	if res := sendSmtplib(t, sub, "starttls", ca, "gina@gmail.com", "s3cret", "gina@gmail.com", []string{"bob@example.com", "carol@example.org"}, msg); !res.OK {
		t.Fatalf("smtplib: %+v\n%s", res, stderr)
	}
	sent := fake.SentMessages()
	if len(sent) != 1 || !slices.Equal(sent[0].Recipients, []string{"bob@example.com", "carol@example.org"}) || !bytes.Equal(sent[0].Delivered, msg) {
		t.Fatalf("sent: %+v", sent)
	}
	fake.FailNextWith(gmailtest.Failure{Method: gmailtest.MSend, N: 1, Status: 429, Reason: "rateLimitExceeded"})
	if res := sendSmtplib(t, sub, "starttls", ca, "gina@gmail.com", "s3cret", "gina@gmail.com", []string{"bob@example.com"}, msg); res.Code != 451 {
		t.Fatalf("429: %+v, want 451", res)
	}
	if res := sendSmtplib(t, sub, "starttls", ca, "gina@gmail.com", "s3cret", "gina@gmail.com", []string{"bob@example.com"}, msg); !res.OK || len(fake.SentMessages()) != 2 {
		t.Fatalf("the retry: %+v, %d sent", res, len(fake.SentMessages()))
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "state", app.SpoolDir)); err != nil || len(ents) != 0 {
		t.Fatalf("spool: %v %v", ents, err)
	}
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, stderr)
	}
	t.Logf("smtp: gmail send through serve: smtplib -> popbridge -> fake messages.send with the account's grant; Bcc from the envelope delivered and invisible; 429 -> 451, retried; spool emptied")
}
