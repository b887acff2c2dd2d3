package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/admin"
	"github.com/popbridge/popbridge/internal/app"
)

func (c *cli) serve(ctx context.Context, args []string) error {
	fs := c.flags("serve", "-config FILE", "Run the POP3 server described by the configuration file.\nSIGINT or SIGTERM stops it gracefully; SIGHUP reloads the accounts.")
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
	opts := app.Options{ConfigPath: *path}
	var also []io.Writer
	if cfg.Listen.Admin != "" { // the admin page shows each account's recent lines
		opts.AdminLogs = new(admin.LogRing)
		opts.AdminExplain = func(a config.Account, err error) string { return plainFailure(a, *path, err) }
		also = append(also, opts.AdminLogs)
	}
	log, err := newLogger(c.stderr, cfg.Log, also...)
	if err != nil {
		return err
	}
	app.Version = versionString()
	a, err := app.Build(cfg, &log, opts)
	if err != nil {
		return err
	}
	defer a.Close() // runs last: after the server stopped
	c.started(a)
	defer reloadOnHUP(a, &log)() // until the server stopped
	return a.Serve(ctx)
}

// started tells a test driving the binary in process that a is running.
func (c *cli) started(a *app.App) {
	if c.onStart != nil {
		c.onStart(a)
	}
}

// reloadOnHUP reloads a's configuration at each SIGHUP until the
// returned function is called.
func reloadOnHUP(a *app.App, log *zerolog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-hup:
				log.Info().Msg("SIGHUP: reloading the configuration")
				a.Reload()
			case <-done:
				return
			}
		}
	})
	return func() {
		signal.Stop(hup)
		close(done)
		wg.Wait()
	}
}
