// Package accounts is the one place in popbridge that authenticates: it
// checks a login's password against the account's bcrypt hash (or, for a
// passthrough account, hands it to the upstream login), then opens the
// account's maildrop through its storage backend, a backends.Opener.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/proxy"
)

// Account is one configured login.
type Account struct {
	// User is the POP3 user name, matched literally (no case folding, no
	// % expansion).
	User string
	// PasswordHash is a bcrypt hash of the password. It may be empty for
	// a Passthrough account.
	PasswordHash string
	// Passthrough says that Backend checks the password itself (an
	// upstream login with the client's own credentials). Without a
	// PasswordHash, every login for User goes to Backend unchecked; with
	// one, the hash is checked first.
	Passthrough bool
	// Backend opens the account's maildrop once the login is verified.
	// The backends.Login it gets has the client's password only for a
	// Passthrough account.
	Backend backends.Opener
}

// Options tunes a Router. The zero value selects the defaults.
type Options struct {
	// CacheTTL is how long a successful verification is remembered, so
	// that a client polling every minute pays for bcrypt once, not per
	// poll. Zero means 5 minutes; negative turns the cache off.
	CacheTTL time.Duration
	// CacheSize bounds the remembered verifications. Zero means 1024.
	CacheSize int
}

// Router is the proxy.Backend serving several accounts, and the one
// component that checks their passwords (Authenticate).
type Router struct {
	accounts map[string]*account
	dummy    []byte // hash compared when the user does not exist
	cache    *expirable.LRU[[sha256.Size]byte, struct{}]
	bcrypts  chan struct{} // bounds concurrent bcrypt work
}

type account struct {
	user        string
	hash        []byte // nil: passthrough, the backend checks
	passthrough bool   // the backend gets the password
	backend     backends.Opener
}

var _ proxy.Backend = (*Router)(nil)

// New returns a Router for accounts. User names must be unique and every
// hash must be a valid bcrypt hash.
func New(accounts []Account, opts Options) (*Router, error) {
	r := &Router{
		accounts: make(map[string]*account, len(accounts)),
		bcrypts:  make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	maxCost := bcrypt.DefaultCost
	for i, a := range accounts {
		if _, dup := r.accounts[a.User]; dup {
			return nil, fmt.Errorf("accounts: duplicate user %q", a.User)
		}
		if a.Backend == nil {
			return nil, fmt.Errorf("accounts: user %q: no backend", a.User)
		}
		if a.Passthrough && a.PasswordHash == "" {
			r.accounts[a.User] = &account{user: a.User, passthrough: true, backend: a.Backend}
			continue
		}
		cost, err := bcrypt.Cost([]byte(a.PasswordHash))
		if err != nil {
			return nil, fmt.Errorf("accounts: user %q: invalid password hash: %w", a.User, err)
		}
		if i == 0 || cost > maxCost {
			maxCost = cost
		}
		r.accounts[a.User] = &account{user: a.User, hash: []byte(a.PasswordHash), passthrough: a.Passthrough, backend: a.Backend}
	}

	// Unknown users cost as much as the dearest real one, so the time to
	// answer does not tell whether a user exists.
	// Its password is random, so that nothing ever matches it.
	secret := make([]byte, 32)
	rand.Read(secret)
	dummy, err := bcrypt.GenerateFromPassword(secret, maxCost)
	if err != nil {
		return nil, fmt.Errorf("accounts: dummy hash: %w", err)
	}
	r.dummy = dummy

	if opts.CacheTTL >= 0 {
		ttl, size := opts.CacheTTL, opts.CacheSize
		if ttl == 0 {
			ttl = 5 * time.Minute
		}
		if size <= 0 {
			size = 1024
		}
		r.cache = expirable.NewLRU[[sha256.Size]byte, struct{}](size, nil, ttl)
	}
	return r, nil
}

// Login authenticates (Authenticate), then opens the account's maildrop
// through its backend. The Mailbox returned implements
// proxy.MaildropIDer with the account's user name, and proxy.Unwrapper
// returning the backend's.
func (r *Router) Login(ctx context.Context, user, pass string) (proxy.Mailbox, error) {
	login, err := r.Authenticate(ctx, user, pass)
	if err != nil {
		return nil, err
	}
	a := r.accounts[login.User]
	proxy.OpeningMaildrop(ctx, a.user) // the server times the opening, not the check
	mb, err := a.backend.OpenMaildrop(ctx, login)
	if err != nil {
		return nil, fmt.Errorf("accounts: login %q: %w", user, err)
	}
	return &mailbox{Mailbox: mb, id: a.user}, nil
}

// Authenticate checks user's password against the account's bcrypt hash.
// It is the one place in popbridge that checks a client's password: the
// POP3 logins go through it (Login), and so must any other listener's.
// Bad credentials give an error wrapping proxy.ErrAuthFailed that does
// not say whether the user or the password was wrong, after the same
// work. The Login returned carries the password only for a passthrough
// account, whose backend logs in upstream with it; for a passthrough
// account without a hash the password is not verified here at all, but
// by the upstream when the maildrop is opened.
func (r *Router) Authenticate(ctx context.Context, user, pass string) (backends.Login, error) {
	a := r.accounts[user]
	if a == nil {
		// Same work, same error as a wrong password.
		if _, err := r.verify(ctx, user, pass, r.dummy, false); err != nil {
			return backends.Login{}, err
		}
		return backends.Login{}, fmt.Errorf("accounts: login %q: %w", user, proxy.ErrAuthFailed)
	}
	if a.hash != nil {
		ok, err := r.verify(ctx, user, pass, a.hash, true)
		if err != nil {
			return backends.Login{}, err
		}
		if !ok {
			return backends.Login{}, fmt.Errorf("accounts: login %q: %w", user, proxy.ErrAuthFailed)
		}
	}
	login := backends.Login{User: a.user}
	if a.passthrough {
		login.Password = pass
	}
	return login, nil
}

// verify reports whether pass matches hash. With remember, successes are
// cached; failures never are.
func (r *Router) verify(ctx context.Context, user, pass string, hash []byte, remember bool) (bool, error) {
	key := cacheKey(user, pass, hash)
	if remember && r.cache != nil {
		if _, ok := r.cache.Get(key); ok {
			return true, nil
		}
	}
	select {
	case r.bcrypts <- struct{}{}:
	case <-ctx.Done():
		return false, fmt.Errorf("accounts: waiting to verify a password: %w", ctx.Err())
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
	<-r.bcrypts
	switch {
	case err == nil:
		if remember && r.cache != nil {
			r.cache.Add(key, struct{}{})
		}
		return true, nil
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return false, nil
	}
	return false, fmt.Errorf("accounts: verifying a password: %w", err)
}

// cacheKey hashes the user, password and stored hash, each prefixed with
// its length so that no two triples share a key. Including the stored
// hash means a changed password invalidates the entry.
func cacheKey(user, pass string, hash []byte) [sha256.Size]byte {
	h := sha256.New()
	for _, b := range [][]byte{[]byte(user), []byte(pass), hash} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// mailbox names the maildrop after the account, so that the proxy takes
// one lock per account.
type mailbox struct {
	proxy.Mailbox
	id string
}

var (
	_ proxy.MaildropIDer = (*mailbox)(nil)
	_ proxy.Unwrapper    = (*mailbox)(nil)
)

// Unwrap returns the backend's Mailbox, so that the proxy finds its
// optional interfaces (TOP fast path, commit at QUIT).
func (m *mailbox) Unwrap() proxy.Mailbox { return m.Mailbox }

// MaildropID returns the account's user name.
func (m *mailbox) MaildropID() string { return m.id }
