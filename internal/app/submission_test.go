package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/proxy"
)

// TestSendSharesTokenSource: an account whose imap backend has an oauth2
// section and whose default sender uses xoauth2 gets one token source
// for both, so that one refresh (and one popbridge auth) serves reading
// and sending; a reload's new settings get a new one.
func TestSendSharesTokenSource(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "popbridge.yaml")
	src := `listen: {pop3: 127.0.0.1:0, submission: 127.0.0.1:0}
tls: {self_signed: true}
state_dir: state
accounts:
  - user: alice
    password_hash: "` + testHash(t) + `"
    backend:
      type: imap
      addr: imap.gmail.com:993
      auth: xoauth2
      username: alice@gmail.com
      oauth2: {provider: google, client_id: id, client_secret: secret}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := must(config.Load(path))
	st := must(openState(filepath.Join(dir, "state"), nil))
	defer st.close(zerolog.Nop())
	if _, err := newRouter(cfg, st); err != nil {
		t.Fatal(err)
	}
	first := st.sources[cfg.Accounts[0].Backend.IMAP.OAuth2]
	if first == nil || len(st.sources) != 1 {
		t.Fatalf("sources after the backend: %v", st.sources)
	}
	set, err := newSenders(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	if set.senders["alice"] == nil || len(st.sources) != 1 {
		t.Fatalf("senders %v, sources %v", set.senders, st.sources)
	}
	again, err := oauthSource(cfg.Accounts[0], st)
	if err != nil || again != first {
		t.Fatalf("the sender's source is not the backend's: %p %p %v", again, first, err)
	}
	cfg2 := must(config.Load(path))
	if _, err := newRouter(cfg2, st); err != nil {
		t.Fatal(err)
	}
	if st.sources[cfg2.Accounts[0].Backend.IMAP.OAuth2] == first || len(st.sources) != 1 {
		t.Fatal("a reload kept the old token source")
	}
}

// TestOAuthAccountSMTPScope: a Microsoft account whose send section
// sends with its grant asks for SMTP.Send beside the reading scopes; one
// with its own scopes, without a send section, or that sends with a
// password, is left alone.
func TestOAuthAccountSMTPScope(t *testing.T) {
	ms := func(scopes []string, send *config.Send) config.Account {
		return config.Account{User: "carol", Send: send, Backend: config.Backend{Type: config.TypeIMAP, IMAP: &config.IMAPBackend{
			Upstream: config.Upstream{Addr: "outlook.office365.com:993", Auth: "xoauth2", Username: "carol@contoso.com",
				OAuth2: &config.OAuth2{Provider: "microsoft", ClientID: "id", Scopes: scopes}}}}}
	}
	if o, _ := OAuthAccount(ms(nil, nil)); len(o.Scopes) != 0 {
		t.Errorf("without a send section: %v", o.Scopes)
	}
	o, _ := OAuthAccount(ms(nil, &config.Send{Type: "smtp"}))
	if !slices.Contains(o.Scopes, SMTPSendScope) || !slices.Contains(o.Scopes, "https://outlook.office.com/IMAP.AccessAsUser.All") || !slices.Contains(o.Scopes, "offline_access") {
		t.Errorf("default: %v", o.Scopes)
	}
	if o, _ := OAuthAccount(ms([]string{"x"}, &config.Send{Type: "smtp"})); !slices.Equal(o.Scopes, []string{"x"}) {
		t.Errorf("own scopes: %v", o.Scopes)
	}
	pw := &config.Send{Type: "smtp", Addr: "smtp.office365.com:587", Username: "carol@contoso.com", Password: "pw"}
	if o, _ := OAuthAccount(ms(nil, pw)); len(o.Scopes) != 0 {
		t.Errorf("sending with a password: %v", o.Scopes)
	}
}

// TestPenalty: the SMTP login failure delay doubles per address up to
// the maximum, none for trusted networks, and a success resets it.
func TestPenalty(t *testing.T) {
	p := must(newPenalty(config.Limits{AuthFailureDelay: "1s", MaxAuthFailureDelay: "5s", TrustedNetworks: []string{"10.0.0.0/8"}}))
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.1.2.3")
	var got []time.Duration
	for range 5 {
		got = append(got, p.fail(a))
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
	if d := p.fail(b); d != 0 {
		t.Errorf("trusted: %v", d)
	}
	p.forget(a)
	if d := p.fail(a); d != time.Second {
		t.Errorf("after a success: %v", d)
	}
}

// countingSender counts Begin calls; its transactions do nothing.
type countingSender struct{ begun int }

func (c *countingSender) MaySend(string) bool { return true }
func (c *countingSender) Begin(context.Context, string, backends.MailOptions) (backends.Transaction, error) {
	c.begun++
	return nil, nil
}

// TestSendRateLimit: send.max_per_minute lets that many messages through
// at once, then answers 451 (the client retries) without reaching the
// upstream.
func TestSendRateLimit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "popbridge.yaml")
	src := `listen: {pop3: 127.0.0.1:0}
state_dir: state
accounts:
  - user: alice
    password_hash: "` + testHash(t) + `"
    backend: {type: maildir, path: mail}
    send: {type: smtp, addr: "127.0.0.1:1", username: a@example.com, password: pw, max_per_minute: 2}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := must(config.Load(path))
	st := must(openState(filepath.Join(dir, "state"), nil))
	defer st.close(zerolog.Nop())
	set := must(newSenders(cfg, st))
	o := set.senders["alice"].(*observedSender)
	c := &countingSender{}
	o.Sender = c
	var codes []int
	for range 3 {
		_, err := o.Begin(context.Background(), "a@example.com", backends.MailOptions{})
		var se *gosmtp.SMTPError
		if errors.As(err, &se) {
			codes = append(codes, se.Code)
		} else {
			codes = append(codes, 0)
		}
	}
	if !slices.Equal(codes, []int{0, 0, 451}) || c.begun != 2 {
		t.Fatalf("replies %v, %d reached the upstream; want 0 0 451 and 2", codes, c.begun)
	}
}

// refusingSender's transactions get the upstream's refusal of MAIL FROM
// with every RCPT, as backends/smtp reports it when pipelining.
type refusingSender struct{}

func (refusingSender) MaySend(string) bool { return true }
func (refusingSender) Begin(context.Context, string, backends.MailOptions) (backends.Transaction, error) {
	return refusingTx{}, nil
}

type refusingTx struct{}

func (refusingTx) Rcpt(context.Context, string) error {
	return fmt.Errorf("smtp: MAIL FROM at upstream: %w: %w", backends.ErrSenderRefused, &gosmtp.SMTPError{Code: 553, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "not yours"})
}
func (refusingTx) Data(context.Context, io.Reader) (string, error) {
	return "", errors.New("no recipients")
}
func (refusingTx) Close() error { return nil }

// TestSenderRefusedAtRcpt: a sender refused by the upstream, known only
// from the first RCPT's reply, counts once as a refused message in the
// metrics and /status, however many RCPTs follow.
func TestSenderRefusedAtRcpt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "popbridge.yaml")
	src := `listen: {pop3: 127.0.0.1:0, http: 127.0.0.1:1}
state_dir: state
accounts:
  - user: alice
    password_hash: "` + testHash(t) + `"
    backend: {type: maildir, path: mail}
    send: {type: smtp, addr: "127.0.0.1:1", username: a@example.com, password: pw}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := must(config.Load(path))
	st := must(openState(filepath.Join(dir, "state"), nil))
	defer st.close(zerolog.Nop())
	st.metrics = newMetrics(cfg, nil)
	set := must(newSenders(cfg, st))
	o := set.senders["alice"].(*observedSender)
	if o.status == nil || o.m == nil {
		t.Fatal("no status or metrics for alice")
	}
	o.Sender = refusingSender{}
	tx := must(o.Begin(context.Background(), "a@example.com", backends.MailOptions{}))
	for range 3 {
		if err := tx.Rcpt(context.Background(), "b@example.net"); !errors.Is(err, backends.ErrSenderRefused) {
			t.Fatalf("Rcpt: %v", err)
		}
	}
	tx.Close()
	var m dto.Metric
	if err := o.m.smtpMessages.WithLabelValues("alice", sendRefused).Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetCounter().GetValue(); n != 1 {
		t.Fatalf("%v refused messages counted, want 1", n)
	}
	if o.status.sendErrClass != "upstream_refused" {
		t.Fatalf("/status send error %q, want upstream_refused", o.status.sendErrClass)
	}
}

// TestSMTPAuthNoHash: a passthrough account without password_hash, whose
// password only its upstream checks when reading, cannot log in to SMTP;
// an account with a hash logs in with its POP3 password.
func TestSMTPAuthNoHash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "popbridge.yaml")
	src := `listen: {pop3: 127.0.0.1:0}
state_dir: state
accounts:
  - user: alice
    password_hash: "` + testHash(t) + `"
    backend: {type: maildir, path: mail}
  - user: ben
    backend: {type: imap, addr: "127.0.0.1:1", tls: starttls, auth: passthrough}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := must(config.Load(path))
	st := must(openState(filepath.Join(dir, "state"), nil))
	defer st.close(zerolog.Nop())
	router := must(newRouter(cfg, st))
	sends := &sendSwap{router: newSwapBackend(router)}
	sends.cur.Store(must(newSenders(cfg, st)))
	ctx := context.Background()
	if _, err := sends.Authenticate(ctx, "ben", "anything"); !errors.Is(err, proxy.ErrAuthFailed) {
		t.Fatalf("ben (no hash): %v, want ErrAuthFailed", err)
	}
	if l, err := sends.Authenticate(ctx, "alice", "s3cret"); err != nil || l.User != "alice" {
		t.Fatalf("alice: %+v %v", l, err)
	}
	if _, err := sends.Authenticate(ctx, "alice", "wrong"); !errors.Is(err, proxy.ErrAuthFailed) {
		t.Fatalf("alice, wrong password: %v", err)
	}
}
