package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/proxy"
)

// ErrGrant is the error the POP3 client sees when the refresh token is
// expired or revoked (invalid_grant): -ERR [SYS/PERM] with this text.
var ErrGrant = &proxy.Error{Code: proxy.CodeSysPerm, Text: "OAuth2 grant expired or revoked; the owner must run popbridge auth"}

// ErrNoGrant is the error the POP3 client sees when no token was ever
// stored for the account.
var ErrNoGrant = &proxy.Error{Code: proxy.CodeSysPerm, Text: "No OAuth2 grant yet; the owner must run popbridge auth"}

// Early is how long before its expiry an access token is refreshed, so
// that a session never logs in with a token about to lapse.
const Early = time.Minute

// Source is an oauth2.TokenSource for one account, backed by a Store.
// It hands out the cached access token while valid; otherwise one caller
// refreshes it (concurrent callers wait and share the result), and the
// new token is saved whenever it differs from the stored one (Microsoft
// rotates refresh tokens on every use). Source re-reads the store when
// its file has changed or the token in memory is unusable, so a
// "popbridge auth" run while the server runs takes effect at the next
// login. An access token the upstream rejects is dropped with
// Invalidate; Refused gives up on the grant.
type Source struct {
	account string
	cfg     *oauth2.Config
	store   TokenStore
	ctx     context.Context
	log     *zerolog.Logger
	// changed is set by StoreChanged, for stores without a file.
	changed atomic.Bool

	mu  sync.Mutex
	tok *oauth2.Token
	// file is the store file as it was when tok was read or saved; a
	// file that differs now was written by someone else (popbridge auth).
	file os.FileInfo
	// rejected is the access token last dropped by Invalidate, never
	// taken from the store again (if dropping it there failed).
	rejected string

	// status is the outcome of the last Token call, for Status; it has
	// its own lock so that Status does not wait for a refresh.
	status struct {
		sync.Mutex
		expiry time.Time
		reauth bool
		err    error
	}
}

// refreshTimeout bounds one refresh request when ctx brings no HTTP
// client of its own, so that a token endpoint that does not answer
// cannot hang the POP3 logins waiting for it. A variable for tests.
var refreshTimeout = 30 * time.Second

// NewSource returns the token source of account. ctx carries the HTTP
// client for refreshes (oauth2.HTTPClient), if any, else one with a 30 s
// timeout is used; log (nil for none) gets a line naming the
// account when its grant is gone or a save fails. Tokens and secrets are
// never logged.
func NewSource(ctx context.Context, account string, cfg *oauth2.Config, store TokenStore, log *zerolog.Logger) *Source {
	if ctx == nil {
		ctx = context.Background()
	}
	if _, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); !ok {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: refreshTimeout})
	}
	return &Source{account: account, cfg: cfg, store: store, ctx: ctx, log: log}
}

var _ oauth2.TokenSource = (*Source)(nil)

// TokenStore keeps the tokens of a Source: a Store (one file per
// account), or a store shared by replicas (pgstore.Tokens, through
// internal/app). Load wraps ErrNoToken when there is none; an error
// wrapping proxy.ErrTemporary means the store cannot be reached now.
type TokenStore interface {
	Load(account string) (*oauth2.Token, error)
	Save(account string, tok *oauth2.Token) error
}

// Refresher is a TokenStore that refreshes a token once across the
// processes sharing it: it locks the account's token, asks stale about
// the stored one, and only if so calls refresh and stores its result
// (keeping the refresh token when the answer has none), returning the
// token to use. A Source uses it when its store has it.
type Refresher interface {
	TokenStore
	Refresh(ctx context.Context, account string, stale func(*oauth2.Token) bool,
		refresh func(context.Context, *oauth2.Token) (*oauth2.Token, error)) (*oauth2.Token, error)
}

// path returns the file of the account's token, or "" for a store
// without files.
func (s *Source) path() string {
	if fs, ok := s.store.(*Store); ok {
		return fs.Path(s.account)
	}
	return ""
}

// Account returns the account the source is for.
func (s *Source) Account() string { return s.account }

// StoreChanged tells the source that the stored token changed elsewhere
// (another replica refreshed it, popbridge auth wrote a new one): the
// next Token reads the store again. Stores with files are watched
// without it.
func (s *Source) StoreChanged() { s.changed.Store(true) }

func usable(t *oauth2.Token) bool {
	return t != nil && t.AccessToken != "" && (t.Expiry.IsZero() || time.Until(t.Expiry) > Early)
}

// Token returns a valid access token, refreshing it if needed.
func (s *Source) Token() (tok *oauth2.Token, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() { s.record(tok, err) }()
	if usable(s.tok) && !s.storeChanged() {
		t := *s.tok
		return &t, nil
	}
	// Stat before reading: a file replaced in between is seen next time.
	if p := s.path(); p != "" {
		s.file, _ = os.Stat(p)
	}
	s.changed.Store(false)
	stored, err := s.store.Load(s.account)
	switch {
	case errors.Is(err, proxy.ErrTemporary):
		return nil, fmt.Errorf("oauth: account %s: read the token: %w", s.account, err)
	case errors.Is(err, ErrNoToken):
		s.logf("no OAuth2 token stored; run popbridge auth %s", s.account)
		return nil, fmt.Errorf("oauth: account %s: %w: %w", s.account, ErrNoGrant, err)
	case err != nil:
		// A wrong key or a damaged file needs the operator too.
		s.logf("cannot read the OAuth2 token: %v", err)
		return nil, fmt.Errorf("oauth: account %s: %w: %w", s.account, proxy.ErrPermanent, err)
	}
	if usable(stored) && stored.AccessToken != s.rejected {
		s.tok = stored
		t := *stored
		return &t, nil
	}
	if stored.RefreshToken == "" {
		s.logf("the stored OAuth2 token has expired and has no refresh token; run popbridge auth %s", s.account)
		return nil, fmt.Errorf("oauth: account %s: no refresh token: %w", s.account, ErrGrant)
	}
	if r, ok := s.store.(Refresher); ok {
		return s.refreshShared(r)
	}
	fresh, err := s.cfg.TokenSource(s.ctx, &oauth2.Token{RefreshToken: stored.RefreshToken}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
			s.tok = nil
			s.logf("OAuth2 refresh token expired or revoked (invalid_grant); run popbridge auth %s", s.account)
			return nil, fmt.Errorf("oauth: account %s: refresh: %w: %s", s.account, ErrGrant, re.ErrorCode)
		}
		// Temporary: the provider is down or unreachable. The error text
		// of x/oauth2 holds the response body, never our secrets.
		return nil, fmt.Errorf("oauth: account %s: refresh: %w", s.account, err)
	}
	if fresh.RefreshToken == "" {
		fresh.RefreshToken = stored.RefreshToken
	}
	s.tok = fresh
	if fresh.AccessToken != stored.AccessToken || fresh.RefreshToken != stored.RefreshToken || !fresh.Expiry.Equal(stored.Expiry) {
		if err := s.store.Save(s.account, fresh); err != nil {
			// Keep serving from memory; the log says what is at risk.
			s.logf("saving the refreshed OAuth2 token failed (a rotated refresh token may be lost): %v", err)
		} else if p := s.path(); p != "" {
			s.file, _ = os.Stat(p)
		}
	}
	t := *fresh
	return &t, nil
}

// storeChanged reports whether the store file is not the one the token
// in memory was read from or saved to. Called with s.mu held.
func (s *Source) storeChanged() bool {
	p := s.path()
	if p == "" {
		return s.changed.Load()
	}
	fi, err := os.Stat(p)
	if err != nil || s.file == nil {
		return true
	}
	return !os.SameFile(fi, s.file) || !fi.ModTime().Equal(s.file.ModTime()) || fi.Size() != s.file.Size()
}

// Invalidate drops accessToken, which the upstream rejected, from
// memory and from the store's copy, if it is still the current one:
// the next Token re-reads the store and, unless that holds another
// usable access token, refreshes. The refresh token is kept.
// Concurrent sessions rejected with the same token cause one refresh.
func (s *Source) Invalidate(accessToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejected = accessToken
	if s.tok != nil && s.tok.AccessToken == accessToken {
		s.tok = nil
		if s.log != nil {
			s.log.Warn().Str("account", s.account).Msg("the upstream rejected the OAuth2 access token; getting a new one")
		}
	}
	stored, err := s.store.Load(s.account)
	if err != nil || stored.AccessToken != accessToken {
		return
	}
	// A restart must not pick the rejected token up again either.
	stored.AccessToken, stored.Expiry = "", time.Time{}
	if err := s.store.Save(s.account, stored); err != nil {
		s.logf("dropping the rejected access token from the token store failed: %v", err)
	}
	s.file = nil
}

// Refused reports that the upstream rejected accessToken also when it
// was obtained after Invalidate (a refresh or a re-read store): the
// grant is no longer good. The token is dropped, Status reports that
// the owner must run popbridge auth, and the returned error, for the
// POP3 client, wraps ErrGrant. The next login tries once more.
func (s *Source) Refused(accessToken string) error {
	s.Invalidate(accessToken)
	s.logf("the upstream rejected the OAuth2 access token again after getting a new one; run popbridge auth %s", s.account)
	err := fmt.Errorf("oauth: account %s: the upstream rejects the new access token too: %w", s.account, ErrGrant)
	s.record(nil, err)
	return err
}

// Rejecter is a token source that can replace an access token the
// upstream rejected: Source. WithToken retries an operation once after
// Invalidate, and calls Refused if the new token is rejected too.
type Rejecter interface {
	oauth2.TokenSource
	Invalidate(accessToken string)
	Refused(accessToken string) error
}

var _ Rejecter = (*Source)(nil)

func (s *Source) record(tok *oauth2.Token, err error) {
	s.status.Lock()
	defer s.status.Unlock()
	if err != nil {
		s.status.err = err
		s.status.reauth = errors.Is(err, ErrGrant) || errors.Is(err, ErrNoGrant)
		return
	}
	s.status.expiry, s.status.reauth, s.status.err = tok.Expiry, false, nil
}

// Status reports the outcome of the last Token call: the access token's
// expiry (zero when unknown or when it does not expire), whether the
// owner must run popbridge auth again (no grant stored, or it expired or
// was revoked), and the error of the last call if it failed. Before the
// first Token call all three are zero. It never blocks on a refresh.
func (s *Source) Status() (expiry time.Time, needsReauth bool, lastErr error) {
	s.status.Lock()
	defer s.status.Unlock()
	return s.status.expiry, s.status.reauth, s.status.err
}

func (s *Source) logf(format string, args ...any) {
	if s.log != nil {
		s.log.Error().Str("account", s.account).Msgf(format, args...)
	}
}

// refreshShared refreshes through a Refresher, once across the processes
// sharing the store: a token another one refreshed meanwhile is used as
// it is. Called with s.mu held, after the stored token was found stale.
func (s *Source) refreshShared(r Refresher) (*oauth2.Token, error) {
	rejected := s.rejected
	var grantErr *oauth2.RetrieveError
	fresh, err := r.Refresh(s.ctx, s.account, func(t *oauth2.Token) bool {
		return !usable(t) || t.AccessToken == rejected
	}, func(ctx context.Context, cur *oauth2.Token) (*oauth2.Token, error) {
		if cur.RefreshToken == "" {
			return nil, errors.New("no refresh token stored")
		}
		tok, err := s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: cur.RefreshToken}).Token()
		if re := (*oauth2.RetrieveError)(nil); errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
			grantErr = re
		}
		return tok, err
	})
	switch {
	case grantErr != nil:
		s.tok = nil
		s.logf("OAuth2 refresh token expired or revoked (invalid_grant); run popbridge auth %s", s.account)
		return nil, fmt.Errorf("oauth: account %s: refresh: %w: %s", s.account, ErrGrant, grantErr.ErrorCode)
	case errors.Is(err, ErrNoToken):
		s.logf("no OAuth2 token stored; run popbridge auth %s", s.account)
		return nil, fmt.Errorf("oauth: account %s: %w: %w", s.account, ErrNoGrant, err)
	case err != nil:
		// Temporary: the provider or the store is down.
		return nil, fmt.Errorf("oauth: account %s: refresh: %w", s.account, err)
	}
	s.tok = fresh
	t := *fresh
	return &t, nil
}
