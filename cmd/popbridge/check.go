package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/control"
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
		detail, err := checkTLS(cfg)
		report("tls", detail, err)
	}
	if err := app.CheckOwner(cfg.StateDir, *path); err != nil {
		report("state", cfg.StateDir, err)
	} else {
		detail, err := checkState(cfg.StateDir)
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
	tw.Flush()
	if !ok {
		return errReported
	}
	return nil
}

// checkState describes the state directory: the running server's, or its
// cache file opened read-only, or a directory where one can be created.
func checkState(dir string) (string, error) {
	if r, ok, err := control.Ask(dir, control.Request{Op: "stats"}); err != nil {
		return dir, err
	} else if ok {
		return fmt.Sprintf("%s, in use by the running popbridge (pid %d), %d account(s) cached", dir, r.PID, len(r.Accounts)), nil
	}
	path := filepath.Join(dir, app.StoreFile)
	if _, err := os.Stat(path); err == nil {
		store, err := cache.Open(path, &cache.Options{ReadOnly: true})
		if errors.Is(err, cache.ErrNeedsMigration) {
			return fmt.Sprintf("%s (popbridge serve will migrate it: %v)", path, err), nil
		}
		if errors.Is(err, cache.ErrDamaged) {
			return dir, app.DamagedStore(err)
		}
		if err != nil {
			return path, err
		}
		defer store.Close()
		st, err := store.Stats()
		if err != nil {
			return path, err
		}
		return fmt.Sprintf("%s, %d account(s) cached", path, len(st)), nil
	}
	// No cache yet: the directory must be creatable and writable.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return dir, err
	}
	f, err := os.CreateTemp(dir, ".check-*")
	if err != nil {
		return dir, err
	}
	f.Close()
	os.Remove(f.Name())
	return fmt.Sprintf("%s (%s is created at the first start)", dir, app.StoreFile), nil
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

// checkTLS loads the server certificate without creating one: a
// self-signed certificate not created yet is reported as such.
func checkTLS(cfg *config.Config) (detail string, err error) {
	certFile, keyFile := cfg.TLSFiles()
	if cfg.TLS.SelfSigned {
		_, certErr := os.Stat(certFile)
		_, keyErr := os.Stat(keyFile)
		if errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist) {
			return fmt.Sprintf("%s (self-signed certificate created at the first start)", certFile), nil
		}
	}
	cert, err := tlsconf.LoadCert(certFile, keyFile)
	if err != nil {
		return certFile, err
	}
	leaf := cert.Leaf
	names := strings.Join(leaf.DNSNames, " ")
	if names == "" {
		names = leaf.Subject.CommonName
	}
	detail = fmt.Sprintf("%s, certificate for %s, expires %s", certFile, names, leaf.NotAfter.Format(time.DateOnly))
	if cfg.TLS.SelfSigned {
		detail += ", SHA-256 " + tlsconf.Fingerprint(leaf)
	}
	if time.Now().After(leaf.NotAfter) {
		return detail, fmt.Errorf("certificate expired on %s", leaf.NotAfter.Format(time.DateOnly))
	}
	return detail, nil
}
