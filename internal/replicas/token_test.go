package replicas

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/cache/pgstore"
)

// tokenKey seals the tokens in PostgreSQL, given to the replicas in
// oauth.KeyEnv.
var tokenKey = [32]byte{1, 8, 1, 8, 1, 8}

// TestReplicasOneTokenRefresh: a gmail account whose stored token has no
// access token yet, logged into concurrently on three replicas. The fake
// token endpoint rotates the refresh token on every refresh, so a second
// refresh with the old one would fail: exactly one refresh happens, and
// every login is served.
func TestReplicasOneTokenRefresh(t *testing.T) {
	dsn := newDB(t)
	tok := oauthtest.Start(t)
	tok.Rotate = true
	tok.AddRefreshToken("rt-gus")
	g := gmailtest.Start(t)
	g.SetValidToken(tok.ValidAccess)
	for i := range 3 {
		g.Add([]byte(fmt.Sprintf("From: a@example.org\r\nSubject: gus %d\r\n\r\nbody %d\r\n", i, i)), "INBOX", "UNREAD")
	}
	// What popbridge auth (or state migrate) would have stored.
	s, err := pgstore.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&pgstore.Tokens{Store: s, Key: &tokenKey}).Save("gus", &oauth2.Token{RefreshToken: "rt-gus"}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	accounts := fmt.Sprintf(`  - user: gus
    password_hash: %q
    backend:
      type: gmail
      api_endpoint: %s
      on_delete: keep
      oauth2:
        provider: custom
        client_id: %s
        auth_url: %s
        token_url: %s
        scopes: [https://www.googleapis.com/auth/gmail.modify]
`, hashOf(t, "pop-gus"), g.Endpoint(), tok.ClientID, tok.AuthURL, tok.TokenURL)
	rs := startCluster(t, clusterOptions{dsn: dsn, accounts: accounts,
		extraEnv: []string{oauth.KeyEnv + "=" + hex.EncodeToString(tokenKey[:])}})

	// Three logins per replica at once; those that get [IN-USE] try
	// again until they are served.
	const perReplica = 3
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		served = map[string]int{}
		inUse  int
		errs   []string
	)
	start := make(chan struct{})
	for _, r := range rs {
		for range perReplica {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					c, err := dialClient(r)
					if err != nil {
						mu.Lock()
						errs = append(errs, err.Error())
						mu.Unlock()
						return
					}
					c.Cmd("USER gus")
					reply, _ := c.Cmd("PASS pop-gus")
					if strings.HasPrefix(reply, "-ERR [IN-USE]") {
						c.Close()
						mu.Lock()
						inUse++
						mu.Unlock()
						time.Sleep(50 * time.Millisecond)
						continue
					}
					var stat string
					if strings.HasPrefix(reply, "+OK") {
						stat, _ = c.Cmd("STAT")
						c.Cmd("QUIT")
					}
					c.Close()
					mu.Lock()
					if strings.HasPrefix(stat, "+OK 3 ") {
						served[r.name]++
					} else {
						errs = append(errs, fmt.Sprintf("replica %s: PASS %q, STAT %q", r.name, reply, stat))
					}
					mu.Unlock()
					return
				}
				mu.Lock()
				errs = append(errs, fmt.Sprintf("replica %s: still [IN-USE] after 30 s", r.name))
				mu.Unlock()
			}()
		}
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("logins failed: %s", strings.Join(errs, "; "))
	}
	for _, r := range rs {
		if served[r.name] != perReplica {
			t.Fatalf("replica %s served %d logins, want %d", r.name, served[r.name], perReplica)
		}
	}
	if n := tok.Refreshes(); n != 1 {
		t.Fatalf("the token endpoint saw %d refreshes for %d logins on 3 replicas, want 1", n, 3*perReplica)
	}
	t.Logf("replicas: %d concurrent logins of one gmail account on 3 replicas (%d answers [IN-USE], retried): 1 token refresh at the fake token endpoint (refresh token rotated), every login served",
		3*perReplica, inUse)
}
