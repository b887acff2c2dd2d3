package gmail_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
)

// TestTokenRecovery serves the fake Gmail, which accepts the access
// tokens of the fake authorization server, through a refreshing token
// source: an access token Gmail answers 401 for is dropped and replaced
// by one refresh, also in the middle of a session; a new grant in the
// store is used at once; only a grant that cannot give an accepted token
// answers -ERR [SYS/PERM] and sets the re-auth status.
func TestTokenRecovery(t *testing.T) {
	tokens := oauthtest.Start(t)
	fake := gmailtest.Start(t)
	fake.SetValidToken(tokens.ValidAccess)
	fake.Add([]byte("Subject: one\r\n\r\nfirst\r\n"), "INBOX")
	second := fake.Add([]byte("Subject: two\r\n\r\nsecond\r\n"), "INBOX")
	cfg, err := oauth.Config{Provider: modes.ProviderCustom, ClientID: tokens.ClientID, AuthURL: tokens.AuthURL, TokenURL: tokens.TokenURL,
		Scopes: []string{oauth.GmailModifyScope}}.OAuth2(oauth.Gmail)
	if err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: t.TempDir()}
	src := oauth.NewSource(context.Background(), "alice", cfg, store, nil)
	f := newFixture(t, fake, func(o *gmail.Options) { o.TokenSource = src })
	login := func() string {
		c, err := pop3test.Dial(f.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login("alice", "pw"); err != nil {
			var re *pop3test.ResponseError
			if errors.As(err, &re) {
				return re.Line
			}
			t.Fatal(err)
		}
		if l := list(t, c); len(l.uids) != 2 {
			t.Fatalf("%d messages listed", len(l.uids))
		}
		quit(t, c)
		return "+OK"
	}
	oauthtest.CheckRecovery(t, "gmail: Gmail API 401", tokens, store, "alice", src, login)

	// The access token is revoked between LIST and QUIT: the archiving
	// request of DELE+QUIT (a POST) is sent again with a new token.
	c := f.login()
	list(t, c)
	tokens.RevokeAccess()
	n := tokens.Refreshes()
	if r, err := c.Cmd("DELE 2"); err != nil || !strings.HasPrefix(r, "+OK") {
		t.Fatalf("DELE 2: %q %v", r, err)
	}
	if r := quit(t, c); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("QUIT after the access token was revoked: %q", r)
	}
	if m, _ := fake.Message(second); slices.Contains(m.Labels, "INBOX") {
		t.Fatalf("message 2 not archived: %v", m.Labels)
	}
	if got := tokens.Refreshes() - n; got != 1 {
		t.Fatalf("%d refreshes for the QUIT, want 1", got)
	}
	t.Logf("gmail: access token revoked mid-session: the archiving request of QUIT retried once with a refreshed token")
}
