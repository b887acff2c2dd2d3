package backends

import (
	"errors"
	"slices"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
)

func TestEnvelopeBcc(t *testing.T) {
	msg := "From: a@example.org\r\nTo: Bob <bob@example.org>\r\nCc: carol@example.org\r\n\r\nbody\r\nTo: not@header.example\r\n"
	bcc, err := EnvelopeBcc(strings.NewReader(msg), []string{"BOB@example.org", "carol@example.org", "dave@example.org"})
	if err != nil || !slices.Equal(bcc, []string{"dave@example.org"}) {
		t.Fatalf("bcc %q, err %v; want [dave@example.org]", bcc, err)
	}
	// A header recipient missing from the envelope: 554, never sent.
	_, err = EnvelopeBcc(strings.NewReader(msg), []string{"bob@example.org"})
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 554 {
		t.Fatalf("header recipient outside the envelope: %v, want a 554", err)
	}
	// A header that cannot be parsed: 554.
	_, err = EnvelopeBcc(strings.NewReader("To: <unterminated\r\n\r\n"), []string{"x@example.org"})
	if !errors.As(err, &se) || se.Code != 554 {
		t.Fatalf("bad header: %v, want a 554", err)
	}
}
