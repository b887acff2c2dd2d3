package submission_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	smtpb "github.com/popbridge/popbridge/backends/smtp"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/postfixtest"
	"github.com/popbridge/popbridge/internal/submission"
	"github.com/popbridge/popbridge/internal/testpeer"
)

// need returns the path of a client program, skipping the test (failing
// it when CI=true) when it is missing.
func need(t *testing.T, name string) string {
	t.Helper()
	return testpeer.LookPath(t, name, name)
}

// smtplibScript sends one message with Python's smtplib and prints the
// outcome as JSON: {"ok": true} or {"code": 550, "error": "..."}.
const smtplibScript = `
import json, smtplib, ssl, sys
host, port, mode, cafile, user, pw, sender, rcpts, path = sys.argv[1:10]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
msg = open(path, 'rb').read()
try:
    if mode == 'ssl':
        c = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=60)
    else:
        c = smtplib.SMTP(host, int(port), timeout=60)
        c.starttls(context=ctx)
    c.login(user, pw)
    refused = c.sendmail(sender, rcpts.split(','), msg)
    c.quit()
    print(json.dumps({"ok": True, "refused": {k: v[0] for k, v in refused.items()}}))
except smtplib.SMTPRecipientsRefused as e:
    print(json.dumps({"code": list(e.recipients.values())[0][0], "error": str(e)}))
except smtplib.SMTPResponseException as e:
    print(json.dumps({"code": e.smtp_code, "error": str(e.smtp_error)}))
`

type pyResult struct {
	OK      bool           `json:"ok"`
	Refused map[string]int `json:"refused"`
	Code    int            `json:"code"`
	Error   string         `json:"error"`
}

func smtplib(t *testing.T, addr, mode, cafile, user, pass, from string, rcpts []string, msg []byte) pyResult {
	t.Helper()
	py := need(t, "python3")
	dir := t.TempDir()
	script, path := filepath.Join(dir, "send.py"), filepath.Join(dir, "msg.eml")
	os.WriteFile(script, []byte(smtplibScript), 0o600)
	os.WriteFile(path, msg, 0o600)
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(py, script, host, port, mode, cafile, user, pass, from, strings.Join(rcpts, ","), path).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 smtplib: %v\n%s", err, out)
	}
	var r pyResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("python3 smtplib output %q: %v", out, err)
	}
	return r
}

// relay is popbridge's listener in front of a real Postfix: local login
// "alice" with password "local-pw" sends as alice@example.com through
// the upstream with XOAUTH2 (a token of the fake authorization server,
// checked by Postfix's Dovecot at its introspection endpoint).
type relay struct {
	p  *postfixtest.Postfix
	s  *server
	ca string // the listener's certificate, PEM file
}

func startRelay(t *testing.T, upstreamAddr string) *relay {
	t.Helper()
	f := oauthtest.Start(t)
	f.Username = alice
	p := postfixtest.Start(t, postfixtest.Options{
		Users:         map[string]string{alice: "upstream-pw", "bob@example.net": "bob-pw"},
		IntrospectURL: f.IntrospectURL,
	})
	cfg, err := oauth.Config{Provider: modes.ProviderCustom, ClientID: f.ClientID, TokenURL: f.TokenURL, AuthURL: f.AuthURL, Scopes: []string{"mail"}}.OAuth2(oauth.IMAP)
	if err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: t.TempDir()}
	at, rt, exp := f.Issue()
	if err := store.Save(alice, &oauth2.Token{AccessToken: at, RefreshToken: rt, TokenType: "Bearer", Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	if upstreamAddr == "" {
		upstreamAddr = p.Addr
	}
	sender, err := smtpb.New(smtpb.Options{
		Addr: upstreamAddr, ServerName: "localhost", CAFile: p.CAFile(), Auth: modes.AuthXOAUTH2,
		Username: alice, TokenSource: oauth.NewSource(context.Background(), alice, cfg, store, nil),
		CommandTimeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	a := &accounts{passwords: map[string]string{"alice": "local-pw"}, senders: map[string]backends.Sender{"alice": sender}}
	// SIZE advertises the upstream's limit, read from its EHLO.
	size := int64(0)
	if upstreamAddr == p.Addr {
		if size, err = sender.MaxMessageSize(context.Background()); err != nil || size != p.MessageSizeLimit {
			t.Fatalf("upstream SIZE %d, %v; want %d", size, err, p.MessageSizeLimit)
		}
	}
	o := submission.Options{Auth: a, Senders: a.sender, MaxMessageBytes: size}
	s := start(t, o)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, poolPEM(t, s), 0o600); err != nil {
		t.Fatal(err)
	}
	return &relay{p: p, s: s, ca: ca}
}

// poolPEM returns the listener's certificate as PEM.
func poolPEM(t *testing.T, s *server) []byte {
	t.Helper()
	conn, err := tlsDial(s.tlsAddr, s.clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return pemCert(conn.ConnectionState().PeerCertificates[0].Raw)
}

func delivered(t *testing.T, p *postfixtest.Postfix, box string, n int, want []byte) {
	t.Helper()
	msgs, err := p.WaitMessages(box, n, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := postfixtest.Stripped(msgs[n-1]); !bytes.Equal(got, postfixtest.AsDelivered(want)) {
		t.Fatalf("%s: delivered\n%q\nwant\n%q", box, got, postfixtest.AsDelivered(want))
	}
}

var message = []byte("From: alice@example.com\r\nTo: bob@example.net\r\nSubject: through popbridge\r\n\r\n" +
	".leading dot\r\n\xc3\xa9t\xc3\xa9 8-bit\r\ntrailing space \r\n" + strings.Repeat("z", 998) + "\r\n\r\nend\r\n")

// TestEndToEndPostfix: real clients (Python smtplib over STARTTLS with
// AUTH PLAIN, curl over implicit TLS with AUTH LOGIN) send through the
// listener and backends/smtp to a real Postfix that checks the XOAUTH2
// token: the message arrives byte for byte (trace fields aside), a Bcc
// recipient gets it from the envelope alone, a foreign sender is
// refused, the upstream's 5xx for an unknown recipient is passed on,
// an oversized message is refused at MAIL.
func TestEndToEndPostfix(t *testing.T) {
	r := startRelay(t, "")
	p := r.p
	res := smtplib(t, r.s.addr, "starttls", r.ca, "alice", "local-pw", alice, []string{"bob@example.net", "carol@elsewhere.org"}, message)
	if !res.OK {
		t.Fatalf("smtplib: %+v", res)
	}
	delivered(t, p, "bob@example.net", 1, message)
	delivered(t, p, postfixtest.Outbound, 1, message)
	t.Logf("smtp: e2e python smtplib STARTTLS PLAIN -> popbridge -> Postfix (XOAUTH2): delivered byte for byte, envelope-only Bcc delivered")

	curl := need(t, "curl")
	path := filepath.Join(t.TempDir(), "msg.eml")
	os.WriteFile(path, message, 0o600)
	out, err := exec.Command(curl, "-sS", "-v", "--url", "smtps://"+r.s.tlsAddr, "--cacert", r.ca,
		"--user", "alice:local-pw", "--login-options", "AUTH=LOGIN", "--mail-from", alice, "--mail-rcpt", "bob@example.net", "--upload-file", path).CombinedOutput()
	if err != nil {
		t.Fatalf("curl smtps: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("> AUTH LOGIN")) {
		t.Fatalf("curl did not use AUTH LOGIN:\n%s", out)
	}
	delivered(t, p, "bob@example.net", 2, message)
	t.Logf("smtp: e2e curl smtps:// AUTH LOGIN -> popbridge -> Postfix: delivered byte for byte")

	if res := smtplib(t, r.s.addr, "starttls", r.ca, "alice", "local-pw", "bob@example.net", []string{"bob@example.net"}, message); res.Code != 553 {
		t.Fatalf("foreign sender: %+v, want 553", res)
	}
	if res := smtplib(t, r.s.tlsAddr, "ssl", r.ca, "alice", "local-pw", alice, []string{"nobody@example.com"}, message); res.Code != 550 || strings.Contains(res.Error, "virtual mailbox table") {
		t.Fatalf("unknown recipient: %+v, want 550 without the upstream's text", res)
	}
	big := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte(strings.Repeat("b", 78)+"\r\n"), int(p.MessageSizeLimit/80)+10)...)
	if res := smtplib(t, r.s.addr, "starttls", r.ca, "alice", "local-pw", alice, []string{"bob@example.net"}, big); res.Code != 552 {
		t.Fatalf("oversized message: %+v, want 552", res)
	}
	if res := smtplib(t, r.s.addr, "starttls", r.ca, "alice", "wrong", alice, []string{"bob@example.net"}, message); res.Code != 535 {
		t.Fatalf("wrong local password: %+v, want 535", res)
	}
	time.Sleep(300 * time.Millisecond)
	if msgs, _ := p.Messages("bob@example.net"); len(msgs) != 2 || p.Queued() {
		t.Fatalf("%d messages at bob (queued %v), want only the 2 accepted", len(msgs), p.Queued())
	}
	t.Logf("smtp: e2e refusals: foreign sender 553, upstream 550 passed with a generic text, oversize 552, wrong local password 535")
}

// TestEndToEndAbort: a client that disconnects in the middle of DATA,
// and an unreachable upstream: nothing is delivered anywhere, and the
// client sees 4xx for the upstream fault.
func TestEndToEndAbort(t *testing.T) {
	r := startRelay(t, "")
	w := loggedIn(t, r.s, "alice", "local-pw")
	w.expect("MAIL FROM:<"+alice+">", "250 ")
	w.expect("RCPT TO:<bob@example.net>", "250 ")
	w.expect("DATA", "354 ")
	// 192 KB: over one BDAT, so relayed into DATA as it comes.
	w.write("Subject: cut\r\n\r\n" + strings.Repeat("half a message\r\n", 12000))
	w.conn.Close()
	// The next complete message arrives, and only it.
	res := smtplib(t, r.s.addr, "starttls", r.ca, "alice", "local-pw", alice, []string{"bob@example.net"}, message)
	if !res.OK {
		t.Fatalf("smtplib: %+v", res)
	}
	delivered(t, r.p, "bob@example.net", 1, message)
	time.Sleep(500 * time.Millisecond)
	if msgs, _ := r.p.Messages("bob@example.net"); len(msgs) != 1 || r.p.Queued() {
		t.Fatalf("%d messages delivered (queued %v), want 1: the cut message must not arrive", len(msgs), r.p.Queued())
	}
	if !strings.Contains(r.p.Log(), "lost connection after DATA") {
		t.Fatalf("the upstream never saw the cut message's DATA:\n%s", r.p.Log())
	}
	t.Logf("smtp: e2e client disconnect during DATA: upstream aborted, nothing delivered")

	// Upstream down: a port nobody listens on. Port 1, not a port just
	// freed: another test process running beside this one may listen on
	// that one (a server that never greets made this test hang once).
	r2 := startRelay(t, "127.0.0.1:1")
	if res := smtplib(t, r2.s.addr, "starttls", r2.ca, "alice", "local-pw", alice, []string{"bob@example.net"}, message); res.Code != 451 {
		t.Fatalf("upstream down: %+v, want 451", res)
	}
	if msgs, _ := r2.p.Messages("bob@example.net"); len(msgs) != 0 {
		t.Fatalf("upstream down: %d messages delivered", len(msgs))
	}
	t.Logf("smtp: e2e upstream down: 451, nothing delivered")
}

// TestEndToEndSenderRefusedUpstream: a sender the account may use but
// the upstream refuses at MAIL FROM (Postfix with smtpd_delay_reject =
// no: the login alice does not own bob's address). backends/smtp
// pipelines MAIL with the first RCPT, so the client's MAIL gets 250 and
// its RCPT the upstream's refusal as a refused sender, with its code and
// a generic text; nothing is delivered.
func TestEndToEndSenderRefusedUpstream(t *testing.T) {
	const other = "bob@example.net"
	p := postfixtest.Start(t, postfixtest.Options{
		Users:     map[string]string{alice: "upstream-pw", other: "bob-pw"},
		ExtraMain: "smtpd_delay_reject = no\nsmtpd_sender_restrictions = reject_sender_login_mismatch",
	})
	sender, err := smtpb.New(smtpb.Options{Addr: p.Addr, ServerName: "localhost", CAFile: p.CAFile(),
		Username: alice, Password: "upstream-pw", From: []string{alice, other}, CommandTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a := &accounts{passwords: map[string]string{"alice": "local-pw"}, senders: map[string]backends.Sender{"alice": sender}}
	s := start(t, submission.Options{Auth: a, Senders: a.sender})
	w := loggedIn(t, s, "alice", "local-pw")
	w.expect("MAIL FROM:<"+other+">", "250 ")
	got := w.expect("RCPT TO:<"+alice+">", "553 5.7.1 ")
	if !strings.Contains(got, "Sender rejected by the upstream server") || strings.Contains(got, "not owned") {
		t.Fatalf("RCPT reply %q, want the sender refusal with a generic text", got)
	}
	w.expect("RCPT TO:<"+alice+">", "553 5.7.1 ")
	w.expect("DATA", "502 ") // go-smtp: no recipient was accepted
	// The next transaction, from the account's own address, goes through.
	w.expect("RSET", "250 ")
	w.expect("MAIL FROM:<"+alice+">", "250 ")
	w.expect("RCPT TO:<"+other+">", "250 ")
	w.expect("DATA", "354 ")
	w.write("Subject: ok\r\n\r\nfrom alice\r\n.\r\n")
	if r := w.reply(); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("message: %q", r)
	}
	if _, err := p.WaitMessages(other, 1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if msgs, _ := p.Messages(other); len(msgs) != 1 {
		t.Fatalf("%d messages delivered, want 1", len(msgs))
	}
	if msgs, _ := p.Messages(alice); len(msgs) != 0 {
		t.Fatalf("the refused sender's message arrived: %d", len(msgs))
	}
	t.Logf("smtp: e2e sender refused upstream at MAIL: client's RCPT gets 553 5.7.1 as a refused sender, nothing delivered")
}
