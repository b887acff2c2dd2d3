package proxy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/internal/memback"
	. "github.com/popbridge/popbridge/proxy"
)

func TestTopOpener(t *testing.T) {
	// A TopOpener whose stream is the message with a marker line
	// appended, so the test can tell which path served a reply and that
	// the proxy still cut it.
	b := newMemBackend()
	b.Top = true
	b.TopSuffix = "via OpenTop\r\n"
	b.Inject(memback.Faults{Open: map[string]error{"uid-3": fmt.Errorf("gone: %w", ErrNoMessage)}})
	addr := startServer(t, &Server{Backend: b})
	cl := dial(t, addr)
	login(t, cl, "alice", "secret")

	cl.send("TOP 1 0\r\n")
	if got := cl.line(); got != "+OK" {
		t.Fatalf("TOP 1 0: %q", got)
	}
	if got, want := cl.multi(), "Subject: one\r\n\r\n"; got != want {
		t.Fatalf("TOP 1 0 sent %q, want %q (cut after the header)", got, want)
	}
	cl.send("TOP 2 1\r\n")
	cl.line()
	if got, want := cl.multi(), "Subject: two\r\n\r\nline 1\r\n"; got != want {
		t.Fatalf("TOP 2 1 sent %q, want %q", got, want)
	}
	// A line count beyond the body sends the whole stream: the proxy
	// trusts OpenTop to have ended it at the message's end.
	cl.send("TOP 1 50\r\n")
	cl.line()
	if got, want := cl.multi(), "Subject: one\r\n\r\nHello\r\nvia OpenTop\r\n"; got != want {
		t.Fatalf("TOP 1 50 sent %q, want %q", got, want)
	}
	// RETR never uses OpenTop.
	cl.send("RETR 1\r\n")
	cl.line()
	if got, want := cl.multi(), "Subject: one\r\n\r\nHello\r\n"; got != want {
		t.Fatalf("RETR 1 sent %q, want %q", got, want)
	}
	converse(t, cl, []step{
		{"TOP 3 1", []string{"-ERR Message was removed from the mailbox by another client."}},
		{"QUIT", []string{"+OK*"}},
	})
	if got, want := strings.Join(b.Stats().Tops, " "), "uid-1/0 uid-2/1 uid-1/50 uid-3/1"; got != want {
		t.Fatalf("OpenTop calls %q, want %q", got, want)
	}
}
