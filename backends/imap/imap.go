// Package imap serves a folder of an upstream IMAP server (Gmail,
// Outlook.com, Dovecot, any IMAP4rev1 server) as a POP3 maildrop, built on
// github.com/emersion/go-imap/v2.
//
// A POP3 session uses one IMAP connection: Login dials, authenticates and
// selects the folder; List takes the snapshot from UID FETCH (UID
// RFC822.SIZE), so sizes are exact; RETR streams BODY.PEEK[]; TOP streams
// BODY.PEEK[HEADER] and, as far as the client reads, bounded partials of
// BODY.PEEK[TEXT]; the delete policy runs only from Delete (QUIT); Close
// logs out (in the background). After a RETR read a message whole, the
// FETCH of the next message (up to 1 MiB) is sent ahead, so a client that
// downloads in order does not wait a round trip to the server per message.
// A connection the server dropped while the POP3 client was idle is
// dialled again, and refused if the folder's UIDVALIDITY changed.
//
// A message's UIDL is its IMAP UID and the folder's UIDVALIDITY as 16
// lower-case hex digits ("%08x%08x"), which is what Dovecot's default
// pop3_uidl_format gives, so a move from Dovecot POP3 to popbridge keeps
// UIDLs.
// When UIDVALIDITY changes, every UIDL changes and the log says so.
//
// With a cache.Store, the sizes and UIDs seen are kept per UIDVALIDITY, so a
// later login asks the server only for UIDs above the highest one seen and
// compares the message count to find expunged messages; with no new mail a
// warm login is LOGIN and SELECT only.
package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// Defaults for Options fields left zero that no configuration file sets;
// the others are in internal/modes (DefaultIMAPFolder, ...).
const (
	// DefaultTopWhole: TOP fetches messages up to this size whole (and
	// through Bodies, so a RETR that follows costs nothing).
	DefaultTopWhole = 64 << 10
	// DefaultTopPartial is the first BODY.PEEK[TEXT] partial TOP fetches
	// of a larger message; later ones double, up to maxTopPartial.
	DefaultTopPartial = 16 << 10
	maxTopPartial     = 1 << 20
	// DefaultProgressEvery: see Options.ProgressEvery.
	DefaultProgressEvery = 5 * time.Second
)

// Options configures a Backend.
type Options struct {
	// Addr is the server's host:port. Required.
	Addr string
	// TLS is the TLS mode, one of modes.TLSModes; empty means
	// modes.TLSImplicit.
	TLS modes.TLS
	// TLSConfig sets the roots and the server name; nil means the system
	// roots and the host of Addr. It is cloned, never changed.
	TLSConfig *tls.Config
	// Auth selects the credentials, one of modes.IMAPAuth; empty means
	// modes.AuthPassword, sent with AUTHENTICATE PLAIN when the server
	// offers it, else with LOGIN. XOAUTH2 and OAUTHBEARER go with
	// AUTHENTICATE.
	Auth modes.Auth
	// Username is the IMAP login for every mode but passthrough;
	// Password goes with it for password.
	Username, Password string
	// TokenSource gives the access tokens for xoauth2 and oauthbearer; it
	// is asked at every login (wrap it in oauth2.ReuseTokenSource to
	// cache).
	TokenSource oauth2.TokenSource
	// Folder is the mailbox served; empty means modes.DefaultIMAPFolder.
	Folder string
	// OnDelete is the delete policy, one of modes.IMAPOnDelete; empty
	// means modes.Expunge. Expunge sets \Deleted and removes the
	// messages with UID EXPUNGE (UIDPLUS, RFC 4315). Without UIDPLUS a
	// plain EXPUNGE would also remove messages other clients marked
	// \Deleted, so it is sent only when UID SEARCH DELETED finds no
	// message but the client's; otherwise the messages stay marked
	// \Deleted upstream and hidden from POP, and a warning is logged.
	// modes.Move(FOLDER) moves the messages to FOLDER: MOVE (RFC 6851),
	// or without it COPY then removal as for Expunge; a folder the server
	// says does not exist (TRYCREATE) is created. Seen sets \Seen and
	// Keep changes nothing; both hide the messages from POP.
	OnDelete modes.OnDelete
	// MarkReadOnRetr sets \Seen on messages RETR sends, by fetching
	// BODY[] instead of BODY.PEEK[]. TOP never sets it.
	MarkReadOnRetr bool
	// Store keeps sizes, UIDs and sync state per account, so warm logins
	// fetch only what changed, and the tombstones of Seen and Keep. Nil
	// fetches every size at every login; Seen and Keep need a Store.
	Store cache.StateStore
	// Bodies, if not nil, keeps small bodies so that TOP followed by RETR,
	// or a repeated RETR, fetches the message once.
	Bodies *cache.Bodies
	// Account names the account in Store, Bodies and logs. Empty means
	// "imap:USER@ADDR/FOLDER" with the IMAP user name (always so for
	// passthrough auth).
	Account string
	// DialTimeout bounds connecting, TLS handshake included; zero means
	// modes.DefaultIMAPDialTimeout.
	DialTimeout time.Duration
	// CommandTimeout is how long the server may stay silent while a reply
	// is awaited (reset by every read, so a long download is fine); zero
	// means modes.DefaultIMAPCommandTimeout.
	CommandTimeout time.Duration
	// TopWhole and TopPartial tune TOP; zero means DefaultTopWhole and
	// DefaultTopPartial, a negative TopWhole always uses partials.
	TopWhole, TopPartial int64
	// ProgressEvery is the interval of the info lines that report a long
	// listing of the folder (a first login on a large folder); zero means
	// DefaultProgressEvery.
	ProgressEvery time.Duration
	// Logger receives sync summaries, UIDVALIDITY changes, reconnects and
	// delete-policy warnings; nil logs nothing. Passwords and tokens are
	// never logged.
	Logger *zerolog.Logger
}

// String describes o for people, with the defaults New applies and
// without credentials: "imap ADDR/FOLDER, tls MODE, auth AUTH, on_delete
// POLICY".
func (o Options) String() string {
	folder := o.Folder
	if folder == "" {
		folder = modes.DefaultIMAPFolder
	}
	return fmt.Sprintf("imap %s/%s, tls %s, auth %s, on_delete %s", o.Addr, folder,
		modes.TLSModes.Or(o.TLS), modes.IMAPAuth.Or(o.Auth), modes.IMAPOnDelete.Or(o.OnDelete))
}

// Backend serves one IMAP folder, or with passthrough auth that folder of
// any account the server knows.
type Backend struct {
	opts Options
	host string // of Addr, for TLS and OAUTHBEARER
	port int
	log  zerolog.Logger
	prog progress // of the last listing that fetched sizes
}

var (
	_ backends.Opener    = (*Backend)(nil)
	_ proxy.SyncReporter = (*Backend)(nil)
	_ proxy.Mailbox      = (*mailbox)(nil)
	_ proxy.TopOpener    = (*mailbox)(nil)
)

// New checks opts and returns a Backend. It does not connect.
func New(opts Options) (*Backend, error) {
	if opts.Addr == "" {
		return nil, errors.New("imap: addr is required")
	}
	host, portStr, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("imap: addr %q: %w", opts.Addr, err)
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil {
		return nil, fmt.Errorf("imap: addr %q: %w", opts.Addr, err)
	}
	if opts.TLS = modes.TLSModes.Or(opts.TLS); !modes.TLSModes.Has(opts.TLS) {
		return nil, fmt.Errorf("imap: unknown tls mode %q (want %s)", opts.TLS, modes.TLSModes)
	}
	switch opts.Auth = modes.IMAPAuth.Or(opts.Auth); {
	case !modes.IMAPAuth.Has(opts.Auth):
		return nil, fmt.Errorf("imap: unknown auth %q (want %s)", opts.Auth, modes.IMAPAuth)
	case opts.Auth == modes.AuthPassword:
		if opts.Username == "" {
			return nil, errors.New("imap: username is required for password auth")
		}
	case opts.Auth.Token():
		if opts.Username == "" || opts.TokenSource == nil {
			return nil, fmt.Errorf("imap: username and a token source are required for %s auth", opts.Auth)
		}
	}
	if opts.Folder == "" {
		opts.Folder = modes.DefaultIMAPFolder
	}
	opts.OnDelete = modes.IMAPOnDelete.Or(opts.OnDelete)
	if folder, move := opts.OnDelete.MoveTarget(); move {
		if folder == "" {
			return nil, errors.New("imap: delete policy move: needs a folder (move:FOLDER)")
		}
		if folder == opts.Folder {
			return nil, fmt.Errorf("imap: delete policy %q moves to the folder served", opts.OnDelete)
		}
	} else if !modes.IMAPOnDelete.Has(opts.OnDelete) {
		return nil, fmt.Errorf("imap: unknown delete policy %q (want %s)", opts.OnDelete, modes.IMAPOnDelete)
	} else if (opts.OnDelete == modes.Seen || opts.OnDelete == modes.Keep) && opts.Store == nil {
		return nil, fmt.Errorf("imap: on_delete %s needs a cache store", opts.OnDelete)
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = modes.DefaultIMAPDialTimeout
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = modes.DefaultIMAPCommandTimeout
	}
	if opts.TopWhole == 0 {
		opts.TopWhole = DefaultTopWhole
	}
	if opts.TopPartial <= 0 {
		opts.TopPartial = DefaultTopPartial
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = DefaultProgressEvery
	}
	b := &Backend{opts: opts, host: host, port: port, log: zerolog.Nop()}
	if opts.Logger != nil {
		b.log = opts.Logger.With().Str("backend", "imap").Str("upstream", opts.Addr).Logger()
	}
	return b, nil
}

// account returns the name of the upstream user's account in the cache.
func (b *Backend) account(user string) string {
	if b.opts.Account != "" && b.opts.Auth != modes.AuthPassthrough {
		return b.opts.Account
	}
	return "imap:" + user + "@" + b.opts.Addr + "/" + b.opts.Folder
}

// readOnly reports whether the folder can be opened with EXAMINE: nothing
// this configuration does changes it.
func (b *Backend) readOnly() bool {
	return b.opts.OnDelete == modes.Keep && !b.opts.MarkReadOnRetr
}

// OpenMaildrop connects, authenticates and selects the folder. For
// modes.AuthPassthrough the login's user and password are the IMAP credentials;
// otherwise the login is not needed. Credentials the server rejects give
// an error wrapping proxy.ErrAuthFailed; a server that cannot be reached,
// one wrapping proxy.ErrTemporary.
func (b *Backend) OpenMaildrop(ctx context.Context, login backends.Login) (proxy.Mailbox, error) {
	user, pass := login.User, login.Password
	if b.opts.Auth != modes.AuthPassthrough {
		user, pass = b.opts.Username, b.opts.Password
	}
	m := &mailbox{b: b, account: b.account(user), release: func() {}}
	if store := b.opts.Store; store != nil {
		// Hold the account, so that popbridge cache forget waits.
		release, err := store.Hold(m.account)
		if err != nil {
			return nil, b.errorf(proxy.ErrTemporary, "hold the cache account for", err)
		}
		m.release = release
	}
	m.s = &session{b: b, user: user, pass: pass}
	lc := b.log.With().Str("imap_user", user)
	if id := proxy.SessionID(ctx); id != "" {
		lc = lc.Str("session", id)
	}
	m.s.log = lc.Logger()
	if err := m.s.connect(ctx); err != nil {
		m.release()
		return nil, err
	}
	return m, nil
}

// Check connects, logs in and examines the folder without changing
// anything, for popbridge check. With passthrough auth it only connects
// (and starts TLS): there are no credentials to try.
func (b *Backend) Check(ctx context.Context) error {
	s := &session{b: b, user: b.opts.Username, pass: b.opts.Password, log: b.log, checkOnly: true}
	if err := s.connect(ctx); err != nil {
		return err
	}
	return s.logout()
}

// errorf wraps err with a sentinel for the proxy and the operation.
func (b *Backend) errorf(sentinel *proxy.Error, op string, err error) error {
	return fmt.Errorf("imap: %s %s: %w: %w", op, b.opts.Addr, sentinel, err)
}
