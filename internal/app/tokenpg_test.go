package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/pgtest"
)

// gmailPGConfig writes a configuration of gina on the fake Gmail API,
// with the OAuth2 grant of tokens and the state in PostgreSQL at the DSN
// in env.
func gmailPGConfig(t *testing.T, fake *gmailtest.Server, tokens *oauthtest.Server, env string) string {
	t.Helper()
	cfg := fmt.Sprintf(`listen: {pop3: 127.0.0.1:0}
state_dir: state
state: {driver: postgres, dsn_env: %s}
accounts:
  - user: gina
    password_hash: %q
    backend:
      type: gmail
      api_endpoint: %s
      oauth2: {provider: custom, client_id: %s, auth_url: %s, token_url: %s, scopes: [https://www.googleapis.com/auth/gmail.modify]}
`, env, testHash(t), fake.Endpoint(), tokens.ClientID, tokens.AuthURL, tokens.TokenURL)
	path := filepath.Join(t.TempDir(), "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPostgresTokenRefreshedOnce logs in to one Gmail account on two
// replicas at once, with a stored token that has no access token and a
// provider that rotates refresh tokens: the grant is refreshed once
// across both (a second refresh would present a spent refresh token), the
// rotated refresh token is what PostgreSQL holds, sealed with the token
// key, and no token file is written.
func TestPostgresTokenRefreshedOnce(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDB(t)
	env := pgEnv(t, dsn)
	t.Setenv(oauth.KeyEnv, strings.Repeat("ab", 32))
	tokens := oauthtest.Start(t)
	tokens.Rotate = true
	tokens.AddRefreshToken("rt-gmail")
	fake := gmailtest.Start(t)
	fake.SetValidToken(tokens.ValidAccess)
	fake.Add([]byte("Subject: hello\r\n\r\nbody\r\n"), "INBOX")

	cfg1 := must(config.Load(gmailPGConfig(t, fake, tokens, env)))
	key := must(oauth.LoadKey(""))
	// As popbridge auth does under driver: postgres.
	if err := SaveSharedToken(cfg1, "gina", key, &oauth2.Token{RefreshToken: "rt-gmail"}); err != nil {
		t.Fatal(err)
	}
	reps := []*pgReplica{
		startReplica(t, gmailPGConfig(t, fake, tokens, env)),
		startReplica(t, gmailPGConfig(t, fake, tokens, env)),
	}
	var wg sync.WaitGroup
	replies := make([]string, len(reps))
	for i, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One session per maildrop across replicas: a login that
			// finds gina IN-USE tries again once the other has quit.
			for range 100 {
				p := dialPOP3(t, r.app.Addr("pop3").String())
				p.cmd("USER gina")
				replies[i] = p.cmd("PASS s3cret")
				if strings.HasPrefix(replies[i], "+OK") {
					p.cmd("QUIT")
				}
				p.c.Close()
				if !strings.HasPrefix(replies[i], "-ERR [IN-USE]") {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	for i, s := range replies {
		if !strings.HasPrefix(s, "+OK") {
			t.Errorf("replica %d: PASS: %q", i+1, s)
		}
	}
	if n := tokens.Refreshes(); n != 1 {
		t.Errorf("%d refreshes across two replicas, want 1", n)
	}
	pg, err := pgstore.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	stored, err := (&pgstore.Tokens{Store: pg, Key: key}).Load("gina")
	if err != nil {
		t.Fatal(err)
	}
	if stored.RefreshToken == "rt-gmail" || !tokens.LiveRefreshToken(stored.RefreshToken) || !tokens.ValidAccess(stored.AccessToken) {
		t.Errorf("stored token: refresh %q (live %v), access valid %v; want the rotated grant",
			stored.RefreshToken, tokens.LiveRefreshToken(stored.RefreshToken), tokens.ValidAccess(stored.AccessToken))
	}
	if _, err := (&pgstore.Tokens{Store: pg}).Load("gina"); err == nil {
		t.Error("the stored token opens without the key")
	}
	for _, r := range reps {
		if _, err := os.Stat(filepath.Join(r.cfg.StateDir, TokenDir)); !os.IsNotExist(err) {
			t.Errorf("%s: token directory under driver postgres (%v)", r.cfg.StateDir, err)
		}
	}
}

// TestPostgresInvalidation checks that a replica drops what it keeps in
// memory when another changes the shared state: the message bodies of an
// account forgotten elsewhere, and the access token when popbridge auth
// stores a new grant (the next login uses the new one, though the old
// access token is still valid).
func TestPostgresInvalidation(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDB(t)
	env := pgEnv(t, dsn)
	tokens := oauthtest.Start(t)
	tokens.AddRefreshToken("rt-gmail")
	fake := gmailtest.Start(t)
	fake.SetValidToken(tokens.ValidAccess)
	fake.Add([]byte("Subject: hello\r\n\r\nbody\r\n"), "INBOX")
	cfg := must(config.Load(gmailPGConfig(t, fake, tokens, env)))
	if err := SaveSharedToken(cfg, "gina", nil, &oauth2.Token{RefreshToken: "rt-gmail"}); err != nil {
		t.Fatal(err)
	}
	r1 := startReplica(t, gmailPGConfig(t, fake, tokens, env))
	r2 := startReplica(t, gmailPGConfig(t, fake, tokens, env))
	login := func(r *pgReplica) *pop3 {
		t.Helper()
		p := dialPOP3(t, r.app.Addr("pop3").String())
		p.cmd("USER gina")
		if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
			t.Fatalf("PASS: %q", s)
		}
		return p
	}

	p := login(r1)
	if body := p.multi("RETR 1"); !strings.Contains(body, "body") {
		t.Fatalf("RETR 1: %q", body)
	}
	p.cmd("QUIT")
	if n, _ := r1.app.st.bodies.Len(); n != 1 {
		t.Fatalf("replica 1 keeps %d bodies after RETR, want 1", n)
	}
	if err := r2.app.st.store.Forget("gina"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replica 1 to drop the bodies of gina, forgotten on replica 2", func() string {
		if n, _ := r1.app.st.bodies.Len(); n == 0 {
			return "yes"
		}
		return ""
	})

	access, refresh, expiry := tokens.Issue()
	if err := SaveSharedToken(cfg, "gina", nil, &oauth2.Token{AccessToken: access, RefreshToken: refresh, Expiry: expiry}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replica 1 to use the new grant", func() string {
		p := login(r1)
		p.cmd("QUIT")
		if tokens.Checked(access) > 0 {
			return "yes"
		}
		return ""
	})
}
