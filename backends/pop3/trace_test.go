package pop3

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/proxy"
)

// traced returns a trace-level logger and a function that returns its
// "pop3 upstream" lines as "dir line", the sessions they name, and the
// whole log.
func traced() (*zerolog.Logger, func() ([]string, map[string]bool, string)) {
	var buf dovecottest.SyncBuffer
	l := zerolog.New(&buf).Level(zerolog.TraceLevel)
	return &l, func() ([]string, map[string]bool, string) {
		var lines []string
		sessions := map[string]bool{}
		for _, s := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var e struct{ Message, Dir, Line, Session string }
			if json.Unmarshal([]byte(s), &e) == nil && e.Message == "pop3 upstream" {
				lines = append(lines, e.Dir+" "+e.Line)
				sessions[e.Session] = true
			}
		}
		return lines, sessions, buf.String()
	}
}

// TestTraceUpstream: at level trace the relay logs its commands and the
// upstream's status lines, with the POP3 session's id; the password, the
// token and SASL responses are redacted, listings and messages absent.
func TestTraceUpstream(t *testing.T) {
	f := newFake(t, &fake{user: "u", secret: "pa55-w0rd", msgs: fakeMsgs[:1]})
	log, lines := traced()
	b, err := New(Options{Addr: f.addr(), TLS: modes.TLSNone, Username: "u", Password: "pa55-w0rd", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := &proxy.Server{Backend: unchecked{b}, AuthFailureDelay: -1}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	c, err := pop3test.Dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("x", "y"); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"RETR 1", "TOP 1 0"} {
		if _, _, err := c.CmdMulti(cmd); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	got, sessions, all := lines()
	joined := strings.Join(got, "\n")
	for _, want := range []string{"in +OK fake ready\nout CAPA\nin +OK\nout USER u\nin +OK\nout PASS <redacted>\nin +OK logged in", "out RETR 1\nin +OK", "out QUIT\nin +OK bye"} {
		if !strings.Contains(joined, want) {
			t.Errorf("trace lacks %q:\n%s", want, joined)
		}
	}
	if len(sessions) != 1 || sessions[""] {
		t.Errorf("trace lines with sessions %v, want the POP3 session's id", sessions)
	}
	for _, secret := range []string{"pa55-w0rd", "Subject: one", "plain", "a1"} {
		if strings.Contains(all, secret) {
			t.Errorf("the log holds %q:\n%s", secret, all)
		}
	}

	// XOAUTH2 on two lines with a rejected token: the response and the
	// answer to the error challenge are redacted.
	f = newFake(t, &fake{xoauth2: "two-line", user: "u", secret: "good-token"})
	log, lines = traced()
	cl, err := Dial(context.Background(), ClientOptions{Addr: f.addr(), TLS: modes.TLSNone, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.AuthXOAUTH2(context.Background(), "u", "bad-token", false); err == nil {
		t.Fatal("bad token accepted")
	}
	if err := cl.AuthXOAUTH2(context.Background(), "u", "good-token", true); err != nil {
		t.Fatal(err)
	}
	got, _, all = lines()
	joined = strings.Join(got, "\n")
	if !strings.Contains(joined, "out AUTH XOAUTH2\nin + \nout <redacted>\nin + ") ||
		!strings.Contains(joined, "out <redacted>\nin -ERR [AUTH] Invalid credentials\nout AUTH XOAUTH2 <redacted>\nin +OK Welcome.") {
		t.Errorf("XOAUTH2 trace:\n%s", joined)
	}
	for _, secret := range []string{"bad-token", "good-token", base64.StdEncoding.EncodeToString([]byte("user=u\x01auth=Bearer "))[:16]} {
		if strings.Contains(all, secret) {
			t.Errorf("the log holds %q:\n%s", secret, all)
		}
	}
}
