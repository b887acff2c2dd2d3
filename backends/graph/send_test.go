package graph_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/graph"
	"github.com/popbridge/popbridge/backends/graph/graphtest"
	"github.com/popbridge/popbridge/cache"
)

func newSender(t *testing.T, fake *graphtest.Server, mailbox string) *graph.Sender {
	t.Helper()
	store, err := cache.Open(filepath.Join(t.TempDir(), "cache.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	b, err := graph.New(graph.Options{Account: "alice", Store: store, Endpoint: fake.Endpoint(), Mailbox: mailbox,
		BackoffBase: 20 * time.Millisecond, TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "test-token"})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.Sender(graph.SendOptions{From: []string{fake.User()}})
}

// sendVia runs one transaction: MAIL, RCPT for each of rcpts, DATA.
func sendVia(s backends.Sender, rcpts []string, msg []byte) error {
	ctx := context.Background()
	tx, err := s.Begin(ctx, "user@contoso.com", backends.MailOptions{Size: int64(len(msg))})
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

// TestSend: sendMail (MIME mode) against the fake gets the message as
// given, byte for byte; an envelope-only recipient is added as a Bcc
// header, which Graph sends to and the other recipients never see; the
// copy lands in Sent Items; a header recipient missing from the envelope
// is refused (554) before any request; 429 and 503 are 451 after exactly
// one request (never retried: no double send); 401 is an upstream login
// failure; a message above the limit is 552 without a request.
func TestSend(t *testing.T) {
	fake := graphtest.Start(t)
	s := newSender(t, fake, "")
	if !s.MaySend("User@Contoso.com") || s.MaySend("bob@example.com") {
		t.Fatal("MaySend: the account's address only")
	}
	if n, err := s.MaxMessageSize(context.Background()); err != nil || n != graph.SendMaxSize {
		t.Fatalf("MaxMessageSize = %d, %v", n, err)
	}
	msg := []byte("From: user@contoso.com\r\nTo: Bob <bob@example.com>\r\nSubject: hi\r\n\r\n\xc3\xa9t\xc3\xa9\r\n.dot\r\n")
	if err := sendVia(s, []string{"bob@example.com", "carol@example.org"}, msg); err != nil {
		t.Fatal(err)
	}
	sent := fake.SentMessages()
	if len(sent) != 1 {
		t.Fatalf("%d sent", len(sent))
	}
	if got := sent[0]; !slices.Equal(got.Recipients, []string{"bob@example.com", "carol@example.org"}) ||
		!bytes.Equal(got.Delivered, msg) || !bytes.Equal(got.Raw, append([]byte("Bcc: carol@example.org\r\n"), msg...)) {
		t.Fatalf("sent %+v\nraw %q", got.Recipients, got.Raw)
	}
	if m, ok := fake.Message(sent[0].ID); !ok || m.Folder != "sentitems" || !bytes.Equal(m.Raw, sent[0].Raw) {
		t.Fatalf("the Sent Items copy: %+v", m)
	}
	t.Logf("graph: send: message as given, envelope-only recipient delivered through a Bcc header the others never see, copy in Sent Items")

	calls := func() int { return fake.Calls()[graphtest.ESend] }
	before := calls()
	withCc := []byte("From: user@contoso.com\r\nTo: bob@example.com\r\nCc: dave@example.net\r\n\r\nx\r\n")
	if err := sendVia(s, []string{"bob@example.com"}, withCc); smtpCode(err) != 554 {
		t.Fatalf("header recipient not in the envelope: %v, want 554", err)
	}
	for _, st := range []int{429, 503} {
		fake.FailNext(graphtest.Failure{N: 1, Endpoint: graphtest.ESend, Status: st, RetryAfter: "0.01"})
		if err := sendVia(s, []string{"bob@example.com"}, msg); smtpCode(err) != 451 {
			t.Fatalf("%d: %v, want 451", st, err)
		}
	}
	if n := calls() - before; n != 2 || len(fake.SentMessages()) != 1 {
		t.Fatalf("%d sendMail calls, %d sent; want 2 calls (429 and 503, not retried), 1 sent", n, len(fake.SentMessages()))
	}
	if err := sendVia(s, []string{"bob@example.com"}, msg); err != nil || len(fake.SentMessages()) != 2 {
		t.Fatalf("after the 429: %v", err)
	}
	fake.FailNext(graphtest.Failure{N: 1, Endpoint: graphtest.ESend, Status: 401})
	if err := sendVia(s, []string{"bob@example.com"}, msg); !errors.Is(err, backends.ErrUpstreamLogin) {
		t.Fatalf("401: %v, want ErrUpstreamLogin", err)
	}
	before = calls()
	big := append([]byte("To: bob@example.com\r\n\r\n"), bytes.Repeat([]byte(strings.Repeat("x", 98)+"\r\n"), graph.SendMaxSize/100+1)...)
	if err := sendVia(s, []string{"bob@example.com"}, big); smtpCode(err) != 552 {
		t.Fatalf("oversized: %v, want 552", err)
	}
	ctx := context.Background()
	if _, err := s.Begin(ctx, "user@contoso.com", backends.MailOptions{Size: graph.SendMaxSize + 1}); smtpCode(err) != 552 {
		t.Fatalf("SIZE= above the limit: %v, want 552", err)
	}
	if n := calls() - before; n != 0 {
		t.Fatalf("%d sendMail calls for oversized messages, want 0", n)
	}
	t.Logf("graph: send: header-only recipient 554, 429/503 -> 451 once (no retry), 401 -> upstream login, oversize 552 without a request")
}

// TestSendSharedMailbox: a shared mailbox sends through
// /users/{address}/sendMail; an unknown one is refused.
func TestSendSharedMailbox(t *testing.T) {
	fake := graphtest.Start(t, graphtest.WithUser("shared@contoso.com"))
	msg := []byte("From: shared@contoso.com\r\nTo: bob@example.com\r\n\r\nx\r\n")
	if err := sendVia(newSender(t, fake, "shared@contoso.com"), []string{"bob@example.com"}, msg); err != nil || len(fake.SentMessages()) != 1 {
		t.Fatalf("shared mailbox: %v", err)
	}
	if err := sendVia(newSender(t, fake, "other@contoso.com"), []string{"bob@example.com"}, msg); smtpCode(err)/100 != 5 || len(fake.SentMessages()) != 1 {
		t.Fatalf("unknown mailbox: %v, want a 5xx", err)
	}
}

// TestFakeSendMailLimit: the fake refuses a request above 4 MB with 413,
// as Graph does, and a JSON body with 400.
func TestFakeSendMailLimit(t *testing.T) {
	fake := graphtest.Start(t)
	post := func(ct string, body []byte) int {
		req, _ := http.NewRequest("POST", fake.Endpoint()+"/me/sendMail", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer x")
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	raw := "To: bob@example.com\r\n\r\nhi\r\n"
	if st := post("text/plain", []byte(base64.StdEncoding.EncodeToString([]byte(raw)))); st != 202 {
		t.Fatalf("sendMail: %d, want 202", st)
	}
	if st := post("application/json", []byte(base64.StdEncoding.EncodeToString([]byte(raw)))); st != 400 {
		t.Fatalf("JSON with base64: %d, want 400", st)
	}
	if st := post("text/plain", bytes.Repeat([]byte("QUJD"), graphtest.SendMaxRequest/4+1)); st != 413 {
		t.Fatalf("above 4 MB: %d, want 413", st)
	}
}
