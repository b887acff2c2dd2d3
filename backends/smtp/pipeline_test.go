package smtp_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends"
	smtpb "github.com/popbridge/popbridge/backends/smtp"
	"github.com/popbridge/popbridge/internal/postfixtest"
)

// TestSendWithoutPipelining: to an upstream that offers neither
// PIPELINING nor CHUNKING the sender sends one command at a time and the
// message into DATA with its dot lines stuffed: delivered byte for byte,
// small and over 64 KiB, on a new and on a kept connection; MAIL's
// refusal comes from Begin; a message cut off is aborted before the
// final dot.
func TestSendWithoutPipelining(t *testing.T) {
	p := postfixtest.Start(t, postfixtest.Options{Users: users, ExtraMain: "smtpd_discard_ehlo_keywords = etrn, pipelining, chunking"})
	var buf bytes.Buffer
	log := zerolog.New(&buf).Level(zerolog.TraceLevel)
	s := newSender(t, smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: users[alice], Logger: &log})
	for i, msg := range [][]byte{edge, edge, bigEdge} {
		if _, err := send(s, alice, []string{bob}, bytes.NewReader(msg)); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		delivered(t, p, bob, i+1, msg)
	}
	logs := buf.String()
	checkOrder(t, logs, "out MAIL FROM:", "in 250", "out RCPT TO:", "in 250", "out DATA", "in 354", "out <message", "out .", "in 250")
	if strings.Contains(logs, `"BDAT`) {
		t.Fatalf("BDAT sent to an upstream without CHUNKING:\n%s", logs)
	}

	ctx := context.Background()
	var se *gosmtp.SMTPError
	if _, err := s.Begin(ctx, alice, backends.MailOptions{Size: p.MessageSizeLimit + 1}); !errors.As(err, &se) || se.Code != 552 {
		t.Fatalf("SIZE over the limit: %v, want 552 from Begin", err)
	}
	half := []byte("Subject: truncated\r\n\r\n" + strings.Repeat("first half\r\n", 20000))
	cause := errors.New("client connection lost")
	if _, err := send(s, alice, []string{bob}, &failingReader{data: half, err: cause}); !errors.Is(err, cause) {
		t.Fatalf("Data = %v, want the client's error", err)
	}
	time.Sleep(500 * time.Millisecond)
	if msgs, _ := p.Messages(bob); len(msgs) != 3 || p.Queued() {
		t.Fatalf("%d messages delivered (queued: %v), want 3", len(msgs), p.Queued())
	}
	if !strings.Contains(p.Log(), "lost connection after DATA") {
		t.Fatalf("the upstream did not see the DATA aborted:\n%s", p.Log())
	}
	t.Logf("smtp: backend without PIPELINING and CHUNKING: one command at a time, DATA dot-stuffed, delivered byte for byte; SIZE refused at MAIL; cut-off DATA aborted")
}

// TestPipelinedRefusals: with PIPELINING, MAIL FROM's reply is read
// with the first RCPT's, so a refused sender surfaces there (wrapping
// backends.ErrSenderRefused, the upstream's code kept), and a kept
// connection the upstream dropped is replaced then, invisibly.
func TestPipelinedRefusals(t *testing.T) {
	p := postfixtest.Start(t, postfixtest.Options{Users: users, ExtraMain: "smtpd_timeout = 2s"})
	s := newSender(t, smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: users[alice]})
	ctx := context.Background()
	if _, err := send(s, alice, []string{bob}, bytes.NewReader(edge)); err != nil {
		t.Fatal(err)
	}
	// The kept connection dies (smtpd_timeout); Begin writes MAIL into
	// it without noticing; the first RCPT finds out and starts over.
	time.Sleep(3500 * time.Millisecond)
	tx, err := s.Begin(ctx, alice, backends.MailOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rcpt(ctx, bob); err != nil {
		t.Fatalf("RCPT after the kept connection was dropped: %v", err)
	}
	if _, err := tx.Data(ctx, bytes.NewReader(edge)); err != nil {
		t.Fatal(err)
	}
	tx.Close()
	delivered(t, p, bob, 2, edge)
	// A refused sender: MAIL FROM with a malformed address.
	tx, err = s.Begin(ctx, "not an address@", backends.MailOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var se *gosmtp.SMTPError
	if err := tx.Rcpt(ctx, bob); !errors.Is(err, backends.ErrSenderRefused) || !errors.As(err, &se) || se.Code/100 != 5 {
		t.Fatalf("refused MAIL FROM read with RCPT: %v", err)
	}
	tx.Close()
	if _, err := send(s, alice, []string{bob}, bytes.NewReader(edge)); err != nil {
		t.Fatalf("after a refused sender: %v", err)
	}
	delivered(t, p, bob, 3, edge)
	t.Logf("smtp: backend pipelining: refused MAIL reported with RCPT as ErrSenderRefused; a dropped kept connection replaced at RCPT")
}
