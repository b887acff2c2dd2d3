package backends_test

import (
	"reflect"
	"testing"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/accounts"
	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/backends/maildir"
	"github.com/popbridge/popbridge/backends/pop3"
	"github.com/popbridge/popbridge/proxy"
)

// TestOnlyAccountsAuthenticate checks the split that the compiler
// enforces: a storage backend is an Opener and not a proxy.Backend, so
// that handing one to a proxy.Server without the accounts in front does
// not compile; the accounts router is the proxy.Backend and opens no
// maildrop without a password check.
func TestOnlyAccountsAuthenticate(t *testing.T) {
	backend := reflect.TypeFor[proxy.Backend]()
	opener := reflect.TypeFor[backends.Opener]()
	for _, typ := range []reflect.Type{
		reflect.TypeFor[*maildir.Backend](),
		reflect.TypeFor[*imap.Backend](),
		reflect.TypeFor[*pop3.Backend](),
		reflect.TypeFor[*gmail.Backend](),
	} {
		if typ.Implements(backend) {
			t.Errorf("%v implements proxy.Backend: it could serve POP3 without a password check", typ)
		}
		if !typ.Implements(opener) {
			t.Errorf("%v does not implement backends.Opener", typ)
		}
		if _, ok := typ.MethodByName("Login"); ok {
			t.Errorf("%v has a Login method", typ)
		}
	}
	router := reflect.TypeFor[*accounts.Router]()
	if !router.Implements(backend) {
		t.Errorf("%v does not implement proxy.Backend", router)
	}
	if router.Implements(opener) {
		t.Errorf("%v implements backends.Opener: a maildrop could be opened past its password check", router)
	}
}
