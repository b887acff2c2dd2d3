package proxy_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/memback"
	. "github.com/popbridge/popbridge/proxy"
)

var capaAuth = []string{"+OK Capability list follows", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "SASL PLAIN", "."}
var capaTrans = []string{"+OK Capability list follows", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "."}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestConversations(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{"greeting has no APOP timestamp", []step{{"", []string{"+OK POP3 server ready."}}}},
		{"capa before login", []step{{"", []string{"+OK*"}}, {"CAPA", capaAuth}}},
		{"capa is case-insensitive", []step{{"", []string{"+OK*"}}, {"capa", capaAuth}}},
		{"transaction commands need login", []step{
			{"", []string{"+OK*"}},
			{"STAT", []string{"-ERR Not logged in."}},
			{"LIST", []string{"-ERR Not logged in."}},
		}},
		{"noop needs login", []step{{"", []string{"+OK*"}}, {"NOOP", []string{"-ERR*"}}}},
		{"pass without user", []step{{"", []string{"+OK*"}}, {"PASS secret", []string{"-ERR PASS must follow USER."}}}},
		{"pass must follow user directly", []step{
			{"", []string{"+OK*"}},
			{"USER alice", []string{"+OK"}},
			{"CAPA", capaAuth},
			{"PASS secret", []string{"-ERR PASS must follow USER."}},
		}},
		{"user answers the same for unknown users", []step{
			{"", []string{"+OK*"}},
			{"USER nobody", []string{"+OK"}},
			{"PASS x", []string{"-ERR [AUTH] Authentication failed."}},
			{"USER alice", []string{"+OK"}},
			{"PASS wrong", []string{"-ERR [AUTH] Authentication failed."}},
			{"USER alice", []string{"+OK"}},
			{"PASS secret", []string{"+OK Logged in."}},
		}},
		{"password with spaces", []step{
			{"", []string{"+OK*"}},
			{"USER bob", []string{"+OK"}},
			{"PASS pass word", []string{"+OK Logged in."}},
			{"STAT", []string{"+OK 0 0"}},
			{"LIST", []string{"+OK*", "."}},
		}},
		{"apop and last", []step{
			{"", []string{"+OK*"}},
			{"APOP alice 0123456789abcdef0123456789abcdef", []string{"-ERR*"}},
			{"USER alice", []string{"+OK"}},
			{"PASS secret", []string{"+OK*"}},
			{"LAST", []string{"-ERR*"}},
		}},
		{"quit before login", []step{{"", []string{"+OK*"}}, {"QUIT", []string{"+OK*"}}}},
		{"transaction", []step{
			{"", []string{"+OK*"}},
			{"USER alice", []string{"+OK"}},
			{"PASS secret", []string{"+OK Logged in."}},
			{"CAPA", capaTrans},
			{"STAT", []string{"+OK 3 100"}},
			{"LIST", []string{"+OK*", "1 23", "2 43", "3 34", "."}},
			{"LIST 2", []string{"+OK 2 43"}},
			{"UIDL", []string{"+OK*", "1 uid-1", "2 uid-2", "3 uid-3", "."}},
			{"UIDL 3", []string{"+OK 3 uid-3"}},
			{"NOOP", []string{"+OK"}},
			{"USER alice", []string{"-ERR Already logged in."}},
			{"RETR 2", []string{"+OK 43 octets", "Subject: two", "", "line 1", "..dot line", "line 3", "."}},
			{"RETR 3", []string{"+OK 34 octets", "Subject: three", "", "no final newline", "."}},
			{"TOP 2 0", []string{"+OK", "Subject: two", "", "."}},
			{"TOP 2 1", []string{"+OK", "Subject: two", "", "line 1", "."}},
			{"TOP 2 99999999999999999999", []string{"+OK", "Subject: two", "", "line 1", "..dot line", "line 3", "."}},
			{"DELE 1", []string{"+OK Message 1 deleted."}},
			{"STAT", []string{"+OK 2 77"}},
			{"LIST", []string{"+OK*", "2 43", "3 34", "."}},
			{"UIDL", []string{"+OK*", "2 uid-2", "3 uid-3", "."}},
			{"LIST 1", []string{"-ERR Message is deleted."}},
			{"UIDL 1", []string{"-ERR Message is deleted."}},
			{"RETR 1", []string{"-ERR Message is deleted."}},
			{"TOP 1 0", []string{"-ERR Message is deleted."}},
			{"DELE 1", []string{"-ERR Message is deleted."}},
			{"RSET", []string{"+OK*"}},
			{"STAT", []string{"+OK 3 100"}},
			{"LIST 1", []string{"+OK 1 23"}},
		}},
		{"message number syntax", []step{
			{"", []string{"+OK*"}},
			{"USER alice", []string{"+OK"}},
			{"PASS secret", []string{"+OK*"}},
			{"LIST 0", []string{"-ERR Invalid message number."}},
			{"LIST -1", []string{"-ERR Invalid message number."}},
			{"LIST +1", []string{"-ERR Invalid message number."}},
			{"LIST 0x1", []string{"-ERR Invalid message number."}},
			{"LIST 4", []string{"-ERR No such message."}},
			{"LIST 99999999999999999999999", []string{"-ERR No such message."}},
			{"LIST 1x", []string{"-ERR Invalid message number."}},
			{"LIST 1 2", []string{"-ERR Noise after message number."}},
			{"RETR", []string{"-ERR Message number missing."}},
			{"TOP 1", []string{"-ERR*"}},
			{"TOP 1 -1", []string{"-ERR Invalid line count."}},
			{"TOP x 1", []string{"-ERR Invalid message number."}},
			{"LIST 01", []string{"+OK 1 23"}},
			{"STAT x", []string{"-ERR Unexpected argument."}},
			{"stat", []string{"+OK 3 100"}},
			{"StAt", []string{"+OK 3 100"}},
		}},
		{"auth plain with initial response", []step{
			{"", []string{"+OK*"}},
			{"AUTH PLAIN " + b64("\x00alice\x00secret"), []string{"+OK Logged in."}},
			{"STAT", []string{"+OK 3 100"}},
		}},
		{"auth plain with authzid equal to user", []step{
			{"", []string{"+OK*"}},
			{"AUTH PLAIN " + b64("alice\x00alice\x00secret"), []string{"+OK Logged in."}},
		}},
		{"auth plain as another user is refused", []step{
			{"", []string{"+OK*"}},
			{"AUTH PLAIN " + b64("bob\x00alice\x00secret"), []string{"-ERR [AUTH]*"}},
		}},
		{"auth plain with continuation", []step{
			{"", []string{"+OK*"}},
			{"auth plain", []string{"+ "}},
			{b64("\x00alice\x00secret"), []string{"+OK Logged in."}},
		}},
		{"auth plain wrong password", []step{
			{"", []string{"+OK*"}},
			{"AUTH PLAIN", []string{"+ "}},
			{b64("\x00alice\x00nope"), []string{"-ERR [AUTH] Authentication failed."}},
			{"AUTH PLAIN " + b64("\x00alice\x00secret"), []string{"+OK Logged in."}},
		}},
		{"auth cancel", []step{
			{"", []string{"+OK*"}},
			{"AUTH PLAIN", []string{"+ "}},
			{"*", []string{"-ERR Authentication cancelled."}},
			{"CAPA", capaAuth},
		}},
		{"auth empty initial response", []step{
			{"", []string{"+OK*"}},
			{"AUTH PLAIN =", []string{"-ERR [AUTH] Invalid PLAIN authentication response."}},
			{"AUTH PLAIN", []string{"+ "}},
			{"=", []string{"-ERR [AUTH] Invalid PLAIN authentication response."}},
			{"AUTH PLAIN " + b64("alice\x00secret"), []string{"-ERR Too many invalid commands."}},
		}},
		{"auth invalid base64", []step{
			{"", []string{"+OK*"}},
			{"AUTH PLAIN !!!notbase64", []string{"-ERR [AUTH] Invalid base64*"}},
			{"AUTH PLAIN", []string{"+ "}},
			{"%%%", []string{"-ERR [AUTH] Invalid base64*"}},
			{"USER alice", []string{"+OK"}},
			{"PASS secret", []string{"+OK Logged in."}},
		}},
		{"auth lists mechanisms", []step{{"", []string{"+OK*"}}, {"AUTH", []string{"+OK", "PLAIN", "."}}}},
		{"auth unknown mechanism", []step{{"", []string{"+OK*"}}, {"AUTH CRAM-MD5", []string{"-ERR Unsupported authentication mechanism."}}}},
		{"stls without tls configured", []step{{"", []string{"+OK*"}}, {"STLS", []string{"-ERR STLS is not available."}}}},
		{"unknown command", []step{{"", []string{"+OK*"}}, {"XYZZY", []string{"-ERR Unknown command."}}}},
		{"nul in command", []step{{"", []string{"+OK*"}}, {"CA\x00PA", []string{"-ERR NUL octet in command."}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startServer(t, &Server{Backend: newMemBackend()})
			converse(t, dial(t, addr), tt.steps)
		})
	}
}

func TestQuitDeletes(t *testing.T) {
	b := newMemBackend()
	addr := startServer(t, &Server{Backend: b})
	cl := dial(t, addr)
	login(t, cl, "alice", "secret")
	converse(t, cl, []step{
		{"DELE 1", []string{"+OK*"}},
		{"DELE 3", []string{"+OK*"}},
		{"QUIT", []string{"+OK Logging out, 2 messages deleted."}},
	})
	cl.expectEOF()
	if got := strings.Join(b.deleted(), ","); got != "uid-1,uid-3" {
		t.Fatalf("deleted %q, want uid-1,uid-3", got)
	}
	if n := b.closed(); n != 1 {
		t.Fatalf("mailbox closed %d times, want 1", n)
	}
}

func TestQuitWithFailingDelete(t *testing.T) {
	b := newMemBackend()
	b.Inject(memback.Faults{Delete: errors.New("disk on fire: /secret/path")})
	addr := startServer(t, &Server{Backend: b})
	cl := dial(t, addr)
	login(t, cl, "alice", "secret")
	converse(t, cl, []step{
		{"DELE 1", []string{"+OK*"}},
		{"QUIT", []string{"-ERR [SYS/TEMP] Some deleted messages were not removed."}},
	})
	cl.expectEOF()
}

func TestDroppedSessionDeletesNothing(t *testing.T) {
	b := newMemBackend()
	addr := startServer(t, &Server{Backend: b})
	cl := dial(t, addr)
	login(t, cl, "alice", "secret")
	converse(t, cl, []step{{"DELE 1", []string{"+OK*"}}, {"DELE 2", []string{"+OK*"}}})
	cl.c.Close()
	waitFor(t, func() bool { return b.closed() == 1 })
	if d := b.deleted(); len(d) != 0 {
		t.Fatalf("deleted %v after a dropped connection", d)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestInUse(t *testing.T) {
	b := newMemBackend()
	addr := startServer(t, &Server{Backend: b})
	first := dial(t, addr)
	login(t, first, "alice", "secret")
	second := dial(t, addr)
	converse(t, second, []step{
		{"", []string{"+OK*"}},
		{"USER alice", []string{"+OK"}},
		{"PASS secret", []string{"-ERR [IN-USE] Mailbox is locked by another POP3 session."}},
	})
	// Another maildrop is not affected.
	converse(t, second, []step{{"USER bob", []string{"+OK"}}, {"PASS pass word", []string{"+OK Logged in."}}})
	converse(t, first, []step{{"QUIT", []string{"+OK*"}}})
	first.expectEOF()
	third := dial(t, addr)
	login(t, third, "alice", "secret")
}

func TestBackendErrorsStayOffTheWire(t *testing.T) {
	b := newMemBackend()
	b.Inject(memback.Faults{OpenMaildrop: errors.New("dial tcp 10.1.2.3:993: secret-host refused")})
	addr := startServer(t, &Server{Backend: b})
	cl := dial(t, addr)
	converse(t, cl, []step{
		{"", []string{"+OK*"}},
		{"USER alice", []string{"+OK"}},
		{"PASS secret", []string{"-ERR [SYS/TEMP] Temporary server failure, try again later."}},
	})
	b.Inject(memback.Faults{OpenMaildrop: fmt.Errorf("token revoked: %w", &Error{Code: CodeSysPerm, Text: "Run popbridge auth."})})
	converse(t, cl, []step{
		{"USER alice", []string{"+OK"}},
		{"PASS secret", []string{"-ERR [SYS/PERM] Run popbridge auth."}},
	})
	b.Inject(memback.Faults{List: errors.New("imap: select: secret")})
	converse(t, cl, []step{
		{"USER alice", []string{"+OK"}},
		{"PASS secret", []string{"-ERR [SYS/TEMP] Temporary server failure, try again later."}},
	})
	b.Inject(memback.Faults{Open: map[string]error{
		"uid-1": fmt.Errorf("imap: fetch: %w", ErrNoMessage),
		"uid-2": errors.New("imap: connection reset by 10.0.0.1"),
	}})
	converse(t, cl, []step{
		{"USER alice", []string{"+OK"}},
		{"PASS secret", []string{"+OK Logged in."}},
		{"RETR 1", []string{"-ERR Message was removed from the mailbox by another client."}},
		{"RETR 2", []string{"-ERR [SYS/TEMP] Temporary server failure, try again later."}},
		{"RETR 3", []string{"+OK 34 octets", "Subject: three", "", "no final newline", "."}},
	})
}

func TestStreamFailureClosesWithoutDot(t *testing.T) {
	b := newMemBackend()
	b.Set("alice", memback.Message{UID: "big", Body: "Subject: big\r\n\r\n" + strings.Repeat("line\r\n", 100000)})
	b.Inject(memback.Faults{BreakAfter: 300000, BreakErr: errBroken})
	addr := startServer(t, &Server{Backend: b})
	cl := dial(t, addr)
	login(t, cl, "alice", "secret")
	cl.send("RETR 1\r\n")
	if l := cl.line(); l != "+OK 600016 octets" {
		t.Fatalf("got %q", l)
	}
	cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var rest []byte
	buf := make([]byte, 4096)
	for {
		n, err := cl.br.Read(buf)
		rest = append(rest, buf[:n]...)
		if err != nil {
			break
		}
	}
	if strings.Contains(string(rest), "\r\n.\r\n") || strings.HasPrefix(string(rest), ".\r\n") {
		t.Fatalf("truncated message ended with a dot: %q", rest)
	}
	if strings.Contains(string(rest), "secret") {
		t.Fatalf("backend error reached the wire: %q", rest)
	}
}

func TestPipelining(t *testing.T) {
	addr := startServer(t, &Server{Backend: newMemBackend()})
	cl := dial(t, addr)
	cl.line()
	cl.send("USER alice\r\nPASS secret\r\nSTAT\r\nLIST 1\r\nDELE 1\r\nDELE 2\r\nSTAT\r\nUIDL\r\nRETR 3\r\nRSET\r\nQUIT\r\n")
	converse(t, cl, []step{
		{"", []string{"+OK", "+OK Logged in.", "+OK 3 100", "+OK 1 23", "+OK*", "+OK*", "+OK 1 34",
			"+OK*", "3 uid-3", ".", "+OK 34 octets", "Subject: three", "", "no final newline", ".", "+OK*", "+OK Logging out, 0 messages deleted."}},
	})
	cl.expectEOF()
}

func TestLongLines(t *testing.T) {
	addr := startServer(t, &Server{Backend: newMemBackend()})
	cl := dial(t, addr)
	cl.line()
	// 255 octets with CRLF is accepted.
	cl.send("USER " + strings.Repeat("a", 255-5-2) + "\r\n")
	if l := cl.line(); l != "+OK" {
		t.Fatalf("255-octet line: %q", l)
	}
	cl.send("USER " + strings.Repeat("a", 255-5-1) + "\r\n")
	if l := cl.line(); l != "-ERR Line too long." {
		t.Fatalf("256-octet line: %q", l)
	}
	// A long line is consumed without buffering it and answered once.
	cl.send("USER " + strings.Repeat("x", 60<<10) + "\r\nCAPA\r\n")
	if l := cl.line(); l != "-ERR Line too long." {
		t.Fatalf("long line: %q", l)
	}
	converse(t, cl, []step{{"", capaAuth}, {"FOO", []string{"-ERR Too many invalid commands."}}})
	cl.expectEOF()
}

// TestJunkLine: a line without a line end gets -ERR and the connection is
// closed once 64 KiB of it arrived, before and after login and in an AUTH
// exchange, not at the idle timeout.
func TestJunkLine(t *testing.T) {
	for _, tt := range []struct {
		name   string
		before []step
	}{
		{"before login", []step{{"", []string{"+OK*"}}}},
		{"after login", []step{{"", []string{"+OK*"}}, {"USER alice", []string{"+OK"}}, {"PASS secret", []string{"+OK Logged in."}}}},
		{"in an AUTH exchange", []step{{"", []string{"+OK*"}}, {"AUTH PLAIN", []string{"+ "}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := startServer(t, &Server{Backend: newMemBackend(), AuthIdleTimeout: time.Minute})
			cl := dial(t, addr)
			converse(t, cl, tt.before)
			// The client goes on sending: the reply still arrives.
			go func() {
				junk := []byte(strings.Repeat("x", 4096))
				for i := 0; i < 1024; i++ {
					if _, err := cl.c.Write(junk); err != nil {
						return
					}
				}
			}()
			start := time.Now()
			if l := cl.line(); l != "-ERR Line too long; closing the connection." {
				t.Fatalf("junk line: %q", l)
			}
			cl.expectEOF()
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("closed after %v", d)
			}
		})
	}
}

func TestBadCommandLimits(t *testing.T) {
	addr := startServer(t, &Server{Backend: newMemBackend()})
	cl := dial(t, addr)
	converse(t, cl, []step{
		{"", []string{"+OK*"}},
		{"FOO", []string{"-ERR Unknown command."}},
		{"BAR", []string{"-ERR Unknown command."}},
		{"BAZ", []string{"-ERR Too many invalid commands."}},
	})
	cl.expectEOF()

	cl = dial(t, addr)
	login(t, cl, "alice", "secret")
	for i := 1; i < 20; i++ {
		converse(t, cl, []step{{"FOO", []string{"-ERR Unknown command."}}, {"LIST 9", []string{"-ERR No such message."}}})
	}
	converse(t, cl, []step{{"FOO", []string{"-ERR Too many invalid commands."}}})
	cl.expectEOF()
}

func TestIdleTimeouts(t *testing.T) {
	b := newMemBackend()
	addr := startServer(t, &Server{Backend: b, AuthIdleTimeout: 100 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	cl := dial(t, addr)
	cl.line()
	cl.expectEOF()

	cl = dial(t, addr)
	login(t, cl, "alice", "secret")
	converse(t, cl, []step{{"DELE 1", []string{"+OK*"}}})
	converse(t, cl, []step{{"", []string{"-ERR Disconnected for inactivity."}}})
	cl.expectEOF()
	if d := b.deleted(); len(d) != 0 {
		t.Fatalf("idle timeout deleted %v", d)
	}
}

func TestWriteTimeout(t *testing.T) {
	b := newMemBackend()
	b.Set("alice", memback.Message{UID: "big", Body: "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 998)+"\r\n", 20000)})
	srv := &Server{Backend: b, WriteTimeout: 200 * time.Millisecond}
	addr := startServer(t, srv)
	cl := dial(t, addr)
	login(t, cl, "alice", "secret")
	cl.send("RETR 1\r\n")
	// Do not read: the server must give up and free the session.
	waitFor(t, func() bool { return b.closed() == 1 })
}

func TestCleartextPolicy(t *testing.T) {
	tlsCfg, pool := testTLSConfig(t)
	addr := startServer(t, &Server{Backend: newMemBackend(), TLSConfig: tlsCfg, Cleartext: CleartextPolicy{Mode: CleartextNever}})
	cl := dial(t, addr)
	converse(t, cl, []step{
		{"", []string{"+OK*"}},
		{"CAPA", []string{"+OK*", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS", "."}},
		{"USER alice", []string{"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS first."}},
		{"AUTH PLAIN " + b64("\x00alice\x00secret"), []string{"-ERR [AUTH] Plaintext*"}},
		{"AUTH", []string{"+OK", "."}},
		{"STLS", []string{"+OK Begin TLS negotiation now."}},
	})
	tc := tls.Client(cl.c, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	cl = newClient(t, tc)
	converse(t, cl, []step{
		{"CAPA", capaAuth},
		{"STLS", []string{"-ERR Command not permitted when TLS active."}},
		{"USER alice", []string{"+OK"}},
		{"PASS secret", []string{"+OK Logged in."}},
	})

	for _, tc := range []struct {
		policy CleartextPolicy
		allow  bool
	}{
		{CleartextPolicy{}, true}, // loopback by default
		{CleartextPolicy{Mode: CleartextAlways}, true},
		{CleartextPolicy{Mode: CleartextNever}, false},
		{CleartextPolicy{Mode: CleartextNetworks, Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, true},
		{CleartextPolicy{Mode: CleartextNetworks, Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, false},
	} {
		if got := tc.policy.Allows(netip.MustParseAddr("127.0.0.1")); got != tc.allow {
			t.Errorf("%+v allows 127.0.0.1 = %v, want %v", tc.policy, got, tc.allow)
		}
	}
	if (CleartextPolicy{}).Allows(netip.MustParseAddr("192.0.2.1")) {
		t.Error("default policy allows a non-loopback address")
	}
}

func TestSTLSInjection(t *testing.T) {
	tlsCfg, pool := testTLSConfig(t)
	b := newMemBackend()
	addr := startServer(t, &Server{Backend: b, TLSConfig: tlsCfg})
	cl := dial(t, addr)
	converse(t, cl, []step{{"", []string{"+OK*"}}, {"USER alice", []string{"+OK"}}})
	// Pipelined plaintext after STLS must not be executed after TLS.
	cl.send("STLS\r\nPASS secret\r\nSTAT\r\n")
	if l := cl.line(); l != "+OK Begin TLS negotiation now." {
		t.Fatalf("STLS: %q", l)
	}
	tc := tls.Client(cl.c, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	cl = newClient(t, tc)
	// The pending USER is gone too.
	converse(t, cl, []step{
		{"STAT", []string{"-ERR Not logged in."}},
		{"PASS secret", []string{"-ERR PASS must follow USER."}},
		{"USER alice", []string{"+OK"}},
		{"PASS secret", []string{"+OK Logged in."}},
	})
}

func TestImplicitTLS(t *testing.T) {
	tlsCfg, pool := testTLSConfig(t)
	srv := &Server{Backend: newMemBackend(), TLSConfig: tlsCfg, Cleartext: CleartextPolicy{Mode: CleartextNever}, AuthFailureDelay: -1}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln)
	t.Cleanup(func() { srv.Close() })

	if _, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS11}); err == nil {
		t.Fatal("TLS 1.1 handshake succeeded")
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, c)
	converse(t, cl, []step{
		{"", []string{"+OK*"}},
		{"CAPA", capaAuth},
		{"AUTH PLAIN " + b64("\x00alice\x00secret"), []string{"+OK Logged in."}},
		{"QUIT", []string{"+OK*"}},
	})
	cl.expectEOF()
}

func TestAuthFailureDelay(t *testing.T) {
	srv := &Server{Backend: newMemBackend(), AuthFailureDelay: 100 * time.Millisecond, MaxAuthFailureDelay: 250 * time.Millisecond}
	addr := startServer(t, srv)
	cl := dial(t, addr)
	cl.line()
	var got []time.Duration
	for i := 0; i < 4; i++ {
		start := time.Now()
		converse(t, cl, []step{{"USER alice", []string{"+OK"}}, {"PASS wrong", []string{"-ERR [AUTH]*"}}})
		got = append(got, time.Since(start))
	}
	// 100, 200, 250 (cap), 250 ms.
	want := []time.Duration{100, 200, 250, 250}
	for i := range want {
		if got[i] < want[i]*time.Millisecond {
			t.Errorf("failure %d answered after %v, want at least %v ms", i+1, got[i], want[i])
		}
	}
	// A success clears the penalty.
	converse(t, cl, []step{{"USER alice", []string{"+OK"}}, {"PASS secret", []string{"+OK*"}}})
	if d := PenaltyFailForTest(srv, netip.MustParseAddr("127.0.0.1"), time.Second, time.Minute); d != time.Second {
		t.Errorf("penalty after success: %v, want 1s", d)
	}

	trusted := &Server{Backend: newMemBackend(), AuthFailureDelay: time.Hour, TrustedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	cl = dial(t, startServer(t, trusted))
	cl.line()
	converse(t, cl, []step{{"USER alice", []string{"+OK"}}, {"PASS wrong", []string{"-ERR [AUTH]*"}}})
}

func TestConnectionLimits(t *testing.T) {
	addr := startServer(t, &Server{Backend: newMemBackend(), MaxConnections: 3, MaxConnectionsPerIP: 2})
	a, b := dial(t, addr), dial(t, addr)
	a.line()
	b.line()
	c := dial(t, addr)
	if l := c.line(); l != "-ERR [SYS/TEMP] Too many connections from your address." {
		t.Fatalf("third connection: %q", l)
	}
	c.expectEOF()
	converse(t, a, []step{{"QUIT", []string{"+OK*"}}})
	a.expectEOF()
	time.Sleep(50 * time.Millisecond)
	d := dial(t, addr)
	if l := d.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("after one left: %q", l)
	}
}

func TestPanicRecovery(t *testing.T) {
	b := newMemBackend()
	b.Inject(memback.Faults{PanicOn: "uid-2"})
	addr := startServer(t, &Server{Backend: b})
	cl := dial(t, addr)
	login(t, cl, "alice", "secret")
	converse(t, cl, []step{{"DELE 1", []string{"+OK*"}}})
	cl.send("RETR 2\r\n")
	cl.expectEOF()
	if len(b.deleted()) != 0 {
		t.Fatal("a panicking session deleted messages")
	}
	// The server goes on, and the lock was released.
	login(t, dial(t, addr), "alice", "secret")
}

func TestShutdown(t *testing.T) {
	b := newMemBackend()
	srv := &Server{Backend: b, AuthFailureDelay: -1}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	idle := dial(t, ln.Addr().String())
	login(t, idle, "alice", "secret")
	converse(t, idle, []step{{"DELE 1", []string{"+OK*"}}})
	pre := dial(t, ln.Addr().String())
	pre.line()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	converse(t, idle, []step{{"", []string{"-ERR [SYS/TEMP] Server shutting down."}}})
	idle.expectEOF()
	pre.line()
	pre.expectEOF()
	if d := b.deleted(); len(d) != 0 {
		t.Fatalf("shutdown deleted %v", d)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("listener still accepts after Shutdown")
	}
}

func TestQuitReleasesLockBeforeReply(t *testing.T) {
	addr := startServer(t, &Server{Backend: newMemBackend()})
	for i := 0; i < 50; i++ {
		cl := dial(t, addr)
		login(t, cl, "alice", "secret")
		converse(t, cl, []step{{"QUIT", []string{"+OK*"}}})
		cl.c.Close()
	}
}

// wrapMailbox is a decorator without the optional interfaces.
type wrapMailbox struct{ Mailbox }

func (w wrapMailbox) Unwrap() Mailbox { return w.Mailbox }

// wrapBackend wraps each mailbox of b in a wrapMailbox.
type wrapBackend struct{ b Backend }

func (w wrapBackend) Login(ctx context.Context, user, pass string) (Mailbox, error) {
	mb, err := w.b.Login(ctx, user, pass)
	if err != nil {
		return nil, err
	}
	return wrapMailbox{mb}, nil
}

func TestCommitterSeesDeletedAndRetrieved(t *testing.T) {
	for _, wrap := range []bool{false, true} {
		t.Run(fmt.Sprintf("wrapped=%v", wrap), func(t *testing.T) { testCommitter(t, wrap) })
	}
}

func testCommitter(t *testing.T, wrap bool) {
	b := newMemBackend()
	b.Commit = true
	var backend Backend = b
	if wrap { // hide the Committer behind an Unwrapper
		backend = wrapBackend{b}
	}
	addr := startServer(t, &Server{Backend: backend})

	cl := dial(t, addr)
	login(t, cl, "alice", "secret")
	cl.send("RETR 3\r\n")
	if got := cl.multi(); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("RETR 3: %q", got)
	}
	cl.send("TOP 2 0\r\n")
	cl.multi()
	cl.send("RETR 1\r\n")
	cl.multi()
	converse(t, cl, []step{
		{"DELE 2", []string{"+OK*"}},
		{"QUIT", []string{"+OK Logging out, 1 messages deleted."}},
	})
	cl.expectEOF()

	// A session that retrieves nothing still commits, with empty lists.
	cl = dial(t, addr)
	login(t, cl, "alice", "secret")
	converse(t, cl, []step{{"QUIT", []string{"+OK*"}}})
	cl.expectEOF()

	// A dropped session commits nothing.
	cl = dial(t, addr)
	login(t, cl, "alice", "secret")
	cl.send("RETR 1\r\n")
	cl.multi()
	cl.c.Close()
	waitFor(t, func() bool { return b.closed() == 3 })

	commits := b.Stats().Commits
	if len(commits) != 2 {
		t.Fatalf("%d commits, want 2: %q", len(commits), commits)
	}
	if got := fmt.Sprint(commits[0].Deleted, commits[0].Retrieved); got != "[uid-2] [uid-1 uid-3]" {
		t.Errorf("first commit (deleted, retrieved) = %s", got)
	}
	if len(commits[1].Deleted)+len(commits[1].Retrieved) != 0 {
		t.Errorf("second commit = %q, want empty lists", commits[1])
	}
	if d := b.deleted(); len(d) != 0 {
		t.Errorf("Delete called with %v; Commit replaces it", d)
	}
}

func TestSetCleartextWhileRunning(t *testing.T) {
	srv := &Server{Backend: newMemBackend()}
	addr := startServer(t, srv)
	login(t, dial(t, addr), "alice", "secret") // loopback: allowed by default

	srv.SetCleartext(CleartextPolicy{Mode: CleartextNever})
	cl := dial(t, addr)
	cl.line() // greeting
	cl.send("USER alice\r\n")
	reply := cl.line()
	if strings.HasPrefix(reply, "+OK") {
		cl.send("PASS secret\r\n")
		reply = cl.line()
	}
	if !strings.HasPrefix(reply, "-ERR") {
		t.Errorf("cleartext login after SetCleartext(never): %q", reply)
	}
	if p := srv.CleartextPolicy(); p.Mode != CleartextNever {
		t.Errorf("CleartextPolicy() = %+v", p)
	}
}
