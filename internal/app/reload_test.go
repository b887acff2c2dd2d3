package app

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/demomail"
	"github.com/popbridge/popbridge/proxy"
)

// reloadFixture is a configuration file with alice and bob on Maildirs,
// loaded and served through a swapBackend, and its reloader.
type reloadFixture struct {
	t      *testing.T
	dir    string
	path   string
	log    *syncBuffer
	b      *swapBackend
	r      *reloader
	hashes map[string]string // password → bcrypt hash
}

func newReloadFixture(t *testing.T) *reloadFixture {
	t.Helper()
	dir := t.TempDir()
	f := &reloadFixture{t: t, dir: dir, path: filepath.Join(dir, "popbridge.yaml"), log: &syncBuffer{}, hashes: map[string]string{}}
	for _, u := range []string{"alice", "bob", "carol"} {
		if _, err := demomail.Ensure(filepath.Join(dir, u), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	f.write("127.0.0.1:0", map[string]string{"alice": "s3cret", "bob": "s3cret"}, "")
	cfg, err := config.Load(f.path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := openState(cfg.StateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.store.Close() })
	router, err := newRouter(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(f.log)
	f.b = newSwapBackend(router)
	f.r = &reloader{path: f.path, backend: f.b, st: st, log: &log, cfg: cfg}
	return f
}

// write writes the configuration: the listen address, the users with
// their passwords (in name order), and extra lines.
func (f *reloadFixture) write(listen string, users map[string]string, extra string) {
	f.t.Helper()
	src := fmt.Sprintf("listen: {pop3: %q}\nlog: {format: json}\nstate_dir: state\naccounts:\n", listen)
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	slices.Sort(names)
	for _, u := range names {
		pass := users[u]
		if f.hashes[pass] == "" {
			f.hashes[pass] = string(must(bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)))
		}
		src += fmt.Sprintf("  - user: %s\n    password_hash: %q\n    backend: {type: maildir, path: %s}\n", u, f.hashes[pass], u)
	}
	if err := os.WriteFile(f.path, []byte(src+extra), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// login logs in and returns the mailbox, or nil after a failed login.
func (f *reloadFixture) login(user, pass string) proxy.Mailbox {
	f.t.Helper()
	mb, err := f.b.Login(context.Background(), user, pass)
	if errors.Is(err, proxy.ErrAuthFailed) {
		return nil
	}
	if err != nil {
		f.t.Fatalf("login %s: %v", user, err)
	}
	return mb
}

// canLogin reports whether user can log in with pass.
func (f *reloadFixture) canLogin(user, pass string) bool {
	f.t.Helper()
	mb := f.login(user, pass)
	if mb != nil {
		mb.Close()
	}
	return mb != nil
}

func TestReload(t *testing.T) {
	f := newReloadFixture(t)
	ctx := context.Background()

	// bob's session is in progress across both reloads.
	bob := f.login("bob", "s3cret")
	if bob == nil {
		t.Fatal("bob cannot log in")
	}
	defer bob.Close()

	// An invalid file changes nothing, though it changes alice's password.
	f.write("127.0.0.1:0", map[string]string{"alice": "n3w", "bob": "s3cret"}, "cleartext_auth: sometimes\n")
	if err := f.r.reload(); err == nil {
		t.Fatal("reload of an invalid file succeeded")
	}
	if !f.canLogin("alice", "s3cret") || f.canLogin("alice", "n3w") {
		t.Error("after a rejected reload, alice's password changed")
	}
	if ev := eventsWith(f.log.String(), "configuration not reloaded"); len(ev) != 1 ||
		ev[0]["error"] != f.path+`:11: cleartext_auth: unknown mode "sometimes" (want never, loopback, always or a list of networks)` {
		t.Errorf("rejected reload logged %v", ev)
	}
	// So does a file that does not parse.
	if err := os.WriteFile(f.path, []byte("accounts: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.r.reload(); err == nil || !f.canLogin("alice", "s3cret") {
		t.Errorf("reload of a broken file: %v; alice's password changed", err)
	}

	// A valid one: alice's new password, bob gone, carol added, a new
	// cleartext_auth policy, and a listen address that needs a restart.
	srv := &proxy.Server{}
	f.r.srv = srv
	f.write("127.0.0.1:2110", map[string]string{"alice": "n3w", "carol": "c4rol"}, "cleartext_auth: [10.0.0.0/8]\n")
	if err := f.r.reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if p := srv.CleartextPolicy(); p.Allows(netip.MustParseAddr("127.0.0.1")) || !p.Allows(netip.MustParseAddr("10.1.2.3")) {
		t.Errorf("cleartext_auth after the reload: %+v, want 10.0.0.0/8 only", p)
	}
	if f.canLogin("alice", "s3cret") || !f.canLogin("alice", "n3w") {
		t.Error("after the reload, alice's new password does not work or the old one still does")
	}
	if !f.canLogin("carol", "c4rol") {
		t.Error("carol, added by the reload, cannot log in")
	}
	if f.canLogin("bob", "s3cret") {
		t.Error("bob, removed by the reload, can still log in")
	}
	if msgs, err := bob.List(ctx); err != nil || len(msgs) == 0 {
		t.Errorf("bob's session after the reload: List = %d messages, %v", len(msgs), err)
	} else if rc, err := bob.Open(ctx, msgs[0].UID); err != nil {
		t.Errorf("bob's session after the reload: Open: %v", err)
	} else {
		rc.Close()
	}
	logs := f.log.String()
	if ev := eventsWith(logs, "configuration changes that need a restart"); len(ev) != 1 || fmt.Sprint(ev[0]["keys"]) != "[listen]" {
		t.Errorf("restart warning %v, want one naming listen", ev)
	}
	ev := eventsWith(logs, "configuration reloaded")
	if len(ev) != 1 || fmt.Sprint(ev[0]["added"], ev[0]["removed"], ev[0]["changed"]) != "[carol] [bob] [alice]" {
		t.Errorf("reload events %v, want added carol, removed bob, changed alice", ev)
	}

	// The reloader compares the next file with the one now in use.
	if err := f.r.reload(); err != nil {
		t.Fatal(err)
	}
	if ev := eventsWith(f.log.String(), "configuration changes that need a restart"); len(ev) != 1 {
		t.Errorf("a second reload of the same file warned again: %v", ev)
	}
}
