package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/popbridge/popbridge/config"
)

// checkTimeout bounds the check of one backend.
const checkTimeout = 30 * time.Second

func (c *cli) check(ctx context.Context, args []string) error {
	fs := c.flags("check", "-config FILE", "Validate the configuration file and print every problem, then try the\n"+
		"TLS certificate and each account's backend and print OK or FAIL for each.\nExits 1 if anything failed.")
	path := fs.String("config", "", "configuration `file` (YAML)")
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
		tc, err := cfg.TLS.Load()
		detail := cfg.TLS.CertFile
		var leaf *x509.Certificate
		if err == nil {
			leaf, err = x509.ParseCertificate(tc.Certificates[0].Certificate[0])
		}
		if err == nil {
			names := strings.Join(leaf.DNSNames, " ")
			if names == "" {
				names = leaf.Subject.CommonName
			}
			detail = fmt.Sprintf("%s, certificate for %s, expires %s", cfg.TLS.CertFile,
				names, leaf.NotAfter.Format(time.DateOnly))
			if time.Now().After(leaf.NotAfter) {
				err = fmt.Errorf("certificate expired on %s", leaf.NotAfter.Format(time.DateOnly))
			}
		}
		report("tls", detail, err)
	}
	for _, a := range cfg.Accounts {
		report(a.User, describe(a), checkAccount(ctx, cfg, a))
	}
	tw.Flush()
	if !ok {
		return errReported
	}
	return nil
}

func checkAccount(ctx context.Context, cfg *config.Config, a config.Account) error {
	b, err := newBackend(cfg, a)
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
