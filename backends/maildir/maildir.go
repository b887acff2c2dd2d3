// Package maildir serves a local Maildir as a POP3 maildrop.
//
// Messages are the regular files in cur/ and new/ whose names do not start
// with "."; tmp/, Dovecot's control and index files and Maildir++
// subfolders are ignored. A message's UIDL is its Maildir unique name (the
// file name before the ":" info part), so it survives the move from new/
// to cur/ and flag changes.
package maildir

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// Options configures a Backend.
type Options struct {
	// Path is the Maildir (the folder holding cur/ and new/). Required.
	Path string
	// OnDelete is the delete policy, one of modes.MaildirOnDelete; empty
	// means modes.Remove, which unlinks the message file at QUIT.
	// modes.Keep leaves the file and hides the message from POP, across
	// restarts.
	OnDelete modes.OnDelete
	// Store keeps, per account, each message's exact size and UIDL (keyed
	// by its unique name, stamped with the file's size and mtime) across
	// restarts, and the Keep policy's hidden messages as tombstones.
	// Required for Keep; nil keeps sizes in this process only.
	Store cache.StateStore
	// Account names the account in Store. Empty means "path-" and 16 hex
	// digits of the SHA-256 of Path made absolute.
	Account string
}

// String describes o for people, with the default New applies:
// "maildir PATH, on_delete POLICY".
func (o Options) String() string {
	return fmt.Sprintf("maildir %s, on_delete %s", o.Path, modes.MaildirOnDelete.Or(o.OnDelete))
}

// Backend is one account's Maildir. Login does not check credentials: the
// caller (the account router) has done that.
type Backend struct {
	opts    Options
	account string       // the account in opts.Store
	reads   atomic.Int64 // files read to learn their size, for tests
	stats   atomic.Int64 // files stat'ed by List, for tests

	mu    sync.Mutex
	local map[string]cache.MessageRecord // without a Store; replaced, never changed

	dirReads atomic.Int64 // directories read, for tests
	scanMu   sync.Mutex
	scanned  *scanResult  // the last scan; its entries are never changed
	held     *heldEntries // what scanned counts, given back when b is collected
}

// New returns a Backend for opts. It does not touch the file system.
func New(opts Options) (*Backend, error) {
	if opts.Path == "" {
		return nil, errors.New("maildir: path is required")
	}
	opts.Path = filepath.Clean(opts.Path)
	if opts.OnDelete = modes.MaildirOnDelete.Or(opts.OnDelete); !modes.MaildirOnDelete.Has(opts.OnDelete) {
		return nil, fmt.Errorf("maildir: unknown delete policy %q (want %s)", opts.OnDelete, modes.MaildirOnDelete)
	}
	if opts.OnDelete == modes.Keep && opts.Store == nil {
		return nil, errors.New("maildir: the keep policy needs a cache store")
	}
	b := &Backend{opts: opts, account: opts.Account, held: &heldEntries{pool: &cachedEntries}}
	// A configuration reload drops Backends: their scans stop counting.
	runtime.AddCleanup(b, func(h *heldEntries) { h.pool.Add(-h.n.Load()) }, b.held)
	if b.account == "" {
		abs, err := filepath.Abs(opts.Path)
		if err != nil {
			return nil, fmt.Errorf("maildir: %w", err)
		}
		sum := sha256.Sum256([]byte(abs))
		b.account = "path-" + hex.EncodeToString(sum[:8])
	}
	return b, nil
}

// OpenMaildrop opens the maildrop; the login is not needed.
func (b *Backend) OpenMaildrop(ctx context.Context, _ backends.Login) (proxy.Mailbox, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, sub := range []string{"cur", "new"} {
		dir := filepath.Join(b.opts.Path, sub)
		fi, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("maildir: open %q: %w", b.opts.Path, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("maildir: open %q: %s is not a directory", b.opts.Path, sub)
		}
	}
	m := &mailbox{b: b}
	if b.opts.Store != nil {
		release, err := b.opts.Store.Hold(b.account)
		if err != nil {
			return nil, fmt.Errorf("maildir: open %q: %w", b.opts.Path, err)
		}
		m.release = release
	}
	return m, nil
}

// Check verifies that the Maildir exists and can be read, and with a
// Store that the account's records can be read.
func (b *Backend) Check(ctx context.Context) error {
	for _, sub := range []string{"cur", "new"} {
		if err := ctx.Err(); err != nil {
			return err
		}
		dir := filepath.Join(b.opts.Path, sub)
		f, err := os.Open(dir)
		if err != nil {
			return fmt.Errorf("maildir: check %q: %w", b.opts.Path, err)
		}
		_, err = f.ReadDir(1)
		f.Close()
		if err != nil && err != io.EOF {
			return fmt.Errorf("maildir: check %q: read %s: %w", b.opts.Path, sub, err)
		}
	}
	if _, err := b.view(); err != nil {
		return fmt.Errorf("maildir: check %q: %w", b.opts.Path, err)
	}
	return nil
}

// UID returns the UIDL for a Maildir unique name: the name itself when it
// is a valid UIDL (RFC 1939 §7), otherwise "X:" and 40 hex digits of its
// SHA-256. A unique name never contains ":", so the two forms never meet.
func UID(base string) string {
	if proxy.ValidUID(base) {
		return base
	}
	sum := sha256.Sum256([]byte(base))
	return "X:" + hex.EncodeToString(sum[:20])
}

// baseName returns the unique name of a Maildir file name: the part before
// the ":" that starts the info.
func baseName(name string) string {
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return name[:i]
	}
	return name
}

// subdirs are the directories holding messages, in scan order.
var subdirs = [2]string{"new", "cur"}

// entry is one message file found by a scan, kept small for sorting.
type entry struct {
	name string // the file name in its directory
	sec  uint64 // the leading run of digits of the name as a number, if ok
	blen uint16 // the length of the unique name, a prefix of name
	sub  uint8  // its directory: an index into subdirs
	ok   bool   // sec is set
}

// base returns the unique name.
func (e *entry) base() string { return e.name[:e.blen] }

// newEntry returns the entry of file name with unique name base in
// directory subdirs[sub].
func newEntry(name, base string, sub int) entry {
	sec, ok := leadingNumber(base)
	return entry{name: name, sec: sec, blen: uint16(len(base)), sub: uint8(sub), ok: ok}
}

// path returns the file's path.
func (b *Backend) path(e *entry) string {
	return filepath.Join(b.opts.Path, subdirs[e.sub], e.name)
}

// compareEntries orders entries by unique name (compareNames), a name in
// cur/ before one in new/, then by file name.
func compareEntries(a, b *entry) int {
	if a.ok && b.ok && a.sec != b.sec {
		// What compareNames decides at the first run of digits.
		if a.sec < b.sec {
			return -1
		}
		return 1
	}
	if c := compareNames(a.base(), b.base()); c != 0 {
		return c
	}
	if a.sub != b.sub {
		return int(b.sub) - int(a.sub)
	}
	return strings.Compare(a.name, b.name)
}

// leadingNumber returns the value of the run of digits base starts with,
// and false if there is none or it does not fit.
func leadingNumber(base string) (uint64, bool) {
	i := 0
	for i < len(base) && base[i] == '0' {
		i++
	}
	j := i
	for j < len(base) && isDigit(base[j]) {
		j++
	}
	if j == 0 || j-i > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range []byte(base[i:j]) {
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// dirScan is what one scan found in one directory, and what the
// directory was before it was read.
type dirScan struct {
	at   time.Time   // when the directory was stat'ed
	fi   fs.FileInfo // the directory then
	ents []entry     // sorted and without duplicates; never changed
}

// settle is how old a directory's mtime must have been at a scan for a
// later scan to trust that an equal mtime means no change. A change sets
// the mtime to the time of the change, in steps of the file system's
// timestamp granularity (a clock tick; 2 s on FAT, the coarsest).
const settle = 2 * time.Second

// unchanged reports whether the directory, stat'ed now as fi, is as it
// was at scan d, so that d's entries are still right.
func (d *dirScan) unchanged(fi fs.FileInfo) bool {
	return d != nil && os.SameFile(d.fi, fi) && d.fi.ModTime().Equal(fi.ModTime()) &&
		d.fi.Size() == fi.Size() && d.fi.ModTime().Before(d.at.Add(-settle))
}

// scanResult is the last scan of a Maildir: new/, cur/ and the two merged.
type scanResult struct {
	dirs  [2]*dirScan
	found []entry // never changed
}

// entries returns the number of entries r holds.
func (r *scanResult) entries() int64 {
	if r == nil {
		return 0
	}
	n := len(r.dirs[0].ents) + len(r.dirs[1].ents)
	if len(r.dirs[0].ents) > 0 && len(r.dirs[1].ents) > 0 {
		n += len(r.found) // else found is one of them
	}
	return int64(n)
}

// cachedEntries is the number of entries that scan results of all
// Backends hold; a scan is not kept when it would pass maxCachedEntries.
var cachedEntries atomic.Int64

// heldEntries is what one Backend's scan counts in pool (cachedEntries
// but in tests).
type heldEntries struct {
	pool *atomic.Int64
	n    atomic.Int64
}

const maxCachedEntries = 500_000

// scan reads new/ and then cur/, in that order so that a message moving
// from new/ to cur/ during the scan is seen at least once. It returns one
// entry per unique name, sorted by compareEntries; a message found in both
// directories is taken from cur/, two names in one directory give the
// first by name. It reads only the directories: no file is stat'ed
// (file types come from the directory entries). With reuse, a directory
// that did not change since the last scan (same mtime, which was settled
// then) is not read again, as in Dovecot; the caller must not change the
// entries returned.
func (b *Backend) scan(ctx context.Context, reuse bool) ([]entry, error) {
	var fis [2]fs.FileInfo
	at := time.Now()
	for sub, name := range subdirs {
		dir := filepath.Join(b.opts.Path, name)
		fi, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("maildir: scan %q: %w", dir, err)
		}
		fis[sub] = fi
	}
	var last *scanResult
	if reuse {
		b.scanMu.Lock()
		last = b.scanned
		b.scanMu.Unlock()
	}
	r := &scanResult{}
	for sub := range subdirs {
		if last != nil && last.dirs[sub].unchanged(fis[sub]) {
			r.dirs[sub] = last.dirs[sub]
			continue
		}
		ents, err := b.readDir(ctx, sub)
		if err != nil {
			return nil, err
		}
		r.dirs[sub] = &dirScan{at: at, fi: fis[sub], ents: ents}
	}
	if last != nil && r.dirs == last.dirs {
		return last.found, nil
	}
	r.found = merge(r.dirs[0].ents, r.dirs[1].ents)
	b.keep(r)
	return r.found, nil
}

// readDir returns the messages of directory subdirs[sub], sorted by
// compareEntries, the first of each unique name only.
func (b *Backend) readDir(ctx context.Context, sub int) ([]entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir := filepath.Join(b.opts.Path, subdirs[sub])
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("maildir: scan %q: %w", dir, err)
	}
	b.dirReads.Add(1)
	des, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("maildir: scan %q: %w", dir, err)
	}
	ents := make([]entry, 0, len(des))
	for _, de := range des {
		name := de.Name()
		if name == "" || name[0] == '.' {
			continue
		}
		// A regular file, or a symbolic link that List follows.
		if t := de.Type(); t != 0 && t != fs.ModeSymlink {
			continue
		}
		base := baseName(name)
		if base == "" || len(base) > math.MaxUint16 {
			continue
		}
		ents = append(ents, newEntry(name, base, sub))
	}
	slices.SortFunc(ents, func(a, b entry) int { return compareEntries(&a, &b) })
	// Equal unique names are now adjacent, the one to keep first.
	return slices.CompactFunc(ents, func(a, b entry) bool { return a.base() == b.base() }), nil
}

// merge merges the sorted entries of new/ and cur/; of a unique name in
// both it keeps cur/'s (compareEntries puts it first).
func merge(a, b []entry) []entry {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := make([]entry, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if compareEntries(&a[0], &b[0]) <= 0 {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	out = append(append(out, a...), b...)
	return slices.CompactFunc(out, func(a, b entry) bool { return a.base() == b.base() })
}

// keep makes r (nil for none) the scan that the next one may reuse,
// within the bound on cached entries.
func (b *Backend) keep(r *scanResult) {
	b.scanMu.Lock()
	defer b.scanMu.Unlock()
	pool := b.held.pool
	old, n := b.held.n.Load(), r.entries()
	if pool.Add(n-old) > maxCachedEntries {
		pool.Add(-n)
		r, n = nil, 0
	}
	b.held.n.Store(n)
	b.scanned = r
}

// lookup returns the index of the entry with unique name base in sorted,
// and whether there is one.
func lookup(sorted []entry, base string) (int, bool) {
	key := newEntry(base, base, 0)
	return slices.BinarySearchFunc(sorted, key, func(e, k entry) int {
		if e.ok && k.ok && e.sec != k.sec {
			if e.sec < k.sec {
				return -1
			}
			return 1
		}
		return compareNames(e.base(), k.base())
	})
}

// compareNames orders unique names by delivery time: runs of digits
// compare as numbers (the leading seconds, Dovecot's M microseconds), the
// rest as bytes; names equal by that rule fall back to byte order.
func compareNames(a, b string) int {
	// Skip the common prefix, back to the start of a run of digits in
	// it: the rule compares that prefix equal, token by token.
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		p++
	}
	for p > 0 && isDigit(a[p-1]) {
		p--
	}
	return compareNamesFrom(a, b, p)
}

// compareNamesFrom is compareNames of a and b, which are equal before
// offset p, where no run of digits is cut.
func compareNamesFrom(a, b string, p int) int {
	i, j := p, p
	for i < len(a) && j < len(b) {
		if isDigit(a[i]) && isDigit(b[j]) {
			si, sj := i, j
			for i < len(a) && isDigit(a[i]) {
				i++
			}
			for j < len(b) && isDigit(b[j]) {
				j++
			}
			na := strings.TrimLeft(a[si:i], "0")
			nb := strings.TrimLeft(b[sj:j], "0")
			if len(na) != len(nb) {
				return len(na) - len(nb)
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			continue
		}
		if a[i] != b[j] {
			return int(a[i]) - int(b[j])
		}
		i++
		j++
	}
	if c := (len(a) - i) - (len(b) - j); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// records is what List needs from the cache: a *cache.Snapshot, or a
// localView without a Store.
type records interface {
	Len() int
	Message(key string) (cache.MessageRecord, bool)
	Messages() iter.Seq[cache.MessageRecord]
	Tombstoned(key string) bool
	TombstoneCount() int
	Tombstones() iter.Seq[string]
}

// localView is the records of a Backend without a Store; it has no
// tombstones, since Keep needs a Store.
type localView map[string]cache.MessageRecord

func (v localView) Len() int { return len(v) }

func (v localView) Message(key string) (cache.MessageRecord, bool) {
	r, ok := v[key]
	return r, ok
}

func (v localView) Messages() iter.Seq[cache.MessageRecord] { return maps.Values(v) }
func (v localView) Tombstoned(string) bool                  { return false }
func (v localView) TombstoneCount() int                     { return 0 }
func (v localView) Tombstones() iter.Seq[string]            { return func(func(string) bool) {} }

// view returns the account's records as they are now.
func (b *Backend) view() (records, error) {
	if b.opts.Store == nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		return localView(b.local), nil
	}
	snap, err := b.opts.Store.Snapshot(b.account)
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// update applies c to the account's records: in one commit to the Store,
// or to a new copy of the local map.
func (b *Backend) update(c cache.Change) error {
	if b.opts.Store != nil {
		return b.opts.Store.Apply(b.account, c)
	}
	if len(c.Put) == 0 && len(c.Delete) == 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := maps.Clone(b.local)
	if n == nil {
		n = make(map[string]cache.MessageRecord, len(c.Put))
	}
	for _, k := range c.Delete {
		delete(n, k)
	}
	for _, r := range c.Put {
		n[r.Key] = r
	}
	b.local = n
	return nil
}

// stamp identifies one version of a message file: its size and mtime.
// Maildir files never change in place, so an equal stamp means an equal
// size on the wire.
func stamp(fi fs.FileInfo) string {
	return strconv.FormatInt(fi.Size(), 10) + ":" + strconv.FormatInt(fi.ModTime().UnixNano(), 10)
}

// sizeInName returns the S= field of a unique name (Dovecot's and
// Maildir++'s file size, as in "1700000000.M1P2.host,S=1234,W=1270"), or
// "" if it has none.
func sizeInName(base string) string {
	i := strings.Index(base, ",S=")
	if i < 0 {
		return ""
	}
	v := base[i+3:]
	if j := strings.IndexByte(v, ','); j >= 0 {
		v = v[:j]
	}
	return v
}

// vouched reports whether r can be used without looking at the file: the
// file's name states its size (S=), and that size was the file's when r
// was made from it. Maildir files never change in place, and a writer
// that names files with their size renames a file whose size changes.
func vouched(base string, r cache.MessageRecord) bool {
	s := sizeInName(base)
	size, _, ok := strings.Cut(r.Stamp, ":")
	return ok && s != "" && s == size
}

// measure returns the record of the message file e with UID uid: the
// known one when the name vouches for it (no system call) or its stamp
// still matches the file, else a new one made by reading the file, and
// then fresh is true. It returns an error wrapping fs.ErrNotExist if the
// file is gone and errNotRegular for anything but a file.
func (b *Backend) measure(uid string, e *entry, known records) (r cache.MessageRecord, fresh bool, err error) {
	base := e.base()
	r, ok := known.Message(base)
	if ok && r.UIDL == uid && vouched(base, r) {
		return r, false, nil
	}
	path := b.path(e)
	b.stats.Add(1)
	fi, err := os.Stat(path)
	if err != nil {
		return r, false, err
	}
	if !fi.Mode().IsRegular() {
		return r, false, errNotRegular
	}
	st := stamp(fi)
	if ok && r.Stamp == st && r.UIDL == uid {
		return r, false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return r, false, err
	}
	defer f.Close()
	b.reads.Add(1)
	var c proxy.SizeCounter
	buf := bufPool.Get().(*[]byte)
	_, err = io.CopyBuffer(&c, struct{ io.Reader }{f}, *buf)
	bufPool.Put(buf)
	if err != nil {
		return r, false, err
	}
	return cache.MessageRecord{Key: base, Size: c.Size(), UIDL: uid, Stamp: st}, true, nil
}

var errNotRegular = errors.New("not a regular file")

// testHookAfterScan, when set by a test, runs between List's scan and its
// stats, where a concurrent rename or removal hurts most.
var testHookAfterScan func()

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// mailbox is one session's view of the Maildir.
type mailbox struct {
	b       *Backend
	release func()         // the Store hold, if any
	listed  []entry        // the listed messages in List order, with their last known names
	stamps  []string       // of each listed message: the stamp of the record its size came from
	index   map[string]int // UID to index in listed; made at the first use
	gone    []string       // tombstones whose file was absent at List
}

var (
	_ proxy.Mailbox      = (*mailbox)(nil)
	_ proxy.MaildropIDer = (*mailbox)(nil)
	_ backends.Opener    = (*Backend)(nil)
)

// MaildropID is the Maildir's absolute path, so that two accounts on one
// Maildir share the session lock.
func (m *mailbox) MaildropID() string {
	if abs, err := filepath.Abs(m.b.opts.Path); err == nil {
		return "maildir:" + abs
	}
	return "maildir:" + m.b.opts.Path
}

// List returns the visible messages ordered by unique name (delivery time
// first), with exact CRLF sizes. It reads each of new/ and cur/ at most
// once, and not when it is unchanged since the last scan (see scan). A
// message with a record in the cache costs no system call when its name
// states the file size the record was made at (see vouched), one stat
// otherwise; a file is read only when the cache has no record of it with
// the file's current stamp. New records, and the removal of those whose
// file is gone, are written in one commit.
func (m *mailbox) List(ctx context.Context) ([]proxy.MessageInfo, error) {
	known, err := m.b.view()
	if err != nil {
		return nil, fmt.Errorf("maildir: list %q: %w", m.b.opts.Path, err)
	}
	found, err := m.b.scan(ctx, true)
	if err != nil {
		return nil, err
	}
	if testHookAfterScan != nil {
		testHookAfterScan()
	}
	m.gone = nil
	if known.TombstoneCount() > 0 {
		for key := range known.Tombstones() {
			if _, ok := lookup(found, key); !ok {
				m.gone = append(m.gone, key)
			}
		}
	}

	order := found // the order of the first scan; found may be replaced
	m.listed = make([]entry, 0, len(order))
	m.stamps = make([]string, 0, len(order))
	m.index = nil
	list := make([]proxy.MessageInfo, 0, len(order))
	var c cache.Change
	rescans, matched := 0, 0
	for i := range order {
		if i&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		e := &order[i]
		base := e.base()
		if known.Tombstoned(base) {
			if _, ok := known.Message(base); ok {
				matched++
			}
			continue
		}
		if len(found) == 0 || &found[0] != &order[0] {
			// After a rescan: the message's entry as it is now.
			j, ok := lookup(found, base)
			if !ok {
				continue // gone at a rescan
			}
			e = &found[j]
		}
		uid := UID(base)
		r, fresh, err := m.b.measure(uid, e, known)
		// Renamed or removed since the scan: rescan and retry, with a
		// bound per List so a mass move costs a few scans, not one each.
		for errors.Is(err, fs.ErrNotExist) && rescans < 3 {
			rescans++
			if found, err = m.b.scan(ctx, false); err != nil {
				return nil, err
			}
			j, ok := lookup(found, base)
			if !ok {
				err = fs.ErrNotExist
				break
			}
			e = &found[j]
			r, fresh, err = m.b.measure(uid, e, known)
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotRegular) {
			continue // removed by someone else, or not a message
		}
		if err != nil {
			return nil, fmt.Errorf("maildir: list %q: %w", m.b.path(e), err)
		}
		if fresh {
			c.Put = append(c.Put, r)
			if _, ok := known.Message(base); !ok {
				matched-- // no record to replace
			}
		}
		matched++
		m.listed = append(m.listed, *e)
		m.stamps = append(m.stamps, r.Stamp)
		list = append(list, proxy.MessageInfo{UID: uid, Size: r.Size})
	}
	if matched < known.Len() {
		// Some records are of files gone: drop them, unless listed.
		for r := range known.Messages() {
			if _, ok := lookup(found, r.Key); ok {
				continue
			}
			if _, ok := lookup(m.listed, r.Key); !ok {
				c.Delete = append(c.Delete, r.Key)
			}
		}
	}
	if err := m.b.update(c); err != nil {
		return nil, fmt.Errorf("maildir: list %q: %w", m.b.opts.Path, err)
	}
	return list, nil
}

// entry returns the listed message with UID uid, and its index.
func (m *mailbox) entry(uid string) (*entry, int, bool) {
	if m.index == nil {
		m.index = make(map[string]int, len(m.listed))
		for i := range m.listed {
			m.index[UID(m.listed[i].base())] = i
		}
	}
	i, ok := m.index[uid]
	if !ok {
		return nil, 0, false
	}
	return &m.listed[i], i, true
}

// refresh rescans the Maildir once and updates the names of all listed
// messages, so a mass move from new/ to cur/ costs one scan, not one per
// message.
func (m *mailbox) refresh(ctx context.Context) error {
	found, err := m.b.scan(ctx, false)
	if err != nil {
		return err
	}
	for i := range m.listed {
		l := &m.listed[i]
		if j, ok := lookup(found, l.base()); ok {
			l.name, l.sub = found[j].name, found[j].sub
		}
	}
	return nil
}

// follow runs op on the file of a listed message. If the file is no longer
// where it was, it rescans up to twice (a rename may hide a name from one
// directory read) and runs op on the new path. It returns an error
// wrapping fs.ErrNotExist when the message is gone.
func (m *mailbox) follow(ctx context.Context, e *entry, op func(path string) error) error {
	err := op(m.b.path(e))
	for range 2 {
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		old := m.b.path(e)
		if rerr := m.refresh(ctx); rerr != nil {
			// %v, not %w: a Maildir that cannot be read (unmounted,
			// moved) must not pass for a message that is gone.
			return fmt.Errorf("rescan: %v", rerr)
		}
		if p := m.b.path(e); p != old {
			err = op(p)
		}
	}
	return err
}

// Open opens the message file for streaming, following it if it was moved
// or its flags changed since List. A file whose stamp differs from that of
// the record its LIST size came from was changed in place: its record is
// dropped, so that the next List measures it again.
func (m *mailbox) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	e, i, ok := m.entry(uid)
	if !ok {
		return nil, fmt.Errorf("maildir: open %q: not listed: %w", uid, proxy.ErrNoMessage)
	}
	var f *os.File
	err := m.follow(ctx, e, func(path string) (err error) {
		f, err = os.Open(path)
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("maildir: open %q: %w", uid, proxy.ErrNoMessage)
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: open %q: %w", uid, err)
	}
	if fi, err := f.Stat(); err == nil && stamp(fi) != m.stamps[i] {
		_ = m.b.update(cache.Change{Delete: []string{e.base()}})
	}
	return f, nil
}

// Delete applies the delete policy to uids: Remove unlinks the files (a
// file already gone counts as removed) and drops their records, Keep
// tombstones them. It reports every failure.
func (m *mailbox) Delete(ctx context.Context, uids []string) error {
	ents := make([]*entry, len(uids))
	for i, uid := range uids {
		e, _, ok := m.entry(uid)
		if !ok {
			return fmt.Errorf("maildir: delete %q: not listed", uid)
		}
		ents[i] = e
	}
	if len(uids) == 0 {
		return nil
	}
	if m.b.opts.OnDelete == modes.Keep {
		return m.hide(ctx, ents)
	}
	var errs []error
	var removed []string
	for i, e := range ents {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("maildir: delete: %w", err))
			break
		}
		err := m.follow(ctx, e, os.Remove)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("maildir: delete %q: %w", uids[i], err))
			continue
		}
		removed = append(removed, e.base())
	}
	for _, sub := range []string{"cur", "new"} {
		if err := syncDir(filepath.Join(m.b.opts.Path, sub)); err != nil {
			errs = append(errs, fmt.Errorf("maildir: delete: sync %s: %w", sub, err))
		}
	}
	// The files are gone whatever happens here, and the next List drops
	// records left behind, so a failure is not a failed delete.
	_ = m.b.update(cache.Change{Delete: removed})
	return errors.Join(errs...)
}

// hide tombstones uids in one commit. Tombstones whose file was absent
// both at List and now are removed in the same commit, so they do not
// pile up.
func (m *mailbox) hide(ctx context.Context, ents []*entry) error {
	var c cache.Change
	for _, e := range ents {
		c.AddTombstones = append(c.AddTombstones, e.base())
	}
	if len(m.gone) > 0 {
		found, err := m.b.scan(ctx, false)
		if err != nil {
			return err
		}
		for _, key := range m.gone {
			if _, ok := lookup(found, key); !ok {
				c.RemoveTombstones = append(c.RemoveTombstones, key)
			}
		}
	}
	if err := m.b.update(c); err != nil {
		return fmt.Errorf("maildir: hide %d message(s): %w", len(ents), err)
	}
	return nil
}

// Close releases the Store hold; a Maildir needs no lock of its own.
func (m *mailbox) Close() error {
	if m.release != nil {
		m.release()
	}
	return nil
}
