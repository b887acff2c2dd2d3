package imap_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	imapb "github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
)

// TestOAuthRecoveryDovecot logs in with XOAUTH2 and OAUTHBEARER to a
// private Dovecot whose oauth2 passdb checks each access token at the
// fake authorization server (token introspection): a revoked access
// token is replaced by one refresh, a new grant in the store is used
// while the backend runs, and only a grant that cannot give an accepted
// token answers -ERR [SYS/PERM] and sets the re-auth status.
func TestOAuthRecoveryDovecot(t *testing.T) {
	const user = "alice"
	f := oauthtest.Start(t)
	f.Username = user
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{user: "pw"}, OAuth2IntrospectURL: f.IntrospectURL})
	appendMessages(t, imapDial(t, d, user), "INBOX", 2, 200)
	cfg, err := oauth.Config{Provider: modes.ProviderCustom, ClientID: f.ClientID, TokenURL: f.TokenURL, AuthURL: f.AuthURL, Scopes: []string{"mail"}}.OAuth2(oauth.IMAP)
	if err != nil {
		t.Fatal(err)
	}
	for _, auth := range []modes.Auth{modes.AuthXOAUTH2, modes.AuthOAuthBearer} {
		store := &oauth.Store{Dir: t.TempDir()}
		logs := &logRecorder{}
		log := zerolog.New(logs)
		src := oauth.NewSource(context.Background(), user, cfg, store, &log)
		b := newBackend(t, imapb.Options{Addr: d.IMAPAddr, TLS: modes.TLSNone, Auth: auth, Username: user,
			TokenSource: src, Logger: logs.logger(), CommandTimeout: 5 * time.Second})
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
			if r := cmd(t, c, "STAT"); !strings.HasPrefix(r, "+OK 2 ") {
				t.Fatalf("STAT %q", r)
			}
			quit(t, c)
			return "+OK"
		}
		oauthtest.CheckRecovery(t, "oauth: imap "+string(auth)+" at Dovecot", f, store, user, src, login)
	}
}
