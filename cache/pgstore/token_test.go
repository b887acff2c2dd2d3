package pgstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
)

var testKey = &[32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}

// TestTokenSealedAtRest: the row holds no secret in clear, opens only
// with the key, and is byte for byte a token file that oauth.Store reads.
func TestTokenSealedAtRest(t *testing.T) {
	s, _ := openTemp(t)
	tokens := &Tokens{Store: s, Key: testKey}
	if _, err := tokens.Load("alice"); !errors.Is(err, ErrNoToken) {
		t.Fatalf("Load of no token: %v, want ErrNoToken", err)
	}
	tok := &oauth2.Token{AccessToken: "at-secret", RefreshToken: "rt-secret", TokenType: "Bearer", Expiry: time.Now().Add(time.Hour).Round(time.Second)}
	if err := tokens.Save("alice", tok); err != nil {
		t.Fatal(err)
	}
	got, err := tokens.Load("alice")
	if err != nil || got.AccessToken != "at-secret" || got.RefreshToken != "rt-secret" || !got.Expiry.Equal(tok.Expiry) {
		t.Fatalf("Load = %+v, %v", got, err)
	}
	var row []byte
	if err := s.pool.QueryRow(t.Context(), "SELECT token FROM oauth_token WHERE account = 'alice'").Scan(&row); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(row, []byte("secret")) {
		t.Errorf("the row holds the token in clear: %s", row)
	}
	if _, err := (&Tokens{Store: s}).Load("alice"); !errors.Is(err, ErrWrongKey) {
		t.Errorf("Load without the key: %v, want ErrWrongKey", err)
	}
	if _, err := (&Tokens{Store: s, Key: &[32]byte{9}}).Load("alice"); !errors.Is(err, ErrWrongKey) {
		t.Errorf("Load with another key: %v, want ErrWrongKey", err)
	}
	// The same envelope as a token file.
	dir := t.TempDir()
	fs := &oauth.Store{Dir: dir, Key: testKey}
	if err := os.WriteFile(filepath.Join(dir, "alice.json"), row, 0o600); err != nil {
		t.Fatal(err)
	}
	if ft, err := fs.Load("alice"); err != nil || ft.RefreshToken != "rt-secret" {
		t.Errorf("oauth.Store reads the row as %+v, %v", ft, err)
	}
	// A token without a refresh token keeps the stored one.
	if err := tokens.Save("alice", &oauth2.Token{AccessToken: "at-2"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := tokens.Load("alice"); got.AccessToken != "at-2" || got.RefreshToken != "rt-secret" {
		t.Errorf("after saving a token without refresh token: %+v", got)
	}
}

// TestTokenCompareAndSwap: of two replicas that loaded the same version,
// only the first one's write is stored.
func TestTokenCompareAndSwap(t *testing.T) {
	dsn := newDB(t)
	a := &Tokens{Store: openDSN(t, dsn), Key: testKey}
	b := &Tokens{Store: openDSN(t, dsn), Key: testKey}
	ok, err := a.CompareAndSwap(t.Context(), "alice", 0, &oauth2.Token{RefreshToken: "rt-1"})
	if err != nil || !ok {
		t.Fatalf("first CAS: %v %v", ok, err)
	}
	if ok, _ := b.CompareAndSwap(t.Context(), "alice", 0, &oauth2.Token{RefreshToken: "rt-x"}); ok {
		t.Error("a second create succeeded")
	}
	_, va, _ := a.LoadVersion(t.Context(), "alice")
	_, vb, _ := b.LoadVersion(t.Context(), "alice")
	if va != vb {
		t.Fatalf("versions %d, %d", va, vb)
	}
	if ok, err := a.CompareAndSwap(t.Context(), "alice", va, &oauth2.Token{RefreshToken: "rt-a"}); !ok || err != nil {
		t.Fatalf("A's CAS: %v %v", ok, err)
	}
	if ok, err := b.CompareAndSwap(t.Context(), "alice", vb, &oauth2.Token{RefreshToken: "rt-b"}); ok || err != nil {
		t.Fatalf("B's CAS on a stale version: %v %v, want false", ok, err)
	}
	tok, v, _ := b.LoadVersion(t.Context(), "alice")
	if tok.RefreshToken != "rt-a" || v != va+1 {
		t.Errorf("stored %q version %d, want A's, version %d", tok.RefreshToken, v, va+1)
	}
}

// TestTokenRefreshOnceAcrossReplicas: three replicas, four logins each,
// all finding the access token expired at once. The fake token server
// rotates refresh tokens (a reused one is refused): exactly one refresh
// happens, everybody gets its access token, and the stored refresh token
// is the rotated one.
func TestTokenRefreshOnceAcrossReplicas(t *testing.T) {
	srv := oauthtest.Start(t)
	srv.Rotate = true
	_, rt, _ := srv.Issue()
	conf := &oauth2.Config{ClientID: srv.ClientID, Endpoint: oauth2.Endpoint{TokenURL: srv.TokenURL, AuthStyle: oauth2.AuthStyleInParams}}
	dsn := newDB(t)
	var reps []*Tokens
	for range 3 {
		reps = append(reps, &Tokens{Store: openDSN(t, dsn), Key: testKey})
	}
	if err := reps[0].Save("alice", &oauth2.Token{AccessToken: "old", RefreshToken: rt, Expiry: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make([]string, 12)
	errs := make([]error, 12)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := reps[i%3].TokenSource(context.Background(), "alice", conf).Token()
			errs[i] = err
			if err == nil {
				got[i] = tok.AccessToken
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("login %d: %v", i, err)
		}
		if got[i] != got[0] || !srv.ValidAccess(got[i]) {
			t.Errorf("login %d got access token %q, login 0 %q", i, got[i], got[0])
		}
	}
	if n := srv.Refreshes(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	stored, _ := reps[1].Load("alice")
	if stored.RefreshToken == rt || !srv.LiveRefreshToken(stored.RefreshToken) {
		t.Errorf("stored refresh token %q is not the rotated live one", stored.RefreshToken)
	}
	if srv.LiveRefreshToken(rt) {
		t.Error("the fake did not rotate")
	}
	t.Logf("replicas: 12 concurrent logins on 3 replicas with an expired token: %d refresh at the token server, rotated refresh token stored", srv.Refreshes())

	// A failing refresh changes nothing.
	_, err := reps[2].Refresh(t.Context(), "alice", func(*oauth2.Token) bool { return true },
		func(context.Context, *oauth2.Token) (*oauth2.Token, error) {
			return nil, errors.New("token endpoint down")
		})
	if err == nil {
		t.Fatal("a failing refresh succeeded")
	}
	if again, _ := reps[0].Load("alice"); again.RefreshToken != stored.RefreshToken || again.AccessToken != stored.AccessToken {
		t.Errorf("a failing refresh changed the token: %+v", again)
	}
}

func tokenFor(rt string) *oauth2.Token {
	return &oauth2.Token{AccessToken: "at-" + rt, RefreshToken: rt, Expiry: time.Now().Add(time.Hour)}
}
