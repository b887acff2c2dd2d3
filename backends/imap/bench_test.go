package imap_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/popbridge/popbridge/backends"
	imapb "github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/modes"
)

// Benchmarks against a private Dovecot, side by side with Dovecot's own
// POP3 server on the same Maildir (see docs/benchmarks.md, "IMAP backend"):
//
//	go test -run '^$' -bench . -benchtime 20x ./backends/imap/
//	POPBRIDGE_BENCH_MESSAGES=10000 go test -run '^$' -bench Open ./backends/imap/

// benchMessages is the folder size for BenchmarkOpen.
func benchMessages(b *testing.B) int {
	if s := os.Getenv("POPBRIDGE_BENCH_MESSAGES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("POPBRIDGE_BENCH_MESSAGES=%q", s)
		}
		return n
	}
	return 2000
}

// fillMaildir delivers n messages of about size octets into user's Maildir
// (new/), as a delivery agent would, and warms Dovecot's indexes for both
// IMAP and POP3 so that neither side pays for indexing in the benchmark.
func fillMaildir(b *testing.B, d *dovecottest.Dovecot, user string, n, size int) {
	b.Helper()
	dir := d.MaildirPath(user)
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2)[:74] + "\n"
	body := strings.Repeat(line, max(1, size/len(line)))
	for i := range n {
		msg := fmt.Sprintf("From: Alice <alice@example.org>\nTo: Bob <bob@example.net>\nSubject: message %d\n"+
			"Message-ID: <bench-%d@example.org>\n\n%s", i, i, body)
		name := fmt.Sprintf("1700000000.M%07dP1.bench", i)
		if err := os.WriteFile(filepath.Join(dir, "new", name), []byte(msg), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.Chown(dir); err != nil {
		b.Fatal(err)
	}
	ic := imapDial(b, d, user)
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		b.Fatal(err)
	}
	if _, err := ic.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, RFC822Size: true}).Collect(); err != nil {
		b.Fatal(err)
	}
	ic.Logout().Wait()
	c := popLogin(b, d.POP3Addr, user, d.Users[user])
	multi(b, c, "UIDL")
	multi(b, c, "LIST")
	quit(b, c)
}

// BenchmarkOpen measures opening a maildrop of benchMessages messages
// with no new mail: the backend alone (Login, List, Close) cold (no
// cache: UID FETCH 1:*) and warm (cache: LOGIN and SELECT only), and as a
// POP3 client sees it (connect, USER, PASS, UIDL, LIST, QUIT) through
// popbridge (warm) and from Dovecot's POP3 server.
func BenchmarkOpen(b *testing.B) {
	n := benchMessages(b)
	const user, pass = "bench", "bench-pw"
	d := dovecottest.Start(b, dovecottest.Options{Users: map[string]string{user: pass}})
	fillMaildir(b, d, user, n, 2000)
	ctx := context.Background()
	opts := imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSNone, Username: user, Password: pass}

	open := func(b *testing.B, be *imapb.Backend) {
		mb, err := be.OpenMaildrop(ctx, backends.Login{})
		if err != nil {
			b.Fatal(err)
		}
		list, err := mb.List(ctx)
		if err != nil || len(list) != n {
			b.Fatalf("List: %d messages, %v", len(list), err)
		}
		if err := mb.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("backend-cold", func(b *testing.B) {
		be := newBackend(b, opts)
		for b.Loop() {
			open(b, be)
		}
	})
	warm := opts
	warm.Store = openStore(b, b.TempDir())
	warmBackend := newBackend(b, warm)
	b.Run("backend-warm", func(b *testing.B) {
		open(b, warmBackend)
		for b.Loop() {
			open(b, warmBackend)
		}
	})
	pop := func(b *testing.B, addr, u, p string) {
		c := popLogin(b, addr, u, p)
		if got := multi(b, c, "UIDL"); strings.Count(string(got), "\n") != n {
			b.Fatalf("UIDL: %d lines", strings.Count(string(got), "\n"))
		}
		multi(b, c, "LIST")
		quit(b, c)
	}
	addr := serve(b, warmBackend)
	b.Run("pop3-popbridge-warm", func(b *testing.B) {
		for b.Loop() {
			pop(b, addr, "x", "y")
		}
	})
	b.Run("pop3-dovecot", func(b *testing.B) {
		for b.Loop() {
			pop(b, d.POP3Addr, user, pass)
		}
	})
}

// BenchmarkDownload measures downloading 100 messages of 50 KB (RETR
// each, then QUIT) in 1 and in 16 concurrent sessions, each its own user,
// through popbridge (passthrough login to Dovecot IMAP) and from Dovecot
// POP3.
func BenchmarkDownload(b *testing.B) {
	const users, msgs, size = 16, 100, 50 << 10
	accounts := map[string]string{}
	for i := range users {
		accounts[fmt.Sprintf("u%02d", i)] = "pw"
	}
	d := dovecottest.Start(b, dovecottest.Options{Users: accounts})
	for u := range accounts {
		fillMaildir(b, d, u, msgs, size)
	}
	be := newBackend(b, imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSNone, Auth: modes.AuthPassthrough})
	addrs := map[string]string{"popbridge": serve(b, be), "dovecot": d.POP3Addr}
	for _, sessions := range []int{1, 16} {
		for _, name := range []string{"popbridge", "dovecot"} {
			b.Run(fmt.Sprintf("%s/sessions=%d", name, sessions), func(b *testing.B) {
				b.SetBytes(int64(sessions * msgs * size))
				for b.Loop() {
					var wg sync.WaitGroup
					for s := range sessions {
						wg.Go(func() {
							c := popLogin(b, addrs[name], fmt.Sprintf("u%02d", s), "pw")
							for i := 1; i <= msgs; i++ {
								multiRaw(b, c, fmt.Sprintf("RETR %d", i))
							}
							quit(b, c)
						})
					}
					wg.Wait()
				}
			})
		}
	}
}
