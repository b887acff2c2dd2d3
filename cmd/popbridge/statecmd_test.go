package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/cache/pgstore"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/pgtest"
)

// migrateFixture is a configuration with two maildir accounts (alice,
// bob) and a gmail account with an OAuth2 grant (gina) whose token is
// sealed with a token key, and its state directory.
type migrateFixture struct {
	path, state string
	key         *[32]byte
	keyFile     string
}

// newMigrateFixture writes the configuration; the state directory is
// empty.
func newMigrateFixture(t *testing.T) *migrateFixture {
	t.Helper()
	var raw [32]byte
	rand.Read(raw[:])
	keyFile := filepath.Join(t.TempDir(), "token.key")
	writeTestFile(t, keyFile, 0o600, hex.EncodeToString(raw[:])+"\n")
	path := writeConfig(t, fmt.Sprintf(`  - user: gina
    password_hash: %q
    backend:
      type: gmail
      oauth2:
        provider: custom
        client_id: popbridge-test
        auth_url: http://127.0.0.1:1/auth
        token_url: http://127.0.0.1:1/token
        scopes: [https://www.googleapis.com/auth/gmail.modify]
        token_key_file: %s
`, testHash(t), keyFile))
	return &migrateFixture{path: path, state: filepath.Join(filepath.Dir(path), "state"), key: &raw, keyFile: keyFile}
}

func (f *migrateFixture) tokens() *oauth.Store {
	return &oauth.Store{Dir: filepath.Join(f.state, app.TokenDir), Key: f.key}
}

// fill writes n accounts into the fixture's cache.db, besides alice, bob
// and gina: records (one account above migrateChunk), tombstones, each
// kind of sync state, keys that are not UTF-8; and gina's token.
func (f *migrateFixture) fill(t *testing.T, n int) {
	t.Helper()
	if err := os.MkdirAll(f.state, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := cache.Open(filepath.Join(f.state, app.StoreFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	apply := func(account string, c cache.Change) {
		t.Helper()
		if err := s.Apply(account, c); err != nil {
			t.Fatal(err)
		}
	}
	var big []cache.MessageRecord
	for i := range migrateChunk*2 + 17 {
		big = append(big, cache.MessageRecord{Key: fmt.Sprintf("1:%d", i+1), Size: int64(1000 + i), UIDL: fmt.Sprintf("v1.%d", i+1)})
	}
	apply("alice", cache.Change{Put: big, AddTombstones: []string{"1:1", "1:2", "gone"},
		Sync: &cache.SyncState{UIDValidity: 1, HighestUID: uint32(len(big))}})
	apply("bob", cache.Change{
		Put: []cache.MessageRecord{
			{Key: "cur/1700000000.M1P1.host:2,S", Size: 321, UIDL: "1700000000.M1P1.host", Stamp: "321/1700000000"},
			{Key: "k\xff\x00\x01", Size: 5, UIDL: "odd", Stamp: "\x00\xfe"},
			{Key: "unsized", Size: 0},
		},
		Sync: &cache.SyncState{POP3UIDLs: []string{"a", "b", "c"}}})
	apply("gina", cache.Change{Put: []cache.MessageRecord{{Key: "18c0ffee", Size: 4096, UIDL: "18c0ffee"}},
		AddTombstones: []string{"18c0ffee"}, Sync: &cache.SyncState{HistoryID: 987654321012}})
	apply("only-sync", cache.Change{Sync: &cache.SyncState{HistoryID: 1}})
	for i := range n {
		apply(fmt.Sprintf("u%04d@example.org", i), cache.Change{
			Put:           []cache.MessageRecord{{Key: fmt.Sprintf("m%d", i), Size: int64(i), UIDL: fmt.Sprintf("u%d", i)}},
			AddTombstones: []string{fmt.Sprintf("t%d", i)}})
	}
	tok := &oauth2.Token{AccessToken: "ya29.access-gina", RefreshToken: "1//refresh-gina", TokenType: "Bearer",
		Expiry: time.Date(2026, 12, 3, 15, 4, 5, 123456789, time.UTC)}
	if err := f.tokens().Save("gina", tok); err != nil {
		t.Fatal(err)
	}
}

// migrate runs popbridge state migrate on the fixture's configuration.
func (f *migrateFixture) migrate(t *testing.T, args ...string) result {
	t.Helper()
	return runCmd(t, "", append([]string{"state", "migrate", "-config", f.path}, args...)...)
}

// accountState is everything a store holds for one account.
type accountState struct {
	Messages   map[string]cache.MessageRecord
	Tombstones map[string]struct{}
	Sync       cache.SyncState
}

// dump reads every account of s.
func dump(t *testing.T, s cache.StateStore) map[string]accountState {
	t.Helper()
	stats, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]accountState{}
	for _, st := range stats {
		var a accountState
		var err error
		if a.Messages, err = s.Messages(st.Account); err != nil {
			t.Fatal(err)
		}
		if a.Tombstones, err = s.Tombstones(st.Account); err != nil {
			t.Fatal(err)
		}
		if a.Sync, err = s.SyncState(st.Account); err != nil {
			t.Fatal(err)
		}
		out[st.Account] = a
	}
	return out
}

func dumpBolt(t *testing.T, state string) map[string]accountState {
	t.Helper()
	s, err := cache.Open(filepath.Join(state, app.StoreFile), &cache.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return dump(t, s)
}

func dumpPG(t *testing.T, dsn string) map[string]accountState {
	t.Helper()
	s, err := pgstore.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return dump(t, s)
}

// compareStates fails the test where got differs from want.
func compareStates(t *testing.T, what string, got, want map[string]accountState) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d accounts, want %d", what, len(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("%s: account %q missing", what, name)
		case !reflect.DeepEqual(g.Messages, w.Messages):
			t.Errorf("%s: account %q: %d records differ from the %d expected", what, name, len(g.Messages), len(w.Messages))
		case !reflect.DeepEqual(g.Tombstones, w.Tombstones):
			t.Errorf("%s: account %q: tombstones %v, want %v", what, name, g.Tombstones, w.Tombstones)
		case !reflect.DeepEqual(g.Sync, w.Sync):
			t.Errorf("%s: account %q: sync state %+v, want %+v", what, name, g.Sync, w.Sync)
		}
	}
}

// TestStateMigrate copies a state directory into PostgreSQL and back
// with popbridge state migrate, and checks its refusals, on a private
// PostgreSQL.
func TestStateMigrate(t *testing.T) {
	pg := pgtest.Start(t)

	t.Run("RoundTrip", func(t *testing.T) {
		dsn := pg.CreateDB(t)
		t.Setenv(pgstore.DSNEnv, dsn)
		src := newMigrateFixture(t)
		src.fill(t, 250)
		want := dumpBolt(t, src.state)
		if len(want) != 254 {
			t.Fatalf("fixture: %d accounts", len(want))
		}

		r := src.migrate(t, "-progress", "100")
		if r.code != 0 {
			t.Fatalf("migrate to postgres: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		t.Logf("to postgres:\n%s", r.stdout)
		records := migrateChunk*2 + 17 + 3 + 1 + 250
		for _, line := range []string{
			"Copying 254 account(s) and 1 OAuth2 token(s) from " + filepath.Join(src.state, app.StoreFile) + " to PostgreSQL (127.0.0.1:",
			"\n100/254 accounts: ", "\n200/254 accounts: ",
			fmt.Sprintf("Copied 254 account(s): %d message records, %d tombstones, 254 sync states; 1 OAuth2 token(s); in ", records, 3+1+250),
			"Verified: the counts match.",
			"Next: set state.driver: postgres in " + src.path,
		} {
			if !strings.Contains(r.stdout, line) {
				t.Errorf("stdout lacks %q", line)
			}
		}
		if strings.Contains(r.stdout, "300/") || r.stderr != "" {
			t.Errorf("unexpected output:\n%s%s", r.stdout, r.stderr)
		}
		compareStates(t, "postgres", dumpPG(t, dsn), want)
		if again := dumpBolt(t, src.state); !reflect.DeepEqual(again, want) {
			t.Error("the source changed")
		}

		// The token row is sealed with gina's key, not plain.
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		var row []byte
		if err := conn.QueryRow(ctx, "SELECT token FROM oauth_token WHERE account = 'gina'").Scan(&row); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		if !strings.Contains(string(row), `"sealed"`) || strings.Contains(string(row), "refresh-gina") {
			t.Errorf("the token row is not sealed: %s", row)
		}
		wantTok, err := src.tokens().Load("gina")
		if err != nil {
			t.Fatal(err)
		}

		// Back into the bbolt file of a fresh state directory.
		dst := newMigrateFixture(t)
		dst.key, dst.keyFile = src.key, src.keyFile
		cfg := strings.ReplaceAll(string(must(os.ReadFile(src.path))), filepath.Dir(src.path), filepath.Dir(dst.path))
		writeTestFile(t, dst.path, 0o600, cfg)
		r = dst.migrate(t, "-to", "bbolt")
		if r.code != 0 {
			t.Fatalf("migrate to bbolt: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, "to "+filepath.Join(dst.state, app.StoreFile)) || !strings.Contains(r.stdout, "Next: start popbridge with "+dst.path) {
			t.Errorf("stdout:\n%s", r.stdout)
		}
		compareStates(t, "bbolt after the round trip", dumpBolt(t, dst.state), want)
		gotTok, err := dst.tokens().Load("gina")
		if err != nil {
			t.Fatal(err)
		}
		if gotTok.AccessToken != wantTok.AccessToken || gotTok.RefreshToken != wantTok.RefreshToken ||
			!gotTok.Expiry.Equal(wantTok.Expiry) || gotTok.TokenType != wantTok.TokenType {
			t.Errorf("token after the round trip: %+v, want %+v", gotTok, wantTok)
		}
		file := must(os.ReadFile(dst.tokens().Path("gina")))
		if !strings.Contains(string(file), `"sealed"`) || strings.Contains(string(file), "refresh-gina") {
			t.Errorf("the token file is not sealed: %s", file)
		}
		if fi, err := os.Stat(dst.tokens().Path("gina")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("token file: %v, %v", fi.Mode(), err)
		}
	})

	t.Run("Overwrite", func(t *testing.T) {
		dsn := pg.CreateDB(t)
		t.Setenv(pgstore.DSNEnv, dsn)
		f := newMigrateFixture(t)
		f.fill(t, 3)
		if r := f.migrate(t); r.code != 0 {
			t.Fatalf("first migrate: exit %d\n%s", r.code, r.stderr)
		}
		before := dumpPG(t, dsn)

		// The source changes: bob loses a record, alice gains one, a
		// new account appears, gina's token is rotated.
		s, err := cache.Open(filepath.Join(f.state, app.StoreFile), nil)
		if err != nil {
			t.Fatal(err)
		}
		for account, c := range map[string]cache.Change{
			"bob":   {Delete: []string{"unsized"}, RemoveTombstones: []string{"x"}},
			"alice": {Put: []cache.MessageRecord{{Key: "2:1", Size: 7, UIDL: "v2.1"}}},
			"new":   {Put: []cache.MessageRecord{{Key: "n", Size: 1}}},
		} {
			if err := s.Apply(account, c); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		rotated := &oauth2.Token{AccessToken: "ya29.second", RefreshToken: "1//rotated", Expiry: time.Now().Add(time.Hour).UTC()}
		if err := f.tokens().Save("gina", rotated); err != nil {
			t.Fatal(err)
		}
		want := dumpBolt(t, f.state)

		// Without -overwrite: refused, nothing written.
		r := f.migrate(t)
		if r.code != 1 || !strings.Contains(r.stderr, "already holds state of 7 account(s) (alice, bob, gina, only-sync, u0000@example.org and 2 more); nothing was copied. Run again with -overwrite") {
			t.Fatalf("without -overwrite: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		compareStates(t, "after the refusal", dumpPG(t, dsn), before)

		// With it, twice: the target is replaced, not merged.
		for i := range 2 {
			r = f.migrate(t, "-overwrite")
			if r.code != 0 || !strings.Contains(r.stdout, "Copied 8 account(s)") {
				t.Fatalf("-overwrite #%d: exit %d\n%s%s", i+1, r.code, r.stdout, r.stderr)
			}
			compareStates(t, fmt.Sprintf("after -overwrite #%d", i+1), dumpPG(t, dsn), want)
		}
		pg, err := pgstore.Open(context.Background(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer pg.Close()
		tok, err := (&pgstore.Tokens{Store: pg, Key: f.key}).Load("gina")
		if err != nil || tok.RefreshToken != "1//rotated" || tok.AccessToken != "ya29.second" {
			t.Errorf("gina's token in PostgreSQL: %+v, %v", tok, err)
		}

		// Back into a state directory that has data: refused too.
		r = f.migrate(t, "-to", "bbolt")
		if r.code != 1 || !strings.Contains(r.stderr, filepath.Join(f.state, app.StoreFile)+" already holds state of 8 account(s)") {
			t.Errorf("-to bbolt onto data: exit %d\n%s", r.code, r.stderr)
		}
	})

	t.Run("Serve", func(t *testing.T) {
		// What a client saw on bbolt it sees on PostgreSQL after the
		// copy, and back: alice's maildir keeps deleted messages
		// (on_delete: keep), so only the tombstones hide them.
		t.Setenv(pgstore.DSNEnv, pg.CreateDB(t))
		path := writeConfig(t, "")
		bbolt := string(must(os.ReadFile(path)))
		uidls := func(want int) []string {
			t.Helper()
			addr, _, stop := startServe(t, path)
			p := loginAlice(t, addr)
			list := strings.Split(strings.TrimSpace(p.multi("UIDL")), "\n")
			if len(list) != want {
				t.Fatalf("UIDL: %q, want %d messages", list, want)
			}
			if s := p.cmd("DELE 1"); !strings.HasPrefix(s, "+OK") {
				t.Fatalf("DELE 1: %q", s)
			}
			if s := p.cmd("QUIT"); !strings.HasPrefix(s, "+OK") {
				t.Fatalf("QUIT: %q", s)
			}
			if code := stop(); code != 0 {
				t.Fatalf("serve: exit %d", code)
			}
			var ids []string
			for _, l := range list {
				ids = append(ids, strings.Fields(l)[1])
			}
			return ids
		}
		migrate := func(args ...string) {
			t.Helper()
			r := runCmd(t, "", append([]string{"state", "migrate", "-config", path}, args...)...)
			if r.code != 0 {
				t.Fatalf("migrate %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
			}
		}
		first := uidls(5) // on bbolt; hides the first
		migrate()
		writeTestFile(t, path, 0o600, bbolt+"state: {driver: postgres}\n")
		second := uidls(4) // on PostgreSQL; hides the next
		if !reflect.DeepEqual(second, first[1:]) {
			t.Errorf("UIDLs on PostgreSQL %q, want %q", second, first[1:])
		}
		migrate("-to", "bbolt", "-overwrite")
		writeTestFile(t, path, 0o600, bbolt)
		if third := uidls(3); !reflect.DeepEqual(third, first[2:]) {
			t.Errorf("UIDLs back on bbolt %q, want %q", third, first[2:])
		}
	})

	t.Run("ServeOAuth", func(t *testing.T) {
		// A sealed token file, copied into PostgreSQL, serves a gmail
		// login there with no file left; the refresh a replica makes
		// (the provider rotates refresh tokens) comes back to the file.
		t.Setenv(pgstore.DSNEnv, pg.CreateDB(t))
		tokens := oauthtest.Start(t)
		tokens.Rotate = true
		fake := gmailtest.Start(t)
		fake.SetValidToken(tokens.ValidAccess)
		fake.Add([]byte("From: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n"), "INBOX")
		dir := t.TempDir()
		var key [32]byte
		rand.Read(key[:])
		writeTestFile(t, filepath.Join(dir, "token.key"), 0o600, hex.EncodeToString(key[:]))
		bbolt := fmt.Sprintf(`listen: {pop3: 127.0.0.1:0}
log: {format: json}
state_dir: state
accounts:
  - user: gina
    password_hash: %q
    backend:
      type: gmail
      api_endpoint: %s
      oauth2:
        provider: custom
        client_id: %s
        auth_url: %s
        token_url: %s
        scopes: [https://www.googleapis.com/auth/gmail.modify]
        token_key_file: token.key
`, testHash(t), fake.Endpoint(), tokens.ClientID, tokens.AuthURL, tokens.TokenURL)
		path := filepath.Join(dir, "popbridge.yaml")
		writeTestFile(t, path, 0o600, bbolt)
		state := filepath.Join(dir, "state")
		files := &oauth.Store{Dir: filepath.Join(state, app.TokenDir), Key: &key}
		at, rt, exp := tokens.Issue()
		if err := files.Save("gina", &oauth2.Token{AccessToken: at, RefreshToken: rt, Expiry: exp}); err != nil {
			t.Fatal(err)
		}
		s, err := cache.Open(filepath.Join(state, app.StoreFile), nil) // an empty cache.db
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		login := func() {
			t.Helper()
			_, stderr, stop := startRun(t, "serve", "-config", path)
			p := dialPOP3(t, listenerAddr(t, stderr, "pop3"))
			p.cmd("USER gina")
			if r := p.cmd("PASS s3cret"); r != "+OK Logged in." {
				t.Fatalf("PASS: %q\n%s", r, stderr)
			}
			if r := p.cmd("STAT"); !strings.HasPrefix(r, "+OK 1 ") {
				t.Fatalf("STAT: %q", r)
			}
			p.cmd("QUIT")
			if code := stop(); code != 0 {
				t.Fatalf("serve: exit %d\n%s", code, stderr)
			}
		}
		migrate := func(args ...string) {
			t.Helper()
			r := runCmd(t, "", append([]string{"state", "migrate", "-config", path}, args...)...)
			if r.code != 0 || !strings.Contains(r.stdout, "1 OAuth2 token(s)") {
				t.Fatalf("migrate %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
			}
		}

		migrate()
		if err := os.RemoveAll(files.Dir); err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, path, 0o600, bbolt+"state: {driver: postgres}\n")
		login() // with the token from PostgreSQL
		tokens.RevokeAccess()
		login() // refreshes; the old refresh token is dead now
		if n := tokens.Refreshes(); n != 1 || tokens.LiveRefreshToken(rt) {
			t.Fatalf("%d refreshes, old refresh token live: %v", n, tokens.LiveRefreshToken(rt))
		}

		migrate("-to", "bbolt")
		writeTestFile(t, path, 0o600, bbolt)
		login() // with the rotated token, from the file
		if n := tokens.Refreshes(); n != 1 {
			t.Errorf("%d refreshes, want 1: the file did not get the rotated token", n)
		}
		data := string(must(os.ReadFile(files.Path("gina"))))
		if !strings.Contains(data, `"sealed"`) || strings.Contains(data, "rt-") {
			t.Errorf("the token file is not sealed: %s", data)
		}
	})

	t.Run("DSNFromConfig", func(t *testing.T) {
		// A box whose configuration already says driver: postgres, the
		// DSN in a file: no environment variable needed.
		dsn := pg.CreateDB(t)
		t.Setenv(pgstore.DSNEnv, "")
		f := newMigrateFixture(t)
		dsnFile := filepath.Join(filepath.Dir(f.path), "dsn")
		writeTestFile(t, dsnFile, 0o600, dsn+"\n")
		cfg := string(must(os.ReadFile(f.path))) + "state: {driver: postgres, dsn_file: dsn}\n"
		writeTestFile(t, f.path, 0o600, cfg)
		f.fill(t, 2)
		want := dumpBolt(t, f.state)
		r := f.migrate(t)
		if r.code != 0 || !strings.Contains(r.stdout, "Next: start the replicas with "+f.path+" (state.driver: postgres).") {
			t.Fatalf("to postgres: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		compareStates(t, "postgres", dumpPG(t, dsn), want)

		// Back, with the same configuration in another directory.
		dst := newMigrateFixture(t)
		writeTestFile(t, filepath.Join(filepath.Dir(dst.path), "dsn"), 0o600, dsn)
		writeTestFile(t, dst.path, 0o600, cfg)
		r = dst.migrate(t, "-to", "bbolt")
		if r.code != 0 || !strings.Contains(r.stdout, "Next: remove the state section from "+dst.path+" (it says driver: postgres) and start popbridge.") {
			t.Fatalf("to bbolt: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		compareStates(t, "bbolt", dumpBolt(t, dst.state), want)

		// A DSN file that others may read is refused, as by serve.
		if err := os.Chmod(dsnFile, 0o644); err != nil {
			t.Fatal(err)
		}
		r = f.migrate(t, "-overwrite")
		if r.code != 1 || !strings.Contains(r.stderr, "popbridge state: state: pgstore: "+dsnFile+" holds the PostgreSQL DSN and every user of this machine may read") {
			t.Errorf("DSN file 0644: exit %d\n%s", r.code, r.stderr)
		}
	})

	t.Run("WrongTokenKey", func(t *testing.T) {
		dsn := pg.CreateDB(t)
		t.Setenv(pgstore.DSNEnv, dsn)
		f := newMigrateFixture(t)
		f.fill(t, 0)
		other := *f.key
		other[0] ^= 1
		writeTestFile(t, f.keyFile, 0o600, hex.EncodeToString(other[:]))
		r := f.migrate(t)
		if r.code != 1 || !strings.Contains(r.stderr, "popbridge state: account gina: the OAuth2 token in "+filepath.Join(f.state, app.StoreFile)+
			" does not open with its token key: set token_key_file (or POPBRIDGE_TOKEN_KEY) to the key it was sealed with; nothing was copied") {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if got := dumpPG(t, dsn); len(got) != 0 {
			t.Errorf("PostgreSQL holds %d accounts after the refusal", len(got))
		}

		// Back from PostgreSQL with the wrong key: refused as well.
		writeTestFile(t, f.keyFile, 0o600, hex.EncodeToString(f.key[:]))
		if r := f.migrate(t); r.code != 0 {
			t.Fatalf("with the right key: exit %d\n%s", r.code, r.stderr)
		}
		dst := newMigrateFixture(t)
		cfg := strings.ReplaceAll(string(must(os.ReadFile(f.path))), filepath.Dir(f.path), filepath.Dir(dst.path))
		writeTestFile(t, dst.path, 0o600, strings.ReplaceAll(cfg, f.keyFile, dst.keyFile))
		r = dst.migrate(t, "-to", "bbolt")
		if r.code != 1 || !strings.Contains(r.stderr, "account gina: the OAuth2 token in PostgreSQL (") || !strings.Contains(r.stderr, "does not open with its token key") {
			t.Errorf("-to bbolt with another key: exit %d\n%s", r.code, r.stderr)
		}
		if _, err := os.Stat(dst.tokens().Path("gina")); err == nil {
			t.Error("a token file was written")
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		dsn := pg.CreateDB(t)
		f := newMigrateFixture(t)

		// No DSN anywhere.
		t.Setenv(pgstore.DSNEnv, "")
		r := f.migrate(t)
		if r.code != 1 || !strings.Contains(r.stderr, "no PostgreSQL DSN given") {
			t.Errorf("without a DSN: exit %d\n%s", r.code, r.stderr)
		}
		t.Setenv(pgstore.DSNEnv, dsn)

		// Nothing to copy yet.
		r = f.migrate(t)
		if r.code != 1 || !strings.Contains(r.stderr, "nothing to copy: "+filepath.Join(f.state, app.StoreFile)+" does not exist") {
			t.Errorf("without cache.db: exit %d\n%s", r.code, r.stderr)
		}

		// The server runs on the state directory.
		_, _, stop := startServe(t, f.path)
		r = f.migrate(t)
		if r.code != 1 || !strings.Contains(r.stderr, "popbridge is running on state_dir "+f.state+" (pid ") ||
			!strings.Contains(r.stderr, "stop it first") {
			t.Errorf("with the server running: exit %d\n%s", r.code, r.stderr)
		}
		if code := stop(); code != 0 {
			t.Fatalf("serve: exit %d", code)
		}

		// Another process holds cache.db without a control socket.
		s, err := cache.Open(filepath.Join(f.state, app.StoreFile), nil)
		if err != nil {
			t.Fatal(err)
		}
		r = f.migrate(t)
		s.Close()
		if r.code != 1 || !strings.Contains(r.stderr, "cache.db is in use by another process (popbridge serve, or another popbridge command): stop it first") {
			t.Errorf("with cache.db locked: exit %d\n%s", r.code, r.stderr)
		}
		if got := dumpPG(t, dsn); len(got) != 0 {
			t.Errorf("PostgreSQL holds %d accounts after the refusals", len(got))
		}

		// Replicas use the database: a listener, then a live lease.
		f.fill(t, 0)
		sub, err := pgstore.Subscribe(dsn)
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); !sub.Connected() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		for _, to := range []string{"postgres", "bbolt"} {
			r = f.migrate(t, "-to", to)
			if r.code != 1 || !strings.Contains(r.stderr, "popbridge replicas are connected to the database (1 listener connection(s)): stop every replica first") {
				t.Errorf("-to %s with a replica's listener: exit %d\n%s", to, r.code, r.stderr)
			}
		}
		sub.Close()
		store, err := pgstore.Open(context.Background(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		lease, err := store.Acquire(context.Background(), "alice", "replica-1", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		// The listener's connection ends shortly after Close.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if r = f.migrate(t); !strings.Contains(r.stderr, "listener connection") {
				break
			}
		}
		if r.code != 1 || !strings.Contains(r.stderr, "POP3 sessions hold 1 maildrop lease(s) in the database: stop every replica first") {
			t.Errorf("with a live lease: exit %d\n%s", r.code, r.stderr)
		}
		lease.Release(context.Background())
		store.Close()
		if got := dumpPG(t, dsn); len(got) != 0 {
			t.Errorf("PostgreSQL holds %d accounts after the refusals", len(got))
		}

		// PostgreSQL unreachable: the DSN's password is not printed.
		t.Setenv(pgstore.DSNEnv, "postgres://popbridge:hunter2@127.0.0.1:1/popbridge?connect_timeout=2")
		r = f.migrate(t)
		if r.code != 1 || !strings.Contains(r.stderr, "popbridge state: PostgreSQL (127.0.0.1:1/popbridge): pgstore: ") || strings.Contains(r.stderr, "hunter2") {
			t.Errorf("PostgreSQL unreachable: exit %d\n%s", r.code, r.stderr)
		}

		for _, c := range []struct {
			args []string
			msg  string
		}{
			{nil, "Usage: popbridge state migrate"},
			{[]string{"frob"}, `unknown subcommand "frob" (want migrate)`},
			{[]string{"migrate"}, "popbridge state: -config is required"},
			{[]string{"migrate", "-config", f.path, "-to", "mysql"}, `-to "mysql": want postgres or bbolt`},
		} {
			r := runCmd(t, "", append([]string{"state"}, c.args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, c.msg) {
				t.Errorf("state %v: exit %d\n%s", c.args, r.code, r.stderr)
			}
		}
	})
}

func writeTestFile(t *testing.T, path string, mode os.FileMode, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

// TestStateMigrateLarge times state migrate of 1000 accounts of 500
// records each, to PostgreSQL and back, for docs/scale.md. Opt-in:
// POPBRIDGE_MIGRATE_LARGE=1.
func TestStateMigrateLarge(t *testing.T) {
	if os.Getenv("POPBRIDGE_MIGRATE_LARGE") == "" {
		t.Skip("set POPBRIDGE_MIGRATE_LARGE=1 to measure")
	}
	const accounts, msgs = 1000, 500
	pg := pgtest.Start(t)
	t.Setenv(pgstore.DSNEnv, pg.CreateDB(t))
	src := newMigrateFixture(t)
	src.fill(t, 0)
	s, err := cache.Open(filepath.Join(src.state, app.StoreFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	for a := range accounts {
		c := cache.Change{Sync: &cache.SyncState{HistoryID: uint64(a)}}
		for m := range msgs {
			id := fmt.Sprintf("18c%013x", a*msgs+m)
			c.Put = append(c.Put, cache.MessageRecord{Key: id, Size: 40000 + int64(m), UIDL: id})
			if m%10 == 0 {
				c.AddTombstones = append(c.AddTombstones, id)
			}
		}
		if err := s.Apply(fmt.Sprintf("user%05d@example.com", a), c); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	start := time.Now()
	r := src.migrate(t, "-progress", "250")
	if r.code != 0 {
		t.Fatalf("to postgres: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("to postgres in %s:\n%s", time.Since(start).Round(time.Millisecond), r.stdout)
	dst := newMigrateFixture(t)
	writeTestFile(t, dst.path, 0o600, string(must(os.ReadFile(src.path))))
	start = time.Now()
	r = dst.migrate(t, "-to", "bbolt", "-progress", "250")
	if r.code != 0 {
		t.Fatalf("to bbolt: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("to bbolt in %s:\n%s", time.Since(start).Round(time.Millisecond), r.stdout)
}
