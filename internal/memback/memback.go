// Package memback is an in-memory storage backend for tests, in the
// spirit of go-imap's imapmemserver and net/http/httptest: maildrops held
// in memory, switches for the optional Mailbox interfaces, faults to
// inject and a record of the calls it got.
//
// A Backend implements backends.Opener, like every storage backend: it
// opens the maildrop of a login someone else has authenticated. A test
// that needs a proxy.Backend puts backends/accounts in front of it, or,
// when the accounts are not what it tests, uses AuthForTest (a fixed
// password per user) or PassthroughForTest (no check; the client's
// credentials are handed on). Both take any backends.Opener.
//
// It is for tests only; nothing in the binary imports it.
package memback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/proxy"
)

// Op names a backend operation, for Hook and Stats.
type Op string

// The operations of a Backend and its mailboxes.
const (
	OpOpenMaildrop Op = "open-maildrop"
	OpList         Op = "list"
	OpOpen         Op = "open"
	OpTop          Op = "top"
	OpDelete       Op = "delete"
	OpCommit       Op = "commit"
	OpClose        Op = "close"
)

// Message is one message of a maildrop.
type Message struct {
	// UID is the message's unique id (RFC 1939 §7).
	UID string
	// Body is the raw message; line ends may be LF or CRLF.
	Body string
	// Gen, when set, replaces Body: each Open streams a fresh reader
	// from it, so that a benchmark can serve a large message without
	// holding it. Size must then be the message's size with CRLF line
	// ends.
	Gen  func() io.Reader
	Size int64
}

// Faults are the failures a Backend injects. The zero value injects none.
type Faults struct {
	// OpenMaildrop is returned by OpenMaildrop.
	OpenMaildrop error
	// List is returned by List.
	List error
	// Open holds, by UID, the error of Open and OpenTop.
	Open map[string]error
	// Delete is returned by Delete, Commit by Commit.
	Delete, Commit error
	// BreakAfter makes every message stream fail with BreakErr (or a
	// generic error) after that many octets; 0 never.
	BreakAfter int
	BreakErr   error
	// PanicOn is a UID whose Open and OpenTop panic.
	PanicOn string
}

// Commit is one call of Committer.Commit.
type Commit struct {
	Deleted, Retrieved []string
}

// Stats is what a Backend saw.
type Stats struct {
	// Logins are the logins OpenMaildrop got, in order, passwords
	// included.
	Logins []backends.Login
	// Calls counts the calls by operation.
	Calls map[Op]int
	// Deleted are the UIDs passed to Delete, in order.
	Deleted []string
	// Commits are the calls of Commit, in order.
	Commits []Commit
	// Tops are the OpenTop calls as "uid/lines", in order.
	Tops []string
	// Open is the number of mailboxes opened and not yet closed.
	Open int
}

// Backend is an in-memory storage backend. Set the switches before the
// first OpenMaildrop; the maildrops, the faults and the stats are safe
// for concurrent use.
type Backend struct {
	// Top gives the mailboxes proxy.TopOpener: OpenTop streams the whole
	// message followed by TopSuffix, and the proxy cuts it.
	Top bool
	// TopSuffix is appended to what OpenTop streams, so that a test can
	// tell which path served a reply.
	TopSuffix string
	// Commit gives the mailboxes proxy.Committer: Commit records the call
	// and removes the deleted messages.
	Commit bool
	// Passwords, when set, makes OpenMaildrop check the login's password
	// against it the way an upstream server does for a passthrough
	// account: a missing or wrong one is refused with
	// proxy.ErrAuthFailed.
	Passwords map[string]string
	// Hook, when set, is called at the start of every operation with its
	// context and its argument (the user for
	// OpenMaildrop, the UID for Open and OpenTop). An error it returns
	// is the operation's. It may block or panic.
	Hook func(ctx context.Context, op Op, arg string) error

	mu     sync.Mutex
	boxes  map[string][]Message
	faults Faults
	stats  Stats
}

// New returns a Backend holding no messages. A user without messages
// has an empty maildrop.
func New() *Backend { return &Backend{} }

var _ backends.Opener = (*Backend)(nil)

// Put appends msgs to user's maildrop.
func (b *Backend) Put(user string, msgs ...Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.boxes == nil {
		b.boxes = map[string][]Message{}
	}
	b.boxes[user] = append(b.boxes[user], msgs...)
}

// Set replaces user's maildrop with msgs.
func (b *Backend) Set(user string, msgs ...Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.boxes == nil {
		b.boxes = map[string][]Message{}
	}
	b.boxes[user] = slices.Clone(msgs)
}

// Messages returns user's maildrop as it is now.
func (b *Backend) Messages(user string) []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.boxes[user])
}

// Inject replaces the faults; the next operations see them.
func (b *Backend) Inject(f Faults) {
	f.Open = maps.Clone(f.Open)
	b.mu.Lock()
	b.faults = f
	b.mu.Unlock()
}

// Stats returns a copy of what the Backend saw so far.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Logins = slices.Clone(s.Logins)
	s.Calls = maps.Clone(s.Calls)
	s.Deleted = slices.Clone(s.Deleted)
	s.Commits = slices.Clone(s.Commits)
	s.Tops = slices.Clone(s.Tops)
	return s
}

// call runs the hook and counts op.
func (b *Backend) call(ctx context.Context, op Op, arg string) error {
	if b.Hook != nil {
		if err := b.Hook(ctx, op, arg); err != nil {
			return err
		}
	}
	b.mu.Lock()
	if b.stats.Calls == nil {
		b.stats.Calls = map[Op]int{}
	}
	b.stats.Calls[op]++
	b.mu.Unlock()
	return nil
}

// OpenMaildrop opens login.User's maildrop.
func (b *Backend) OpenMaildrop(ctx context.Context, login backends.Login) (proxy.Mailbox, error) {
	if err := b.call(ctx, OpOpenMaildrop, login.User); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.Logins = append(b.stats.Logins, login)
	if b.Passwords != nil {
		if p, ok := b.Passwords[login.User]; !ok || p != login.Password {
			return nil, fmt.Errorf("memback: upstream refused %s: %w", login.User, proxy.ErrAuthFailed)
		}
	}
	if b.faults.OpenMaildrop != nil {
		return nil, b.faults.OpenMaildrop
	}
	b.stats.Open++
	m := &mailbox{b: b, user: login.User}
	switch {
	case b.Top && b.Commit:
		return topCommitMailbox{m}, nil
	case b.Top:
		return topMailbox{m}, nil
	case b.Commit:
		return commitMailbox{m}, nil
	}
	return m, nil
}

// mailbox is an opened maildrop. It reads the Backend's messages at
// each call, so another session's Delete shows at once.
type mailbox struct {
	b      *Backend
	user   string
	closed bool
}

func (m *mailbox) List(ctx context.Context) ([]proxy.MessageInfo, error) {
	if err := m.b.call(ctx, OpList, ""); err != nil {
		return nil, err
	}
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	if m.b.faults.List != nil {
		return nil, m.b.faults.List
	}
	out := []proxy.MessageInfo{}
	for _, msg := range m.b.boxes[m.user] {
		size := msg.Size
		if msg.Gen == nil {
			size, _ = proxy.CRLFSize(strings.NewReader(msg.Body))
		}
		out = append(out, proxy.MessageInfo{UID: msg.UID, Size: size})
	}
	return out, nil
}

func (m *mailbox) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	if err := m.b.call(ctx, OpOpen, uid); err != nil {
		return nil, err
	}
	return m.open(uid, "")
}

// open returns uid's stream with suffix appended.
func (m *mailbox) open(uid, suffix string) (io.ReadCloser, error) {
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	f := m.b.faults
	if uid == f.PanicOn && uid != "" {
		panic("memback: injected panic")
	}
	if err := f.Open[uid]; err != nil {
		return nil, err
	}
	for _, msg := range m.b.boxes[m.user] {
		if msg.UID != uid {
			continue
		}
		var r io.Reader = strings.NewReader(msg.Body)
		if msg.Gen != nil {
			r = msg.Gen()
		}
		if suffix != "" {
			r = io.MultiReader(r, strings.NewReader(suffix))
		}
		if f.BreakAfter > 0 {
			err := f.BreakErr
			if err == nil {
				err = errors.New("memback: stream broken")
			}
			r = io.MultiReader(io.LimitReader(r, int64(f.BreakAfter)), errReader{err})
		}
		return io.NopCloser(r), nil
	}
	return nil, fmt.Errorf("memback: %s: %w", uid, proxy.ErrNoMessage)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func (m *mailbox) Delete(ctx context.Context, uids []string) error {
	if err := m.b.call(ctx, OpDelete, ""); err != nil {
		return err
	}
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	if m.b.faults.Delete != nil {
		return m.b.faults.Delete
	}
	m.b.stats.Deleted = append(m.b.stats.Deleted, uids...)
	m.b.remove(m.user, uids)
	return nil
}

// remove drops uids from user's maildrop; b.mu is held.
func (b *Backend) remove(user string, uids []string) {
	b.boxes[user] = slices.DeleteFunc(b.boxes[user], func(msg Message) bool {
		return slices.Contains(uids, msg.UID)
	})
}

func (m *mailbox) Close() error {
	if err := m.b.call(context.Background(), OpClose, ""); err != nil {
		return err
	}
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	if m.closed {
		return errors.New("memback: mailbox closed twice")
	}
	m.closed = true
	m.b.stats.Open--
	return nil
}

func (m *mailbox) openTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	if err := m.b.call(ctx, OpTop, uid); err != nil {
		return nil, err
	}
	m.b.mu.Lock()
	m.b.stats.Tops = append(m.b.stats.Tops, fmt.Sprintf("%s/%d", uid, lines))
	m.b.mu.Unlock()
	return m.open(uid, m.b.TopSuffix)
}

func (m *mailbox) commit(ctx context.Context, deleted, retrieved []string) error {
	if err := m.b.call(ctx, OpCommit, ""); err != nil {
		return err
	}
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	m.b.stats.Commits = append(m.b.stats.Commits, Commit{slices.Clone(deleted), slices.Clone(retrieved)})
	if m.b.faults.Commit != nil {
		return m.b.faults.Commit
	}
	m.b.remove(m.user, deleted)
	return nil
}

type topMailbox struct{ *mailbox }

func (m topMailbox) OpenTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	return m.openTop(ctx, uid, lines)
}

type commitMailbox struct{ *mailbox }

func (m commitMailbox) Commit(ctx context.Context, deleted, retrieved []string) error {
	return m.commit(ctx, deleted, retrieved)
}

type topCommitMailbox struct{ *mailbox }

func (m topCommitMailbox) OpenTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	return m.openTop(ctx, uid, lines)
}

func (m topCommitMailbox) Commit(ctx context.Context, deleted, retrieved []string) error {
	return m.commit(ctx, deleted, retrieved)
}

var (
	_ proxy.TopOpener = topMailbox{}
	_ proxy.Committer = commitMailbox{}
	_ proxy.TopOpener = topCommitMailbox{}
	_ proxy.Committer = topCommitMailbox{}
)

// AuthForTest returns a proxy.Backend for tests that checks a fixed
// password per user (passwords maps user to password) and opens b's
// maildrop. It stands in for backends/accounts where the accounts are not
// what a test is about; the binary always uses backends/accounts.
func AuthForTest(b backends.Opener, passwords map[string]string) proxy.Backend {
	return testAuth{b, maps.Clone(passwords)}
}

type testAuth struct {
	b         backends.Opener
	passwords map[string]string
}

func (a testAuth) Login(ctx context.Context, user, pass string) (proxy.Mailbox, error) {
	if p, ok := a.passwords[user]; !ok || p != pass {
		return nil, fmt.Errorf("memback: %w", proxy.ErrAuthFailed)
	}
	return a.b.OpenMaildrop(ctx, backends.Login{User: user})
}

// PassthroughForTest returns a proxy.Backend for tests that checks no
// password: it opens o's maildrop with the client's user name and
// password as the login, the way backends/accounts serves a passthrough
// account without a password hash. For storage backends that check the
// password upstream (imap, pop3) or not at all.
func PassthroughForTest(o backends.Opener) proxy.Backend { return passthrough{o} }

type passthrough struct{ o backends.Opener }

func (p passthrough) Login(ctx context.Context, user, pass string) (proxy.Mailbox, error) {
	return p.o.OpenMaildrop(ctx, backends.Login{User: user, Password: pass})
}

// OpenerFunc turns a function into a backends.Opener, the way
// http.HandlerFunc turns one into a Handler.
type OpenerFunc func(ctx context.Context, login backends.Login) (proxy.Mailbox, error)

// OpenMaildrop calls f.
func (f OpenerFunc) OpenMaildrop(ctx context.Context, login backends.Login) (proxy.Mailbox, error) {
	return f(ctx, login)
}
