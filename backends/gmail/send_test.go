package gmail_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/cache"
)

func newSender(t *testing.T, fake *gmailtest.Server, spool string) *gmail.Sender {
	t.Helper()
	store, err := cache.Open(filepath.Join(t.TempDir(), "cache.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	b, err := gmail.New(gmail.Options{Account: "alice", Store: store, Endpoint: fake.Endpoint(),
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "test-token"})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.Sender(gmail.SendOptions{From: []string{"alice@gmail.com"}, SpoolDir: spool})
}

// sendVia runs one transaction: MAIL, RCPT for each of rcpts, DATA.
func sendVia(s backends.Sender, rcpts []string, msg []byte) error {
	ctx := context.Background()
	tx, err := s.Begin(ctx, "alice@gmail.com", backends.MailOptions{Size: int64(len(msg))})
	if err != nil {
		return err
	}
	defer tx.Close()
	for _, r := range rcpts {
		if err := tx.Rcpt(ctx, r); err != nil {
			return err
		}
	}
	_, err = tx.Data(ctx, bytes.NewReader(msg))
	return err
}

func smtpCode(err error) int {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// TestSend: messages.send against the fake gets the message as given;
// an envelope-only (Bcc) recipient is added as a Bcc header, which Gmail
// sends to and removes, so the others never see it; a header recipient
// missing from the envelope is refused (554) before any request; a 429
// is a 451 after exactly one request (never retried: no double send);
// the spool file is gone afterwards.
func TestSend(t *testing.T) {
	fake := gmailtest.Start(t, gmailtest.WithEmail("alice@gmail.com"))
	spool := t.TempDir()
	s := newSender(t, fake, spool)
	if !s.MaySend("Alice@Gmail.com") || s.MaySend("bob@example.com") {
		t.Fatal("MaySend: the account's address only")
	}
	msg := []byte("From: alice@gmail.com\r\nTo: Bob <bob@example.com>\r\nSubject: hi\r\n\r\n\xc3\xa9t\xc3\xa9\r\n.dot\r\n")
	if err := sendVia(s, []string{"bob@example.com", "carol@example.org"}, msg); err != nil {
		t.Fatal(err)
	}
	sent := fake.SentMessages()
	if len(sent) != 1 {
		t.Fatalf("%d sent", len(sent))
	}
	if got := sent[0]; !slices.Equal(got.Recipients, []string{"bob@example.com", "carol@example.org"}) ||
		!bytes.Equal(got.Delivered, msg) || !bytes.HasPrefix(got.Raw, []byte("Bcc: carol@example.org\r\n")) {
		t.Fatalf("sent %+v\nraw %q", got.Recipients, got.Raw)
	}
	if m, ok := fake.Message(sent[0].ID); !ok || !slices.Contains(m.Labels, "SENT") || bytes.Contains(m.Raw, []byte("carol")) {
		t.Fatalf("the SENT copy: %+v", m)
	}
	t.Logf("gmail: send: envelope-only recipient delivered through a Bcc header that nobody sees; message as given")

	before := fake.Calls()[gmailtest.MSend]
	withCc := []byte("From: alice@gmail.com\r\nTo: bob@example.com\r\nCc: dave@example.net\r\n\r\nx\r\n")
	if err := sendVia(s, []string{"bob@example.com"}, withCc); smtpCode(err) != 554 {
		t.Fatalf("header recipient not in the envelope: %v, want 554", err)
	}
	fake.FailNextWith(gmailtest.Failure{Method: gmailtest.MSend, N: 1, Status: 429, Reason: "rateLimitExceeded"})
	if err := sendVia(s, []string{"bob@example.com"}, msg); smtpCode(err) != 451 {
		t.Fatalf("429: %v, want 451", err)
	}
	if n := fake.Calls()[gmailtest.MSend] - before; n != 1 || len(fake.SentMessages()) != 1 {
		t.Fatalf("%d messages.send calls, %d sent; want 1 call (the 429, not retried), 1 sent", n, len(fake.SentMessages()))
	}
	if err := sendVia(s, []string{"bob@example.com"}, msg); err != nil || len(fake.SentMessages()) != 2 {
		t.Fatalf("after the 429: %v", err)
	}
	fake.FailNextWith(gmailtest.Failure{Method: gmailtest.MSend, N: 1, Status: 401, Reason: "authError"})
	if err := sendVia(s, []string{"bob@example.com"}, msg); !errors.Is(err, backends.ErrUpstreamLogin) {
		t.Fatalf("401: %v, want ErrUpstreamLogin", err)
	}
	if ents, _ := os.ReadDir(spool); len(ents) != 0 {
		t.Fatalf("spool not emptied: %v", ents)
	}
	big := append([]byte("To: bob@example.com\r\n\r\n"), bytes.Repeat([]byte(strings.Repeat("x", 98)+"\r\n"), gmail.SendMaxSize/100+1)...)
	if err := sendVia(s, []string{"bob@example.com"}, big); smtpCode(err) != 552 {
		t.Fatalf("oversized: %v, want 552", err)
	}
	t.Logf("gmail: send: header-only recipient 554, 429 -> 451 once (no retry), 401 -> upstream login, oversize 552, spool emptied")
}
