package submission_test

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestTrace: at trace level the session logs the commands and replies
// of AUTH PLAIN, AUTH LOGIN, MAIL, RCPT and DATA; passwords (also as
// base64) and the message never appear, the message's size does.
func TestTrace(t *testing.T) {
	a, _ := fakeAccounts()
	var buf syncBuffer
	log := zerolog.New(&buf).Level(zerolog.TraceLevel)
	o := opts(a)
	o.Logger = &log
	s := start(t, o)
	plain := b64("\x00" + alice + "\x00alice-pw")
	w := loggedIn(t, s, alice, "alice-pw")
	w.expect("MAIL FROM:<"+alice+">", "250 ")
	w.expect("RCPT TO:<bob@example.net>", "250 ")
	w.expect("DATA", "354 ")
	w.expect("Subject: secret subject\r\n\r\nsecret body\r\n.", "250 ")
	w.expect("QUIT", "221 ")
	w2 := dial(t, s.tlsAddr, s.clientTLS())
	w2.expect("EHLO x", "250")
	w2.expect("AUTH LOGIN", "334 ")
	w2.expect(b64(alice), "334 ")
	w2.expect(b64("wrong-pw"), "535 ")
	out := buf.String()
	for _, want := range []string{
		`"dir":"in","client":"127.0.0.1","line":"AUTH PLAIN"`,
		`"dir":"in","client":"127.0.0.1","line":"<redacted>"`,
		`"line":"235 2.0.0 Authentication succeeded"`,
		`"dir":"in","client":"127.0.0.1","line":"MAIL FROM:<` + alice + `>"`,
		`"dir":"in","client":"127.0.0.1","line":"RCPT TO:<bob@example.net>"`,
		`"dir":"in","client":"127.0.0.1","line":"DATA"`,
		`"line":"<message 40 octets>"`,
		`"dir":"out","client":"127.0.0.1","line":"250 2.0.0 OK: sent upstream"`,
		`"line":"AUTH LOGIN"`,
		`"line":"535 5.7.8 Authentication credentials invalid"`,
		`"message":"smtp"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %s:\n%s", want, out)
		}
	}
	for _, secret := range []string{"alice-pw", "wrong-pw", plain, b64("wrong-pw"), "secret"} {
		if strings.Contains(out, secret) {
			t.Errorf("trace contains %q:\n%s", secret, out)
		}
	}
}
