package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/tlsconf"
)

// checkTimeout bounds the check of one backend.
const checkTimeout = 30 * time.Second

func (c *cli) check(ctx context.Context, args []string) error {
	fs := c.flags("check", "-config FILE [-offline]", "Validate the configuration file and print every problem, then try the\n"+
		"TLS certificate, the state directory and each account's backend and print\nOK or FAIL for each. Exits 1 if anything failed.\n\n"+
		"With -offline, no upstream server is contacted and no Maildir opened: the\n"+
		"file, the certificate files and the state directory are checked and the\n"+
		"backends built (ca_file, token_key_file), as before a start (systemd\n"+
		"ExecStartPre), when an upstream may be unreachable.")
	path := fs.String("config", "", "configuration `file` (YAML)")
	offline := fs.Bool("offline", false, "check the file, certificate files and state directory only; contact no upstream")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return usageError("-config is required")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s: configuration valid, %d account(s)\n", *path, len(cfg.Accounts))

	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	ok := true
	report := func(what, detail string, err error) {
		if err != nil {
			ok = false
			fmt.Fprintf(tw, "FAIL\t%s\t%s: %s\n", what, detail, oneLine(err))
		} else {
			fmt.Fprintf(tw, "OK\t%s\t%s\n", what, detail)
		}
	}
	if cfg.TLS != nil {
		detail, err := tlsconf.Check(cfg)
		report("tls", detail, err)
	}
	if err := app.CheckOwner(cfg.StateDir, *path); err != nil {
		report("state", cfg.StateDir, err)
	} else if cfg.State.Postgres() { // no cache.db: the database is checked below
		report("state", cfg.StateDir+" (control socket and certificate; the state is in PostgreSQL)", nil)
	} else {
		detail, err := app.CheckState(cfg.StateDir)
		report("state", detail, err)
	}
	// The backends are built on a scratch store: the real one may be held
	// by a running server, and check must not change it.
	scratch, err := os.MkdirTemp("", "popbridge-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	bs, err := app.OpenBackends(scratch, cfg.StateDir, nil) // the tokens popbridge auth stored
	if err != nil {
		return err
	}
	defer bs.Close()
	if cfg.State.Postgres() { // the tokens popbridge auth stored are in the database
		report("state", "PostgreSQL (state.driver postgres)", bs.ShareTokens(cfg))
	}
	for _, a := range cfg.Accounts {
		if *offline {
			// Built as serve builds it (ca_file, token_key_file, ...),
			// which contacts no upstream; not tried.
			if _, err := bs.New(a); err != nil {
				report(a.User, app.Describe(a), err)
			} else {
				fmt.Fprintf(tw, "SKIP\t%s\t%s (not tried: -offline)\n", a.User, app.Describe(a))
			}
			continue
		}
		if err := checkAccount(ctx, a, bs); err != nil {
			report(a.User, app.Describe(a), errors.New(plainFailure(a, *path, err)))
		} else {
			report(a.User, app.Describe(a), nil)
		}
	}
	if cfg.Listen.Submission != "" || cfg.Listen.Submissions != "" {
		for _, a := range cfg.Accounts {
			fmt.Fprintf(tw, "SEND\t%s\t%s\n", a.User, app.DescribeSend(a)) // not tried
		}
	}
	tw.Flush()
	if !ok {
		return errReported
	}
	return nil
}

func checkAccount(ctx context.Context, a config.Account, bs *app.Backends) error {
	b, err := bs.New(a)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	return b.Check(ctx)
}

// oneLine keeps a table row on one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
