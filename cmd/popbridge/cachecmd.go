package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/control"
)

const cacheUsage = `Usage: popbridge cache stats [-json] (-config FILE | -state DIR)
       popbridge cache forget (-config FILE | -state DIR) ACCOUNT
       popbridge cache verify (-config FILE | -state DIR)

stats prints, per account, what the cache holds: message records, tombstones
(messages hidden from POP3), the sum of the recorded message sizes, and the
file space used. forget removes everything the cache holds for ACCOUNT: sizes
and UIDLs are learnt again, and messages hidden by on_delete: keep show again.
verify reads the whole file and checks its consistency, changing nothing.

While popbridge serve or demo runs, they ask it over the control socket in
the state directory; otherwise they open the cache file (cache.db) directly,
or, with state.driver postgres in -config, the database (stats and forget).
forget refuses an account with an open POP3 session. While verify runs in
the server, its writes to the cache wait (about 0.1 s per 100 MB).
`

func (c *cli) cache(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, cacheUsage)
		return errFlags
	}
	switch args[0] {
	case "stats":
		return c.cacheStats(args[1:])
	case "forget":
		return c.cacheForget(args[1:])
	case "verify":
		return c.cacheVerify(args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(c.stderr, cacheUsage)
		return errHelp
	}
	return usageError(fmt.Sprintf("unknown subcommand %q (want stats, forget or verify)", args[0]))
}

// stateFlags adds -config and -state to fs; dir returns the state
// directory they name and, for -config, the configured account names
// and the state section.
func stateFlags(fs *flag.FlagSet) (dir func() (string, []string, config.State, error)) {
	cfgPath := fs.String("config", "", "configuration `file`; its state_dir is used")
	stateDir := fs.String("state", "", "state `directory` (e.g. a demo's -dir)")
	return func() (string, []string, config.State, error) {
		switch {
		case *cfgPath != "" && *stateDir != "":
			return "", nil, config.State{}, usageError("give -config or -state, not both")
		case *stateDir != "":
			return *stateDir, nil, config.State{}, nil
		case *cfgPath != "":
			dir, users, st, err := config.LoadStateSection(*cfgPath)
			if err == nil {
				err = app.CheckOwner(dir, *cfgPath) // not another server's cache
			}
			return dir, users, st, err
		}
		return "", nil, config.State{}, usageError("-config or -state is required")
	}
}

// openShared opens the PostgreSQL store of a state section with driver
// postgres, for the cache commands when no server answers.
func openShared(st config.State) (*pgstore.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return app.OpenShared(ctx, st, &pgstore.Options{MaxConns: 2, NoMigrate: true})
}

func (c *cli) cacheStats(args []string) error {
	fs := c.flags("cache stats", "[-json] (-config FILE | -state DIR)", "Print what the cache holds, per account. Asks the running popbridge if there\nis one, else reads the cache file.")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	stateDir := stateFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	dir, users, st, err := stateDir()
	if err != nil {
		return err
	}
	r, err := readStats(dir, st)
	if err != nil {
		return err
	}
	// Configured accounts without data get a zero line.
	for _, u := range users {
		if !slices.ContainsFunc(r.Accounts, func(a control.AccountStats) bool { return a.Account == u }) {
			r.Accounts = append(r.Accounts, control.AccountStats{Account: u})
		}
	}
	slices.SortFunc(r.Accounts, func(a, b control.AccountStats) int { return strings.Compare(a.Account, b.Account) })
	if *asJSON {
		if r.Accounts == nil {
			r.Accounts = []control.AccountStats{} // [] rather than null
		}
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ACCOUNT\tMESSAGES\tTOMBSTONES\tBYTES\tDISK\n")
	for _, a := range r.Accounts {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", a.Account, a.Messages, a.Tombstones, a.Bytes, a.DiskBytes)
	}
	tw.Flush()
	switch r.Source {
	case "server":
		fmt.Fprintf(c.stdout, "\nFrom the running popbridge (pid %d); its body cache holds %d message(s), %d bytes.\n", r.PID, r.Bodies.Count, r.Bodies.Bytes)
	case "postgres":
		fmt.Fprintf(c.stdout, "\nFrom the PostgreSQL database of state.driver postgres (no popbridge running in %s).\n", dir)
	default:
		fmt.Fprintf(c.stdout, "\nFrom %s (no popbridge running).\n", filepath.Join(dir, app.StoreFile))
	}
	return nil
}

// statsOutput is what cache stats prints, as a table or as JSON.
type statsOutput struct {
	// Source is "server" (the running popbridge answered), "file" (the
	// store was read directly) or "postgres" (the database was).
	Source   string                 `json:"source"`
	StateDir string                 `json:"state_dir"`
	PID      int                    `json:"pid,omitempty"`
	Accounts []control.AccountStats `json:"accounts"`
	Bodies   *control.BodyStats     `json:"bodies,omitempty"` // the server's
}

// readStats asks the server in dir, else reads its store: the file, or
// the database under driver postgres.
func readStats(dir string, st config.State) (statsOutput, error) {
	out := statsOutput{Source: "server", StateDir: dir}
	r, ok, err := control.Ask(dir, control.Request{Op: "stats"})
	if err != nil {
		return out, err
	}
	if ok {
		if !r.OK {
			return out, fmt.Errorf("the running popbridge: %s", r.Error)
		}
		out.PID, out.Accounts, out.Bodies = r.PID, r.Accounts, r.Bodies
		if out.Bodies == nil {
			out.Bodies = &control.BodyStats{}
		}
		return out, nil
	}
	if st.Postgres() {
		pg, err := openShared(st)
		if err != nil {
			return out, err
		}
		defer pg.Close()
		out.Source = "postgres"
		out.Accounts, err = control.StoreStats(pg)
		return out, err
	}
	store, err := openStore(dir, true)
	if err != nil {
		return out, err
	}
	defer store.Close()
	out.Source = "file"
	out.Accounts, err = control.StoreStats(store)
	return out, err
}

func (c *cli) cacheForget(args []string) error {
	fs := c.flags("cache forget", "(-config FILE | -state DIR) ACCOUNT", "Remove everything the cache holds for ACCOUNT. Sizes and UIDLs are learnt\n"+
		"again at the next login; messages hidden by on_delete: keep show again.\nRefused while the account has an open POP3 session.")
	stateDir := stateFlags(fs)
	// The account may come before or after the flags.
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errFlags
	}
	var account string
	if fs.NArg() > 0 {
		account = fs.Arg(0)
		if err := c.parse(fs, fs.Args()[1:]); err != nil {
			return err
		}
	}
	if account == "" {
		return usageError("ACCOUNT is required")
	}
	dir, _, st, err := stateDir()
	if err != nil {
		return err
	}
	r, ok, err := control.Ask(dir, control.Request{Op: "forget", Account: account})
	if err != nil {
		return err
	}
	if ok {
		switch {
		case r.OK:
			fmt.Fprintf(c.stdout, "Forgot account %q (in the running popbridge, pid %d).\n", account, r.PID)
			return nil
		case r.Code == control.CodeNoAccount:
			return fmt.Errorf("no data for account %q in %s", account, filepath.Join(dir, app.StoreFile))
		case r.Code == control.CodeInUse:
			return fmt.Errorf("account %q has an open POP3 session; try again when it has ended", account)
		}
		return fmt.Errorf("the running popbridge: %s", r.Error)
	}
	if st.Postgres() {
		pg, err := openShared(st)
		if err != nil {
			return err
		}
		err = pg.Forget(account)
		pg.Close()
		switch {
		case errors.Is(err, cache.ErrNoAccount):
			return fmt.Errorf("no data for account %q in the PostgreSQL database", account)
		case errors.Is(err, cache.ErrInUse):
			return fmt.Errorf("account %q has an open POP3 session on a replica; try again when it has ended", account)
		case err != nil:
			return err
		}
		fmt.Fprintf(c.stdout, "Forgot account %q in the PostgreSQL database (every replica sees it).\n", account)
		return nil
	}
	store, err := openStore(dir, false)
	if err != nil {
		return err
	}
	err = store.Forget(account)
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, cache.ErrNoAccount) {
		return fmt.Errorf("no data for account %q in %s", account, store.Path())
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "Forgot account %q in %s.\n", account, store.Path())
	return nil
}

// openStore opens the store in dir when no server answered: read-only for
// reading (migrating first if needed), writable otherwise. It never
// creates one.
func openStore(dir string, readOnly bool) (*cache.Store, error) {
	path := filepath.Join(dir, app.StoreFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no cache in %s: %s does not exist (popbridge creates it when it starts)", dir, app.StoreFile)
	}
	store, err := cache.Open(path, &cache.Options{ReadOnly: readOnly})
	if errors.Is(err, cache.ErrNeedsMigration) {
		store, err = cache.Open(path, nil)
	}
	if errors.Is(err, cache.ErrLocked) {
		return nil, fmt.Errorf("%w; and nothing answers on %s", err, filepath.Join(dir, control.File))
	}
	return store, app.DamagedStore(err)
}

func (c *cli) cacheVerify(args []string) error {
	flags := c.flags("cache verify", "(-config FILE | -state DIR)", "Read the whole cache file (cache.db) and check its consistency, changing\n"+
		"nothing. Exits 1 if it is damaged, saying what to do. Asks the running\npopbridge if there is one (its writes wait meanwhile), else reads the file.")
	stateDir := stateFlags(flags)
	if err := c.parse(flags, args); err != nil {
		return err
	}
	dir, _, st, err := stateDir()
	if err != nil {
		return err
	}
	if st.Postgres() {
		return errors.New("cache verify checks a bbolt cache.db; with state.driver postgres there is none: PostgreSQL checks its own pages (see docs/scale.md)")
	}
	path := filepath.Join(dir, app.StoreFile)
	if r, ok, err := control.Ask(dir, control.Request{Op: "verify"}); err != nil {
		return err
	} else if ok {
		switch {
		case r.OK:
			fmt.Fprintf(c.stdout, "%s: OK (every page read, consistency checked by the running popbridge, pid %d)\n", path, r.PID)
			return nil
		case r.Code == control.CodeDamaged:
			return app.DamagedStore(&cache.DamagedError{Path: path, Reason: r.Error})
		}
		return fmt.Errorf("the running popbridge: %s", r.Error)
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no cache in %s: %s does not exist (popbridge creates it when it starts)", dir, app.StoreFile)
	}
	err = cache.Verify(path, nil)
	if errors.Is(err, cache.ErrLocked) {
		return fmt.Errorf("%w; and nothing answers on %s", err, filepath.Join(dir, control.File))
	}
	if err != nil {
		return app.DamagedStore(err)
	}
	fmt.Fprintf(c.stdout, "%s: OK (every page read, consistency checked)\n", path)
	return nil
}
