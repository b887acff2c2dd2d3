package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/demomail"
	"github.com/popbridge/popbridge/internal/modes"
)

// The demo account.
const (
	demoUser = "demo"
	demoPass = "demo"
)

func (c *cli) demo(ctx context.Context, args []string) error {
	fs := c.flags("demo", "[-dir DIR] [-listen ADDR]", "Serve a sample Maildir over POP3 to user demo, password demo. No\n"+
		"configuration needed. The Maildir is created in DIR on the first run and\n"+
		"reused afterwards; delete DIR to start over. DIR is also the state\n"+
		"directory (popbridge cache stats -state DIR). Logins are accepted from\n"+
		"this machine only.")
	dir := fs.String("dir", "popbridge-demo", "`directory` for the sample Maildir and the state")
	addr := fs.String("listen", "127.0.0.1:1110", "`address` to listen on")
	if err := c.parse(fs, args); err != nil {
		return err
	}

	mdir := filepath.Join(*dir, "Maildir")
	created, err := demomail.Ensure(mdir, time.Now())
	if err != nil {
		return err
	}
	log, err := newLogger(c.stderr, config.Log{})
	if err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(demoPass), bcrypt.MinCost)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%w\n(is another popbridge running? choose another address with -listen)", err)
		}
		return err
	}
	defer l.Close() // a no-op once served
	cfg := &config.Config{
		StateDir: *dir, // cleartext_auth: loopback; no limits, TLS or listen.http
		Accounts: []config.Account{{User: demoUser, PasswordHash: string(hash), Backend: config.Backend{
			Type: config.TypeMaildir, Maildir: &config.MaildirBackend{Path: mdir, OnDelete: modes.Remove},
		}}},
	}
	a, err := app.Build(cfg, &log, app.Options{Listeners: map[string]net.Listener{"pop3": l}})
	if err != nil {
		return err
	}
	defer a.Close() // runs last: after the server stopped
	c.printDemoIntro(mdir, created, l.Addr(), &log)
	c.started(a)
	return a.Serve(ctx)
}

func (c *cli) printDemoIntro(mdir string, created bool, addr net.Addr, log *zerolog.Logger) {
	n := demomail.Count(mdir)
	state := "reusing"
	if created {
		state = "created"
	}
	host := urlHost(addr)
	fmt.Fprintf(c.stdout, "popbridge demo: serving %s (%s, %d message(s))\n", mdir, state, n)
	fmt.Fprintf(c.stdout, "POP3 on %s, user %q, password %q, no TLS.\n\n", addr, demoUser, demoPass)
	fmt.Fprintf(c.stdout, "Try it:\n")
	fmt.Fprintf(c.stdout, "  curl pop3://%s:%s@%s/1\n", demoUser, demoPass, host)
	fmt.Fprintf(c.stdout, "  curl pop3://%s:%s@%s/     (the list)\n\n", demoUser, demoPass, host)
	if n == 0 {
		fmt.Fprintf(c.stdout, "The Maildir is empty; delete %s to get the sample messages back.\n", filepath.Dir(mdir))
	}
	fmt.Fprintf(c.stdout, "Press Ctrl-C to stop.\n")
	log.Debug().Str("maildir", mdir).Msg("demo ready")
}

// urlHost returns addr as host:port for a URL, with an unspecified host
// (0.0.0.0 or ::) replaced by loopback.
func urlHost(addr net.Addr) string {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	ip := ta.IP
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
		if ta.IP.To4() == nil {
			ip = net.IPv6loopback
		}
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(ta.Port))
}
