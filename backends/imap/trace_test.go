package imap_test

import (
	"context"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/rs/zerolog"

	imapb "github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/modes"
)

// traceLines runs f with a backend logger at trace level and returns
// the "imap" trace lines as "dir line", and the whole log.
func traceLines(t *testing.T, f func(log *zerolog.Logger)) (lines []string, all string, sessions map[string]bool) {
	t.Helper()
	logs := &logRecorder{}
	l := zerolog.New(logs).Level(zerolog.TraceLevel)
	f(&l)
	sessions = map[string]bool{}
	for _, e := range logs.find("imap") {
		lines = append(lines, e["dir"].(string)+" "+e["line"].(string))
		s, _ := e["session"].(string)
		sessions[s] = true
	}
	return lines, logs.text(), sessions
}

func hasLine(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// TestTraceIMAP: at level trace the IMAP conversation is logged, with the
// POP3 session's id, LOGIN and AUTHENTICATE credentials and tokens
// redacted and no message content.
func TestTraceIMAP(t *testing.T) {
	ms := startMemServer(t, rev2)
	appendMessages(t, ms.client(t), "INBOX", 2, 300)
	loginOnly := startMemServer(t, imap.CapSet{imap.CapIMAP4rev1: {}}, "XOAUTH2") // no AUTH=PLAIN: LOGIN
	appendMessages(t, loginOnly.client(t), "INBOX", 2, 300)

	for _, tc := range []struct {
		name, addr string
		auth       modes.Auth
		want       string
	}{
		{"AUTHENTICATE PLAIN", ms.addr, modes.AuthPassword, "out T? AUTHENTICATE PLAIN"},
		{"LOGIN", loginOnly.addr, modes.AuthPassword, "out T? LOGIN " + "<redacted>"},
		{"XOAUTH2", ms.addr, modes.AuthXOAUTH2, "out T? AUTHENTICATE XOAUTH2"},
	} {
		lines, all, sessions := traceLines(t, func(log *zerolog.Logger) {
			b := newBackend(t, imapb.Options{Addr: tc.addr, TLS: modes.TLSNone, Auth: tc.auth, Username: memUser, Password: memPassword,
				TokenSource: tokens(goodToken), Logger: log})
			c := popLogin(t, serve(t, b), "x", "y")
			multi(t, c, "RETR 1")
			multi(t, c, "TOP 2 0")
			quit(t, c)
		})
		if len(lines) < 5 || !hasLine(lines, "in * OK") || !hasLine(lines, "out T") || !hasLine(lines, "in T") {
			t.Fatalf("%s: trace:\n%s", tc.name, strings.Join(lines, "\n"))
		}
		found := false
		for _, l := range lines {
			if len(l) > 6 && strings.HasPrefix(tc.want, l[:5]) && strings.HasPrefix(l[6:], tc.want[6:]) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no line %q in the trace:\n%s", tc.name, tc.want, strings.Join(lines, "\n"))
		}
		if len(sessions) != 1 || sessions[""] {
			t.Errorf("%s: trace lines with sessions %v, want the POP3 session's id", tc.name, sessions)
		}
		for _, secret := range []string{memPassword, goodToken, "dXNlcj1", "AHVzZXJAZXhhbXBsZS5vcmcAcGFzc3dvcmQ", "Subject: message", "xxxxxxxx"} {
			if strings.Contains(all, secret) {
				t.Errorf("%s: the log holds %q:\n%s", tc.name, secret, all)
			}
		}
	}
}

// TestTraceIMAPStartTLS: with STARTTLS the conversation after the
// upgrade is traced too.
func TestTraceIMAPStartTLS(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"frank": "right"}})
	lines, all, _ := traceLines(t, func(log *zerolog.Logger) {
		b := newBackend(t, imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSStartTLS, TLSConfig: d.TLSConfig(),
			Username: "frank", Password: "right", Logger: log})
		if err := b.Check(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	i := strings.Index(strings.Join(lines, "\n"), "out S0 STARTTLS\nin S0 OK")
	j := strings.Index(strings.Join(lines, "\n"), "AUTHENTICATE PLAIN <redacted>")
	if j < 0 {
		j = strings.Index(strings.Join(lines, "\n"), "AUTHENTICATE PLAIN\n")
	}
	if i < 0 || j < i || !hasLine(lines, "in T") {
		t.Errorf("trace of a STARTTLS login:\n%s", strings.Join(lines, "\n"))
	}
	if strings.Contains(all, "right") || strings.Contains(all, "AGZyYW5rAHJpZ2h0") {
		t.Errorf("the password is in the log:\n%s", all)
	}
}
