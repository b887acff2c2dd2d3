package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/graph"
	"github.com/popbridge/popbridge/backends/graph/graphtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/internal/app"
)

// TestServeGraphSend: a graph account without a send section sends with
// sendMail of the fake Graph API (MIME mode), with the token of its
// oauth2 grant: Python smtplib submits to listen.submission; the message
// arrives as given, the envelope-only recipient gets it without the
// others seeing a Bcc header, the copy is in Sent Items; a 429 is a 451
// the client retries; a message above Graph's limit is a 552.
func TestServeGraphSend(t *testing.T) {
	fake := graphtest.Start(t)
	rt := fake.Grant()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
  submission: 127.0.0.1:0
tls: {self_signed: true}
log: {format: json}
state_dir: state
accounts:
  - user: user@contoso.com
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
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir)}
	if err := store.Save("user@contoso.com", &oauth2.Token{RefreshToken: rt}); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop := startRun(t, "serve", "-config", path)
	sub := localhostAddr(listenerAddr(t, stderr, "submission"))
	ca := filepath.Join(dir, "state", "tls", "cert.pem")
	const user = "user@contoso.com"
	msg := []byte("From: user@contoso.com\r\nTo: bob@example.com\r\nSubject: via Graph\r\n\r\n\xc3\xa9t\xc3\xa9\r\n.dot\r\n")
	if res := sendSmtplib(t, sub, "starttls", ca, user, "s3cret", user, []string{"bob@example.com", "carol@example.org"}, msg); !res.OK {
		t.Fatalf("smtplib: %+v\n%s", res, stderr)
	}
	sent := fake.SentMessages()
	if len(sent) != 1 || !slices.Equal(sent[0].Recipients, []string{"bob@example.com", "carol@example.org"}) || !bytes.Equal(sent[0].Delivered, msg) {
		t.Fatalf("sent: %+v", sent)
	}
	if m, ok := fake.Message(sent[0].ID); !ok || m.Folder != "sentitems" || !bytes.Contains(m.Raw, []byte("Bcc: carol@example.org\r\n")) {
		t.Fatalf("Sent Items copy: %+v", m)
	}
	fake.FailNext(graphtest.Failure{N: 1, Endpoint: graphtest.ESend, Status: 429, RetryAfter: "1"})
	if res := sendSmtplib(t, sub, "starttls", ca, user, "s3cret", user, []string{"bob@example.com"}, msg); res.Code != 451 {
		t.Fatalf("429: %+v, want 451", res)
	}
	if res := sendSmtplib(t, sub, "starttls", ca, user, "s3cret", user, []string{"bob@example.com"}, msg); !res.OK || len(fake.SentMessages()) != 2 {
		t.Fatalf("the retry: %+v, %d sent", res, len(fake.SentMessages()))
	}
	big := append([]byte("From: user@contoso.com\r\nTo: bob@example.com\r\n\r\n"), bytes.Repeat([]byte(strings.Repeat("x", 98)+"\r\n"), graph.SendMaxSize/100+1)...)
	if res := sendSmtplib(t, sub, "starttls", ca, user, "s3cret", user, []string{"bob@example.com"}, big); res.Code != 552 || len(fake.SentMessages()) != 2 {
		t.Fatalf("oversized: %+v, want 552", res)
	}
	if n := fake.Calls()[graphtest.ESend]; n != 3 {
		t.Errorf("%d sendMail calls, want 3 (the oversized message sends none)", n)
	}
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, stderr)
	}
	if strings.Contains(stderr.String(), rt) {
		t.Errorf("the refresh token appears in the log")
	}
	t.Logf("graph: send through serve: smtplib -> popbridge -> fake sendMail (MIME, base64) with the account's grant; copy in Sent Items")
	t.Logf("smtp: graph send: Bcc from the envelope delivered and invisible to the others; 429 -> 451, retried; %d-byte message -> 552 with no request", len(big))
}
