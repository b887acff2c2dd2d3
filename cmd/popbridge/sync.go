package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/backends/graph"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/control"
	"github.com/popbridge/popbridge/proxy"
)

// syncAccount runs popbridge sync.
func (c *cli) syncAccount(ctx context.Context, args []string) error {
	fs := c.flags("sync", "ACCOUNT -config FILE", "Learn what the first login of ACCOUNT would have to learn (Gmail, Graph: the\n"+
		"exact size of every message; IMAP: the folder's sizes and UIDs), before any client\n"+
		"logs in, and keep it in the state directory. Shows a progress bar on a\n"+
		"terminal, else a line every few seconds. Nothing is deleted upstream.\n"+
		"Interrupted (Ctrl-C), it keeps what it learnt; run it again to go on.\n"+
		"Run it while the server is stopped: a running server holds the state\n"+
		"directory, and does the same work in the background itself.")
	path := fs.String("config", "", "configuration `file` (YAML)")
	every := fs.Duration("every", 5*time.Second, "`interval` of the progress lines when not on a terminal")
	account, err := parseAccountArgs(fs, args)
	if err != nil {
		return err
	}
	if *path == "" {
		return usageError("-config is required")
	}
	cfg, acct, err := loadAccount(*path, account)
	if err != nil {
		return err
	}
	if acct.Passthrough() {
		return fmt.Errorf("account %s logs in upstream with the POP3 client's password, so only a client login can sync it", account)
	}
	if _, running, _ := control.Ask(cfg.StateDir, control.Request{Op: "stats"}); running {
		return fmt.Errorf("a popbridge server is running on state_dir %s: it syncs %s in the background itself "+
			"(see its log or the sync section of /status); stop it first to sync from here", cfg.StateDir, account)
	}
	// Warnings only: the progress is printed below.
	log := zerolog.New(c.stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	bs, err := app.OpenBackendsConfig(cfg, &log)
	if err != nil {
		return err
	}
	defer bs.Close() // stops the backend's work, then closes the store
	b, err := bs.New(*acct)
	if err != nil {
		return fmt.Errorf("account %s: %w", account, err)
	}

	p := &progressPrinter{w: c.stdout, account: account, tty: isTerminal(c.stdout), every: *every}
	if r, ok := b.(proxy.SyncReporter); ok {
		p.src = r.SyncProgress
	}
	fmt.Fprintf(c.stdout, "%s: listing the mailbox (%s)\n", account, app.Describe(*acct))
	start := time.Now()
	stop := p.start()
	listed := -1
	if g, ok := b.(syncer); ok { // gmail, graph
		err = g.Sync(ctx)
	} else {
		listed, err = warm(ctx, b, account)
	}
	stop()
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("interrupted; what was learnt is kept (%s), run popbridge sync again to go on", p.summary())
	case err != nil:
		return fmt.Errorf("account %s: %w", account, err)
	}
	took := time.Since(start).Round(time.Second)
	if listed >= 0 {
		fmt.Fprintf(c.stdout, "%s: done in %s: %d messages listed, their sizes and UIDLs kept; the first login offers them at once\n",
			account, took, listed)
		return nil
	}
	fmt.Fprintf(c.stdout, "%s: done in %s (%s); the first login offers every message at once\n", account, took, p.summary())
	return nil
}

// syncer is a backend that sizes every message in the background (gmail,
// graph): Sync does that work to the end.
type syncer interface {
	Sync(ctx context.Context) error
}

var (
	_ syncer = (*gmail.Backend)(nil)
	_ syncer = (*graph.Backend)(nil)
)

// warm opens the maildrop and lists it, the way a client login does,
// then closes it without changing anything upstream. It returns the
// number of messages listed.
func warm(ctx context.Context, b backends.Opener, account string) (int, error) {
	mb, err := b.OpenMaildrop(ctx, backends.Login{User: account})
	if err != nil {
		return 0, err
	}
	defer mb.Close()
	list, err := mb.List(ctx)
	return len(list), err
}

// progressPrinter shows the progress of src: a bar redrawn in place on a
// terminal, a line every interval otherwise.
type progressPrinter struct {
	w       io.Writer
	account string
	tty     bool
	every   time.Duration
	src     func() proxy.SyncProgress // nil: nothing to show
	last    proxy.SyncProgress
	drawn   bool
}

// start shows the progress until stop is called.
func (p *progressPrinter) start() (stop func()) {
	if p.src == nil {
		return func() {}
	}
	interval := p.every
	if p.tty {
		interval = 200 * time.Millisecond
	}
	stopTicks := proxy.Every(interval, func() { p.show(p.src()) })
	return func() {
		stopTicks()
		p.last = p.src()
		if p.tty && p.drawn {
			p.show(p.last)
			fmt.Fprintln(p.w)
		}
	}
}

// show prints one update.
func (p *progressPrinter) show(s proxy.SyncProgress) {
	if s.Total == 0 {
		return
	}
	p.last = s
	if !p.tty {
		fmt.Fprintf(p.w, "%s: %s\n", p.account, p.summary())
		return
	}
	const width = 30
	filled := min(width, width*s.Done/s.Total)
	fmt.Fprintf(p.w, "\r%s [%s%s] %s\033[K", p.account, strings.Repeat("#", filled), strings.Repeat("-", width-filled), p.summary())
	p.drawn = true
}

// summary describes the last progress seen.
func (p *progressPrinter) summary() string {
	s := p.last
	if s.Total == 0 {
		return "nothing to learn"
	}
	out := fmt.Sprintf("%d/%d messages (%d%%)", s.Done, s.Total, 100*s.Done/s.Total)
	if s.Units > 0 {
		out += fmt.Sprintf(", %d quota units", s.Units)
	}
	if s.Running && s.ETA >= time.Second {
		out += ", about " + s.ETA.Round(time.Second).String() + " left"
	}
	return out
}

// parseAccountArgs parses the flags of a command that takes one ACCOUNT,
// given before or after the flags, and returns that ACCOUNT.
func parseAccountArgs(fs *flag.FlagSet, args []string) (string, error) {
	var account string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		account, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", errHelp
		}
		return "", errFlags
	}
	rest := fs.Args()
	if account == "" && len(rest) > 0 {
		account, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return "", usageError(fmt.Sprintf("unexpected argument %q", rest[0]))
	}
	if account == "" {
		return "", usageError("name the ACCOUNT (its user in the configuration)")
	}
	return account, nil
}

// loadAccount loads the configuration file path, refuses a state
// directory that belongs to another configuration file, and returns the
// account whose user is account.
func loadAccount(path, account string) (*config.Config, *config.Account, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	if err := app.CheckOwner(cfg.StateDir, path); err != nil {
		return nil, nil, err
	}
	for i := range cfg.Accounts {
		if cfg.Accounts[i].User == account {
			return cfg, &cfg.Accounts[i], nil
		}
	}
	return nil, nil, fmt.Errorf("no account %q in %s", account, path)
}
