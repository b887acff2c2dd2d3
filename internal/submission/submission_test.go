package submission_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/internal/submission"
)

const alice = "alice@example.com"

func fakeAccounts() (*accounts, *fakeSender) {
	fs := &fakeSender{allowed: alice}
	return &accounts{passwords: map[string]string{alice: "alice-pw"}, senders: map[string]backends.Sender{alice: fs}}, fs
}

func opts(a *accounts) submission.Options {
	return submission.Options{Auth: a, Senders: a.sender}
}

// TestEHLOAndCleartextPolicy: before STARTTLS, AUTH is neither offered
// nor accepted (538) and MAIL needs AUTH (530, not go-smtp's 502);
// after STARTTLS AUTH PLAIN LOGIN is offered; a cleartext policy that
// allows the client's address offers AUTH without TLS. The implicit TLS
// listener offers AUTH at once and no STARTTLS.
func TestEHLOAndCleartextPolicy(t *testing.T) {
	a, _ := fakeAccounts()
	s := start(t, opts(a))
	w := dial(t, s.addr, nil)
	ehlo := w.expect("EHLO client.test", "250")
	for _, want := range []string{"STARTTLS", "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", fmt.Sprintf("SIZE %d", 35<<20)} {
		if !strings.Contains(ehlo, want) {
			t.Errorf("EHLO before TLS lacks %s: %q", want, ehlo)
		}
	}
	if strings.Contains(ehlo, "AUTH") {
		t.Fatalf("AUTH offered before STARTTLS: %q", ehlo)
	}
	w.expect("AUTH PLAIN "+b64("\x00"+alice+"\x00alice-pw"), "538 5.7.11")
	w.expect("AUTH LOGIN", "538 5.7.11")
	w.expect("MAIL FROM:<"+alice+">", "530 5.7.0")
	w.starttls(s.clientTLS())
	ehlo = w.expect("EHLO client.test", "250")
	if !strings.Contains(ehlo, "AUTH PLAIN LOGIN") || strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("EHLO after STARTTLS: %q", ehlo)
	}
	w.expect("MAIL FROM:<"+alice+">", "530 5.7.0")
	w.expect("AUTH PLAIN "+b64("\x00"+alice+"\x00alice-pw"), "235 ")
	w.expect("AUTH PLAIN "+b64("\x00"+alice+"\x00alice-pw"), "503 ")
	if a.calls != 1 {
		t.Fatalf("%d Authenticate calls, want 1 (none before TLS)", a.calls)
	}

	w = dial(t, s.tlsAddr, s.clientTLS())
	if ehlo := w.expect("EHLO client.test", "250"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") || strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("EHLO on implicit TLS: %q", ehlo)
	}

	o := opts(a)
	o.CleartextAuth = func(ip netip.Addr) bool { return ip == netip.MustParseAddr("127.0.0.1") }
	s2 := start(t, o)
	w = dial(t, s2.addr, nil)
	if ehlo := w.expect("EHLO client.test", "250"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("cleartext policy allows 127.0.0.1, EHLO: %q", ehlo)
	}
	w.expect("AUTH PLAIN "+b64("\x00"+alice+"\x00alice-pw"), "235 ")
	t.Logf("smtp: listener AUTH only after STARTTLS (538 before, 530 for MAIL), unless the cleartext policy allows the address")
}

// TestAuthLoginAndFailures: AUTH LOGIN (not in go-sasl) two-step and
// with an initial response; a wrong password gets 535 after the
// penalty hook's delay; the third failure closes the connection (421);
// a store fault is 454, a cancel 501.
func TestAuthLoginAndFailures(t *testing.T) {
	a, _ := fakeAccounts()
	var failed, succeeded atomic.Int32
	o := opts(a)
	o.AuthFailed = func(netip.Addr) time.Duration { failed.Add(1); return 200 * time.Millisecond }
	o.AuthSucceeded = func(netip.Addr) { succeeded.Add(1) }
	s := start(t, o)

	w := dial(t, s.tlsAddr, s.clientTLS())
	w.expect("EHLO client.test", "250")
	if r := w.expect("AUTH LOGIN", "334 "); r != "334 "+b64("Username:") {
		t.Fatalf("first LOGIN challenge %q", r)
	}
	if r := w.expect(b64(alice), "334 "); r != "334 "+b64("Password:") {
		t.Fatalf("second LOGIN challenge %q", r)
	}
	w.expect(b64("alice-pw"), "235 2.0.0")
	w = dial(t, s.tlsAddr, s.clientTLS())
	w.expect("EHLO client.test", "250")
	w.expect("AUTH LOGIN "+b64(alice), "334 "+b64("Password:"))
	w.expect(b64("alice-pw"), "235 ")
	if succeeded.Load() != 2 {
		t.Fatalf("AuthSucceeded called %d times", succeeded.Load())
	}

	w = dial(t, s.tlsAddr, s.clientTLS())
	w.expect("EHLO client.test", "250")
	begin := time.Now()
	w.expect("AUTH PLAIN "+b64("\x00"+alice+"\x00wrong"), "535 5.7.8")
	if d := time.Since(begin); d < 200*time.Millisecond {
		t.Fatalf("535 after %v, before the penalty delay", d)
	}
	w.expect("AUTH LOGIN", "334 ")
	w.expect("*", "501 ")
	w.expect("AUTH PLAIN "+b64("\x00nobody@example.com\x00x"), "535 5.7.8")
	w.expect("AUTH LOGIN "+b64(alice), "334 ")
	w.expect(b64("wrong"), "421 4.7.0")
	if !w.closed() {
		t.Fatal("connection still open after the third failed AUTH")
	}
	if failed.Load() != 3 {
		t.Fatalf("AuthFailed called %d times, want 3", failed.Load())
	}

	a.down = true
	w = dial(t, s.tlsAddr, s.clientTLS())
	w.expect("EHLO client.test", "250")
	if r := w.expect("AUTH PLAIN "+b64("\x00"+alice+"\x00alice-pw"), "454 4.7.0"); strings.Contains(r, "unavailable") {
		t.Fatalf("the store's error text leaked: %q", r)
	}
	t.Logf("smtp: listener AUTH LOGIN and PLAIN, 535 after the penalty, 421 and close after 3 failures, 454 when the accounts fail")
}

// TestSTARTTLSInjection: commands pipelined after STARTTLS in the same
// write are discarded (CVE-2011-0411): the first reply over TLS is the
// EHLO's, and the injected MAIL never reaches the session.
func TestSTARTTLSInjection(t *testing.T) {
	a, fs := fakeAccounts()
	o := opts(a)
	o.CleartextAuth = loopback
	s := start(t, o)
	w := dial(t, s.addr, nil)
	w.expect("EHLO client.test", "250")
	w.expect("AUTH PLAIN "+b64("\x00"+alice+"\x00alice-pw"), "235 ")
	w.write("STARTTLS\r\nMAIL FROM:<" + alice + ">\r\nRCPT TO:<bob@example.net>\r\n")
	if r := w.reply(); !strings.HasPrefix(r, "220 ") {
		t.Fatalf("STARTTLS -> %q", r)
	}
	w.handshake(s.clientTLS())
	if r := w.cmd("EHLO client.test"); !strings.HasPrefix(r, "250-") || !strings.Contains(r, "AUTH") {
		t.Fatalf("first reply over TLS %q, want the EHLO's", r)
	}
	// The TLS session starts unauthenticated.
	w.expect("MAIL FROM:<"+alice+">", "530 5.7.0")
	if begun, _ := fs.got(); begun != 0 {
		t.Fatalf("the injected MAIL reached the sender (%d)", begun)
	}
	t.Logf("smtp: listener STARTTLS injection discarded")
}

// TestErrorsMapped: go-smtp turns a plain or wrapped error from Data
// into a permanent 554 with the error's text; the listener maps every
// upstream error itself, to the upstream's class with a generic text.
func TestErrorsMapped(t *testing.T) {
	a, fs := fakeAccounts()
	s := start(t, opts(a))
	secret := "internal.host.example 10.1.2.3 token=abc"
	for _, c := range []struct {
		dataErr error
		want    string
	}{
		{fmt.Errorf("relay: %w", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: secret}), "451 4.3.0 Message temporarily refused"},
		{&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: secret}, "554 5.7.1 Message rejected by the upstream server"},
		{&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{4, 1, 1}, Message: secret}, "550 5.0.0 Message rejected"},
		{errors.New("write tcp " + secret + ": broken pipe"), "451 4.4.2 Upstream did not confirm"},
		{&smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "message file too big " + secret}, "552 5.3.4 Message size exceeds the upstream server's limit"},
		{fmt.Errorf("%w: %s", backends.ErrUpstreamLogin, secret), "451 4.7.0 Upstream login failed"},
	} {
		fs.dataErr = c.dataErr
		w := loggedIn(t, s, alice, "alice-pw")
		w.expect("MAIL FROM:<"+alice+">", "250 ")
		w.expect("RCPT TO:<bob@example.net>", "250 ")
		w.expect("DATA", "354 ")
		r := w.cmd("Subject: x\r\n\r\nbody\r\n.")
		if !strings.HasPrefix(r, c.want) || strings.Contains(r, "10.1.2.3") || strings.Contains(r, "token") {
			t.Errorf("Data error %v -> %q, want %s... without its text", c.dataErr, r, c.want)
		}
		w.expect("NOOP", "250 ")
	}
	fs.dataErr = nil
	fs.beginErr = fmt.Errorf("smtp: connect to upstream: dial tcp %s: connection refused", secret)
	w := loggedIn(t, s, alice, "alice-pw")
	if r := w.expect("MAIL FROM:<"+alice+">", "451 4.4.1"); strings.Contains(r, "10.1.2.3") {
		t.Fatalf("MAIL reply leaks: %q", r)
	}
	fs.beginErr = nil
	fs.rcptErr = fmt.Errorf("smtp: RCPT TO: %w", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<x@y>: " + secret})
	w.expect("MAIL FROM:<"+alice+">", "250 ")
	if r := w.expect("RCPT TO:<x@example.net>", "550 5.1.1 Recipient rejected"); strings.Contains(r, "10.1.2.3") {
		t.Fatalf("RCPT reply leaks: %q", r)
	}
	t.Logf("smtp: listener upstream errors mapped: wrapped 451 stays 451, plain errors 451, 5xx generic text, nothing leaked")
}

// TestIdleTimeoutDuringData: go-smtp's ReadTimeout would bound the
// whole DATA phase; the listener's idle timeout is per read: a slow but
// steady upload of 2.4 s with a 1 s idle timeout is accepted, a silent
// client gets 421 4.4.2.
func TestIdleTimeoutDuringData(t *testing.T) {
	a, fs := fakeAccounts()
	o := opts(a)
	o.IdleTimeout = time.Second
	s := start(t, o)
	w := loggedIn(t, s, alice, "alice-pw")
	w.expect("MAIL FROM:<"+alice+">", "250 ")
	w.expect("RCPT TO:<bob@example.net>", "250 ")
	w.expect("DATA", "354 ")
	w.write("Subject: slow\r\n\r\n")
	for range 8 {
		time.Sleep(300 * time.Millisecond)
		w.write("slow\r\n")
	}
	w.expect(".", "250 ")
	if _, msgs := fs.got(); len(msgs) != 1 || !strings.HasSuffix(string(msgs[0]), "slow\r\nslow\r\n") {
		t.Fatalf("slow message not relayed: %q", msgs)
	}
	if r := w.reply(); !strings.HasPrefix(r, "421 4.4.2") {
		t.Fatalf("silent client got %q, want 421 4.4.2", r)
	}
	t.Logf("smtp: listener idle timeout per read: 2.4 s steady DATA with 1 s idle timeout accepted, silence 421")
}

// TestLimits: SIZE= and data over the limit 552 5.3.4 (the session
// goes on), too many recipients 452 4.5.3, a line over the limit in the
// message 500 5.5.6 (never relayed), a foreign sender 553 5.7.1, a
// non-ASCII address without SMTPUTF8 550/553 5.6.7.
func TestLimits(t *testing.T) {
	a, fs := fakeAccounts()
	o := opts(a)
	o.MaxMessageBytes = 1000
	o.MaxRecipients = 2
	o.MaxLineLength = 200
	s := start(t, o)
	w := loggedIn(t, s, alice, "alice-pw")
	if ehlo := w.expect("EHLO client.test", "250"); !strings.Contains(ehlo, "SIZE 1000") {
		t.Fatalf("EHLO %q", ehlo)
	}
	w.expect("AUTH PLAIN "+b64("\x00"+alice+"\x00alice-pw"), "503 ") // EHLO keeps the login
	w.expect("MAIL FROM:<"+alice+"> SIZE=1001", "552 5.3.4")
	w.expect("MAIL FROM:<bob@example.net>", "553 5.7.1")
	w.expect("MAIL FROM:<jörg@example.com>", "550 5.6.7")
	w.expect("MAIL FROM:<"+alice+">", "250 ")
	w.expect("RCPT TO:<jörg@example.net>", "553 5.6.7")
	w.expect("RCPT TO:<a@example.net>", "250 ")
	w.expect("RCPT TO:<b@example.net>", "250 ")
	w.expect("RCPT TO:<c@example.net>", "452 4.5.3")
	w.expect("DATA", "354 ")
	w.expect(strings.Repeat("x\r\n", 600)+".", "552 5.3.4")
	w.expect("NOOP", "250 ")
	w.expect("MAIL FROM:<"+alice+"> SMTPUTF8", "250 ")
	w.expect("RCPT TO:<jörg@example.net>", "250 ")
	w.expect("DATA", "354 ")
	w.write(strings.Repeat("y", 300) + "\r\n.\r\n")
	if r := w.reply(); !strings.HasPrefix(r, "500 5.5.6") {
		t.Fatalf("long line -> %q", r)
	}
	if _, msgs := fs.got(); len(msgs) != 0 {
		t.Fatalf("%d messages relayed, want none", len(msgs))
	}
	t.Logf("smtp: listener limits: 552 5.3.4 size, 452 4.5.3 recipients, 500 5.5.6 line, 553 5.7.1 sender, 5.6.7 UTF-8")
}

// TestConnectionLimit: a connection over the per-address limit gets
// 421 and is closed; when one ends, a new one is served.
func TestConnectionLimit(t *testing.T) {
	a, _ := fakeAccounts()
	o := opts(a)
	o.MaxConnectionsPerIP = 1
	s := start(t, o)
	w := dial(t, s.addr, nil)
	w.expect("NOOP", "250 ")
	w2 := dial2(t, s.addr)
	if !strings.HasPrefix(w2, "421 4.7.0") {
		t.Fatalf("second connection got %q", w2)
	}
	w.expect("QUIT", "221 ")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if g := dial2(t, s.addr); strings.HasPrefix(g, "220 ") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("after QUIT, a new connection still gets %q", g)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("smtp: listener connection limit: 421 over the limit")
}

// TestBDAT: CHUNKING cannot be switched off in go-smtp; BDAT chunks are
// relayed like DATA, and an RSET during a BDAT transfer (Reset while
// Data runs in go-smtp's BDAT goroutine) abandons the message. (A new
// BDAT right after such an RSET on the same connection races inside
// go-smtp v0.26.0 itself, on Conn.dataResult; not exercised here.)
func TestBDAT(t *testing.T) {
	a, fs := fakeAccounts()
	s := start(t, opts(a))
	w := loggedIn(t, s, alice, "alice-pw")
	w.expect("MAIL FROM:<"+alice+">", "250 ")
	w.expect("RCPT TO:<bob@example.net>", "250 ")
	w.write("BDAT 9\r\nSubject: ")
	if r := w.reply(); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("BDAT chunk -> %q", r)
	}
	w.expect("RSET", "250 ")
	w.expect("MAIL FROM:<"+alice+">", "250 ")
	w.expect("RCPT TO:<bob@example.net>", "250 ")
	w.expect("DATA", "354 ")
	w.expect("Subject: d\r\n\r\nd\r\n.", "250 ")

	w = loggedIn(t, s, alice, "alice-pw")
	w.expect("MAIL FROM:<"+alice+">", "250 ")
	w.expect("RCPT TO:<bob@example.net>", "250 ")
	w.write("BDAT 9\r\nSubject: ")
	if r := w.reply(); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("BDAT chunk -> %q", r)
	}
	w.write("BDAT 8 LAST\r\nx\r\n\r\nb\r\n")
	if r := w.reply(); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("BDAT LAST -> %q", r)
	}
	if _, msgs := fs.got(); len(msgs) != 2 || string(msgs[0]) != "Subject: d\r\n\r\nd\r\n" || string(msgs[1]) != "Subject: x\r\n\r\nb\r\n" {
		t.Fatalf("relayed %q, want the DATA and the completed BDAT message only", msgs)
	}
	t.Logf("smtp: listener BDAT relayed; RSET during BDAT abandons the message")
}

// TestLog: one line per transaction with account, sender, recipients
// and size; no password, no body.
func TestLog(t *testing.T) {
	a, _ := fakeAccounts()
	var buf syncBuffer
	log := zerolog.New(&buf)
	o := opts(a)
	o.Logger = &log
	s := start(t, o)
	w := loggedIn(t, s, alice, "alice-pw")
	w.expect("MAIL FROM:<"+alice+">", "250 ")
	w.expect("RCPT TO:<bob@example.net>", "250 ")
	w.expect("DATA", "354 ")
	w.expect("Subject: secret subject\r\n\r\nsecret body\r\n.", "250 ")
	w.expect("AUTH PLAIN "+b64("\x00"+alice+"\x00alice-pw"), "503 ")
	w2 := loggedIn(t, s, alice, "alice-pw")
	w2.expect("QUIT", "221 ")
	w3 := dial(t, s.tlsAddr, s.clientTLS())
	w3.expect("EHLO x", "250")
	w3.expect("AUTH PLAIN "+b64("\x00"+alice+"\x00wrong-pw"), "535 ")
	out := buf.String()
	var tx map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["message"] == "submission: transaction" {
			if tx != nil {
				t.Fatalf("two transaction lines:\n%s", out)
			}
			tx = m
		}
	}
	if tx == nil || tx["account"] != alice || tx["from"] != alice || tx["recipients"] != 1.0 || tx["result"] != "sent" || tx["bytes"] != 40.0 {
		t.Fatalf("transaction line %v in\n%s", tx, out)
	}
	for _, secret := range []string{"alice-pw", "wrong-pw", "secret"} {
		if strings.Contains(out, secret) {
			t.Fatalf("log contains %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "authentication failed") {
		t.Fatalf("failed login not logged:\n%s", out)
	}
	t.Logf("smtp: listener log: one line per transaction, no password or body")
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
