package backends

import (
	"context"

	"github.com/popbridge/popbridge/proxy"
)

// Opener opens the maildrop of a login that backends/accounts has already
// authenticated. Every storage backend implements Opener, not
// proxy.Backend: a storage backend cannot be handed to a proxy.Server
// without the accounts in front of it to check the password.
type Opener interface {
	// OpenMaildrop opens login's maildrop. Errors follow proxy.Backend's
	// Login: ErrAuthFailed only for credentials an upstream refused (a
	// passthrough login), a *proxy.Error for a coded reply, anything else
	// temporary.
	OpenMaildrop(ctx context.Context, login Login) (proxy.Mailbox, error)
}

// Login is an authenticated login as a storage backend sees it.
type Login struct {
	// User is the name the client logged in with.
	User string
	// Password is the client's password. It is set only for a
	// passthrough account, whose backend logs in upstream with it; it is
	// empty for every other account. It is never printed: Login's String
	// and GoString leave it out, and it has no JSON form.
	Password string `json:"-"`
}

// String names the login without its password.
func (l Login) String() string {
	if l.Password == "" {
		return l.User
	}
	return l.User + " (with password)"
}

// GoString is String, so that %#v does not print the password either.
func (l Login) GoString() string { return "backends.Login{" + l.String() + "}" }
