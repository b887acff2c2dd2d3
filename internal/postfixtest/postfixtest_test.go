package postfixtest_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/postfixtest"
)

// wire is a minimal SMTP client that shows every reply as sent.
type wire struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string, tlsConf *tls.Config) *wire {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if tlsConf != nil {
		conn = tls.Client(conn, tlsConf)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	w := &wire{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	if g := w.reply(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("greeting %q", g)
	}
	return w
}

// reply reads one reply; a multi-line reply is returned joined by "\n".
func (w *wire) reply() string {
	w.t.Helper()
	var lines []string
	for {
		line, err := w.r.ReadString('\n')
		if err != nil {
			w.t.Fatalf("read reply: %v (so far %q)", err, lines)
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

func (w *wire) cmd(line string) string {
	w.t.Helper()
	if _, err := fmt.Fprintf(w.conn, "%s\r\n", line); err != nil {
		w.t.Fatal(err)
	}
	return w.reply()
}

func (w *wire) expect(line, prefix string) string {
	w.t.Helper()
	r := w.cmd(line)
	if !strings.HasPrefix(r, prefix) {
		w.t.Fatalf("%q -> %q, want %s", line, r, prefix)
	}
	return r
}

func (w *wire) starttls(conf *tls.Config) {
	w.t.Helper()
	w.expect("STARTTLS", "220 ")
	tc := tls.Client(w.conn, conf)
	if err := tc.Handshake(); err != nil {
		w.t.Fatal(err)
	}
	w.conn, w.r = tc, bufio.NewReader(tc)
	w.conn.SetDeadline(time.Now().Add(30 * time.Second))
}

func (w *wire) send(from string, to []string, msg []byte) {
	w.t.Helper()
	w.expect("MAIL FROM:<"+from+">", "250 ")
	for _, r := range to {
		w.expect("RCPT TO:<"+r+">", "250 ")
	}
	w.expect("DATA", "354 ")
	stuffed := bytes.ReplaceAll(msg, []byte("\r\n."), []byte("\r\n.."))
	if bytes.HasPrefix(stuffed, []byte(".")) {
		stuffed = append([]byte("."), stuffed...)
	}
	w.conn.Write(stuffed)
	w.expect(".", "250 ")
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestPostfix checks the harness itself: the Gmail-like policy, both
// listeners, PLAIN and LOGIN, XOAUTH2 and OAUTHBEARER checked at the
// fake's introspection endpoint, delivery byte for byte, the outbound
// catch-all and the send-as check.
func TestPostfix(t *testing.T) {
	f := oauthtest.Start(t)
	f.Username = "alice@example.com"
	p := postfixtest.Start(t, postfixtest.Options{
		Users:         map[string]string{"alice@example.com": "alice-pw", "bob@example.net": "bob-pw"},
		IntrospectURL: f.IntrospectURL,
	})

	w := dial(t, p.Addr, nil)
	if ehlo := w.expect("EHLO test", "250"); strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("EHLO before TLS: %q", ehlo)
	}
	w.expect("MAIL FROM:<alice@example.com>", "530 5.7.0")
	w.starttls(p.TLSConfig())
	if ehlo := w.expect("EHLO test", "250"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER") || !strings.Contains(ehlo, "SIZE 10485760") {
		t.Fatalf("EHLO after TLS: %q", ehlo)
	}
	w.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00wrong"), "535 5.7.8")
	w.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00alice-pw"), "235 ")
	msg := []byte("From: alice@example.com\r\nTo: bob@example.net\r\nSubject: t\r\n\r\n.dot line\r\n\xc3\xa9t\xc3\xa9 8bit\r\ntrailing \r\n\r\n")
	w.send("alice@example.com", []string{"bob@example.net", "carol@elsewhere.org"}, msg)
	// Send-as is checked at RCPT.
	w.expect("MAIL FROM:<bob@example.net>", "250 ")
	w.expect("RCPT TO:<bob@example.net>", "553 5.7.1")
	w.expect("RSET", "250 ")
	w.expect("RCPT TO:<nobody@example.com>", "503 ")
	w.expect("MAIL FROM:<alice@example.com> SIZE=10485761", "552 5.3.4")
	w.expect("QUIT", "221 ")

	for _, box := range []string{"bob@example.net", postfixtest.Outbound} {
		got, err := p.WaitMessages(box, 1, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if s := postfixtest.Stripped(got[0]); !bytes.Equal(s, postfixtest.AsDelivered(msg)) {
			t.Fatalf("%s got\n%q\nwant\n%q", box, s, postfixtest.AsDelivered(msg))
		}
	}

	// Implicit TLS, AUTH LOGIN.
	w = dial(t, p.TLSAddr, p.TLSConfig())
	w.expect("EHLO test", "250")
	w.expect("AUTH LOGIN", "334 ")
	w.expect(b64("bob@example.net"), "334 ")
	w.expect(b64("bob-pw"), "235 ")
	w.send("bob@example.net", []string{"alice@example.com"}, []byte("Subject: x\r\n\r\nbody\r\n"))
	if _, err := p.WaitMessages("alice@example.com", 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// XOAUTH2 and OAUTHBEARER with a token the fake issued.
	at, _, _ := f.Issue()
	w = dial(t, p.TLSAddr, p.TLSConfig())
	w.expect("EHLO test", "250")
	w.expect("AUTH XOAUTH2 "+b64("user=alice@example.com\x01auth=Bearer bad-token\x01\x01"), "334 ")
	w.expect("", "535 5.7.8")
	w.expect("AUTH XOAUTH2 "+b64("user=alice@example.com\x01auth=Bearer "+at+"\x01\x01"), "235 ")
	w = dial(t, p.TLSAddr, p.TLSConfig())
	w.expect("EHLO test", "250")
	w.expect("AUTH OAUTHBEARER "+b64("n,a=alice@example.com,\x01auth=Bearer "+at+"\x01\x01"), "235 ")
	if f.Checked(at) != 2 {
		t.Fatalf("the token was introspected %d times, want 2", f.Checked(at))
	}
	t.Logf("smtp: postfixtest upstream: STARTTLS and implicit TLS, PLAIN/LOGIN/XOAUTH2/OAUTHBEARER, delivery byte for byte")
}
