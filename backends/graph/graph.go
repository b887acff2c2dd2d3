// Package graph serves an Outlook.com or Microsoft 365 mail folder as a
// POP3 maildrop through Microsoft Graph (plain net/http and
// encoding/json, no SDK), for mailboxes whose tenant disables POP and
// IMAP. /work/shared/GRAPH.md has the API facts it relies on.
//
// Identity: every request, $batch items included, asks for immutable
// ids (Prefer: IdType="ImmutableId"). The immutable id is the message's
// key in the cache.Store; the UIDL handed out is derived from it (the
// first 128 bits of its SHA-256, in hex: 32 characters), so it fits
// POP3's 70 characters whatever length Microsoft gives ids, and is the
// same after a restart, a delta resync or a lost cache. The UIDL is also
// stored with the record, and a stored UIDL wins, so the derivation can
// change without changing what clients saw.
//
// Sizes: Graph has no size property. The exact size, with CRLF line ends,
// is counted on the raw MIME ($value), fetched once in the background
// and kept in the Store; the bodies go to the body cache, so the RETR or
// TOP that follows costs nothing. A login waits for the sizing at most
// Options.LoginWait, then offers the messages sized by then, oldest
// first; Window.Batch offers only the oldest N not yet downloaded.
// EstimateSizes (exact_sizes: false) lists Graph's PidTagMessageSize
// estimate instead, as the Gmail backend does with sizeEstimate.
//
// Size changes: $value is MIME that Exchange regenerates on each
// request, and nothing promises the same bytes twice. LIST must equal
// what RETR sends, so RETR never sends a body whose size differs from
// the listed one: a message up to Options.VerifyLimit is downloaded
// whole before +OK, and if its size changed the RETR answers
// -ERR [SYS/TEMP] and the new size and body are recorded, so that the
// next session lists and serves the new version; a larger message is
// streamed, and a size that turns out different fails the stream (the
// connection closes without the final ".", so the client keeps nothing
// and deletes nothing) and the message is sized again for the next
// login. The body cache serves the bytes that were measured, so a
// message sized in the background is not fetched again by RETR while
// the cache holds it.
//
// Sync: one delta query per login (GET the stored @odata.deltaLink,
// following @odata.nextLink), so a login with no change costs one
// request whatever the mailbox's size. @removed entries, and a message
// moved to another folder (it is removed from this folder's delta), leave
// the maildrop. A delta token Graph no longer has (410, syncStateNotFound,
// resyncRequired) means a full round; known sizes and UIDLs are kept.
//
// Throttling: every request passes one gate per Backend: at most
// MaxConcurrent (4, Graph's per-mailbox limit) in flight, a $batch
// counting as 4 (Graph runs its items 4 at a time), and optionally an
// AppLimit shared by the mailboxes of one app; 429, 503 and 504
// are retried after Retry-After (seconds, possibly fractional) plus
// jitter, else exponential backoff with jitter. A request that cannot
// finish before the caller's deadline fails at once with
// proxy.ErrTemporary, so a slow API gives -ERR [SYS/TEMP], never a hung
// session. At QUIT, moves, deletions and read flags go in $batch
// requests of 20 items; throttled items (429, 424) are retried; an item
// already gone (404) counts as done. A dropped session changes nothing.
package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// Delete policies (on_delete): what DELE followed by QUIT does.
// They are the words of modes.GraphOnDelete.
const (
	DeletedItems = modes.DeletedItems // move to Deleted Items (default)
	Archive      = modes.Archive      // move to the Archive folder
	Delete       = modes.Delete       // permanentDelete: gone for good
	MarkRead     = modes.MarkRead     // set isRead and hide from POP
	Keep         = modes.Keep         // change nothing in the mailbox, hide from POP
	MovePrefix   = "move:"            // "move:FOLDER" (modes.Move): move to that folder (well-known name or path)
)

// WellKnownFolders are the folder names Graph resolves itself, in any
// locale (GRAPH.md §2).
var WellKnownFolders = []string{"archive", "clutter", "conflicts", "conversationhistory", "deleteditems", "drafts",
	"inbox", "junkemail", "localfailures", "msgfolderroot", "outbox", "recoverableitemsdeletions", "scheduled",
	"searchfolders", "sentitems", "serverfailures", "syncissues"}

// Window limits the messages a session offers; the zero value offers all.
type Window struct {
	// Since offers only messages received at or after it.
	Since time.Time
	// MaxAge offers only messages received within it.
	MaxAge time.Duration
	// Batch offers only the oldest Batch messages not yet downloaded (by
	// a RETR in a session that ended with QUIT); 0 means no limit.
	Batch int
}

// Defaults for Options fields left zero.
const (
	DefaultEndpoint      = modes.DefaultGraphEndpoint
	DefaultMaxConcurrent = modes.DefaultGraphMaxConcurrent
	DefaultCallTimeout   = modes.DefaultGraphCallTimeout
	DefaultBackoffBase   = 500 * time.Millisecond
	DefaultMaxAttempts   = 6
	DefaultLoginWait     = modes.DefaultGraphLoginWait
	DefaultVerifyLimit   = 8 << 20
	DefaultPageSize      = 500
	maxBackoff           = 32 * time.Second
)

// Options configures a Backend.
type Options struct {
	// Account names the account in the Store and the body cache.
	Account string
	// Store keeps UIDLs, sizes, dates, the delta link and hidden
	// messages; required.
	Store cache.StateStore
	// Bodies, if not nil, keeps fetched messages for the RETR or TOP that
	// follows.
	Bodies *cache.Bodies

	// TokenSource gives access tokens; it is wrapped in oauth.Transport,
	// so a token Graph rejects is replaced once. HTTPClient, if set, is
	// used as is instead (tests).
	TokenSource oauth2.TokenSource
	HTTPClient  *http.Client
	// Endpoint is the API root (api_endpoint); empty means
	// DefaultEndpoint. National clouds and gateways set theirs.
	Endpoint string
	// Mailbox is "" or "me" for the signed-in user, else a shared or
	// delegated mailbox's address (/users/{address}).
	Mailbox string
	// Folder is a well-known folder name or a path of display names
	// ("Inbox/Lists"); empty means inbox.
	Folder string
	Window Window
	// OnDelete is the delete policy; empty means DeletedItems.
	OnDelete modes.OnDelete
	// DownloadOnce hides every message a session retrieved with RETR,
	// once the session ends with QUIT.
	DownloadOnce bool
	// MarkReadOnRetr sets isRead on the messages a session retrieved,
	// once the session ends with QUIT.
	MarkReadOnRetr bool
	// EstimateSizes lists Graph's size estimate (PidTagMessageSize) until
	// a RETR learns the exact size: no $value download per new message,
	// but LIST may differ from what RETR sends.
	EstimateSizes bool

	// MaxConcurrent bounds the requests in flight (Graph allows 4 per
	// mailbox); CallTimeout one attempt; BackoffBase the first wait
	// after a throttled or failed attempt; MaxAttempts the tries per
	// request; LoginWait the wait for background sizing at login;
	// VerifyLimit the largest message a RETR downloads whole to check
	// its size before +OK; PageSize the delta page (odata.maxpagesize).
	// Zero means the default.
	MaxConcurrent int
	CallTimeout   time.Duration
	BackoffBase   time.Duration
	MaxAttempts   int
	LoginWait     time.Duration
	VerifyLimit   int64
	PageSize      int

	// AppLimit, if set, also bounds the requests in flight of every
	// Backend sharing it: one app registration serving many mailboxes
	// (Graph's concurrency limit may be per app, GRAPH.md §11).
	AppLimit *Limit

	// OnCall, if set, is called after every request with its name
	// ("delta", "value", "batch", ...). It must be quick.
	OnCall func(name string)
	Logger *zerolog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Backend serves one Graph mailbox folder. It is safe for concurrent use.
type Backend struct {
	opts     Options
	hc       *http.Client
	base     *url.URL
	mbPath   string // "me" or "users/{address}", escaped
	mailbox  *Limit // MaxConcurrent requests in flight
	log      zerolog.Logger
	calls    atomic.Int64
	backoffs atomic.Int64

	folderMu sync.Mutex
	folders  map[string]string // folder spec -> id or well-known name

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex // serialises Store writes of sessions and sizing
	bg     background
}

var (
	_                 backends.Opener    = (*Backend)(nil)
	_                 proxy.SyncReporter = (*Backend)(nil)
	_                 proxy.Mailbox      = (*mailbox)(nil)
	_                 proxy.TopOpener    = (*mailbox)(nil)
	_                 proxy.Committer    = (*mailbox)(nil)
	errFolderNotFound                    = &proxy.Error{Code: proxy.CodeSysPerm, Text: "The configured Graph folder does not exist; check the folder setting"}
	errBadLink                           = errors.New("graph: a nextLink or deltaLink points outside the API endpoint")
)

// Limit bounds the requests in flight of the Backends that share it.
type Limit struct {
	mu  sync.Mutex // serialises taking several slots
	sem chan struct{}
}

// NewLimit returns a Limit of n requests in flight (at least 1).
func NewLimit(n int) *Limit { return &Limit{sem: make(chan struct{}, max(n, 1))} }

// acquire takes n slots (at most the Limit's size).
func (l *Limit) acquire(ctx context.Context, n int) (int, error) {
	n = min(n, cap(l.sem))
	if n > 1 {
		l.mu.Lock()
		defer l.mu.Unlock()
	}
	for i := range n {
		select {
		case l.sem <- struct{}{}:
		case <-ctx.Done():
			l.release(i)
			return 0, fmt.Errorf("waiting for a request slot: %w", ctx.Err())
		}
	}
	return n, nil
}

func (l *Limit) release(n int) {
	for range n {
		<-l.sem
	}
}

// Stats counts the requests a Backend made.
type Stats struct {
	Calls    int64 // requests sent, failed ones included; a $batch is one
	Backoffs int64 // waits before a retry
}

// New checks opts and returns a Backend. It sends no request.
func New(opts Options) (*Backend, error) {
	if opts.Store == nil {
		return nil, errors.New("graph: a cache store is required")
	}
	if opts.Account == "" {
		return nil, errors.New("graph: Account must be set")
	}
	if opts.TokenSource == nil && opts.HTTPClient == nil {
		return nil, errors.New("graph: a token source is required")
	}
	opts.OnDelete = modes.GraphOnDelete.Or(opts.OnDelete)
	if !modes.GraphOnDeleteOK(opts.OnDelete) {
		return nil, fmt.Errorf("graph: unknown on_delete %q (want %s)", opts.OnDelete, modes.GraphOnDelete)
	}
	if opts.Window.Batch < 0 {
		return nil, fmt.Errorf("graph: negative batch %d", opts.Window.Batch)
	}
	if opts.Folder == "" {
		opts.Folder = modes.DefaultGraphFolder
	}
	if opts.Endpoint == "" {
		opts.Endpoint = DefaultEndpoint
	}
	base, err := url.Parse(strings.TrimRight(opts.Endpoint, "/") + "/")
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return nil, fmt.Errorf("graph: api_endpoint %q is not an http(s) URL", opts.Endpoint)
	}
	mb := "me"
	if opts.Mailbox != "" && !strings.EqualFold(opts.Mailbox, "me") {
		mb = "users/" + url.PathEscape(opts.Mailbox)
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = DefaultMaxConcurrent
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = DefaultBackoffBase
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.LoginWait <= 0 {
		opts.LoginWait = DefaultLoginWait
	}
	if opts.VerifyLimit <= 0 {
		opts.VerifyLimit = DefaultVerifyLimit
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	b := &Backend{opts: opts, base: base, mbPath: mb, mailbox: NewLimit(opts.MaxConcurrent), folders: map[string]string{}}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.log = zerolog.Nop()
	if opts.Logger != nil {
		b.log = opts.Logger.With().Str("backend", "graph").Str("account", opts.Account).Logger()
	}
	b.hc = opts.HTTPClient
	if b.hc == nil {
		// oauth.Transport, not oauth2.NewClient: a token Graph rejects is
		// dropped and replaced once, never reused from a cache.
		b.hc = &http.Client{Transport: &oauth.Transport{Source: opts.TokenSource}}
	}
	return b, nil
}

// Stats returns the requests made so far.
func (b *Backend) Stats() Stats {
	return Stats{Calls: b.calls.Load(), Backoffs: b.backoffs.Load()}
}

// OpenMaildrop opens the maildrop; login was checked by the accounts in
// front. A missing or revoked OAuth2 grant fails here, with the token
// source's [SYS/PERM] reply.
func (b *Backend) OpenMaildrop(ctx context.Context, login backends.Login) (proxy.Mailbox, error) {
	if b.opts.TokenSource != nil && b.opts.HTTPClient == nil {
		if _, err := b.opts.TokenSource.Token(); err != nil {
			return nil, b.classify("get an access token", err)
		}
	}
	release, err := b.opts.Store.Hold(b.opts.Account)
	if err != nil {
		return nil, fmt.Errorf("graph: hold the cache account: %w: %w", proxy.ErrTemporary, err)
	}
	return &mailbox{b: b, release: release}, nil
}

// Check reads the served folder, for popbridge check: it proves the
// token, the permission, the mailbox and the folder.
func (b *Backend) Check(ctx context.Context) error {
	ref, err := b.folderRef(ctx, b.opts.Folder)
	if err != nil {
		return err
	}
	var f struct {
		ID          string `json:"id"`
		DisplayName string `json:"displayName"`
		Total       int    `json:"totalItemCount"`
		Unread      int    `json:"unreadItemCount"`
	}
	if err := b.getJSON(ctx, "folder", b.mbPath+"/mailFolders/"+url.PathEscape(ref), &f); err != nil {
		return err
	}
	b.log.Info().Str("folder", f.DisplayName).Int("messages", f.Total).Int("unread", f.Unread).Msg("graph: folder read")
	return nil
}

// Close stops the background sizing and waits for it to end.
func (b *Backend) Close() error {
	b.bg.mu.Lock()
	b.bg.closed = true
	b.bg.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	return nil
}
