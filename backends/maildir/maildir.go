// Package maildir serves a local Maildir as a POP3 maildrop.
//
// Messages are the regular files in cur/ and new/ whose names do not start
// with "."; tmp/, Dovecot's control and index files and Maildir++
// subfolders are ignored. A message's UIDL is its Maildir unique name (the
// file name before the ":" info part), so it survives the move from new/
// to cur/ and flag changes.
package maildir

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

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
	// StateDir holds the Keep policy's record of hidden messages. Required
	// when OnDelete is Keep.
	StateDir string
	// Account names the account in StateDir and in logs. Empty means a
	// name derived from Path.
	Account string
}

// Backend is one account's Maildir. Login does not check credentials: the
// caller (the account router) has done that.
type Backend struct {
	opts     Options
	keepFile string // Keep policy: the list of hidden UIDs

	mu    sync.Mutex
	sizes map[sizeKey]int64 // CRLF sizes of files already scanned
}

// sizeKey identifies one version of a message file for the size cache.
type sizeKey struct {
	base  string
	size  int64
	mtime int64 // UnixNano
}

// keepMu serialises read-modify-write cycles of every keep file in the
// process, so two Backends for one account cannot lose each other's UIDs.
var keepMu sync.Mutex

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
	b := &Backend{opts: opts, sizes: make(map[sizeKey]int64)}
	if opts.OnDelete == Keep {
		if opts.StateDir == "" {
			return nil, errors.New("maildir: state dir is required for the keep policy")
		}
		name := opts.Account
		if name == "" {
			abs, err := filepath.Abs(opts.Path)
			if err != nil {
				return nil, fmt.Errorf("maildir: %w", err)
			}
			sum := sha256.Sum256([]byte(abs))
			name = "path-" + hex.EncodeToString(sum[:8])
		}
		b.keepFile = filepath.Join(opts.StateDir, "maildir-keep", sanitize(name)+".list")
	}
	return b, nil
}

// sanitize maps an account name to a file name, one to one: bytes outside
// [A-Za-z0-9._-] and a leading "." become %XX.
func sanitize(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-' || (c == '.' && i > 0)
		if ok {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
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
	return &mailbox{b: b}, nil
}

// Check verifies that the Maildir exists and can be read, and for the Keep
// policy that the state directory can be created and its list read.
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
	if b.opts.OnDelete == Keep {
		if err := os.MkdirAll(filepath.Dir(b.keepFile), 0o700); err != nil {
			return fmt.Errorf("maildir: check state dir: %w", err)
		}
		if _, err := b.loadHidden(); err != nil {
			return err
		}
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

// messageSize returns the wire size of the message at path, from the cache
// when the file is unchanged. It returns an error wrapping fs.ErrNotExist
// if the file is gone and errNotRegular for anything but a file.
func (b *Backend) messageSize(base, path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, errNotRegular
	}
	key := sizeKey{base: base, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	b.mu.Lock()
	n, ok := b.sizes[key]
	b.mu.Unlock()
	if ok {
		return n, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var c proxy.SizeCounter
	buf := bufPool.Get().(*[]byte)
	_, err = io.CopyBuffer(&c, struct{ io.Reader }{f}, *buf)
	bufPool.Put(buf)
	if err != nil {
		return 0, err
	}
	n = c.Size()
	b.mu.Lock()
	b.sizes[key] = n
	b.mu.Unlock()
	return n, nil
}

var errNotRegular = errors.New("not a regular file")

// testHookAfterScan, when set by a test, runs between List's scan and its
// stats, where a concurrent rename or removal hurts most.
var testHookAfterScan func()

// pruneSizes drops cache entries of messages no longer present.
func (b *Backend) pruneSizes(present map[string]entry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.sizes {
		if _, ok := present[UID(k.base)]; !ok {
			delete(b.sizes, k)
		}
	}
}

// loadHidden reads the Keep policy's hidden UIDs; a missing file is empty.
func (b *Backend) loadHidden() (map[string]bool, error) {
	hidden := make(map[string]bool)
	if b.keepFile == "" {
		return hidden, nil
	}
	f, err := os.Open(b.keepFile)
	if errors.Is(err, fs.ErrNotExist) {
		return hidden, nil
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: read keep list: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if uid := strings.TrimSpace(sc.Text()); uid != "" {
			hidden[uid] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("maildir: read keep list %q: %w", b.keepFile, err)
	}
	return hidden, nil
}

// saveHidden replaces the keep list atomically: temporary file, fsync,
// rename, fsync of the directory. The file has mode 0600.
func (b *Backend) saveHidden(hidden map[string]bool) error {
	dir := filepath.Dir(b.keepFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("maildir: write keep list: %w", err)
	}
	uids := make([]string, 0, len(hidden))
	for uid := range hidden {
		uids = append(uids, uid)
	}
	slices.Sort(uids)
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("maildir: write keep list: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	w := bufio.NewWriter(tmp)
	for _, uid := range uids {
		w.WriteString(uid)
		w.WriteByte('\n')
	}
	err = w.Flush()
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), b.keepFile)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("maildir: write keep list %q: %w", b.keepFile, err)
	}
	return nil
}

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
	b    *Backend
	msgs map[string]entry // listed messages by UID, with their last known path
	gone map[string]bool  // hidden UIDs whose file was absent at List
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
// first), with exact CRLF sizes.
func (m *mailbox) List(ctx context.Context) ([]proxy.MessageInfo, error) {
	hidden, err := m.b.loadHidden()
	if err != nil {
		return nil, err
	}
	found, err := m.b.scan(ctx)
	if err != nil {
		return nil, err
	}
	if testHookAfterScan != nil {
		testHookAfterScan()
	}
	m.gone = make(map[string]bool)
	for uid := range hidden {
		if _, ok := found[uid]; !ok {
			m.gone[uid] = true
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
	rescans := 0
	for _, uid := range uids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e, ok := found[uid]
		if !ok {
			continue // gone at a rescan
		}
		size, err := m.b.messageSize(e.base, e.path)
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
			size, err = m.b.messageSize(e.base, e.path)
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotRegular) {
			continue // removed by someone else, or not a message
		}
		if err != nil {
			return nil, fmt.Errorf("maildir: list %q: %w", e.path, err)
		}
		m.msgs[uid] = e
		list = append(list, proxy.MessageInfo{UID: uid, Size: size})
	}
	m.b.pruneSizes(found)
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
// file already gone counts as removed), Keep adds the UIDs to the keep
// list. It reports every failure.
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
	for _, uid := range uids {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("maildir: delete: %w", err))
			break
		}
		err := m.follow(ctx, uid, os.Remove)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("maildir: delete %q: %w", uid, err))
		}
	}
	for _, sub := range []string{"cur", "new"} {
		if err := syncDir(filepath.Join(m.b.opts.Path, sub)); err != nil {
			errs = append(errs, fmt.Errorf("maildir: delete: sync %s: %w", sub, err))
		}
	}
	return errors.Join(errs...)
}

// hide adds uids to the keep list. Hidden UIDs whose file was absent both
// at List and now are dropped from the list, so it does not grow forever.
func (m *mailbox) hide(ctx context.Context, uids []string) error {
	keepMu.Lock()
	defer keepMu.Unlock()
	hidden, err := m.b.loadHidden()
	if err != nil {
		return err
	}
	if len(m.gone) > 0 {
		found, err := m.b.scan(ctx)
		if err != nil {
			return err
		}
		for uid := range m.gone {
			if _, ok := found[uid]; !ok {
				delete(hidden, uid)
			}
		}
	}
	for _, uid := range uids {
		hidden[uid] = true
	}
	return m.b.saveHidden(hidden)
}

// Close releases nothing: a Maildir needs no lock of its own.
func (m *mailbox) Close() error {
	return nil
}
