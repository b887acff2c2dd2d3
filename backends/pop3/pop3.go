// Package pop3 relays an upstream POP3 server as a popbridge maildrop,
// adding TLS and XOAUTH2 that old clients cannot do. It holds its own POP3
// client (Client).
//
// A session uses one upstream connection. Login dials, authenticates and
// takes the snapshot from the upstream UIDL and LIST listings; RETR and
// TOP stream from upstream RETR. Lines that arrive in clean wire form
// (CRLF, dot-stuffed) pass through to the client as they are; from the
// first line that does not, the message is unstuffed here and restuffed
// by the proxy. While the client downloads in order and the upstream
// offers PIPELINING, the next RETRs are sent ahead. Deletions reach the upstream only from Delete (QUIT): DELE for
// each message, then QUIT, whose reply decides the result. Close never
// sends QUIT after a DELE, so a dropped client session deletes nothing.
package pop3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// Options configures a Backend.
type Options struct {
	// Addr is the upstream host:port. Required.
	Addr string
	// TLS is the TLS mode, one of modes.TLSModes; empty means
	// modes.TLSImplicit.
	TLS modes.TLS
	// TLSConfig sets the roots and server name; nil means the system roots
	// and the host of Addr.
	TLSConfig *tls.Config
	// Auth selects the credentials, one of modes.POP3Auth; empty means
	// modes.AuthPassword, sent with USER and PASS, or with AUTH PLAIN when
	// CAPA lacks USER but offers PLAIN. XOAUTH2 goes with AUTH XOAUTH2.
	Auth modes.Auth
	// Username and Password are the upstream credentials for password
	// auth; Username alone for xoauth2.
	Username, Password string
	// TokenSource gives the XOAUTH2 access tokens. Required for xoauth2.
	TokenSource oauth2.TokenSource
	// XOAUTH2TwoLine sends AUTH XOAUTH2 and the response on separate lines
	// (Outlook); false sends them on one line (Gmail).
	XOAUTH2TwoLine bool
	// OnDelete is the delete policy, one of modes.POP3OnDelete; empty
	// means modes.Delete, DELE upstream for each message, then QUIT.
	// modes.Keep leaves the upstream alone and hides the messages from POP
	// with tombstones in Store.
	OnDelete modes.OnDelete
	// Store keeps corrected message sizes and, for modes.Keep, the tombstones.
	// Nil keeps the sizes in memory only; modes.Keep needs a Store.
	Store cache.StateStore
	// Bodies, if not nil, keeps small bodies so that TOP followed by RETR
	// fetches the message once.
	Bodies *cache.Bodies
	// Account names the account in Store and Bodies. Empty means
	// "pop3:USER@ADDR" with the upstream user name (always so for
	// passthrough auth).
	Account string
	// DialTimeout and CommandTimeout are as in ClientOptions.
	DialTimeout, CommandTimeout time.Duration
	// Logger, at trace level, gets the upstream conversation (see
	// ClientOptions.Logger), with the POP3 session's id. Nil logs nothing.
	Logger *zerolog.Logger
}

// String describes o for people, with the defaults New applies and
// without credentials: "pop3 ADDR, tls MODE, auth AUTH".
func (o Options) String() string {
	return fmt.Sprintf("pop3 %s, tls %s, auth %s", o.Addr, modes.TLSModes.Or(o.TLS), modes.POP3Auth.Or(o.Auth))
}

// Backend relays one upstream POP3 account, or with passthrough auth any
// account the upstream knows.
type Backend struct {
	opts Options

	mu    sync.Mutex
	sizes map[string]int64 // corrected sizes by account+"\x00"+key, without Store
}

var (
	_ backends.Opener = (*Backend)(nil)
	_ proxy.Mailbox   = (*mailbox)(nil)
)

// New checks opts and returns a Backend. It does not connect.
func New(opts Options) (*Backend, error) {
	if opts.Addr == "" {
		return nil, errors.New("pop3: addr is required")
	}
	if opts.TLS = modes.TLSModes.Or(opts.TLS); !modes.TLSModes.Has(opts.TLS) {
		return nil, fmt.Errorf("pop3: unknown tls mode %q (want %s)", opts.TLS, modes.TLSModes)
	}
	switch opts.Auth = modes.POP3Auth.Or(opts.Auth); {
	case !modes.POP3Auth.Has(opts.Auth):
		return nil, fmt.Errorf("pop3: unknown auth %q (want %s)", opts.Auth, modes.POP3Auth)
	case opts.Auth == modes.AuthPassword:
		if opts.Username == "" {
			return nil, errors.New("pop3: username is required for password auth")
		}
	case opts.Auth == modes.AuthXOAUTH2:
		if opts.Username == "" || opts.TokenSource == nil {
			return nil, errors.New("pop3: username and a token source are required for xoauth2 auth")
		}
	}
	switch opts.OnDelete = modes.POP3OnDelete.Or(opts.OnDelete); {
	case !modes.POP3OnDelete.Has(opts.OnDelete):
		return nil, fmt.Errorf("pop3: unknown delete policy %q (want %s)", opts.OnDelete, modes.POP3OnDelete)
	case opts.OnDelete == modes.Keep && opts.Store == nil:
		return nil, errors.New("pop3: on_delete keep needs a cache store")
	}
	return &Backend{opts: opts, sizes: make(map[string]int64)}, nil
}

// OpenMaildrop connects and authenticates upstream and takes the
// snapshot. For modes.AuthPassthrough the login's user and password are the
// upstream credentials; otherwise the login is not needed.
func (b *Backend) OpenMaildrop(ctx context.Context, login backends.Login) (proxy.Mailbox, error) {
	c, upUser, err := b.connect(ctx, login.User, login.Password)
	if err != nil {
		return nil, err
	}
	m := &mailbox{b: b, c: c, account: b.account(upUser), release: func() {}}
	if store := b.opts.Store; store != nil {
		// Hold the account, so that popbridge cache forget waits.
		release, err := store.Hold(m.account)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("pop3: hold cache account %q: %v: %w", m.account, err, proxy.ErrTemporary)
		}
		m.release = release
	}
	if err := m.snapshot(ctx); err != nil {
		m.release()
		c.Close()
		return nil, err
	}
	return m, nil
}

// Check logs in upstream, reads the listings and leaves without changing
// anything, for popbridge check. It does not work for passthrough auth.
func (b *Backend) Check(ctx context.Context) error {
	if b.opts.Auth == modes.AuthPassthrough {
		c, err := Dial(ctx, b.clientOptions(ctx))
		if err != nil {
			return b.upstreamErr("connect", err)
		}
		return c.Quit(ctx)
	}
	mb, err := b.OpenMaildrop(ctx, backends.Login{})
	if err != nil {
		return err
	}
	return mb.Close()
}

func (b *Backend) clientOptions(ctx context.Context) ClientOptions {
	o := ClientOptions{
		Addr:           b.opts.Addr,
		TLS:            b.opts.TLS,
		TLSConfig:      b.opts.TLSConfig,
		DialTimeout:    b.opts.DialTimeout,
		CommandTimeout: b.opts.CommandTimeout,
	}
	if l := b.opts.Logger; l != nil && l.GetLevel() <= zerolog.TraceLevel {
		lc := l.With().Str("backend", "pop3").Str("upstream", b.opts.Addr)
		if id := proxy.SessionID(ctx); id != "" {
			lc = lc.Str("session", id)
		}
		log := lc.Logger()
		o.Logger = &log
	}
	return o
}

func (b *Backend) account(upUser string) string {
	if b.opts.Account != "" && b.opts.Auth != modes.AuthPassthrough {
		return b.opts.Account
	}
	return "pop3:" + upUser + "@" + b.opts.Addr
}

// connect dials and authenticates; it returns the upstream user name.
// An XOAUTH2 token the upstream rejects is replaced and tried once more
// on a new connection, when the token source can (oauth.Rejecter).
func (b *Backend) connect(ctx context.Context, user, pass string) (*Client, string, error) {
	if b.opts.Auth != modes.AuthPassthrough {
		user, pass = b.opts.Username, b.opts.Password
	}
	if b.opts.Auth != modes.AuthXOAUTH2 {
		c, err := b.dialLogin(ctx, user, pass, "")
		if err != nil {
			return nil, "", err
		}
		return c, user, nil
	}
	var c *Client
	err := oauth.WithToken(b.opts.TokenSource, func(tok *oauth2.Token) (bool, error) {
		var err error
		c, err = b.dialLogin(ctx, user, pass, tok.AccessToken)
		return errors.Is(err, proxy.ErrAuthFailed), err
	})
	var (
		terr *oauth.TokenError
		rerr *oauth.RefusedError
	)
	switch {
	case err == nil:
		return c, user, nil
	case errors.As(err, &terr):
		sentinel := proxy.ErrTemporary
		errors.As(terr.Err, &sentinel) // the token source's own reply wins (SYS/PERM: run popbridge auth)
		return nil, "", fmt.Errorf("pop3: %s: get OAuth2 token: %w: %w", b.opts.Addr, sentinel, terr.Err)
	case errors.As(err, &rerr):
		sentinel := proxy.ErrPermanent
		errors.As(rerr.Err, &sentinel)
		// Not %w for the login's error: it wraps ErrAuthFailed, which the proxy would answer.
		return nil, "", fmt.Errorf("pop3: login %s: %w: %w (%v)", b.opts.Addr, sentinel, rerr.Err, rerr.Last)
	}
	return nil, "", err
}

// dialLogin dials and logs in once, with token for XOAUTH2.
func (b *Backend) dialLogin(ctx context.Context, user, pass, token string) (*Client, error) {
	c, err := Dial(ctx, b.clientOptions(ctx))
	if err != nil {
		return nil, b.upstreamErr("connect", err)
	}
	switch {
	case b.opts.Auth == modes.AuthXOAUTH2:
		err = c.AuthXOAUTH2(ctx, user, token, !b.opts.XOAUTH2TwoLine)
	case c.capaOK && !c.HasCapability("USER") && c.HasSASL("PLAIN"):
		err = c.AuthPlain(ctx, user, pass)
	default:
		err = c.Login(ctx, user, pass)
	}
	if err != nil {
		c.Close()
		return nil, b.upstreamErr("login", err)
	}
	return c, nil
}

// upstreamErr maps an upstream failure to the proxy's errors: [IN-USE]
// to ErrInUse, a -ERR at login without a code (or with [AUTH]) to
// ErrAuthFailed, [SYS/PERM] to ErrPermanent, everything else (the upstream
// down, timeouts, [SYS/TEMP]) to ErrTemporary.
func (b *Backend) upstreamErr(op string, err error) error {
	sentinel := proxy.ErrTemporary
	var re *ResponseError
	if errors.As(err, &re) {
		switch re.Code {
		case "IN-USE", "LOGIN-DELAY":
			sentinel = proxy.ErrInUse
		case "AUTH":
			sentinel = proxy.ErrAuthFailed
		case "SYS/PERM":
			sentinel = proxy.ErrPermanent
		case "":
			if op == "login" && re.Command != "greeting" {
				sentinel = proxy.ErrAuthFailed
			}
		}
	}
	return fmt.Errorf("pop3: %s %s: %w: %w", op, b.opts.Addr, sentinel, err)
}

// msg is one message of a session's snapshot.
type msg struct {
	n    int    // upstream message number
	key  string // store key: the upstream UIDL, "#k" added for duplicates
	size int64  // the size listed to the client
	i    int    // index in the listing
}

// aheadMax: only messages listed at up to this size are retrieved ahead.
const aheadMax = 1 << 20

// aheadBytes and aheadCount bound the RETRs sent ahead at a time: the
// octets (listed sizes) and the messages. Dropping them when they are not
// used (another command, or QUIT) reads at most that much.
const (
	aheadBytes = 2 << 20
	aheadCount = 16
)

type mailbox struct {
	b       *Backend
	c       *Client
	account string
	list    []proxy.MessageInfo
	byUID   map[string]*msg
	byIndex []*msg // byUID's messages in the order of list
	quit    bool   // Delete sent QUIT
	release func() // the Store's Hold on the account
	// aheadLo and aheadHi are the listing indexes [lo, hi) of the
	// messages whose RETRs were sent ahead (retrAhead) and not asked for
	// yet, in order; lo == hi when none.
	aheadLo, aheadHi int
	// streak counts the messages in a row asked for in the order they
	// were sent ahead; more are sent ahead the longer it is.
	streak int
}

// snapshot builds the session's listing from upstream UIDL and LIST.
func (m *mailbox) snapshot(ctx context.Context) error {
	c, addr := m.c, m.b.opts.Addr
	if caps, ok := c.Capabilities(); ok {
		if _, ok := caps["UIDL"]; !ok {
			return fmt.Errorf("pop3: upstream %s does not offer UIDL (CAPA); popbridge needs stable unique ids: %w", addr, proxy.ErrPermanent)
		}
	}
	// UIDL and LIST at once with PIPELINING.
	if err := c.pipeline(ctx, "UIDL", "LIST"); err != nil {
		return m.b.upstreamErr("UIDL", err)
	}
	uidls, err := c.UIDL(ctx)
	if errors.Is(err, ErrNoUIDL) {
		return fmt.Errorf("pop3: upstream %s does not support UIDL; popbridge needs stable unique ids: %w: %w", addr, proxy.ErrPermanent, err)
	}
	if err != nil {
		return m.b.upstreamErr("UIDL", err)
	}
	list, err := c.List(ctx)
	if err != nil {
		return m.b.upstreamErr("LIST", err)
	}
	sizes := make(map[int]int64, len(list))
	for _, e := range list {
		sizes[e.N] = e.Size
	}

	var snap *cache.Snapshot
	st := m.b.opts.Store
	if st != nil {
		if snap, err = st.Snapshot(m.account); err != nil {
			return fmt.Errorf("pop3: %w: %w", proxy.ErrTemporary, err)
		}
	}

	// Keys: the upstream UIDL, "#2", "#3"... added to repeats.
	type entry struct {
		n        int
		key, uid string
		size     int64
	}
	entries := make([]entry, 0, len(uidls))
	seen := make(map[string]int, len(uidls))
	for _, u := range uidls {
		size, ok := sizes[u.N]
		if !ok {
			continue // listed by UIDL only: gone between the commands
		}
		key := u.UID
		if k := seen[u.UID]; k > 0 {
			key = u.UID + " #" + strconv.Itoa(k+1)
		}
		seen[u.UID]++
		entries = append(entries, entry{n: u.N, key: key, size: size})
	}
	// UIDs: a valid upstream UIDL passes through; others are mapped to a
	// hash of the key, rehashed on the (unlikely) clash with another UID.
	used := make(map[string]bool, len(entries))
	for i, e := range entries {
		if proxy.ValidUID(e.key) {
			entries[i].uid = e.key
			used[e.key] = true
		}
	}
	for i, e := range entries {
		if e.uid != "" {
			continue
		}
		for k := 0; ; k++ {
			uid := mapUID(e.key, k)
			if !used[uid] {
				entries[i].uid = uid
				used[uid] = true
				break
			}
		}
	}

	m.byUID = make(map[string]*msg, len(entries))
	m.list = make([]proxy.MessageInfo, 0, len(entries))
	m.byIndex = make([]*msg, 0, len(entries))
	keys := make([]string, 0, len(entries))
	for _, e := range entries {
		keys = append(keys, e.key)
		size := e.size
		if snap != nil {
			if snap.Tombstoned(e.key) {
				continue
			}
			if r, ok := snap.Message(e.key); ok {
				size = r.Size // measured on an earlier RETR
			}
		} else if s, ok := m.b.knownSize(m.account, e.key); ok {
			size = s
		}
		ms := &msg{n: e.n, key: e.key, size: size, i: len(m.list)}
		m.byUID[e.uid] = ms
		m.byIndex = append(m.byIndex, ms)
		m.list = append(m.list, proxy.MessageInfo{UID: e.uid, Size: size})
	}
	if snap != nil {
		m.prune(snap, keys)
	}
	return nil
}

// prune forgets the records and tombstones of messages gone upstream,
// when the upstream listing changed since the last login.
func (m *mailbox) prune(snap *cache.Snapshot, keys []string) {
	sync := snap.Sync()
	if equalStrings(sync.POP3UIDLs, keys) {
		return
	}
	present := make(map[string]bool, len(keys))
	for _, k := range keys {
		present[k] = true
	}
	var ch cache.Change
	for r := range snap.Messages() {
		if !present[r.Key] {
			ch.Delete = append(ch.Delete, r.Key)
		}
	}
	for k := range snap.Tombstones() {
		if !present[k] {
			ch.RemoveTombstones = append(ch.RemoveTombstones, k)
		}
	}
	sync.POP3UIDLs = keys
	ch.Sync = &sync
	// Best effort: a failure only delays the pruning.
	_ = m.b.opts.Store.Apply(m.account, ch)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// mapUID returns a valid UID for an upstream UIDL that is not one: "~"
// and 40 hex digits of SHA-256 over the key (and k, after a clash).
func mapUID(key string, k int) string {
	h := sha256.New()
	h.Write([]byte("popbridge-pop3-uidl\x00" + key))
	if k > 0 {
		h.Write([]byte("\x00" + strconv.Itoa(k)))
	}
	return "~" + hex.EncodeToString(h.Sum(nil))[:40]
}

func (b *Backend) knownSize(account, key string) (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.sizes[account+"\x00"+key]
	return s, ok
}

// learnSize records the exact size measured while streaming a message.
func (m *mailbox) learnSize(uid string, ms *msg, size int64) {
	ms.size = size
	if st := m.b.opts.Store; st != nil {
		_ = st.PutMessages(m.account, []cache.MessageRecord{{Key: ms.key, Size: size, UIDL: uid}})
		return
	}
	m.b.mu.Lock()
	m.b.sizes[m.account+"\x00"+ms.key] = size
	m.b.mu.Unlock()
}

// List returns the snapshot taken at login.
func (m *mailbox) List(ctx context.Context) ([]proxy.MessageInfo, error) {
	return m.list, nil
}

// Open streams the message with upstream RETR, or from Bodies when an
// earlier TOP kept it. A plain RETR is not kept: a client rarely
// retrieves a message twice, and copying every relayed message into the
// cache would cost more than it saves (and the verified pass-through).
func (m *mailbox) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	return m.open(ctx, uid, false)
}

// open streams the message; keep tees it into Bodies.
func (m *mailbox) open(ctx context.Context, uid string, keep bool) (io.ReadCloser, error) {
	ms := m.byUID[uid]
	if ms == nil {
		return nil, fmt.Errorf("pop3: uid %q: %w", uid, proxy.ErrNoMessage)
	}
	// In order: ms is the next message sent ahead. Otherwise the
	// Client drops what was sent ahead at RETR.
	inOrder := m.aheadLo < m.aheadHi && ms.i == m.aheadLo
	if inOrder {
		m.aheadLo++
		m.streak++
	} else {
		m.dropAhead()
	}
	open := func() (io.ReadCloser, error) {
		rc, err := m.c.Retr(ctx, ms.n)
		if err != nil {
			var re *ResponseError
			if errors.As(err, &re) {
				return nil, fmt.Errorf("pop3: RETR %d: %w: %w", ms.n, proxy.ErrNoMessage, err)
			}
			return nil, m.b.upstreamErr("RETR", err)
		}
		if d, ok := rc.(*dotReader); ok {
			d.body.SetSize(ms.size) // a large message streams at once
		}
		cr := &counted{r: rc, m: m, uid: uid, ms: ms}
		if !keep {
			if inOrder {
				// The client downloads in order: the next messages
				// stream right behind this one.
				m.retrAhead(ms)
			} else {
				cr.onEOF = func() { m.retrAhead(ms) }
			}
		}
		return cr, nil
	}
	if body, ok := m.b.opts.Bodies.Get(m.account, ms.key); ok {
		return io.NopCloser(bytes.NewReader(body)), nil
	}
	if !keep || m.b.opts.Bodies == nil {
		return open()
	}
	return m.b.opts.Bodies.Open(m.account, ms.key, -1, open)
}

// retrAhead sends the RETRs of the messages after ms without waiting for
// their replies, when the upstream offers PIPELINING: POP3 clients
// download in order, and the next RETR then finds its message on the way
// instead of waiting a round trip to the upstream. The first RETR sends
// one at its end; while the client asks for the messages in the order
// they were sent ahead, each RETR tops them up to twice as many as the
// streak before, up to aheadCount messages and aheadBytes octets (by the
// listed sizes), so that the upstream answers several at a time; it
// waits until less than half of that is left, to send a batch. Only
// messages up to aheadMax octets, not kept in Bodies. Any other upstream
// command drops them (Client.dropAhead).
func (m *mailbox) retrAhead(ms *msg) {
	if m.c.Err() != nil || !m.c.Pipelining() {
		return
	}
	if m.aheadLo >= m.aheadHi {
		m.aheadLo, m.aheadHi = ms.i+1, ms.i+1
	}
	want := min(1<<min(m.streak, 16), aheadCount)
	var bytes int64
	for _, ms := range m.byIndex[m.aheadLo:m.aheadHi] {
		bytes += ms.size
	}
	// Top up in batches: while at least half the window is still on its
	// way, wait, so that one write carries several RETRs instead of one
	// write (and one upstream wakeup) per message.
	if out := m.aheadHi - m.aheadLo; out > 0 && (2*out >= want || 2*bytes >= aheadBytes) {
		return
	}
	var ns []int
	hi := m.aheadHi
	for ; hi < len(m.list) && hi-m.aheadLo < want; hi++ {
		next := m.byIndex[hi]
		if next.size > aheadMax || bytes+next.size > aheadBytes {
			break
		}
		if _, ok := m.b.opts.Bodies.Get(m.account, next.key); ok {
			break
		}
		ns = append(ns, next.n)
		bytes += next.size
	}
	if len(ns) > 0 && m.c.RetrAhead(ns...) {
		m.aheadHi = hi
	}
}

// dropAhead forgets the RETRs sent ahead; the Client reads and drops
// their replies before its next command.
func (m *mailbox) dropAhead() {
	m.aheadLo, m.aheadHi, m.streak = 0, 0, 0
}

// OpenTop streams the header and lines body lines with upstream TOP when
// CAPA listed TOP (RFC 2449 §6.3), so a peek at a large message does not
// fetch all of it; otherwise, or when the body is cached, it is Open. It
// implements the proxy's optional TopOpener.
func (m *mailbox) OpenTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	ms := m.byUID[uid]
	if ms == nil {
		return nil, fmt.Errorf("pop3: uid %q: %w", uid, proxy.ErrNoMessage)
	}
	if _, cached := m.b.opts.Bodies.Get(m.account, ms.key); cached || !m.c.HasCapability("TOP") {
		// Without TOP upstream the whole message comes; keep it for
		// the RETR that usually follows.
		return m.open(ctx, uid, true)
	}
	m.dropAhead() // TOP drops the RETRs sent ahead
	rc, err := m.c.Top(ctx, ms.n, lines)
	if err != nil {
		var re *ResponseError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("pop3: TOP %d: %w: %w", ms.n, proxy.ErrNoMessage, err)
		}
		return nil, m.b.upstreamErr("TOP", err)
	}
	return rc, nil
}

// counted measures a message as it streams and corrects its size at EOF.
type counted struct {
	r   io.ReadCloser
	m   *mailbox
	uid string
	ms  *msg
	n   proxy.SizeCounter
	// wire counts the octets of the lines WriteWireTo wrote, which n
	// did not see.
	wire int64
	// onEOF, if set, runs once at the end of the message.
	onEOF func()
}

func (c *counted) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Write(p[:n])
	if err == io.EOF {
		c.eof()
	}
	return n, err
}

// eof corrects the size and runs onEOF.
func (c *counted) eof() {
	if size := c.n.Size() + c.wire; size != c.ms.size {
		c.m.learnSize(c.uid, c.ms, size)
	}
	if f := c.onEOF; f != nil {
		c.onEOF = nil
		f()
	}
}

// counted passes the upstream's wire form through when it can.
var _ proxy.WireWriterTo = (*counted)(nil)

// WriteWireTo is the stream's WriteWireTo (see dotReader), counted: the
// lines it writes are complete CRLF lines, counted as they are.
func (c *counted) WriteWireTo(w io.Writer) (int64, bool, error) {
	d, ok := c.r.(*dotReader)
	if !ok {
		return 0, false, nil
	}
	msg, eof, err := d.WriteWireTo(w)
	c.wire += msg
	if eof {
		c.eof()
	}
	return msg, eof, err
}

// Close reads the rest of the message, keeping the upstream in step. A
// message closed before its end sends nothing ahead.
func (c *counted) Close() error {
	c.onEOF = nil
	_, err := io.Copy(io.Discard, onlyReader{c})
	if cerr := c.r.Close(); err == nil {
		err = cerr
	}
	return err
}

type onlyReader struct{ io.Reader }

// Delete removes the messages upstream (DELE each, then QUIT) or, for
// modes.Keep, hides them with tombstones.
func (m *mailbox) Delete(ctx context.Context, uids []string) error {
	keys := make([]string, 0, len(uids))
	var nums []int
	for _, uid := range uids {
		if ms := m.byUID[uid]; ms != nil {
			keys = append(keys, ms.key)
			nums = append(nums, ms.n)
		}
	}
	if m.b.opts.OnDelete == modes.Keep {
		if err := m.b.opts.Store.AddTombstones(m.account, keys); err != nil {
			return fmt.Errorf("pop3: %w: %w", proxy.ErrTemporary, err)
		}
		return nil
	}
	m.dropAhead()
	var failed []error
	for _, n := range nums {
		if err := m.c.Dele(ctx, n); err != nil {
			var re *ResponseError
			if !errors.As(err, &re) {
				// The connection broke: nothing is committed.
				return m.b.upstreamErr("DELE", err)
			}
			failed = append(failed, err)
		}
	}
	m.quit = true
	if err := m.c.Quit(ctx); err != nil {
		return m.b.upstreamErr("QUIT", err)
	}
	for _, k := range keys {
		m.b.opts.Bodies.Remove(m.account, k)
	}
	if len(failed) > 0 {
		return fmt.Errorf("pop3: %d of %d DELE failed: %w: %w", len(failed), len(nums), proxy.ErrTemporary, errors.Join(failed...))
	}
	return nil
}

// Close ends the upstream session. Nothing was marked upstream unless
// Delete ran, which already sent QUIT; otherwise RSET and QUIT are sent
// when the connection is in step, and it is just closed when not.
func (m *mailbox) Close() error {
	defer m.release()
	if m.quit || m.c.Err() != nil {
		m.c.Close()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Both at once with PIPELINING: QUIT commits nothing, since Delete
	// alone sends DELE, and RSET before it makes sure.
	if err := m.c.pipeline(ctx, "RSET", "QUIT"); err != nil {
		m.c.Close()
		return nil
	}
	if err := m.c.Rset(ctx); err != nil {
		m.c.Close()
		return nil
	}
	m.c.Quit(ctx)
	return nil
}
