// Package gmail serves a Gmail mailbox as a POP3 maildrop through the
// Gmail REST API (google.golang.org/api/gmail/v1), for mail that no
// password protocol reaches.
//
// The maildrop holds the messages that carry every label of
// Options.Labels (INBOX by default) and match Options.Query, limited by
// Options.Window. A message's UIDL is its Gmail id, which never changes.
// Its size is exact: the length, with CRLF line ends, of the decoded
// format=raw message, fetched once and kept in the cache.Store with the
// message's internalDate (messages are offered oldest first).
//
// The first login lists the mailbox (messages.list) and records the
// mailbox's historyId; later logins read only history.list from there,
// so a login with no change costs one API call whatever the mailbox's
// size. A history that Gmail no longer has (HTTP 404) means a full list
// again; known sizes are kept.
//
// Sizes are learnt in the background, oldest message (Gmail id) first,
// and kept in the Store as they come. A login waits for them at most
// Options.LoginWait, then offers the messages whose size is known; so a
// first login on a large mailbox answers quickly with its oldest
// messages, and later logins offer more. Close stops the background
// work.
//
// Every request goes through one gate per Backend: at most
// MaxConcurrent in flight, a token bucket on quota units per minute,
// and truncated exponential backoff with jitter on 429, 403
// rateLimitExceeded or userRateLimitExceeded, and 5xx, honouring
// Retry-After. A request that cannot finish before the caller's
// deadline fails at once with proxy.ErrTemporary rather than hanging
// the session.
package gmail

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"
	"golang.org/x/time/rate"
	gmailapi "google.golang.org/api/gmail/v1"
	"google.golang.org/api/option"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// Window limits the messages a session offers. The zero value offers
// every message.
type Window struct {
	// MaxAge offers only messages received within it (by internalDate).
	MaxAge time.Duration
	// Since offers only messages received at or after it.
	Since time.Time
	// Batch offers only the oldest Batch messages not yet downloaded (a
	// RETR in a session that ended with QUIT), so that a large mailbox
	// drains over several sessions; 0 means no limit. "Oldest" follows
	// the Gmail id, which grows with the time a message arrived, so that
	// only the messages offered need a request each.
	Batch int
}

// Defaults for Options fields left zero that no configuration file
// sets; the others are in internal/modes (DefaultGmailEndpoint, ...).
const (
	DefaultBackoffBase   = 500 * time.Millisecond
	DefaultMaxAttempts   = 6
	DefaultProgressEvery = 5 * time.Second
	// maxBackoff caps one wait between attempts; a Retry-After above it
	// fails the request at once.
	maxBackoff = 32 * time.Second
)

// Options configures a Backend.
type Options struct {
	// Account names the account in the Store and the body cache.
	Account string
	// Store keeps sizes, dates, the history position and the hidden
	// messages; required.
	Store cache.StateStore
	// Bodies, if not nil, keeps decoded messages fetched to learn their
	// size or for TOP, so that the RETR that follows costs no request.
	Bodies *cache.Bodies

	// TokenSource gives the access tokens. HTTPClient, if set, is used
	// instead, as is (tests).
	TokenSource oauth2.TokenSource
	HTTPClient  *http.Client
	// Endpoint is the API's base URL; empty means
	// modes.DefaultGmailEndpoint.
	Endpoint string
	// UserID is the mailbox's user id in API paths; empty means "me".
	UserID string

	// Labels are the label ids a message must all carry; empty means
	// modes.DefaultGmailLabel (INBOX). Query is a Gmail search string it
	// must also match.
	Labels []string
	Query  string
	Window Window
	// OnDelete is the delete policy, one of modes.GmailOnDelete; empty
	// means modes.Archive, which removes the served labels (for INBOX:
	// Gmail's Archive). modes.Trash uses messages.trash; modes.Delete
	// messages.batchDelete, which needs a scope of
	// modes.GmailDeleteScopes. modes.MarkRead removes the UNREAD label and
	// modes.Keep changes nothing; both hide the messages from POP.
	OnDelete modes.OnDelete
	// DownloadOnce hides every message a session retrieved with RETR,
	// once the session ends with QUIT.
	DownloadOnce bool
	// EstimateSizes answers LIST with Gmail's sizeEstimate until a RETR
	// learns the exact size: each new message is asked for in
	// format=minimal instead of raw (the same request count and quota,
	// far fewer bytes). LIST may then differ from what RETR sends.
	EstimateSizes bool

	// MaxConcurrent bounds the requests in flight; QuotaPerMinute the
	// quota units spent per minute; CallTimeout one request;
	// BackoffBase the first wait after a rate-limit or server error;
	// MaxAttempts the tries per request. Zero means the default
	// (modes.DefaultGmailMaxConcurrent, modes.DefaultGmailQuotaPerMinute,
	// modes.DefaultGmailCallTimeout, DefaultBackoffBase,
	// DefaultMaxAttempts).
	MaxConcurrent  int
	QuotaPerMinute int
	CallTimeout    time.Duration
	BackoffBase    time.Duration
	MaxAttempts    int

	// LoginWait bounds a login that finds messages whose size is not
	// known yet: the sizing goes on in the background, and the login
	// offers the messages sized LoginWait after it started (at least one
	// second after the listing), oldest first; later logins offer more.
	// Zero means modes.DefaultGmailLoginWait.
	LoginWait time.Duration
	// ProgressEvery is the interval of the info lines that report a
	// background sizing; zero means DefaultProgressEvery.
	ProgressEvery time.Duration

	// OnCall, if set, is called after every request with the API method
	// ("messages.get") and the quota units it cost; OnBackoff before
	// every wait between attempts. Both must be quick.
	OnCall    func(method string, units int)
	OnBackoff func(method string)

	Logger *zerolog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// String describes o for people, with the defaults New applies and
// without credentials: "gmail ENDPOINT, labels A+B, on_delete POLICY,
// download_once BOOL".
func (o Options) String() string {
	endpoint, labels := o.Endpoint, modes.DefaultGmailLabel
	if endpoint == "" {
		endpoint = modes.DefaultGmailEndpoint
	}
	if len(o.Labels) > 0 {
		labels = strings.Join(o.Labels, "+")
	}
	return fmt.Sprintf("gmail %s, labels %s, on_delete %s, download_once %v", endpoint, labels,
		modes.GmailOnDelete.Or(o.OnDelete), o.DownloadOnce)
}

// Backend serves one Gmail account. It is safe for concurrent use.
type Backend struct {
	opts  Options
	svc   *gmailapi.Service
	hc    *http.Client // svc's, for the streamed messages.get (openRaw)
	sem   chan struct{}
	quota *rate.Limiter
	log   zerolog.Logger

	calls, units, backoffs atomic.Int64

	// ctx ends at Close; the background sizing runs under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// mu serialises the writes to the Store of the sessions and of the
	// background sizing, so that a size learnt in the background never
	// brings back a message a session's sync removed.
	mu sync.Mutex
	bg background
}

// Stats counts the requests a Backend made.
type Stats struct {
	Calls    int64 // requests sent, including failed ones
	Units    int64 // quota units they cost
	Backoffs int64 // waits before a retry
}

// New checks opts and returns a Backend. It sends no request.
func New(opts Options) (*Backend, error) {
	if opts.Store == nil {
		return nil, errors.New("gmail: a cache store is required")
	}
	if opts.Account == "" {
		return nil, errors.New("gmail: Account must be set")
	}
	if opts.TokenSource == nil && opts.HTTPClient == nil {
		return nil, errors.New("gmail: a token source is required")
	}
	if opts.OnDelete = modes.GmailOnDelete.Or(opts.OnDelete); !modes.GmailOnDelete.Has(opts.OnDelete) {
		return nil, fmt.Errorf("gmail: unknown delete policy %q (want %s)", opts.OnDelete, modes.GmailOnDelete)
	}
	if opts.Window.Batch < 0 {
		return nil, fmt.Errorf("gmail: negative batch %d", opts.Window.Batch)
	}
	if len(opts.Labels) == 0 {
		opts.Labels = []string{modes.DefaultGmailLabel}
	}
	if opts.UserID == "" {
		opts.UserID = "me"
	}
	if opts.Endpoint == "" {
		opts.Endpoint = modes.DefaultGmailEndpoint
	}
	if opts.Endpoint[len(opts.Endpoint)-1] != '/' {
		// Without it, a path prefix is lost in URL resolution.
		opts.Endpoint += "/"
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = modes.DefaultGmailMaxConcurrent
	}
	if opts.QuotaPerMinute <= 0 {
		opts.QuotaPerMinute = modes.DefaultGmailQuotaPerMinute
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = modes.DefaultGmailCallTimeout
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = DefaultBackoffBase
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LoginWait <= 0 {
		opts.LoginWait = modes.DefaultGmailLoginWait
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = DefaultProgressEvery
	}
	b := &Backend{opts: opts, sem: make(chan struct{}, opts.MaxConcurrent)}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if opts.Logger != nil {
		b.log = opts.Logger.With().Str("backend", "gmail").Str("account", opts.Account).Logger()
	} else {
		b.log = zerolog.Nop()
	}
	// The bucket refills QuotaPerMinute units a minute and holds at most
	// 250 (Gmail's per-second allowance), enough for any one request.
	burst := min(max(opts.QuotaPerMinute/6, 50), 250)
	b.quota = rate.NewLimiter(rate.Limit(float64(opts.QuotaPerMinute)/60), burst)

	// The HTTP client is built here, not by the library, so that no Google
	// default credentials are looked up, and openRaw can use it too.
	b.hc = opts.HTTPClient
	if b.hc == nil {
		// oauth.Transport, not oauth2.NewClient: a token Gmail rejects
		// is dropped and replaced once, never reused from a cache.
		b.hc = &http.Client{Transport: &oauth.Transport{Source: opts.TokenSource}}
	}
	svc, err := gmailapi.NewService(context.Background(), option.WithEndpoint(opts.Endpoint), option.WithHTTPClient(b.hc))
	if err != nil {
		return nil, fmt.Errorf("gmail: %w", err)
	}
	b.svc = svc
	return b, nil
}

// Stats returns the requests made so far.
func (b *Backend) Stats() Stats {
	return Stats{Calls: b.calls.Load(), Units: b.units.Load(), Backoffs: b.backoffs.Load()}
}

var _ backends.Opener = (*Backend)(nil)

// OpenMaildrop opens the maildrop; the login is not needed. An OAuth2
// grant that is missing or revoked fails here, with the token source's
// [SYS/PERM] reply.
func (b *Backend) OpenMaildrop(ctx context.Context, _ backends.Login) (proxy.Mailbox, error) {
	if b.opts.TokenSource != nil && b.opts.HTTPClient == nil {
		if _, err := b.opts.TokenSource.Token(); err != nil {
			return nil, b.classify("get an access token", err)
		}
	}
	release, err := b.opts.Store.Hold(b.opts.Account)
	if err != nil {
		return nil, fmt.Errorf("gmail: hold the cache account: %w: %w", proxy.ErrTemporary, err)
	}
	return &mailbox{b: b, release: release}, nil
}

// Check reads the mailbox's profile, for popbridge check: it proves the
// token, the scope and the endpoint.
func (b *Backend) Check(ctx context.Context) error {
	var p *gmailapi.Profile
	err := b.call(ctx, "users.getProfile", 1, func(ctx context.Context) (err error) {
		p, err = b.svc.Users.GetProfile(b.opts.UserID).Context(ctx).Do()
		return err
	})
	if err != nil {
		return err
	}
	b.log.Info().Str("email", p.EmailAddress).Int64("messages", p.MessagesTotal).Msg("gmail profile read")
	return nil
}
