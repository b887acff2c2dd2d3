package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// File layout (schema version 2):
//
//	meta/version           decimal schema version
//	accounts/<name>/m/<key> message record (see codec.go)
//	accounts/<name>/t/<key> tombstone, empty value
//	accounts/<name>/s       sync state (see codec.go)
var (
	bucketMeta     = []byte("meta")
	keyVersion     = []byte("version")
	bucketAccounts = []byte("accounts")
	bucketMessages = []byte("m")
	bucketTombs    = []byte("t")
	keySync        = []byte("s")
)

// Defaults for Options fields left zero.
const (
	DefaultLockTimeout   = time.Second
	DefaultMemoryRecords = 250_000
	DefaultBatchDelay    = 5 * time.Millisecond
)

// bigChange is the number of edits from which a change commits at once in
// its own transaction instead of waiting to share one.
const bigChange = 256

// Errors returned by Forget.
var (
	// ErrNoAccount: the store has no data for the account.
	ErrNoAccount = errors.New("cache: no such account")
	// ErrInUse: a session holds the account (see Store.Hold).
	ErrInUse = errors.New("cache: account in use by an open session")
)

// ErrLocked is returned by Open when another Store holds the file for
// longer than Options.LockTimeout.
var ErrLocked = errors.New("still locked by another process")

// Options tunes a Store. The zero value is ready to use.
type Options struct {
	// LockTimeout is how long Open waits for another process to release
	// the file; zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// MemoryRecords bounds the account snapshots kept in memory, counted
	// in records (messages, tombstones and POP3 UIDLs; a message with a
	// 45-byte key costs about 180 bytes, plus the length of its Stamp);
	// zero means DefaultMemoryRecords, a negative value keeps none in
	// memory.
	MemoryRecords int
	// BatchDelay is how long a small change waits to share a commit, and
	// its fsync, with changes to other accounts; zero means
	// DefaultBatchDelay, a negative value commits every change alone.
	BatchDelay time.Duration
	// ReadOnly opens an existing file for reading only, under a shared
	// lock that read-only Stores of other processes share too: nothing is
	// created or migrated (an older schema fails with ErrNeedsMigration),
	// and every write fails.
	ReadOnly bool
}

// MessageRecord is what the store knows about one upstream message.
type MessageRecord struct {
	// Key is the backend's stable id for the message; never empty.
	Key string
	// Size is the exact size in octets with CRLF line ends, before
	// dot-stuffing (RFC 1939 §11).
	Size int64
	// UIDL is the unique-id handed out for the message (RFC 1939 §7);
	// empty means none was assigned yet.
	UIDL string
	// Stamp is backend-defined and opaque to the store: something that
	// changes when the message does (e.g. a file's size and mtime), so
	// the backend can tell whether Size still holds. Empty means none.
	Stamp string
}

// SyncState is an account's incremental sync position. Zero fields mean
// "nothing seen yet".
type SyncState struct {
	// UIDValidity is the IMAP UIDVALIDITY the other fields belong to
	// (RFC 9051 §2.3.1.1).
	UIDValidity uint32
	// HighestUID is the highest IMAP UID already recorded.
	HighestUID uint32
	// HistoryID is the Gmail historyId of the last sync.
	HistoryID uint64
	// POP3UIDLs is the upstream POP3 server's UIDL listing at the last
	// sync; it is stored and replaced as a whole.
	POP3UIDLs []string
}

// Change is a set of edits to one account that Apply commits atomically,
// in this order: Delete, Put, RemoveTombstones, AddTombstones, Sync. Keys
// that are absent are ignored by Delete and RemoveTombstones.
type Change struct {
	Put              []MessageRecord // added or replaced, by Key
	Delete           []string        // message keys to remove
	AddTombstones    []string        // keys to hide from POP
	RemoveTombstones []string        // keys to show again
	Sync             *SyncState      // if not nil, replaces the sync state
}

// AccountStats describes one account's data in the store.
type AccountStats struct {
	Account    string
	Messages   int   // message records
	Tombstones int   // hidden keys
	Bytes      int64 // sum of the recorded message sizes
	DiskBytes  int64 // bytes of file pages the account's data uses
}

// Store is the persistent per-account cache. It is safe for concurrent use.
// A file is held by one Store at a time: a second Open, from this process
// or another, waits Options.LockTimeout for it and fails.
type Store struct {
	db    *bolt.DB
	path  string
	batch bool
	mem   *memory
	locks accountLocks
	holds Holds
	loads atomic.Int64 // accounts read whole from bbolt, for tests
}

// Open opens or creates the store at path (mode 0600; its directory is
// created 0700 if missing), migrating an older schema and refusing a newer
// one; see Options.ReadOnly for the exceptions. An existing file is read
// whole first (see Verify): a damaged one is an error matching ErrDamaged.
// A nil opts means the zero Options.
func Open(path string, opts *Options) (*Store, error) {
	return open(path, opts, migrations)
}

func open(path string, opts *Options, migs []migration) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.MemoryRecords == 0 {
		o.MemoryRecords = DefaultMemoryRecords
	}
	if o.BatchDelay == 0 {
		o.BatchDelay = DefaultBatchDelay
	}
	if !o.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("cache: open %s: %w", path, err)
		}
	}
	// An existing file is verified before use: bbolt panics, or reads
	// outside the file, on a damaged one.
	size, err := fileSize(path)
	exists := !errors.Is(err, fs.ErrNotExist)
	if err != nil && exists {
		return nil, err
	}
	if exists && !o.ReadOnly {
		if err := Verify(path, &o); err != nil {
			return nil, err
		}
	}
	db, err := openBolt(path, &bolt.Options{Timeout: o.LockTimeout, ReadOnly: o.ReadOnly})
	if err != nil {
		return nil, err
	}
	if exists && o.ReadOnly {
		if err := verifyDB(db, path, size); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := prepare(db, migs, o.ReadOnly); err != nil {
		db.Close()
		return nil, fmt.Errorf("cache: open %s: %w", path, err)
	}
	s := &Store{db: db, path: path, batch: o.BatchDelay > 0, mem: newMemory(int64(o.MemoryRecords))}
	if s.batch {
		db.MaxBatchDelay = o.BatchDelay
	}
	return s, nil
}

// Path returns the file the store was opened from.
func (s *Store) Path() string { return s.path }

// Close releases the file and drops the memory layer.
func (s *Store) Close() error {
	s.mem.purge()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("cache: close %s: %w", s.path, err)
	}
	return nil
}

// Snapshot returns an immutable view of the account; an account without
// data yields an empty one. A warm snapshot is served from memory.
func (s *Store) Snapshot(account string) (*Snapshot, error) {
	if err := checkName("account", account); err != nil {
		return nil, err
	}
	if snap, ok := s.mem.get(account); ok {
		return snap, nil
	}
	gen := s.mem.generation(account)
	snap, err := s.load(account)
	if err != nil {
		return nil, err
	}
	s.mem.install(account, snap, gen)
	return snap, nil
}

// Messages returns a copy of the account's message records by key. For
// lookups without the copy, use Snapshot.
func (s *Store) Messages(account string) (map[string]MessageRecord, error) {
	snap, err := s.Snapshot(account)
	if err != nil {
		return nil, err
	}
	return maps.Clone(snap.msgs), nil
}

// Message returns the record for key, and whether there is one.
func (s *Store) Message(account, key string) (MessageRecord, bool, error) {
	snap, err := s.Snapshot(account)
	if err != nil {
		return MessageRecord{}, false, err
	}
	r, ok := snap.Message(key)
	return r, ok, nil
}

// Tombstones returns a copy of the account's set of hidden keys.
func (s *Store) Tombstones(account string) (map[string]struct{}, error) {
	snap, err := s.Snapshot(account)
	if err != nil {
		return nil, err
	}
	return maps.Clone(snap.tombs), nil
}

// IsTombstoned reports whether key is hidden from POP.
func (s *Store) IsTombstoned(account, key string) (bool, error) {
	snap, err := s.Snapshot(account)
	if err != nil {
		return false, err
	}
	return snap.Tombstoned(key), nil
}

// SyncState returns the account's sync state; zero if none was stored.
func (s *Store) SyncState(account string) (SyncState, error) {
	snap, err := s.Snapshot(account)
	if err != nil {
		return SyncState{}, err
	}
	return snap.Sync(), nil
}

// PutMessages adds or replaces records in one transaction.
func (s *Store) PutMessages(account string, recs []MessageRecord) error {
	return s.Apply(account, Change{Put: recs})
}

// DeleteMessages removes records; absent keys are ignored. Tombstones are
// left alone.
func (s *Store) DeleteMessages(account string, keys []string) error {
	return s.Apply(account, Change{Delete: keys})
}

// AddTombstones hides keys from POP.
func (s *Store) AddTombstones(account string, keys []string) error {
	return s.Apply(account, Change{AddTombstones: keys})
}

// RemoveTombstones shows keys again; absent keys are ignored.
func (s *Store) RemoveTombstones(account string, keys []string) error {
	return s.Apply(account, Change{RemoveTombstones: keys})
}

// PutSyncState replaces the account's sync state.
func (s *Store) PutSyncState(account string, st SyncState) error {
	return s.Apply(account, Change{Sync: &st})
}

// Apply commits c to the account atomically and durably (fsync) before
// it returns. Small changes to different accounts made at the same time
// share one commit; see Options.BatchDelay.
func (s *Store) Apply(account string, c Change) error {
	if err := c.check(account); err != nil {
		return err
	}
	if c.edits() == 0 {
		return nil
	}
	unlock := s.locks.lock(account)
	defer unlock()
	w := c.sorted()
	fn := func(tx *bolt.Tx) error { return w.write(tx, account) }
	var err error
	if s.batch && c.edits() < bigChange {
		err = s.db.Batch(fn)
	} else {
		err = s.db.Update(fn)
	}
	if err != nil {
		s.mem.drop(account)
		return fmt.Errorf("cache: account %q: write: %w", account, err)
	}
	s.mem.applied(account, &c)
	return nil
}

// Forget removes all of the account's data: records, tombstones and sync
// state. It returns an error wrapping ErrNoAccount if there was none, and
// one wrapping ErrInUse, changing nothing, while a Hold on the account is
// not released.
func (s *Store) Forget(account string) error {
	if err := checkName("account", account); err != nil {
		return err
	}
	done, ok := s.holds.Forget(account)
	if !ok {
		return fmt.Errorf("cache: forget %q: %w", account, ErrInUse)
	}
	defer done()
	unlock := s.locks.lock(account)
	defer unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).DeleteBucket([]byte(account))
	})
	s.mem.drop(account)
	if errors.Is(err, berrors.ErrBucketNotFound) {
		return fmt.Errorf("cache: forget %q: %w", account, ErrNoAccount)
	}
	if err != nil {
		return fmt.Errorf("cache: forget %q: %w", account, err)
	}
	return nil
}

// Hold marks the account as used by a session, so that Forget refuses
// it, until release is called; release may be called more than once.
// Hold waits while the account is being forgotten. A backend holds its
// account from login to logout.
func (s *Store) Hold(account string) (release func(), err error) {
	if err := checkName("account", account); err != nil {
		return nil, err
	}
	return s.holds.Hold(account), nil
}

// Stats reads every account's figures from the file, sorted by account.
func (s *Store) Stats() ([]AccountStats, error) {
	var out []AccountStats
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).ForEachBucket(func(name []byte) error {
			acc := tx.Bucket(bucketAccounts).Bucket(name)
			st := AccountStats{Account: string(name)}
			bs := acc.Stats()
			st.DiskBytes = int64(bs.BranchInuse + bs.LeafInuse + bs.InlineBucketInuse)
			if m := acc.Bucket(bucketMessages); m != nil {
				err := m.ForEach(func(k, v []byte) error {
					r, err := decodeMessage(k, v)
					if err != nil {
						return err
					}
					st.Messages++
					st.Bytes += r.Size
					return nil
				})
				if err != nil {
					return fmt.Errorf("account %q: %w", name, err)
				}
			}
			if t := acc.Bucket(bucketTombs); t != nil {
				st.Tombstones = t.Stats().KeyN
			}
			out = append(out, st)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("cache: stats %s: %w", s.path, err)
	}
	return out, nil
}

// load reads the account whole from the file.
func (s *Store) load(account string) (*Snapshot, error) {
	s.loads.Add(1)
	snap := &Snapshot{msgs: map[string]MessageRecord{}, tombs: map[string]struct{}{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		acc := tx.Bucket(bucketAccounts).Bucket([]byte(account))
		if acc == nil {
			return nil
		}
		if m := acc.Bucket(bucketMessages); m != nil {
			err := m.ForEach(func(k, v []byte) error {
				r, err := decodeMessage(k, v)
				if err != nil {
					return err
				}
				snap.msgs[r.Key] = r
				return nil
			})
			if err != nil {
				return err
			}
		}
		if t := acc.Bucket(bucketTombs); t != nil {
			err := t.ForEach(func(k, _ []byte) error {
				snap.tombs[string(k)] = struct{}{}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if v := acc.Get(keySync); v != nil {
			st, err := decodeSync(v)
			if err != nil {
				return err
			}
			snap.sync = st
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cache: account %q: read: %w", account, err)
	}
	return snap, nil
}

// check validates the change before any transaction starts.
func (c *Change) check(account string) error {
	if err := checkName("account", account); err != nil {
		return err
	}
	for _, r := range c.Put {
		if err := checkName("message key", r.Key); err != nil {
			return err
		}
		if r.Size < 0 {
			return fmt.Errorf("cache: message %q: negative size %d", r.Key, r.Size)
		}
	}
	for _, list := range [][]string{c.Delete, c.AddTombstones, c.RemoveTombstones} {
		for _, k := range list {
			if err := checkName("message key", k); err != nil {
				return err
			}
		}
	}
	return nil
}

// edits counts the change's individual edits.
func (c *Change) edits() int {
	n := len(c.Put) + len(c.Delete) + len(c.AddTombstones) + len(c.RemoveTombstones)
	if c.Sync != nil {
		n++
	}
	return n
}

// sorted returns c with its lists sorted by key, copied when needed: bbolt
// inserts a long run of random keys several times slower than sorted ones.
// Sorting keeps the order of each list's edits to one key.
func (c *Change) sorted() *Change {
	w := *c
	if len(c.Put) > 1 && !slices.IsSortedFunc(c.Put, compareKeys) {
		w.Put = slices.Clone(c.Put)
		slices.SortStableFunc(w.Put, compareKeys)
	}
	for _, l := range []*[]string{&w.Delete, &w.AddTombstones, &w.RemoveTombstones} {
		if len(*l) > 1 && !slices.IsSorted(*l) {
			*l = slices.Sorted(slices.Values(*l))
		}
	}
	return &w
}

func compareKeys(a, b MessageRecord) int { return strings.Compare(a.Key, b.Key) }

// write applies the change inside tx. It may run more than once (bbolt
// retries a batch without a failed member), so it only sets state.
func (c *Change) write(tx *bolt.Tx, account string) error {
	accounts := tx.Bucket(bucketAccounts)
	acc := accounts.Bucket([]byte(account))
	if acc == nil {
		if len(c.Put) == 0 && len(c.AddTombstones) == 0 && c.Sync == nil {
			return nil // only removals from an empty account
		}
		var err error
		if acc, err = accounts.CreateBucket([]byte(account)); err != nil {
			return err
		}
	}
	if err := edit(acc, bucketMessages, c.Delete, len(c.Put), func(b *bolt.Bucket) error {
		for _, r := range c.Put {
			if err := b.Put([]byte(r.Key), encodeMessage(r)); err != nil {
				return fmt.Errorf("message %q: %w", r.Key, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := edit(acc, bucketTombs, c.RemoveTombstones, len(c.AddTombstones), func(b *bolt.Bucket) error {
		for _, k := range c.AddTombstones {
			if err := b.Put([]byte(k), []byte{}); err != nil {
				return fmt.Errorf("tombstone %q: %w", k, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if c.Sync != nil {
		if err := acc.Put(keySync, encodeSync(*c.Sync)); err != nil {
			return fmt.Errorf("sync state: %w", err)
		}
	}
	return nil
}

// edit deletes keys from the named sub-bucket, then runs put if adds > 0,
// creating the sub-bucket only when something is added.
func edit(acc *bolt.Bucket, name []byte, del []string, adds int, put func(*bolt.Bucket) error) error {
	b := acc.Bucket(name)
	if b != nil {
		for _, k := range del {
			if err := b.Delete([]byte(k)); err != nil {
				return fmt.Errorf("delete %q: %w", k, err)
			}
		}
	}
	if adds == 0 {
		return nil
	}
	if b == nil {
		var err error
		if b, err = acc.CreateBucket(name); err != nil {
			return err
		}
	}
	return put(b)
}

// checkName rejects what bbolt cannot store as a key.
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("cache: empty %s", what)
	}
	if len(s) > bolt.MaxKeySize {
		return fmt.Errorf("cache: %s of %d bytes is longer than %d", what, len(s), bolt.MaxKeySize)
	}
	return nil
}

// accountLocks serialises writers of one account, so that the memory layer
// sees their commits in commit order; writers of different accounts run
// (and batch) concurrently.
type accountLocks struct {
	mu sync.Mutex
	m  map[string]*accountLock
}

type accountLock struct {
	mu   sync.Mutex
	refs int
}

func (l *accountLocks) lock(account string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*accountLock{}
	}
	al := l.m[account]
	if al == nil {
		al = &accountLock{}
		l.m[account] = al
	}
	al.refs++
	l.mu.Unlock()
	al.mu.Lock()
	return func() {
		al.mu.Unlock()
		l.mu.Lock()
		if al.refs--; al.refs == 0 {
			delete(l.m, account)
		}
		l.mu.Unlock()
	}
}

// Holders returns how many sessions (and background syncs) hold account
// now, as Hold counts them.
func (s *Store) Holders(account string) int {
	return s.holds.Count(account)
}
