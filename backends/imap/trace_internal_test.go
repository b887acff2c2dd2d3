package imap

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
)

// TestIMAPTracer feeds both directions octet by octet: literals are
// skipped, FETCH responses and secrets left out, long lines cut.
func TestIMAPTracer(t *testing.T) {
	var buf strings.Builder
	log := zerolog.New(&buf).Level(zerolog.TraceLevel)
	auth := new(atomic.Bool)
	in := &imapTracer{log: log, dir: "in", auth: auth}
	out := &imapTracer{log: log, dir: "out", auth: auth}
	feed := func(tr *imapTracer, s string) {
		for i := range len(s) {
			tr.feed([]byte{s[i]})
		}
	}
	long := strings.Repeat("x", 300)
	feed(in, "* OK ready\r\n")
	feed(out, "T1 LOGIN {5}\r\n")
	feed(in, "+ go on\r\n")
	feed(out, "alice {6}\r\nsecret\r\n")
	feed(in, "T1 OK done\r\n")
	feed(out, "T2 AUTHENTICATE PLAIN\r\n")
	feed(in, "+ \r\n")
	feed(out, "AGFsaWNlAHNlY3JldA==\r\n")
	feed(in, "T2 OK done\r\n")
	feed(out, "T3 UID FETCH 1 (UID BODY.PEEK[])\r\n")
	feed(in, "* 1 FETCH (UID 1 BODY[] {12}\r\nSubject: hi\n)\r\n")
	feed(in, "* SEARCH "+long+"\r\n")
	feed(in, "T3 OK done\r\n")

	var got []string
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var e struct{ Dir, Line string }
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Dir+" "+e.Line)
	}
	want := []string{
		"in * OK ready",
		"in + go on",
		"out T1 LOGIN <redacted>",
		"in T1 OK done",
		"out T2 AUTHENTICATE PLAIN",
		"in + ",
		"out <redacted>",
		"in T2 OK done",
		"out T3 UID FETCH 1 (UID BODY.PEEK[])",
		"in " + ("* SEARCH " + long)[:traceMax] + "...",
		"in T3 OK done",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("traced:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, s := range []string{"alice", "secret", "AGFsaWNl", "Subject"} {
		if strings.Contains(buf.String(), s) {
			t.Errorf("the log holds %q", s)
		}
	}
}
