package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/popbridge/popbridge/cache"
)

// Defaults for Options fields left zero.
const (
	DefaultTimeout        = 10 * time.Second
	DefaultConnectTimeout = 5 * time.Second
)

// MaxKeySize bounds account names and message keys, in bytes: a btree
// index entry of PostgreSQL holds at most about 2700 bytes (bbolt takes
// up to 32768).
const MaxKeySize = 2048

// Channel is the LISTEN/NOTIFY channel every change is announced on.
const Channel = "popbridge_inval"

// Options tunes a Store. The zero value is ready to use.
type Options struct {
	// Timeout bounds each operation, since the methods shared with
	// cache.Store take no context; zero means DefaultTimeout.
	Timeout time.Duration
	// MaxConns caps the connection pool; zero keeps pgx's default
	// (pool_max_conns in the DSN, else max(4, number of CPUs)).
	MaxConns int32
	// NoMigrate opens without migrating; an older schema is refused.
	NoMigrate bool
}

// Store is the shared state of every replica in one PostgreSQL database.
// It is safe for concurrent use. It keeps nothing in memory: every read
// goes to the database, so no replica serves another's stale data.
type Store struct {
	pool    *pgxpool.Pool
	timeout time.Duration
	origin  string // tags this Store's notifications (Invalidation.Origin)
	holds   cache.Holds
}

// Open connects to the database at dsn (a postgres:// URL or key=value
// string) and migrates it to SchemaVersion, refusing a newer schema with
// an error wrapping ErrSchemaNewer. A nil opts means the zero Options.
func Open(ctx context.Context, dsn string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, password included.
		return nil, errors.New("pgstore: the PostgreSQL DSN does not parse; see https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, wrap("open", err)
	}
	s := &Store{pool: pool, timeout: o.Timeout, origin: newOrigin()}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if o.NoMigrate {
		err = s.checkSchema(ctx)
	} else {
		err = Migrate(ctx, pool)
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// checkSchema fails unless the database is at SchemaVersion.
func (s *Store) checkSchema(ctx context.Context) error {
	var v int
	err := s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&v)
	if err != nil {
		return wrap("read the schema version (run popbridge once without NoMigrate to create the schema)", err)
	}
	if v != SchemaVersion {
		return fmt.Errorf("pgstore: the database has schema version %d, this popbridge needs %d; let one replica migrate it", v, SchemaVersion)
	}
	return nil
}

// Pool returns the connection pool, for callers that run their own
// transactions (see Fenced for writes under a lease).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Ping checks that the database answers, for readiness probes.
func (s *Store) Ping(ctx context.Context) error {
	return wrap("ping", s.pool.Ping(ctx))
}

func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.timeout)
}

// Snapshot reads the account whole, in one read-only transaction; an
// account without data yields an empty one.
func (s *Store) Snapshot(account string) (*cache.Snapshot, error) {
	if err := checkAccount(account); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	var (
		msgs  []cache.MessageRecord
		tombs []string
		sync  cache.SyncState
	)
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, "SELECT key, size, uidl, stamp FROM message WHERE account = $1", account)
		var key, uidl, stamp []byte
		var size int64
		_, err := pgx.ForEachRow(rows, []any{&key, &size, &uidl, &stamp}, func() error {
			msgs = append(msgs, cache.MessageRecord{Key: string(key), Size: size, UIDL: string(uidl), Stamp: string(stamp)})
			return nil
		})
		if err != nil {
			return err
		}
		rows, _ = tx.Query(ctx, "SELECT key FROM tombstone WHERE account = $1", account)
		_, err = pgx.ForEachRow(rows, []any{&key}, func() error {
			tombs = append(tombs, string(key))
			return nil
		})
		if err != nil {
			return err
		}
		var uv, hu, hist int64
		var uidls [][]byte
		err = tx.QueryRow(ctx, "SELECT uid_validity, highest_uid, history_id, pop3_uidls FROM sync_state WHERE account = $1", account).
			Scan(&uv, &hu, &hist, &uidls)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		sync = cache.SyncState{UIDValidity: uint32(uv), HighestUID: uint32(hu), HistoryID: uint64(hist)}
		if uidls != nil {
			sync.POP3UIDLs = make([]string, len(uidls))
			for i, u := range uidls {
				sync.POP3UIDLs[i] = string(u)
			}
		}
		return nil
	})
	if err != nil {
		return nil, wrap(fmt.Sprintf("account %q: read", account), err)
	}
	return cache.NewSnapshot(msgs, tombs, sync), nil
}

// Messages returns the account's message records by key.
func (s *Store) Messages(account string) (map[string]cache.MessageRecord, error) {
	snap, err := s.Snapshot(account)
	if err != nil {
		return nil, err
	}
	msgs := make(map[string]cache.MessageRecord, snap.Len())
	for r := range snap.Messages() {
		msgs[r.Key] = r
	}
	return msgs, nil
}

// Message returns the record for key, and whether there is one.
func (s *Store) Message(account, key string) (cache.MessageRecord, bool, error) {
	if err := checkAccount(account); err != nil {
		return cache.MessageRecord{}, false, err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	var size int64
	var uidl, stamp []byte
	err := s.pool.QueryRow(ctx, "SELECT size, uidl, stamp FROM message WHERE account = $1 AND key = $2", account, []byte(key)).
		Scan(&size, &uidl, &stamp)
	if errors.Is(err, pgx.ErrNoRows) {
		return cache.MessageRecord{}, false, nil
	}
	if err != nil {
		return cache.MessageRecord{}, false, wrap(fmt.Sprintf("account %q: read", account), err)
	}
	return cache.MessageRecord{Key: key, Size: size, UIDL: string(uidl), Stamp: string(stamp)}, true, nil
}

// Tombstones returns the account's set of hidden keys.
func (s *Store) Tombstones(account string) (map[string]struct{}, error) {
	snap, err := s.Snapshot(account)
	if err != nil {
		return nil, err
	}
	tombs := make(map[string]struct{}, snap.TombstoneCount())
	for k := range snap.Tombstones() {
		tombs[k] = struct{}{}
	}
	return tombs, nil
}

// IsTombstoned reports whether key is hidden from POP.
func (s *Store) IsTombstoned(account, key string) (bool, error) {
	if err := checkAccount(account); err != nil {
		return false, err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	var ok bool
	err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM tombstone WHERE account = $1 AND key = $2)", account, []byte(key)).Scan(&ok)
	if err != nil {
		return false, wrap(fmt.Sprintf("account %q: read", account), err)
	}
	return ok, nil
}

// SyncState returns the account's sync state; zero if none was stored.
func (s *Store) SyncState(account string) (cache.SyncState, error) {
	snap, err := s.Snapshot(account)
	if err != nil {
		return cache.SyncState{}, err
	}
	return snap.Sync(), nil
}

// PutMessages adds or replaces records in one transaction.
func (s *Store) PutMessages(account string, recs []cache.MessageRecord) error {
	return s.Apply(account, cache.Change{Put: recs})
}

// DeleteMessages removes records; absent keys are ignored. Tombstones are
// left alone.
func (s *Store) DeleteMessages(account string, keys []string) error {
	return s.Apply(account, cache.Change{Delete: keys})
}

// AddTombstones hides keys from POP.
func (s *Store) AddTombstones(account string, keys []string) error {
	return s.Apply(account, cache.Change{AddTombstones: keys})
}

// RemoveTombstones shows keys again; absent keys are ignored.
func (s *Store) RemoveTombstones(account string, keys []string) error {
	return s.Apply(account, cache.Change{RemoveTombstones: keys})
}

// PutSyncState replaces the account's sync state.
func (s *Store) PutSyncState(account string, st cache.SyncState) error {
	return s.Apply(account, cache.Change{Sync: &st})
}

// Cursor returns the account's cursor called name (such as a Graph delta
// link), and "" if none is stored.
func (s *Store) Cursor(account, name string) (string, error) {
	if err := checkAccount(account); err != nil {
		return "", err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	var v string
	err := s.pool.QueryRow(ctx, "SELECT value FROM sync_cursor WHERE account = $1 AND name = $2", account, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", wrap(fmt.Sprintf("account %q: read cursor %q", account, name), err)
	}
	return v, nil
}

// PutCursor stores the account's cursor called name; an empty value
// removes it.
func (s *Store) PutCursor(account, name, value string) error {
	return s.write(context.Background(), account, nil, func(ctx context.Context, w *Writer) error {
		return w.PutCursor(name, value)
	})
}

// Apply commits c to the account atomically, in the order Delete, Put,
// RemoveTombstones, AddTombstones, Sync, and announces the change on
// Channel in the same transaction.
func (s *Store) Apply(account string, c cache.Change) error {
	if err := checkAccount(account); err != nil {
		return err
	}
	if err := checkChange(c); err != nil {
		return err
	}
	if len(c.Put)+len(c.Delete)+len(c.AddTombstones)+len(c.RemoveTombstones) == 0 && c.Sync == nil {
		return nil
	}
	return s.write(context.Background(), account, nil, func(ctx context.Context, w *Writer) error {
		return w.Apply(c)
	})
}

// Writer makes changes to one account inside a transaction that Apply,
// PutCursor or Fenced runs; it is valid only during that call.
type Writer struct {
	ctx     context.Context
	tx      pgx.Tx
	account string
	fence   *int64
	created bool
}

// Tx returns the transaction, for writes of the caller's own tables.
func (w *Writer) Tx() pgx.Tx { return w.tx }

// Apply applies c, as Store.Apply does, in the writer's transaction.
// Tombstones record the lease's fence when the writer has one.
func (w *Writer) Apply(c cache.Change) error {
	if err := checkChange(c); err != nil {
		return err
	}
	ctx, tx, a := w.ctx, w.tx, w.account
	if len(c.Put) > 0 || len(c.AddTombstones) > 0 || c.Sync != nil {
		if err := w.create(); err != nil {
			return err
		}
	}
	if len(c.Delete) > 0 {
		if _, err := tx.Exec(ctx, "DELETE FROM message WHERE account = $1 AND key = ANY($2)", a, bytesOf(c.Delete)); err != nil {
			return fmt.Errorf("delete messages: %w", err)
		}
	}
	if len(c.Put) > 0 {
		// One row per key, the last Put of a key winning, as in bbolt:
		// ON CONFLICT cannot touch a row twice in one statement.
		last := make(map[string]int, len(c.Put))
		for i, r := range c.Put {
			last[r.Key] = i
		}
		var keys, uidls, stamps [][]byte
		var sizes []int64
		for i, r := range c.Put {
			if last[r.Key] != i {
				continue
			}
			keys = append(keys, []byte(r.Key))
			sizes = append(sizes, r.Size)
			uidls = append(uidls, []byte(r.UIDL))
			stamps = append(stamps, []byte(r.Stamp))
		}
		_, err := tx.Exec(ctx, `INSERT INTO message (account, key, size, uidl, stamp)
			SELECT $1, k, s, u, st FROM unnest($2::bytea[], $3::bigint[], $4::bytea[], $5::bytea[]) AS t(k, s, u, st)
			ON CONFLICT (account, key) DO UPDATE SET size = EXCLUDED.size, uidl = EXCLUDED.uidl, stamp = EXCLUDED.stamp`,
			a, keys, sizes, uidls, stamps)
		if err != nil {
			return fmt.Errorf("put messages: %w", err)
		}
	}
	if len(c.RemoveTombstones) > 0 {
		if _, err := tx.Exec(ctx, "DELETE FROM tombstone WHERE account = $1 AND key = ANY($2)", a, bytesOf(c.RemoveTombstones)); err != nil {
			return fmt.Errorf("remove tombstones: %w", err)
		}
	}
	if len(c.AddTombstones) > 0 {
		_, err := tx.Exec(ctx, `INSERT INTO tombstone (account, key, fence) SELECT $1, k, $3 FROM unnest($2::bytea[]) AS t(k)
			ON CONFLICT (account, key) DO UPDATE SET fence = EXCLUDED.fence`, a, bytesOf(unique(c.AddTombstones)), w.fence)
		if err != nil {
			return fmt.Errorf("add tombstones: %w", err)
		}
	}
	if c.Sync != nil {
		var uidls [][]byte
		if c.Sync.POP3UIDLs != nil {
			uidls = bytesOf(c.Sync.POP3UIDLs)
		}
		_, err := tx.Exec(ctx, `INSERT INTO sync_state (account, uid_validity, highest_uid, history_id, pop3_uidls) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (account) DO UPDATE SET uid_validity = EXCLUDED.uid_validity, highest_uid = EXCLUDED.highest_uid,
				history_id = EXCLUDED.history_id, pop3_uidls = EXCLUDED.pop3_uidls`,
			a, int64(c.Sync.UIDValidity), int64(c.Sync.HighestUID), int64(c.Sync.HistoryID), uidls)
		if err != nil {
			return fmt.Errorf("sync state: %w", err)
		}
	}
	return nil
}

// PutCursor stores the cursor called name; an empty value removes it.
func (w *Writer) PutCursor(name, value string) error {
	if name == "" || len(name) > MaxKeySize || !utf8.ValidString(name) || strings.ContainsRune(name, 0) {
		return fmt.Errorf("pgstore: bad cursor name %q", name)
	}
	if strings.ContainsRune(value, 0) || !utf8.ValidString(value) {
		return fmt.Errorf("pgstore: cursor %q: the value must be UTF-8 text without NUL", name)
	}
	if value == "" {
		_, err := w.tx.Exec(w.ctx, "DELETE FROM sync_cursor WHERE account = $1 AND name = $2", w.account, name)
		return err
	}
	if err := w.create(); err != nil {
		return err
	}
	_, err := w.tx.Exec(w.ctx, `INSERT INTO sync_cursor (account, name, value, fence) VALUES ($1, $2, $3, $4)
		ON CONFLICT (account, name) DO UPDATE SET value = EXCLUDED.value, fence = EXCLUDED.fence`, w.account, name, value, w.fence)
	return err
}

func (w *Writer) create() error {
	if w.created {
		return nil
	}
	if _, err := w.tx.Exec(w.ctx, "INSERT INTO account (name) VALUES ($1) ON CONFLICT DO NOTHING", w.account); err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	w.created = true
	return nil
}

// write runs fn in a transaction that holds the account's advisory lock
// (writers of one account, Forget and Acquire take turns), checks lease
// when not nil (see Fenced), and announces the change at commit.
func (s *Store) write(ctx context.Context, account string, lease *Lease, fn func(context.Context, *Writer) error) error {
	if err := checkAccount(account); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockAccount(ctx, tx, account); err != nil {
			return err
		}
		w := &Writer{ctx: ctx, tx: tx, account: account}
		if lease != nil {
			if err := checkFence(ctx, tx, lease); err != nil {
				return err
			}
			w.fence = &lease.Fence
		}
		if err := fn(ctx, w); err != nil {
			return err
		}
		return notify(ctx, tx, s.origin, "state", account)
	})
	if err != nil {
		var ve *validationError
		if errors.As(err, &ve) || errors.Is(err, ErrLeaseLost) {
			return err
		}
		return wrap(fmt.Sprintf("account %q: write", account), err)
	}
	if lease != nil {
		lease.extended(start)
	}
	return nil
}

// lockAccount takes the account's transaction-scoped advisory lock.
func lockAccount(ctx context.Context, tx pgx.Tx, account string) error {
	_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('popbridge:account:' || $1, 0))", account)
	return err
}

// notify announces a change of kind to account's data at commit, made
// by the Store of origin. The payload is "kind/origin:account".
func notify(ctx context.Context, tx pgx.Tx, origin, kind, account string) error {
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, kind+"/"+origin+":"+account)
	return err
}

// Origin identifies this Store in the Invalidations its changes cause,
// so that a replica can tell its own changes from other replicas'.
func (s *Store) Origin() string { return s.origin }

// newOrigin returns a random name for a Store.
func newOrigin() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Forget removes all of the account's data: records, tombstones, sync
// state and cursors (not its OAuth token). It returns an error wrapping
// cache.ErrNoAccount if there was none, and one wrapping cache.ErrInUse,
// changing nothing, while a Hold in this process or a live lease on any
// replica holds the account.
func (s *Store) Forget(account string) error {
	if err := checkAccount(account); err != nil {
		return err
	}
	done, ok := s.holds.Forget(account)
	if !ok {
		return fmt.Errorf("pgstore: forget %q: %w", account, cache.ErrInUse)
	}
	defer done()
	ctx, cancel := s.ctx()
	defer cancel()
	var leased, existed bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockAccount(ctx, tx, account); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM maildrop_lease WHERE account = $1 AND expires_at > clock_timestamp())", account).Scan(&leased)
		if err != nil || leased {
			return err
		}
		tag, err := tx.Exec(ctx, "DELETE FROM account WHERE name = $1", account)
		if err != nil {
			return err
		}
		existed = tag.RowsAffected() > 0
		return notify(ctx, tx, s.origin, "state", account)
	})
	switch {
	case err != nil:
		return wrap(fmt.Sprintf("forget %q", account), err)
	case leased:
		return fmt.Errorf("pgstore: forget %q: a session on a replica holds its lease: %w", account, cache.ErrInUse)
	case !existed:
		return fmt.Errorf("pgstore: forget %q: %w", account, cache.ErrNoAccount)
	}
	return nil
}

// Hold marks the account as used by a session of this process, so that
// Forget refuses it, until release is called; release may be called more
// than once. Hold waits while the account is being forgotten here.
// Sessions of other replicas are seen by Forget through their leases.
func (s *Store) Hold(account string) (release func(), err error) {
	if err := checkAccount(account); err != nil {
		return nil, err
	}
	return s.holds.Hold(account), nil
}

// Holders returns how many sessions (and background syncs) of this
// process hold account now, as Hold counts them.
func (s *Store) Holders(account string) int {
	return s.holds.Count(account)
}

// Stats reads every account's figures, sorted by account. DiskBytes is
// the size of the account's rows (pg_column_size), without indexes.
func (s *Store) Stats() ([]cache.AccountStats, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	rows, _ := s.pool.Query(ctx, `SELECT a.name,
		coalesce(m.n, 0), coalesce(t.n, 0), coalesce(m.bytes, 0),
		pg_column_size(a.*) + coalesce(m.disk, 0) + coalesce(t.disk, 0) + coalesce(ss.disk, 0) + coalesce(c.disk, 0)
		FROM account a
		LEFT JOIN (SELECT account, count(*) n, sum(size)::bigint bytes, sum(pg_column_size(message.*))::bigint disk FROM message GROUP BY account) m ON m.account = a.name
		LEFT JOIN (SELECT account, count(*) n, sum(pg_column_size(tombstone.*))::bigint disk FROM tombstone GROUP BY account) t ON t.account = a.name
		LEFT JOIN (SELECT account, pg_column_size(sync_state.*)::bigint disk FROM sync_state) ss ON ss.account = a.name
		LEFT JOIN (SELECT account, sum(pg_column_size(sync_cursor.*))::bigint disk FROM sync_cursor GROUP BY account) c ON c.account = a.name
		ORDER BY a.name COLLATE "C"`)
	var out []cache.AccountStats
	var st cache.AccountStats
	var msgs, tombs int64
	_, err := pgx.ForEachRow(rows, []any{&st.Account, &msgs, &tombs, &st.Bytes, &st.DiskBytes}, func() error {
		st.Messages, st.Tombstones = int(msgs), int(tombs)
		out = append(out, st)
		return nil
	})
	if err != nil {
		return nil, wrap("stats", err)
	}
	return out, nil
}

// validationError is a caller's mistake, never temporary.
type validationError struct{ msg string }

func (e *validationError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &validationError{fmt.Sprintf(format, args...)}
}

// checkAccount rejects names PostgreSQL text cannot hold, or too long.
func checkAccount(a string) error {
	switch {
	case a == "":
		return invalid("pgstore: empty account")
	case len(a) > MaxKeySize:
		return invalid("pgstore: account of %d bytes is longer than %d", len(a), MaxKeySize)
	case !utf8.ValidString(a) || strings.ContainsRune(a, 0):
		return invalid("pgstore: account %q is not UTF-8 text without NUL", a)
	}
	return nil
}

func checkKey(k string) error {
	if k == "" {
		return invalid("pgstore: empty message key")
	}
	if len(k) > MaxKeySize {
		return invalid("pgstore: message key of %d bytes is longer than %d", len(k), MaxKeySize)
	}
	return nil
}

func checkChange(c cache.Change) error {
	for _, r := range c.Put {
		if err := checkKey(r.Key); err != nil {
			return err
		}
		if r.Size < 0 {
			return invalid("pgstore: message %q: negative size %d", r.Key, r.Size)
		}
	}
	for _, list := range [][]string{c.Delete, c.AddTombstones, c.RemoveTombstones} {
		for _, k := range list {
			if err := checkKey(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// unique returns ss without repeats: ON CONFLICT cannot touch a row
// twice in one statement.
func unique(ss []string) []string {
	seen := make(map[string]bool, len(ss))
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func bytesOf(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

var _ cache.StateStore = (*Store)(nil)
