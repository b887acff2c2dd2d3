package smtp_test

import (
	"bytes"
	"testing"
	"time"

	smtpb "github.com/popbridge/popbridge/backends/smtp"
	"github.com/popbridge/popbridge/internal/postfixtest"
)

// BenchmarkSend sends ordinary messages (10 KB) to a private Postfix,
// each on a connection of its own (connect, STARTTLS, AUTH, message,
// QUIT) and on one kept connection:
//
//	go test -run '^$' -bench Send -benchtime 200x ./backends/smtp
func BenchmarkSend(b *testing.B) {
	p := postfixtest.Start(b, postfixtest.Options{Users: users})
	msg := append([]byte("From: alice@example.com\r\nSubject: bench\r\n\r\n"), bytes.Repeat([]byte("0123456789012345678901234567890123456789012345678\r\n"), 200)...)
	for _, c := range []struct {
		name string
		keep time.Duration
	}{{"new-connection", -1}, {"kept-connection", time.Minute}} {
		b.Run(c.name, func(b *testing.B) {
			s, err := smtpb.New(smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: users[alice], KeepIdle: c.keep})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := send(s, alice, []string{bob}, bytes.NewReader(msg)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
