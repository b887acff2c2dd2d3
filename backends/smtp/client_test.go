package smtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// scripted is a peer that answers each line it reads with the next of
// replies (written whole, as one write), for the protocol deviations no
// real server here produces on demand.
func scripted(t *testing.T, greeting string, replies ...string) *client {
	c, _ := recorded(t, greeting, replies...)
	return c
}

// recorded is scripted, also returning the lines the peer read (without
// CRLF), complete once the client has read the last reply.
func recorded(t *testing.T, greeting string, replies ...string) (*client, *[]string) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	var lines []string
	go func() {
		if _, err := b.Write([]byte(greeting)); err != nil {
			return
		}
		r := bufio.NewReader(b)
		for _, rep := range replies {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines = append(lines, strings.TrimRight(l, "\r\n"))
			if _, err := b.Write([]byte(rep)); err != nil {
				return
			}
		}
	}()
	return newClient(a, a, 5*time.Second, nil), &lines
}

// TestReplies: multi-line replies (also with bare LF), codes, enhanced
// codes, and what is refused: mixed codes, no code, over-long lines.
func TestReplies(t *testing.T) {
	c := scripted(t, "220-one\r\n220 two\n", "250-first\r\n250-second\n250 last\r\n", "550 5.1.1 no such user\r\n", "25 short\r\n", "250-a\r\n251 b\r\n", "250 "+strings.Repeat("x", 2100)+"\r\n")
	if code, msg, err := c.reply(220, time.Second); err != nil || code != 220 || msg != "one\ntwo" {
		t.Fatalf("greeting: %d %q %v", code, msg, err)
	}
	if code, msg, err := c.cmd(250, "NOOP"); err != nil || code != 250 || msg != "first\nsecond\nlast" {
		t.Fatalf("multi-line: %d %q %v", code, msg, err)
	}
	var se *gosmtp.SMTPError
	if _, _, err := c.cmd(250, "RCPT TO:<x@y>"); !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (gosmtp.EnhancedCode{5, 1, 1}) || se.Message != "no such user" {
		t.Fatalf("refusal: %#v", err)
	}
	for _, what := range []string{"no code", "mixed codes", "long line"} {
		if _, _, err := c.cmd(250, "NOOP"); !errors.Is(err, errProtocol) {
			t.Fatalf("%s: %v, want errProtocol", what, err)
		}
	}
}

// TestEHLOKeywords: keywords are case-insensitive, and the pre-RFC
// "AUTH=" form is understood.
func TestEHLOKeywords(t *testing.T) {
	c := scripted(t, "220 hi\r\n", "250-hi\r\n250-pipelining\r\n250-AUTH=LOGIN PLAIN\r\n250 SIZE 1000\r\n")
	if err := c.greet("localhost"); err != nil {
		t.Fatal(err)
	}
	if !c.has("PIPELINING") || !c.supportsAuth("plain") || !c.supportsAuth("LOGIN") || c.maxMessageSize() != 1000 || c.has("CHUNKING") {
		t.Fatalf("extensions %v", c.ext)
	}
}

// TestSTARTTLSInjection: a reply sent after STARTTLS's 220 but before
// the handshake (a man in the middle's, CVE-2011-0411 turned around) is
// refused, not read as the first reply over TLS.
func TestSTARTTLSInjection(t *testing.T) {
	c := scripted(t, "220 hi\r\n", "250-hi\r\n250 STARTTLS\r\n", "220 go ahead\r\n250 injected\r\n")
	if err := c.greet("localhost"); err != nil {
		t.Fatal(err)
	}
	_, err := c.startTLS(context.Background(), func(n net.Conn) *tls.Conn { return tls.Client(n, &tls.Config{ServerName: "localhost"}) }, "localhost")
	if !errors.Is(err, errProtocol) || !strings.Contains(err.Error(), "before the TLS handshake") {
		t.Fatalf("startTLS = %v, want the injection refused", err)
	}
}

// TestAuthExchanges: AUTH LOGIN (what Outlook's port 587 offers besides
// XOAUTH2) in its challenge steps, and an initial response too long for
// the AUTH line (an XOAUTH2 token of Microsoft's, some 2 KB) sent as the
// answer to an empty challenge (RFC 4954 4).
func TestAuthExchanges(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	c, lines := recorded(t, "220 hi\r\n", "334 "+b64([]byte("Username:"))+"\r\n", "334 "+b64([]byte("Password:"))+"\r\n", "235 2.7.0 ok\r\n")
	c.reply(220, time.Second)
	if err := c.authenticate(&login{user: "u@example.com", pass: "pw"}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"AUTH LOGIN", b64([]byte("u@example.com")), b64([]byte("pw"))}; !slices.Equal(*lines, want) {
		t.Fatalf("LOGIN sent %q, want %q", *lines, want)
	}
	token := strings.Repeat("t", 2000)
	c, lines = recorded(t, "220 hi\r\n", "334 \r\n", "235 2.7.0 ok\r\n")
	c.reply(220, time.Second)
	if err := c.authenticate(&xoauth2{user: "u@example.com", token: token}); err != nil {
		t.Fatal(err)
	}
	ir := b64([]byte("user=u@example.com\x01auth=Bearer " + token + "\x01\x01"))
	if want := []string{"AUTH XOAUTH2", ir}; !slices.Equal(*lines, want) {
		t.Fatalf("long XOAUTH2 sent %q, want AUTH XOAUTH2 and the response on its own line", *lines)
	}
}
