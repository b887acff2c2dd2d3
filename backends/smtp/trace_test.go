package smtp_test

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	smtpb "github.com/popbridge/popbridge/backends/smtp"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/postfixtest"
)

// TestTrace: at trace level the upstream conversation is logged line by
// line, over STARTTLS and implicit TLS; the password (also as base64 in
// AUTH PLAIN) and the message never appear, its size does.
func TestTrace(t *testing.T) {
	p := postfixtest.Start(t, postfixtest.Options{Users: users})
	secret := users[alice]
	plain := base64.StdEncoding.EncodeToString([]byte("\x00" + alice + "\x00" + secret))
	body := "Subject: trace\r\n\r\nthe-body-marker\r\n"
	for _, o := range []smtpb.Options{
		{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool()},
		{Addr: p.TLSAddr, TLS: modes.TLSImplicit, ServerName: "localhost", RootCAs: p.CertPool()},
	} {
		var buf bytes.Buffer
		log := zerolog.New(&buf).Level(zerolog.TraceLevel)
		o.Username, o.Password, o.Logger = alice, secret, &log
		if _, err := send(newSender(t, o), alice, []string{bob}, strings.NewReader(body)); err != nil {
			t.Fatalf("%s: %v", o.TLS, err)
		}
		logs := buf.String()
		for _, want := range []string{
			`"dir":"out","line":"EHLO localhost"`,
			`"dir":"in","line":"250-`,
			`"dir":"out","line":"AUTH PLAIN <redacted>"`,
			`"dir":"in","line":"235 `,
			`"dir":"out","line":"MAIL FROM:<` + alice + `>`,
			`"dir":"out","line":"RCPT TO:<` + bob + `>"`,
			`"dir":"in","line":"354 `,
			`"dir":"out","line":"<message ` + strconv.Itoa(len(body)) + ` octets>"`,
			`"dir":"out","line":"."`,
			`"message":"smtp upstream"`,
		} {
			if !strings.Contains(logs, want) {
				t.Errorf("%s: trace lacks %s:\n%s", o.TLS, want, logs)
			}
		}
		for _, bad := range []string{secret, plain, "the-body-marker", "Subject: trace"} {
			if strings.Contains(logs, bad) {
				t.Errorf("%s: trace contains %q:\n%s", o.TLS, bad, logs)
			}
		}
	}
	// Without trace level, nothing.
	var buf bytes.Buffer
	log := zerolog.New(&buf).Level(zerolog.DebugLevel)
	if _, err := send(newSender(t, smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: secret, Logger: &log}), alice, []string{bob}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Errorf("debug level logged %s", buf.String())
	}
}
