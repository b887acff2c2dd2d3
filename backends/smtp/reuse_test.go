package smtp_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbridge/popbridge/backends"
	smtpb "github.com/popbridge/popbridge/backends/smtp"
	"github.com/popbridge/popbridge/internal/postfixtest"
)

// TestConnectionReuse: transactions that follow a successful one reuse
// its logged-in connection (one connect and one AUTH at the upstream for
// three messages); a refused recipient does not keep it; a kept
// connection the upstream has dropped in the meantime is replaced
// without the client noticing, and every message arrives once.
func TestConnectionReuse(t *testing.T) {
	users := map[string]string{alice: "upstream-pw", bob: "bob-pw"}
	p := postfixtest.Start(t, postfixtest.Options{Users: users, ExtraMain: "smtpd_timeout = 2s"})
	s := newSender(t, smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: users[alice], KeepIdle: time.Minute})
	for i := range 3 {
		if _, err := send(s, alice, []string{bob}, bytes.NewReader(edge)); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		delivered(t, p, bob, i+1, edge)
	}
	if n := strings.Count(p.Log(), "sasl_method=PLAIN"); n != 3 {
		t.Fatalf("%d messages logged in the upstream, want 3", n)
	}
	if n := strings.Count(p.Log(), "connect from localhost"); n != 1+countProbes(p) {
		t.Fatalf("%d connections for 3 messages, want 1:\n%s", n-countProbes(p), p.Log())
	}
	// Postfix drops the idle connection after smtpd_timeout; the next
	// transaction notices at MAIL and uses a new connection.
	time.Sleep(3500 * time.Millisecond)
	if _, err := send(s, alice, []string{bob}, bytes.NewReader(edge)); err != nil {
		t.Fatalf("after the upstream dropped the kept connection: %v", err)
	}
	delivered(t, p, bob, 4, edge)
	time.Sleep(300 * time.Millisecond)
	if msgs, _ := p.Messages(bob); len(msgs) != 4 {
		t.Fatalf("%d messages, want 4", len(msgs))
	}
	t.Logf("smtp: backend connection reuse: 3 messages over 1 upstream connection; a dropped kept connection replaced at once")
}

// countProbes is the number of connections postfixtest made itself to
// see that Postfix was up (before the test's first connect).
func countProbes(p *postfixtest.Postfix) int {
	log := p.Log()
	i := strings.Index(log, "sasl_method=")
	if i < 0 {
		return strings.Count(log, "connect from localhost")
	}
	// Connections before the first login's, minus that login's own.
	return strings.Count(log[:i], "connect from localhost") - 1
}

// TestConcurrentReuse: clients sending at the same time keep their
// upstream connections between messages, more than MaxIdle of them,
// instead of logging in anew for each message (3 rounds of 8 messages
// sent at once: 8 connections, not 8+4+4).
func TestConcurrentReuse(t *testing.T) {
	users := map[string]string{alice: "upstream-pw", bob: "bob-pw"}
	p := postfixtest.Start(t, postfixtest.Options{Users: users})
	s := newSender(t, smtpb.Options{Addr: p.Addr, ServerName: "localhost", RootCAs: p.CertPool(), Username: alice, Password: users[alice], MaxIdle: 2})
	const clients, rounds = 8, 3
	ctx := context.Background()
	// One message first, alone, so that countProbes can tell
	// postfixtest's own connections from the test's.
	if _, err := send(s, alice, []string{bob}, bytes.NewReader(edge)); err != nil {
		t.Fatal(err)
	}
	for round := range rounds {
		txs := make([]backends.Transaction, clients)
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tx, err := s.Begin(ctx, alice, backends.MailOptions{})
				if err == nil {
					err = tx.Rcpt(ctx, bob)
				}
				if err == nil {
					_, err = tx.Data(ctx, bytes.NewReader(edge))
				}
				txs[i] = tx
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round+1, err)
			}
		}
		for _, tx := range txs { // all at once, after all were busy
			tx.Close()
		}
	}
	delivered(t, p, bob, 1+clients*rounds, edge)
	// The first message's connection is kept and used in round 1.
	if n := strings.Count(p.Log(), "connect from localhost") - countProbes(p); n != clients {
		t.Fatalf("%d upstream connections for %d rounds of %d messages at once, want %d", n, rounds, clients, clients)
	}
	t.Logf("smtp: backend connection reuse: %d clients at once, %d rounds: %d upstream connections (MaxIdle 2)", clients, rounds, clients)
}
