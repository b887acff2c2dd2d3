package smtp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	smtpb "github.com/popbridge/popbridge/backends/smtp"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/postfixtest"
)

const (
	alice = "alice@example.com"
	bob   = "bob@example.net"
)

var users = map[string]string{alice: "alice-pw", bob: "bob-pw"}

func newSender(t *testing.T, opts smtpb.Options) *smtpb.Sender {
	t.Helper()
	if opts.CommandTimeout == 0 {
		opts.CommandTimeout = 20 * time.Second
	}
	s, err := smtpb.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// send runs one whole transaction.
func send(s backends.Sender, from string, to []string, msg io.Reader) (string, error) {
	ctx := context.Background()
	tx, err := s.Begin(ctx, from, backends.MailOptions{})
	if err != nil {
		return "", err
	}
	defer tx.Close()
	for _, r := range to {
		if err := tx.Rcpt(ctx, r); err != nil {
			return "", err
		}
	}
	return tx.Data(ctx, msg)
}

// delivered waits for one message in box and compares it with want as
// Postfix stores it (LF line ends, trace fields stripped).
func delivered(t *testing.T, p *postfixtest.Postfix, box string, n int, want []byte) {
	t.Helper()
	msgs, err := p.WaitMessages(box, n, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := postfixtest.Stripped(msgs[n-1]); !bytes.Equal(got, postfixtest.AsDelivered(want)) {
		t.Fatalf("%s: delivered\n%q\nwant\n%q", box, got, postfixtest.AsDelivered(want))
	}
}

// edge is a message with dot lines, 8-bit text, trailing spaces, a long
// line and no final line break.
var edge = []byte("From: alice@example.com\r\nTo: bob@example.net\r\nSubject: edge\r\n\r\n" +
	".leading dot\r\n..two dots\r\n.\r\n\xc3\xa9t\xc3\xa9 \t \r\n" + strings.Repeat("x", 990) + "\r\n\r\nno final newline")

// bigEdge is larger than one BDAT (128 KiB), with dot lines throughout.
var bigEdge = append(bytes.Clone(edge[:bytes.Index(edge, []byte("\r\n\r\n"))+4]), strings.Repeat(".a line with a leading dot\r\n..and two\r\n", 4000)...)

// TestSendPassword sends with a password over STARTTLS (AUTH PLAIN)
// and implicit TLS with a CA file: the delivered message equals the
// submitted one byte for byte.
func TestSendPassword(t *testing.T) {
	p := postfixtest.Start(t, postfixtest.Options{Users: users})
	for i, o := range []smtpb.Options{
		{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool()},
		{Addr: p.TLSAddr, TLS: modes.TLSImplicit, ServerName: "localhost", CAFile: p.CAFile()},
	} {
		o.Username, o.Password = alice, users[alice]
		s := newSender(t, o)
		// A small message goes as BDAT LAST, one over 128 KiB into DATA.
		for j, msg := range [][]byte{edge, bigEdge} {
			reply, err := send(s, alice, []string{bob}, bytes.NewReader(msg))
			if err != nil {
				t.Fatalf("%s: %v", o.TLS, err)
			}
			if !strings.Contains(reply, "queued as") {
				t.Errorf("final reply %q does not name the queue id", reply)
			}
			delivered(t, p, bob, 2*i+j+1, msg)
		}
	}
	if n, err := newSender(t, smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: users[alice]}).MaxMessageSize(context.Background()); err != nil || n != p.MessageSizeLimit {
		t.Fatalf("MaxMessageSize = %d, %v; want %d", n, err, p.MessageSizeLimit)
	}
	t.Logf("smtp: backend password STARTTLS and implicit TLS: delivered byte for byte")
}

// TestSendBcc: a Bcc recipient gets the message through the envelope
// only; the Bcc header field is removed before the upstream (this
// Postfix keeps Bcc headers, so the removal is the sender's).
func TestSendBcc(t *testing.T) {
	p := postfixtest.Start(t, postfixtest.Options{Users: users, ExtraMain: "message_drop_headers ="})
	s := newSender(t, smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: users[alice]})
	msg := []byte("From: alice@example.com\r\nTo: bob@example.net\r\nBcc: hidden@elsewhere.org,\r\n  other@elsewhere.org\r\nSubject: bcc\r\n\r\nBcc: in the body stays\r\n")
	want := []byte("From: alice@example.com\r\nTo: bob@example.net\r\nSubject: bcc\r\n\r\nBcc: in the body stays\r\n")
	if _, err := send(s, alice, []string{bob, "hidden@elsewhere.org"}, bytes.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	delivered(t, p, bob, 1, want)
	delivered(t, p, postfixtest.Outbound, 1, want)
	t.Logf("smtp: backend Bcc: envelope recipient delivered, Bcc field removed")
}

// TestSendRejections: upstream refusals arrive as *smtp.SMTPError (for
// the listener to map); TLS errors are not login errors.
func TestSendRejections(t *testing.T) {
	p := postfixtest.Start(t, postfixtest.Options{Users: users})
	s := newSender(t, smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: users[alice]})
	ctx := context.Background()
	tx, err := s.Begin(ctx, alice, backends.MailOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var se *gosmtp.SMTPError
	if err := tx.Rcpt(ctx, "nobody@example.com"); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("unknown recipient: %v", err)
	}
	if err := tx.Rcpt(ctx, bob); err != nil {
		t.Fatalf("next recipient after a refused one: %v", err)
	}
	tx.Close()
	// Send-as is Postfix's check at RCPT.
	tx, err = s.Begin(ctx, bob, backends.MailOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rcpt(ctx, bob); !errors.As(err, &se) || se.Code != 553 {
		t.Fatalf("foreign sender: %v", err)
	}
	tx.Close()
	// MAIL FROM's reply comes with the first RCPT's (pipelined).
	tx, err = s.Begin(ctx, alice, backends.MailOptions{Size: p.MessageSizeLimit + 1})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := tx.Rcpt(ctx, bob); !errors.As(err, &se) || se.Code != 552 || !errors.Is(err, backends.ErrSenderRefused) {
			t.Fatalf("SIZE over the limit: %v, want 552 and ErrSenderRefused", err)
		}
	}
	if _, err := tx.Data(ctx, strings.NewReader("Subject: x\r\n\r\nx\r\n")); !errors.Is(err, backends.ErrSenderRefused) {
		t.Fatalf("Data after a refused sender: %v", err)
	}
	tx.Close()
	bad := newSender(t, smtpb.Options{Addr: p.Addr, Username: alice, Password: "wrong", ServerName: "localhost", RootCAs: p.CertPool()})
	if _, err := bad.Begin(ctx, alice, backends.MailOptions{}); !errors.Is(err, backends.ErrUpstreamLogin) || errors.As(err, &se) || !strings.Contains(err.Error(), "535") {
		t.Fatalf("wrong password: %v, want ErrUpstreamLogin with the 535 as text only", err)
	}
	untrusted := newSender(t, smtpb.Options{Addr: p.Addr, Username: alice, Password: users[alice]})
	if _, err := untrusted.Begin(ctx, alice, backends.MailOptions{}); err == nil || errors.As(err, &se) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate: %v", err)
	}
	if !s.MaySend("Alice@Example.com") || s.MaySend(bob) {
		t.Fatal("MaySend: only the account's own address")
	}
	t.Logf("smtp: backend rejections: 550 rcpt, 553 send-as, 552 size, 535 password, TLS error")
}

// failingReader yields data, then fails like a client that vanished.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// TestSendTruncatedNeverDelivered: when the client's message fails
// part way, the upstream transaction is aborted by closing the
// connection: a small message before anything of it was sent (it would
// have gone as one BDAT), a large one in the middle of DATA, without the
// final dot. Postfix delivers nothing of either.
func TestSendTruncatedNeverDelivered(t *testing.T) {
	p := postfixtest.Start(t, postfixtest.Options{Users: users})
	s := newSender(t, smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: users[alice]})
	full := []byte("Subject: complete\r\n\r\nbody\r\n")
	for i, lines := range []int{5000, 20000} { // 60 KB, 240 KB
		half := []byte("From: alice@example.com\r\nSubject: truncated\r\n\r\n" + strings.Repeat("first half\r\n", lines))
		cause := errors.New("client connection lost")
		_, err := send(s, alice, []string{bob}, &failingReader{data: half, err: cause})
		if !errors.Is(err, cause) {
			t.Fatalf("Data = %v, want the client's error", err)
		}
		// A complete message afterwards arrives, and only it.
		if _, err := send(s, alice, []string{bob}, bytes.NewReader(full)); err != nil {
			t.Fatal(err)
		}
		delivered(t, p, bob, i+1, full)
	}
	time.Sleep(500 * time.Millisecond)
	if msgs, _ := p.Messages(bob); len(msgs) != 2 || p.Queued() {
		t.Fatalf("%d messages delivered (queued: %v), want only the 2 complete ones", len(msgs), p.Queued())
	}
	for _, after := range []string{"lost connection after RCPT", "lost connection after DATA"} {
		if !strings.Contains(p.Log(), after) {
			t.Fatalf("the upstream did not log %q:\n%s", after, p.Log())
		}
	}
	t.Logf("smtp: backend truncated message: connection closed before BDAT or the final dot, nothing delivered")
}

// staticTokens is a TokenSource without Invalidate: no retry.
type staticTokens string

func (s staticTokens) Token() (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: string(s), TokenType: "Bearer"}, nil
}

// TestSendOAuth: XOAUTH2 and OAUTHBEARER tokens are checked by the
// upstream (Dovecot introspection at the fake). A refused XOAUTH2 token
// gets the empty response to the error challenge and a clean 535 (not a
// false success whose next command is taken as the SASL response); a
// rejected token is replaced once through the oauth.Source.
func TestSendOAuth(t *testing.T) {
	f := oauthtest.Start(t)
	f.Username = alice
	p := postfixtest.Start(t, postfixtest.Options{Users: users, IntrospectURL: f.IntrospectURL})
	msg := []byte("From: alice@example.com\r\nSubject: oauth\r\n\r\nsent with a token\r\n")
	n := 0
	for _, auth := range []modes.Auth{modes.AuthXOAUTH2, modes.AuthOAuthBearer} {
		at, _, _ := f.Issue()
		good := newSender(t, smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Auth: auth, Username: alice, TokenSource: staticTokens(at)})
		if _, err := send(good, alice, []string{bob}, bytes.NewReader(msg)); err != nil {
			t.Fatalf("%s: %v", auth, err)
		}
		n++
		delivered(t, p, bob, n, msg)
		if f.Checked(at) != 1 {
			t.Fatalf("%s: the upstream checked the token %d times, want 1", auth, f.Checked(at))
		}
		bad := newSender(t, smtpb.Options{Addr: p.TLSAddr, TLS: modes.TLSImplicit, ServerName: "localhost", RootCAs: p.CertPool(), Auth: auth, Username: alice, TokenSource: staticTokens("not-a-token")})
		_, err := bad.Begin(context.Background(), alice, backends.MailOptions{})
		if auth == modes.AuthXOAUTH2 && (!errors.Is(err, backends.ErrUpstreamLogin) || !strings.Contains(err.Error(), "SMTP error 535")) {
			t.Fatalf("XOAUTH2 bad token: %v, want the upstream's 535", err)
		}
		if err == nil {
			t.Fatalf("%s: bad token accepted", auth)
		}
	}
	if log := p.Log(); strings.Contains(log, "Invalid base64") || !strings.Contains(log, "SASL XOAUTH2 authentication failed") {
		t.Fatalf("the XOAUTH2 failure was not a clean 535:\n%s", log)
	}
	t.Logf("smtp: backend XOAUTH2 and OAUTHBEARER accepted by the upstream; bad XOAUTH2 token: empty response to the error challenge, 535")

	// Recovery through oauth.Source: invalidate and retry once.
	cfg, err := oauth.Config{Provider: modes.ProviderCustom, ClientID: f.ClientID, TokenURL: f.TokenURL, AuthURL: f.AuthURL, Scopes: []string{"mail"}}.OAuth2(oauth.IMAP)
	if err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: t.TempDir()}
	src := oauth.NewSource(context.Background(), alice, cfg, store, nil)
	// KeepIdle -1: every send logs in, so that each one shows the token
	// state (a kept connection would stay logged in).
	s := newSender(t, smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Auth: modes.AuthXOAUTH2, Username: alice, TokenSource: src, KeepIdle: -1})
	login := func() string {
		_, err := send(s, alice, []string{bob}, bytes.NewReader(msg))
		switch {
		case err == nil:
			n++
			delivered(t, p, bob, n, msg)
			return "+OK"
		case errors.Is(err, oauth.ErrGrant):
			return oauthtest.GrantText
		}
		return err.Error()
	}
	oauthtest.CheckRecovery(t, "smtp: backend XOAUTH2 at Postfix", f, store, alice, src, login)
}
