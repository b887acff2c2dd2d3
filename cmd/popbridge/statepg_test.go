package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/graph/graphtest"
	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/pgtest"
)

// TestCheckSyncServePostgres runs check, sync and serve on a graph
// account whose state is in PostgreSQL (state.driver postgres): check
// reads the folder with the token stored in the database, sync writes
// the sizes there (not into a cache.db), and serve's first login is
// served from them.
func TestCheckSyncServePostgres(t *testing.T) {
	const messages = 5
	srv := pgtest.Start(t)
	dsn := srv.CreateDB(t)
	t.Setenv("POPBRIDGE_TEST_STATE_DSN", dsn)
	fake := graphtest.Start(t)
	rt := fake.Grant()
	for i := range messages {
		fake.Add("inbox", fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\nbody %d\r\n", i, i))
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "popbridge.yaml")
	src := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
log: {level: info, format: json}
state_dir: state
state: {driver: postgres, dsn_env: POPBRIDGE_TEST_STATE_DSN}
accounts:
  - user: gwen
    password_hash: %q
    backend:
      type: graph
      api_endpoint: %s
      oauth2:
        provider: microsoft
        tenant: consumers
        client_id: %s
        token_url: %s
`, testHash(t), fake.Endpoint(), graphtest.ClientID, fake.TokenURL("consumers"))
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := app.SaveSharedToken(cfg, "gwen", nil, &oauth2.Token{RefreshToken: rt}); err != nil {
		t.Fatal(err)
	}

	r := runCmd(t, "", "check", "-config", path)
	if r.code != 0 {
		t.Fatalf("check: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	checkLines(t, r.stdout, []*regexp.Regexp{
		regexp.MustCompile(`configuration valid`),
		regexp.MustCompile(`^OK +state +.*the state is in PostgreSQL\)$`),
		regexp.MustCompile(`^OK +state +PostgreSQL`),
		regexp.MustCompile(`^OK +gwen +graph `),
	})
	r = runCmd(t, "", "sync", "gwen", "-config", path)
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	pg, err := pgstore.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if recs, err := pg.Messages("gwen"); err != nil || len(recs) != messages {
		t.Fatalf("records in PostgreSQL after sync: %d, %v; want %d", len(recs), err, messages)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", app.StoreFile)); !os.IsNotExist(err) {
		t.Errorf("%s under driver postgres: %v", app.StoreFile, err)
	}

	fake.ResetStats()
	_, stderr, stop := startRun(t, "serve", "-config", path)
	p := dialPOP3(t, listenerAddr(t, stderr, "pop3"))
	p.cmd("USER gwen")
	if s := p.cmd("PASS s3cret"); s != "+OK Logged in." {
		t.Fatalf("PASS: %q\n%s", s, stderr)
	}
	if s := p.cmd("STAT"); !strings.HasPrefix(s, fmt.Sprintf("+OK %d ", messages)) {
		t.Fatalf("STAT: %q", s)
	}
	p.cmd("QUIT")
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	if n := fake.Calls()[graphtest.EValue]; n != 0 {
		t.Errorf("the login after sync fetched $value %d times, want 0", n)
	}
}
