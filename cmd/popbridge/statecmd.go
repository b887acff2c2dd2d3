package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/control"
)

const stateUsage = `Usage: popbridge state migrate -config FILE [-to postgres|bbolt] [-overwrite]

migrate copies popbridge's state between the bbolt file of the state
directory (state_dir/cache.db and the OAuth2 token files in state_dir/tokens)
and PostgreSQL (the DSN of the configuration's state section: dsn, dsn_file,
or the environment variable dsn_env names, by default POPBRIDGE_STATE_DSN,
whatever its driver says): per account its message records
(UIDLs and sizes), tombstones and sync state, and the OAuth2 tokens of the
configured accounts, sealed with their token key as before.
-to postgres (the default) copies the file into PostgreSQL, -to bbolt back.
Stop popbridge (every replica) first. See docs/scale.md.
`

func (c *cli) state(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, stateUsage)
		return errFlags
	}
	switch args[0] {
	case "migrate":
		return c.stateMigrate(ctx, args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(c.stderr, stateUsage)
		return errHelp
	}
	return usageError(fmt.Sprintf("unknown subcommand %q (want migrate)", args[0]))
}

// tokenStore is what state migrate uses of a token store: oauth.Store
// (files) and pgstore.Tokens share it.
type tokenStore interface {
	Load(account string) (*oauth2.Token, error)
	Save(account string, tok *oauth2.Token) error
}

var (
	_ tokenStore = (*oauth.Store)(nil)
	_ tokenStore = (*pgstore.Tokens)(nil)
)

// migrateChunk bounds the records and tombstones written in one Apply,
// so that a large account does not make one huge transaction.
const migrateChunk = 5000

// migrateTimeout bounds each PostgreSQL operation of a migration.
const migrateTimeout = 2 * time.Minute

// side is one end of a migration.
type side struct {
	name   string // for messages: "state_dir/cache.db" or "PostgreSQL (host/db)"
	store  cache.StateStore
	tokens func(key *[32]byte) tokenStore
	// hasToken reports whether account has a token, without its key.
	hasToken func(account string) (bool, error)
}

// tokenAccount is a configured account with an OAuth2 grant.
type tokenAccount struct {
	user string
	key  *[32]byte
}

func (c *cli) stateMigrate(ctx context.Context, args []string) error {
	flags := c.flags("state migrate", "-config FILE [-to postgres|bbolt] [-overwrite] [-progress N]",
		"Copy popbridge's state from the bbolt file of the state directory (cache.db\n"+
			"and the OAuth2 token files) into PostgreSQL, or back with -to bbolt: per\n"+
			"account the message records (UIDLs, sizes), tombstones and sync state, and\n"+
			"the OAuth2 tokens of the configured accounts. The source is not changed.\n"+
			"Stop popbridge first (on PostgreSQL: every replica). An account the target\n"+
			"already holds is refused unless -overwrite, which replaces it. The counts\n"+
			"are compared after the copy. The DSN comes from the configuration's state\n"+
			"section (dsn, dsn_file, or the variable dsn_env names, by default\n"+
			pgstore.DSNEnv+"), whatever its driver says.")
	path := flags.String("config", "", "configuration `file` (YAML)")
	to := flags.String("to", "postgres", "where to copy to: `postgres` (from bbolt) or bbolt (from postgres)")
	overwrite := flags.Bool("overwrite", false, "replace what the target holds for the accounts copied")
	every := flags.Int("progress", 100, "print a progress line every `N` accounts")
	if err := c.parse(flags, args); err != nil {
		return err
	}
	if *path == "" {
		return usageError("-config is required")
	}
	if *to != "postgres" && *to != "bbolt" {
		return usageError(fmt.Sprintf("-to %q: want postgres or bbolt", *to))
	}
	if *every < 1 {
		return usageError("-progress must be at least 1")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if err := app.CheckOwner(cfg.StateDir, *path); err != nil {
		return err
	}
	if r, running, _ := control.Ask(cfg.StateDir, control.Request{Op: "stats"}); running {
		return fmt.Errorf("popbridge is running on state_dir %s (pid %d): stop it first, so that nothing changes the state while it is copied", cfg.StateDir, r.PID)
	}
	accts, err := tokenAccounts(cfg)
	if err != nil {
		return err
	}
	dsn, err := app.StateDSN(cfg.State)
	if err != nil {
		return err
	}

	pg, err := pgstore.Open(ctx, dsn, &pgstore.Options{Timeout: migrateTimeout, MaxConns: 2})
	if err != nil {
		// pgx lists every address tried, one a line.
		return fmt.Errorf("PostgreSQL (%s): %s", describeDSN(dsn), strings.Join(strings.Fields(err.Error()), " "))
	}
	defer pg.Close()
	if err := replicasIdle(ctx, pg); err != nil {
		return err
	}
	pgSide := &side{
		name:  "PostgreSQL (" + describeDSN(dsn) + ")",
		store: pg,
		tokens: func(key *[32]byte) tokenStore {
			return &pgstore.Tokens{Store: pg, Key: key}
		},
		hasToken: func(account string) (bool, error) {
			_, err := (&pgstore.Tokens{Store: pg}).Load(account)
			switch {
			case errors.Is(err, pgstore.ErrNoToken):
				return false, nil
			case err == nil, errors.Is(err, pgstore.ErrWrongKey):
				return true, nil
			}
			return false, err
		},
	}
	bolt, err := openMigrateBolt(cfg.StateDir, *to == "postgres")
	if err != nil {
		return err
	}
	defer bolt.Close()
	tokenDir := filepath.Join(cfg.StateDir, app.TokenDir)
	boltSide := &side{
		name:  filepath.Join(cfg.StateDir, app.StoreFile),
		store: bolt,
		tokens: func(key *[32]byte) tokenStore {
			return &oauth.Store{Dir: tokenDir, Key: key}
		},
		hasToken: func(account string) (bool, error) {
			_, err := os.Stat((&oauth.Store{Dir: tokenDir}).Path(account))
			if errors.Is(err, fs.ErrNotExist) {
				return false, nil
			}
			return err == nil, err
		},
	}
	m := &migration{out: c.stdout, from: boltSide, to: pgSide, overwrite: *overwrite, every: *every, accts: accts}
	if *to == "bbolt" {
		m.from, m.to = pgSide, boltSide
	}
	if err := m.run(ctx); err != nil {
		return err
	}
	switch {
	case *to == "postgres" && cfg.State.Postgres():
		m.skippedTokenFiles(tokenDir)
		fmt.Fprintf(c.stdout, "Next: start the replicas with %s (state.driver: postgres).\n", *path)
	case *to == "postgres":
		m.skippedTokenFiles(tokenDir)
		fmt.Fprintf(c.stdout, "Next: set state.driver: postgres in %s, with the same DSN, and start the replicas.\n", *path)
	case cfg.State.Postgres():
		fmt.Fprintf(c.stdout, "Next: remove the state section from %s (it says driver: postgres) and start popbridge.\n", *path)
	default:
		fmt.Fprintf(c.stdout, "Next: start popbridge with %s.\n", *path)
	}
	return nil
}

// replicasIdle refuses a database that popbridge replicas use now: one
// with their listener connections (pgstore.ListenerName) or a live
// maildrop lease.
func replicasIdle(ctx context.Context, pg *pgstore.Store) error {
	var listeners, leases int
	err := pg.Pool().QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1),
		(SELECT count(*) FROM maildrop_lease WHERE expires_at > clock_timestamp())`, pgstore.ListenerName).Scan(&listeners, &leases)
	switch {
	case err != nil:
		return fmt.Errorf("PostgreSQL: look for running replicas: %w", err)
	case listeners > 0:
		return fmt.Errorf("popbridge replicas are connected to the database (%d listener connection(s)): stop every replica first (kubectl scale deployment popbridge --replicas=0), so that nothing changes the state while it is copied", listeners)
	case leases > 0:
		return fmt.Errorf("POP3 sessions hold %d maildrop lease(s) in the database: stop every replica first, so that nothing changes the state while it is copied", leases)
	}
	return nil
}

// describeDSN names the database of dsn without its password.
func describeDSN(dsn string) string {
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "the DSN given"
	}
	return fmt.Sprintf("%s:%d/%s", pc.Host, pc.Port, pc.Database)
}

// openMigrateBolt opens the state directory's cache.db: the existing one
// for reading when it is the source, else for writing, created if
// missing.
func openMigrateBolt(dir string, source bool) (*cache.Store, error) {
	path := filepath.Join(dir, app.StoreFile)
	var opts *cache.Options
	if source {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("nothing to copy: %s does not exist (check state_dir in the configuration)", path)
		}
		opts = &cache.Options{ReadOnly: true, MemoryRecords: -1}
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("the state directory: %w", err)
		}
		opts = &cache.Options{MemoryRecords: -1}
	}
	store, err := cache.Open(path, opts)
	if errors.Is(err, cache.ErrNeedsMigration) {
		store, err = cache.Open(path, &cache.Options{MemoryRecords: -1})
	}
	if errors.Is(err, cache.ErrLocked) {
		return nil, fmt.Errorf("%s is in use by another process (popbridge serve, or another popbridge command): stop it first, then run state migrate again", path)
	}
	return store, app.DamagedStore(err)
}

// tokenAccounts returns the configured accounts with an OAuth2 grant and
// their token keys, refusing a key that does not load.
func tokenAccounts(cfg *config.Config) ([]tokenAccount, error) {
	var out []tokenAccount
	for _, a := range cfg.Accounts {
		o, _ := app.OAuthAccount(a)
		if o == nil {
			continue
		}
		key, err := oauth.LoadKey(o.TokenKeyFile)
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", a.User, err)
		}
		out = append(out, tokenAccount{user: a.User, key: key})
	}
	return out, nil
}

// migration copies from one side to the other.
type migration struct {
	out       io.Writer
	from, to  *side
	overwrite bool
	every     int
	accts     []tokenAccount

	// Totals copied.
	accounts, records, tombstones int
	tokens                        int
}

// run copies every account and token, then verifies the counts.
func (m *migration) run(ctx context.Context) error {
	start := time.Now()
	srcStats, err := m.from.store.Stats()
	if err != nil {
		return fmt.Errorf("read %s: %w", m.from.name, err)
	}
	// Tokens are read first: a wrong key fails before anything is written.
	toks := map[string]*oauth2.Token{}
	keys := map[string]*[32]byte{}
	for _, a := range m.accts {
		tok, err := m.from.tokens(a.key).Load(a.user)
		switch {
		case errors.Is(err, oauth.ErrNoToken), errors.Is(err, pgstore.ErrNoToken):
			continue // not authorized yet (popbridge auth)
		case errors.Is(err, oauth.ErrWrongKey), errors.Is(err, pgstore.ErrWrongKey):
			return fmt.Errorf("account %s: the OAuth2 token in %s does not open with its token key: set token_key_file (or %s) to the key it was sealed with; nothing was copied (%w)",
				a.user, m.from.name, oauth.KeyEnv, err)
		case err != nil:
			return fmt.Errorf("account %s: read the OAuth2 token from %s: %w", a.user, m.from.name, err)
		}
		toks[a.user], keys[a.user] = tok, a.key
	}

	// Refuse before writing anything when the target holds any of it.
	tgtStats, err := m.to.store.Stats()
	if err != nil {
		return fmt.Errorf("read %s: %w", m.to.name, err)
	}
	held := map[string]bool{}
	for _, st := range tgtStats {
		held[st.Account] = true
	}
	var clash []string
	for _, st := range srcStats {
		if held[st.Account] {
			clash = append(clash, st.Account)
		}
	}
	for _, user := range slices.Sorted(maps.Keys(toks)) {
		has, err := m.to.hasToken(user)
		if err != nil {
			return fmt.Errorf("account %s: look for an OAuth2 token in %s: %w", user, m.to.name, err)
		}
		if has && !slices.Contains(clash, user) {
			clash = append(clash, user)
		}
	}
	if len(clash) > 0 && !m.overwrite {
		return fmt.Errorf("%s already holds state of %d account(s) (%s); nothing was copied. "+
			"Run again with -overwrite to replace it with what %s holds", m.to.name, len(clash), listSome(clash, 5), m.from.name)
	}

	fmt.Fprintf(m.out, "Copying %d account(s) and %d OAuth2 token(s) from %s to %s\n", len(srcStats), len(toks), m.from.name, m.to.name)
	for i, st := range srcStats {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted after %d of %d accounts; run again with -overwrite to finish", i, len(srcStats))
		}
		if err := m.copyAccount(st.Account, held[st.Account]); err != nil {
			return err
		}
		if n := i + 1; n%m.every == 0 && n < len(srcStats) {
			fmt.Fprintf(m.out, "%d/%d accounts: %d records, %d tombstones (%s)\n",
				n, len(srcStats), m.records, m.tombstones, time.Since(start).Round(10*time.Millisecond))
		}
	}
	for _, user := range slices.Sorted(maps.Keys(toks)) {
		if err := m.to.tokens(keys[user]).Save(user, toks[user]); err != nil {
			return fmt.Errorf("account %s: write the OAuth2 token to %s: %w", user, m.to.name, err)
		}
		m.tokens++
	}
	if err := m.verify(srcStats, toks, keys); err != nil {
		return err
	}
	fmt.Fprintf(m.out, "Copied %d account(s): %d message records, %d tombstones, %d sync states; %d OAuth2 token(s); in %s. Verified: the counts match.\n",
		m.accounts, m.records, m.tombstones, m.accounts, m.tokens, time.Since(start).Round(time.Millisecond))
	return nil
}

// copyAccount copies one account's records, tombstones and sync state,
// replacing what the target holds when held.
func (m *migration) copyAccount(account string, held bool) error {
	if held {
		err := m.to.store.Forget(account)
		if errors.Is(err, cache.ErrInUse) {
			return fmt.Errorf("account %s is in use (a POP3 session on a replica holds its lease): stop every popbridge using %s, then run again", account, m.to.name)
		}
		if err != nil && !errors.Is(err, cache.ErrNoAccount) {
			return fmt.Errorf("account %s: remove what %s held: %w", account, m.to.name, err)
		}
	}
	msgs, err := m.from.store.Messages(account)
	if err != nil {
		return fmt.Errorf("account %s: read the message records from %s: %w", account, m.from.name, err)
	}
	tombs, err := m.from.store.Tombstones(account)
	if err != nil {
		return fmt.Errorf("account %s: read the tombstones from %s: %w", account, m.from.name, err)
	}
	sync, err := m.from.store.SyncState(account)
	if err != nil {
		return fmt.Errorf("account %s: read the sync state from %s: %w", account, m.from.name, err)
	}
	recs := slices.SortedFunc(maps.Values(msgs), func(a, b cache.MessageRecord) int { return strings.Compare(a.Key, b.Key) })
	keys := slices.Sorted(maps.Keys(tombs))
	// The first change carries the sync state, so that an account with
	// nothing else exists in the target too.
	first := true
	for first || len(recs) > 0 || len(keys) > 0 {
		var ch cache.Change
		if first {
			ch.Sync = &sync
			first = false
		}
		n := min(len(recs), migrateChunk)
		ch.Put, recs = recs[:n], recs[n:]
		n = min(len(keys), migrateChunk-len(ch.Put))
		ch.AddTombstones, keys = keys[:n], keys[n:]
		if err := m.to.store.Apply(account, ch); err != nil {
			return fmt.Errorf("account %s: write to %s: %w", account, m.to.name, err)
		}
	}
	m.accounts++
	m.records += len(msgs)
	m.tombstones += len(tombs)
	return nil
}

// verify compares the target's counts with the source's, and reads every
// token back.
func (m *migration) verify(src []cache.AccountStats, toks map[string]*oauth2.Token, keys map[string]*[32]byte) error {
	got, err := m.to.store.Stats()
	if err != nil {
		return fmt.Errorf("verify: read %s: %w", m.to.name, err)
	}
	byName := map[string]cache.AccountStats{}
	for _, st := range got {
		byName[st.Account] = st
	}
	var bad []string
	for _, want := range src {
		g, ok := byName[want.Account]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("account %s is missing", want.Account))
		case g.Messages != want.Messages || g.Tombstones != want.Tombstones || g.Bytes != want.Bytes:
			bad = append(bad, fmt.Sprintf("account %s: %d records, %d tombstones, %d bytes; the source has %d, %d, %d",
				want.Account, g.Messages, g.Tombstones, g.Bytes, want.Messages, want.Tombstones, want.Bytes))
		}
	}
	for user, want := range toks {
		g, err := m.to.tokens(keys[user]).Load(user)
		if err != nil {
			bad = append(bad, fmt.Sprintf("account %s: the OAuth2 token does not read back: %v", user, err))
		} else if g.RefreshToken != want.RefreshToken || g.AccessToken != want.AccessToken || !g.Expiry.Equal(want.Expiry) {
			bad = append(bad, fmt.Sprintf("account %s: the OAuth2 token read back differs", user))
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("verify: %s differs from %s after the copy (run again with -overwrite; if it persists, report it):\n%s",
			m.to.name, m.from.name, strings.Join(bad, "\n"))
	}
	return nil
}

// skippedTokenFiles mentions token files of accounts that are not in the
// configuration: their keys are unknown, so they were not copied.
func (m *migration) skippedTokenFiles(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var skipped []string
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		user, err := url.PathUnescape(name)
		if err != nil {
			continue
		}
		if !slices.ContainsFunc(m.accts, func(a tokenAccount) bool { return a.user == user }) {
			skipped = append(skipped, user)
		}
	}
	if len(skipped) > 0 {
		fmt.Fprintf(m.out, "Not copied: the token files of %d account(s) that have no oauth2 section in the configuration (%s).\n",
			len(skipped), listSome(skipped, 5))
	}
}

// listSome joins the first n of names, saying how many more there are.
func listSome(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}
