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
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/proxy"
)

// DeletePolicy says what DELE followed by QUIT does to a message.
type DeletePolicy string

const (
	// Remove unlinks the message file at QUIT.
	Remove DeletePolicy = "remove"
	// Keep leaves the file and hides the message from POP, across restarts.
	Keep DeletePolicy = "keep"
)

// Options configures a Backend.
type Options struct {
	// Path is the Maildir (the folder holding cur/ and new/). Required.
	Path string
	// OnDelete is the delete policy; empty means Remove.
	OnDelete DeletePolicy
	// Store keeps, per account, each message's exact size and UIDL (keyed
	// by its unique name, stamped with the file's size and mtime) across
	// restarts, and the Keep policy's hidden messages as tombstones.
	// Required for Keep; nil keeps sizes in this process only.
	Store *cache.Store
	// Account names the account in Store. Empty means "path-" and 16 hex
	// digits of the SHA-256 of Path made absolute.
	Account string
}

// Backend is one account's Maildir. Login does not check credentials: the
// caller (the account router) has done that.
type Backend struct {
	opts    Options
	account string       // the account in opts.Store
	reads   atomic.Int64 // files read to learn their size, for tests

	mu    sync.Mutex
	local map[string]cache.MessageRecord // without a Store; replaced, never changed
}

// New returns a Backend for opts. It does not touch the file system.
func New(opts Options) (*Backend, error) {
	if opts.Path == "" {
		return nil, errors.New("maildir: path is required")
	}
	opts.Path = filepath.Clean(opts.Path)
	switch opts.OnDelete {
	case "":
		opts.OnDelete = Remove
	case Remove, Keep:
	default:
		return nil, fmt.Errorf("maildir: unknown delete policy %q (want %q or %q)", opts.OnDelete, Remove, Keep)
	}
	if opts.OnDelete == Keep && opts.Store == nil {
		return nil, errors.New("maildir: the keep policy needs a cache store")
	}
	b := &Backend{opts: opts, account: opts.Account}
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

// Login opens the maildrop; user and pass are ignored.
func (b *Backend) Login(ctx context.Context, user, pass string) (proxy.Mailbox, error) {
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

// entry is one message file found by a scan.
type entry struct {
	base string
	path string
}

// scan reads new/ and then cur/, in that order so that a message moving
// from new/ to cur/ during the scan is seen at least once, and returns the
// messages by UID. A message found in both is taken from cur/.
func (b *Backend) scan(ctx context.Context) (map[string]entry, error) {
	found := make(map[string]entry)
	for _, sub := range []string{"new", "cur"} {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dir := filepath.Join(b.opts.Path, sub)
		f, err := os.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("maildir: scan %q: %w", dir, err)
		}
		ents, err := f.ReadDir(-1)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("maildir: scan %q: %w", dir, err)
		}
		for _, de := range ents {
			name := de.Name()
			if name == "" || name[0] == '.' || de.IsDir() {
				continue
			}
			base := baseName(name)
			if base == "" {
				continue
			}
			uid := UID(base)
			path := filepath.Join(dir, name)
			if old, ok := found[uid]; ok && filepath.Dir(old.path) == dir && old.path < path {
				continue // two names in one directory: keep the first by name
			}
			found[uid] = entry{base: base, path: path}
		}
	}
	return found, nil
}

// compareNames orders unique names by delivery time: runs of digits
// compare as numbers (the leading seconds, Dovecot's M microseconds), the
// rest as bytes; names equal by that rule fall back to byte order.
func compareNames(a, b string) int {
	i, j := 0, 0
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
	Message(key string) (cache.MessageRecord, bool)
	Messages() iter.Seq[cache.MessageRecord]
	Tombstones() iter.Seq[string]
}

// localView is the records of a Backend without a Store; it has no
// tombstones, since Keep needs a Store.
type localView map[string]cache.MessageRecord

func (v localView) Message(key string) (cache.MessageRecord, bool) {
	r, ok := v[key]
	return r, ok
}

func (v localView) Messages() iter.Seq[cache.MessageRecord] { return maps.Values(v) }
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

// measure returns the record of the message file e with UID uid: the
// known one when its stamp still matches the file, else a new one made by
// reading the file, and then fresh is true. It returns an error wrapping
// fs.ErrNotExist if the file is gone and errNotRegular for anything but a
// file.
func (b *Backend) measure(uid string, e entry, known records) (r cache.MessageRecord, fresh bool, err error) {
	fi, err := os.Stat(e.path)
	if err != nil {
		return r, false, err
	}
	if !fi.Mode().IsRegular() {
		return r, false, errNotRegular
	}
	st := stamp(fi)
	if r, ok := known.Message(e.base); ok && r.Stamp == st && r.UIDL == uid {
		return r, false, nil
	}
	f, err := os.Open(e.path)
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
	return cache.MessageRecord{Key: e.base, Size: c.Size(), UIDL: uid, Stamp: st}, true, nil
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
	release func()           // the Store hold, if any
	msgs    map[string]entry // listed messages by UID, with their last known path
	gone    []string         // tombstones whose file was absent at List
}

var (
	_ proxy.Mailbox      = (*mailbox)(nil)
	_ proxy.MaildropIDer = (*mailbox)(nil)
	_ proxy.Backend      = (*Backend)(nil)
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
// first), with exact CRLF sizes. A file is read only when the cache has
// no record of it with the file's current stamp; new records, and the
// removal of those whose file is gone, are written in one commit.
func (m *mailbox) List(ctx context.Context) ([]proxy.MessageInfo, error) {
	known, err := m.b.view()
	if err != nil {
		return nil, fmt.Errorf("maildir: list %q: %w", m.b.opts.Path, err)
	}
	found, err := m.b.scan(ctx)
	if err != nil {
		return nil, err
	}
	if testHookAfterScan != nil {
		testHookAfterScan()
	}
	hidden := make(map[string]bool)
	m.gone = nil
	for key := range known.Tombstones() {
		uid := UID(key)
		hidden[uid] = true
		if _, ok := found[uid]; !ok {
			m.gone = append(m.gone, key)
		}
	}
	uids := make([]string, 0, len(found))
	for uid := range found {
		if !hidden[uid] {
			uids = append(uids, uid)
		}
	}
	slices.SortFunc(uids, func(a, b string) int { return compareNames(found[a].base, found[b].base) })

	m.msgs = make(map[string]entry, len(uids))
	list := make([]proxy.MessageInfo, 0, len(uids))
	var c cache.Change
	rescans := 0
	for _, uid := range uids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e, ok := found[uid]
		if !ok {
			continue // gone at a rescan
		}
		r, fresh, err := m.b.measure(uid, e, known)
		// Renamed or removed since the scan: rescan and retry, with a
		// bound per List so a mass move costs a few scans, not one each.
		for errors.Is(err, fs.ErrNotExist) && rescans < 3 {
			rescans++
			if found, err = m.b.scan(ctx); err != nil {
				return nil, err
			}
			if e, ok = found[uid]; !ok {
				err = fs.ErrNotExist
				break
			}
			r, fresh, err = m.b.measure(uid, e, known)
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotRegular) {
			continue // removed by someone else, or not a message
		}
		if err != nil {
			return nil, fmt.Errorf("maildir: list %q: %w", e.path, err)
		}
		if fresh {
			c.Put = append(c.Put, r)
		}
		m.msgs[uid] = e
		list = append(list, proxy.MessageInfo{UID: uid, Size: r.Size})
	}
	for r := range known.Messages() {
		uid := UID(r.Key)
		if _, ok := found[uid]; !ok {
			if _, listed := m.msgs[uid]; !listed {
				c.Delete = append(c.Delete, r.Key)
			}
		}
	}
	if err := m.b.update(c); err != nil {
		return nil, fmt.Errorf("maildir: list %q: %w", m.b.opts.Path, err)
	}
	return list, nil
}

// refresh rescans the Maildir once and updates the paths of all listed
// messages, so a mass move from new/ to cur/ costs one scan, not one per
// message.
func (m *mailbox) refresh(ctx context.Context) error {
	found, err := m.b.scan(ctx)
	if err != nil {
		return err
	}
	for uid := range m.msgs {
		if e, ok := found[uid]; ok {
			m.msgs[uid] = e
		}
	}
	return nil
}

// follow runs op on the file of a listed message. If the file is no longer
// where it was, it rescans up to twice (a rename may hide a name from one
// directory read) and runs op on the new path. It returns an error
// wrapping fs.ErrNotExist when the message is gone.
func (m *mailbox) follow(ctx context.Context, uid string, op func(path string) error) error {
	err := op(m.msgs[uid].path)
	for range 2 {
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		old := m.msgs[uid].path
		if rerr := m.refresh(ctx); rerr != nil {
			// %v, not %w: a Maildir that cannot be read (unmounted,
			// moved) must not pass for a message that is gone.
			return fmt.Errorf("rescan: %v", rerr)
		}
		if p := m.msgs[uid].path; p != old {
			err = op(p)
		}
	}
	return err
}

// Open opens the message file for streaming, following it if it was moved
// or its flags changed since List.
func (m *mailbox) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	if _, ok := m.msgs[uid]; !ok {
		return nil, fmt.Errorf("maildir: open %q: not listed: %w", uid, proxy.ErrNoMessage)
	}
	var f *os.File
	err := m.follow(ctx, uid, func(path string) (err error) {
		f, err = os.Open(path)
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("maildir: open %q: %w", uid, proxy.ErrNoMessage)
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: open %q: %w", uid, err)
	}
	return f, nil
}

// Delete applies the delete policy to uids: Remove unlinks the files (a
// file already gone counts as removed) and drops their records, Keep
// tombstones them. It reports every failure.
func (m *mailbox) Delete(ctx context.Context, uids []string) error {
	for _, uid := range uids {
		if _, ok := m.msgs[uid]; !ok {
			return fmt.Errorf("maildir: delete %q: not listed", uid)
		}
	}
	if len(uids) == 0 {
		return nil
	}
	if m.b.opts.OnDelete == Keep {
		return m.hide(ctx, uids)
	}
	var errs []error
	var removed []string
	for _, uid := range uids {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("maildir: delete: %w", err))
			break
		}
		err := m.follow(ctx, uid, os.Remove)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("maildir: delete %q: %w", uid, err))
			continue
		}
		removed = append(removed, m.msgs[uid].base)
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
func (m *mailbox) hide(ctx context.Context, uids []string) error {
	var c cache.Change
	for _, uid := range uids {
		c.AddTombstones = append(c.AddTombstones, m.msgs[uid].base)
	}
	if len(m.gone) > 0 {
		found, err := m.b.scan(ctx)
		if err != nil {
			return err
		}
		for _, key := range m.gone {
			if _, ok := found[UID(key)]; !ok {
				c.RemoveTombstones = append(c.RemoveTombstones, key)
			}
		}
	}
	if err := m.b.update(c); err != nil {
		return fmt.Errorf("maildir: hide %d message(s): %w", len(uids), err)
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
