package pop3_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/backends/pop3"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
)

// TestOAuthRecoveryDovecot logs in with AUTH XOAUTH2 (one-line and
// two-line) to a private Dovecot whose oauth2 passdb checks each access
// token at the fake authorization server: a revoked access token is
// replaced by one refresh, a new grant in the store is used while the
// backend runs, and only a grant that cannot give an accepted token
// answers -ERR [SYS/PERM] and sets the re-auth status.
func TestOAuthRecoveryDovecot(t *testing.T) {
	const user = "alice"
	f := oauthtest.Start(t)
	f.Username = user
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{user: "pw"}, OAuth2IntrospectURL: f.IntrospectURL})
	if _, err := d.WriteCorpus(user); err != nil {
		t.Fatal(err)
	}
	cfg, err := oauth.Config{Provider: modes.ProviderCustom, ClientID: f.ClientID, TokenURL: f.TokenURL, DeviceURL: f.DeviceURL, Scopes: []string{"pop"}}.OAuth2(oauth.POP3)
	if err != nil {
		t.Fatal(err)
	}
	for _, twoLine := range []bool{false, true} {
		store, err := cache.Open(filepath.Join(t.TempDir(), "cache.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		tokens := &oauth.Store{Dir: t.TempDir()}
		src := oauth.NewSource(context.Background(), user, cfg, tokens, nil)
		b := mustNew(t, pop3.Options{Addr: d.POP3Addr, TLS: modes.TLSNone, Auth: modes.AuthXOAUTH2, Username: user,
			TokenSource: src, XOAUTH2TwoLine: twoLine, Account: user, Store: store})
		addr := serve(t, b)
		login := func() string {
			c, err := pop3test.Dial(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Login("x", "y"); err != nil {
				var re *pop3test.ResponseError
				if errors.As(err, &re) {
					return re.Line
				}
				t.Fatal(err)
			}
			if r := cmd(t, c, "STAT"); !strings.HasPrefix(r, "+OK ") || strings.HasPrefix(r, "+OK 0 ") {
				t.Fatalf("STAT %q", r)
			}
			cmd(t, c, "QUIT")
			return "+OK"
		}
		form := map[bool]string{false: "one-line", true: "two-line"}[twoLine]
		oauthtest.CheckRecovery(t, "oauth: pop3 XOAUTH2 "+form+" at Dovecot", f, tokens, user, src, login)
	}
}
