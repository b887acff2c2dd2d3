package smtp_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
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
		// Pipelined: RCPT goes out before MAIL's reply is read.
		checkOrder(t, logs, "out MAIL FROM:", "out RCPT TO:", "in 250", "in 250", "out BDAT")
		for _, want := range []string{
			`"dir":"out","line":"EHLO localhost"`,
			`"dir":"in","line":"250-`,
			`"dir":"out","line":"AUTH PLAIN <redacted>"`,
			`"dir":"in","line":"235 `,
			`"dir":"out","line":"MAIL FROM:<` + alice + `>`,
			`"dir":"out","line":"RCPT TO:<` + bob + `>"`,
			`"dir":"out","line":"BDAT ` + strconv.Itoa(len(body)) + ` LAST"`,
			`"dir":"out","line":"<message ` + strconv.Itoa(len(body)) + ` octets>"`,
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

// checkOrder checks that a trace has lines starting with want, each
// ("dir line") the next line after the previous one's.
func checkOrder(t *testing.T, logs string, want ...string) {
	t.Helper()
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		var e struct{ Dir, Line string }
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("trace line %q: %v", l, err)
		}
		got = append(got, e.Dir+" "+e.Line)
	}
	for i := range got {
		if !strings.HasPrefix(got[i], want[0]) || len(got)-i < len(want) {
			continue
		}
		j := 1
		for j < len(want) && strings.HasPrefix(got[i+j], want[j]) {
			j++
		}
		if j == len(want) {
			return
		}
	}
	t.Errorf("trace lacks the sequence %q:\n%s", want, strings.Join(got, "\n"))
}
