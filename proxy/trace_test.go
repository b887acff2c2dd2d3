package proxy_test

import (
	"encoding/json"
	"strings"
	"testing"

	. "github.com/popbridge/popbridge/proxy"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/internal/dovecottest"
)

// TestTrace: at level trace every command and every status line is
// logged with the session id; passwords, SASL responses, listings and
// message content are not.
func TestTrace(t *testing.T) {
	var buf dovecottest.SyncBuffer
	log := zerolog.New(&buf).Level(zerolog.TraceLevel)
	addr := startServer(t, &Server{Backend: newMemBackend(), Logger: &log})
	cl := dial(t, addr)
	converse(t, cl, []step{
		{"", []string{"+OK*"}},
		{"USER alice", []string{"+OK"}},
		{"PASS wrong pass", []string{"-ERR [AUTH]*"}},
		{"AUTH PLAIN", []string{"+ "}},
		{b64("\x00alice\x00hunter2"), []string{"-ERR [AUTH]*"}},
		{"AUTH PLAIN " + b64("\x00alice\x00secret"), []string{"+OK Logged in."}},
		{"LIST", []string{"+OK*", "1 23", "2 43", "3 34", "."}},
		{"RETR 1", []string{"+OK 23 octets", "Subject: one", "", "Hello", "."}},
		{"TOP 2 0", []string{"+OK", "Subject: two", "", "."}},
		{"QUIT", []string{"+OK*"}},
	})
	cl.expectEOF()

	var got []string
	sessions := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var e struct{ Level, Message, Session, Dir, Line string }
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if e.Level == "trace" {
			if e.Message != "pop3" {
				t.Errorf("trace line %q", l)
			}
			got = append(got, e.Dir+" "+e.Line)
			sessions[e.Session] = true
		}
	}
	want := []string{
		"out +OK POP3 server ready.",
		"in USER alice", "out +OK",
		"in PASS <redacted>", "out -ERR [AUTH] Authentication failed.",
		"in AUTH PLAIN", "out + ", "in <redacted>", "out -ERR [AUTH] Authentication failed.",
		"in AUTH PLAIN <redacted>", "out +OK Logged in.",
		"in LIST", "out +OK scan listing follows",
		"in RETR 1", "out +OK 23 octets",
		"in TOP 2 0", "out +OK",
		"in QUIT", "out +OK Logging out, 0 messages deleted.",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("trace:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(sessions) != 1 || sessions[""] {
		t.Errorf("trace lines carry sessions %v, want one id", sessions)
	}
	for _, secret := range []string{"wrong pass", "hunter2", "secret", b64("\x00alice\x00secret"), "Hello", "Subject", "uid-1"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("the log holds %q:\n%s", secret, buf.String())
		}
	}
}

// TestNoTraceAtDebug: at level debug nothing of the conversation is
// logged.
func TestNoTraceAtDebug(t *testing.T) {
	var buf dovecottest.SyncBuffer
	log := zerolog.New(&buf).Level(zerolog.DebugLevel)
	addr := startServer(t, &Server{Backend: newMemBackend(), Logger: &log})
	cl := dial(t, addr)
	login(t, cl, "alice", "secret")
	converse(t, cl, []step{{"QUIT", []string{"+OK*"}}})
	cl.expectEOF()
	if strings.Contains(buf.String(), `"pop3"`) {
		t.Errorf("conversation logged at debug:\n%s", buf.String())
	}
}
