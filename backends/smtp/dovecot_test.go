package smtp_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	smtpb "github.com/popbridge/popbridge/backends/smtp"
	"github.com/popbridge/popbridge/internal/postfixtest"
)

// TestSendThroughDovecotSubmission: the sender against a second SMTP
// server implementation, Dovecot's submission service (in front of
// Postfix): messages small (one BDAT) and large (DATA) delivered byte for
// byte over one kept connection and login, MAIL and RCPT pipelined, a
// refused recipient passed on as a 5xx; and AUTH LOGIN where it is the
// only mechanism offered.
func TestSendThroughDovecotSubmission(t *testing.T) {
	p := postfixtest.Start(t, postfixtest.Options{Users: users})
	sub := p.StartSubmission(t, alice)
	var buf bytes.Buffer
	log := zerolog.New(&buf).Level(zerolog.TraceLevel)
	s := newSender(t, smtpb.Options{Addr: sub.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: users[alice], Logger: &log})
	for i, msg := range [][]byte{edge, bigEdge, edge} {
		if _, err := send(s, alice, []string{bob}, bytes.NewReader(msg)); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		delivered(t, p, bob, i+1, msg)
	}
	var se *gosmtp.SMTPError
	if _, err := send(s, alice, []string{"nobody@example.com"}, bytes.NewReader(edge)); !errors.As(err, &se) || se.Code/100 != 5 {
		t.Fatalf("unknown recipient: %v, want a 5xx", err)
	}
	logs := buf.String()
	checkOrder(t, logs, "out MAIL FROM:", "out RCPT TO:", "in 250", "in 250")
	if n := strings.Count(logs, `"line":"AUTH PLAIN`); n != 1 {
		t.Errorf("%d logins for 3 messages, want 1", n)
	}
	// A server offering only AUTH LOGIN, in its two challenge steps.
	onlyLogin := p.StartSubmission(t, alice, "login")
	s2 := newSender(t, smtpb.Options{Addr: onlyLogin.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: users[alice]})
	if _, err := send(s2, alice, []string{bob}, bytes.NewReader(edge)); err != nil {
		t.Fatalf("AUTH LOGIN: %v", err)
	}
	delivered(t, p, bob, 4, edge)
	if !strings.Contains(onlyLogin.Log(), "method=LOGIN") {
		t.Fatalf("no LOGIN login in the submission log:\n%s", onlyLogin.Log())
	}
	t.Logf("smtp: backend against Dovecot submission: small and large messages byte for byte, pipelined, 5xx recipient passed on; AUTH LOGIN")
}
