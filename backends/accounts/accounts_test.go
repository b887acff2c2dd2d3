package accounts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/proxy"
)

func hash(t *testing.T, pass string, cost int) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), cost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// fakeBackend records logins and returns a fakeMailbox, or err.
type fakeBackend struct {
	mu        sync.Mutex
	logins    []string
	passwords []string // the Password of each login
	err       error
}

func (b *fakeBackend) OpenMaildrop(ctx context.Context, login backends.Login) (proxy.Mailbox, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.logins = append(b.logins, login.User)
	b.passwords = append(b.passwords, login.Password)
	if b.err != nil {
		return nil, b.err
	}
	return &fakeMailbox{}, nil
}

func (b *fakeBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.logins)
}

type fakeMailbox struct{ closed bool }

func (m *fakeMailbox) List(ctx context.Context) ([]proxy.MessageInfo, error) {
	return []proxy.MessageInfo{{UID: "u1", Size: 42}}, nil
}
func (m *fakeMailbox) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("x")), nil
}
func (m *fakeMailbox) Delete(ctx context.Context, uids []string) error { return nil }
func (m *fakeMailbox) Close() error                                    { m.closed = true; return nil }

type fixture struct {
	r            *Router
	alice, bob   *fakeBackend
	alicePass    string
	bobPass      string
	aliceAccount Account
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	f := &fixture{alice: &fakeBackend{}, bob: &fakeBackend{}, alicePass: "correct horse", bobPass: "pässwörd with spaces"}
	f.aliceAccount = Account{User: "alice", PasswordHash: hash(t, f.alicePass, bcrypt.MinCost), Backend: f.alice}
	r, err := New([]Account{
		f.aliceAccount,
		{User: "bob@example.org", PasswordHash: hash(t, f.bobPass, bcrypt.MinCost), Backend: f.bob},
	}, opts)
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	return f
}

func TestLogin(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()

	mb, err := f.r.Login(ctx, "bob@example.org", f.bobPass)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	id, ok := mb.(proxy.MaildropIDer)
	if !ok || id.MaildropID() != "bob@example.org" {
		t.Fatalf("mailbox %T: want a MaildropIDer with id bob@example.org", mb)
	}
	list, err := mb.List(ctx)
	if err != nil || !reflect.DeepEqual(list, []proxy.MessageInfo{{UID: "u1", Size: 42}}) {
		t.Errorf("List through the wrapper = %v, %v", list, err)
	}
	if err := mb.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if inner := mb.(*mailbox).Mailbox.(*fakeMailbox); !inner.closed {
		t.Error("Close did not reach the account's mailbox")
	}
	if got := f.bob.logins; !reflect.DeepEqual(got, []string{"bob@example.org"}) {
		t.Errorf("bob's backend logins = %q", got)
	}
	if n := f.alice.count(); n != 0 {
		t.Errorf("alice's backend saw %d logins", n)
	}
}

func TestLoginFailures(t *testing.T) {
	f := newFixture(t, Options{})
	tests := []struct{ name, user, pass string }{
		{"wrong password", "alice", "wrong"},
		{"empty password", "alice", ""},
		{"password prefix", "alice", "correct"},
		{"unknown user", "mallory", "correct horse"},
		{"user names are case sensitive", "Alice", "correct horse"},
		{"no % expansion", "%u", "correct horse"},
		{"no trimming", "alice ", "correct horse"},
		{"another account's password", "alice", "pässwörd with spaces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mb, err := f.r.Login(context.Background(), tt.user, tt.pass)
			if mb != nil || !errors.Is(err, proxy.ErrAuthFailed) {
				t.Fatalf("Login(%q, %q) = %v, %v; want ErrAuthFailed", tt.user, tt.pass, mb, err)
			}
			want := `accounts: login "` + tt.user + `": [AUTH] Authentication failed.`
			if err.Error() != want {
				t.Errorf("error %q, want %q (the same whether user or password is wrong)", err, want)
			}
		})
	}
	if n := f.alice.count() + f.bob.count(); n != 0 {
		t.Errorf("backends saw %d logins after failed verifications", n)
	}
	if n := f.r.cache.Len(); n != 0 {
		t.Errorf("%d failed verifications cached", n)
	}
}

func TestBackendError(t *testing.T) {
	f := newFixture(t, Options{})
	f.alice.err = &proxy.Error{Code: proxy.CodeSysTemp, Text: "Maildir unavailable.", Err: errors.New("stat /m: permission denied")}
	_, err := f.r.Login(context.Background(), "alice", f.alicePass)
	if !errors.Is(err, f.alice.err) || errors.Is(err, proxy.ErrAuthFailed) {
		t.Errorf("Login with a failing backend: %v; want the backend's error, not ErrAuthFailed", err)
	}
}

func TestCache(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	for range 3 {
		mb, err := f.r.Login(ctx, "alice", f.alicePass)
		if err != nil {
			t.Fatal(err)
		}
		mb.Close()
	}
	if n := f.r.cache.Len(); n != 1 {
		t.Errorf("cache holds %d entries after 3 logins of one client, want 1", n)
	}
	if _, ok := f.r.cache.Peek(cacheKey("alice", f.alicePass, []byte(f.aliceAccount.PasswordHash))); !ok {
		t.Error("successful verification not cached under its key")
	}
	if n := f.alice.count(); n != 3 {
		t.Errorf("backend saw %d logins, want 3 (the cache skips bcrypt, not the backend)", n)
	}
	// A cached success does not let a different password in.
	if _, err := f.r.Login(ctx, "alice", f.alicePass+"x"); !errors.Is(err, proxy.ErrAuthFailed) {
		t.Errorf("wrong password after a cached success: %v", err)
	}
}

func TestCacheSkipsBcrypt(t *testing.T) {
	// With the bcrypt slots all taken, only a cached login can proceed.
	f := newFixture(t, Options{})
	ctx := context.Background()
	if _, err := f.r.Login(ctx, "alice", f.alicePass); err != nil {
		t.Fatal(err)
	}
	busy(f.r)
	defer idle(f.r)
	if _, err := f.r.Login(ctx, "alice", f.alicePass); err != nil {
		t.Errorf("cached login: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := f.r.Login(ctx, "bob@example.org", f.bobPass)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, proxy.ErrAuthFailed) {
		t.Errorf("uncached login with bcrypt busy and the context ending: %v", err)
	}
}

func TestCacheTTL(t *testing.T) {
	f := newFixture(t, Options{CacheTTL: 30 * time.Millisecond})
	ctx := context.Background()
	if _, err := f.r.Login(ctx, "alice", f.alicePass); err != nil {
		t.Fatal(err)
	}
	busy(f.r)
	defer idle(f.r)
	if _, err := f.r.Login(ctx, "alice", f.alicePass); err != nil {
		t.Fatalf("login within the TTL needed bcrypt: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := f.r.Login(ctx, "alice", f.alicePass); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("login after the TTL: %v; want it to wait for bcrypt", err)
	}
}

// busy takes every bcrypt slot, so that only cached logins succeed.
func busy(r *Router) {
	for range cap(r.bcrypts) {
		r.bcrypts <- struct{}{}
	}
}

func idle(r *Router) {
	for range cap(r.bcrypts) {
		<-r.bcrypts
	}
}

func TestCacheSize(t *testing.T) {
	f := newFixture(t, Options{CacheSize: 1})
	ctx := context.Background()
	for _, l := range [][2]string{{"alice", f.alicePass}, {"bob@example.org", f.bobPass}} {
		if _, err := f.r.Login(ctx, l[0], l[1]); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.r.cache.Len(); n != 1 {
		t.Errorf("cache of size 1 holds %d entries", n)
	}
}

func TestCacheOff(t *testing.T) {
	f := newFixture(t, Options{CacheTTL: -1})
	if f.r.cache != nil {
		t.Fatal("cache created with a negative TTL")
	}
	if _, err := f.r.Login(context.Background(), "alice", f.alicePass); err != nil {
		t.Errorf("Login without cache: %v", err)
	}
}

func TestCacheKey(t *testing.T) {
	h := []byte("$2a$04$hash")
	keys := map[[32]byte]string{}
	for _, c := range [][2]string{{"ab", "c"}, {"a", "bc"}, {"abc", ""}, {"", "abc"}} {
		k := cacheKey(c[0], c[1], h)
		if prev, dup := keys[k]; dup {
			t.Errorf("cacheKey(%q, %q) collides with %s", c[0], c[1], prev)
		}
		keys[k] = c[0] + "/" + c[1]
	}
	if cacheKey("a", "b", h) == cacheKey("a", "b", []byte("$2a$04$other")) {
		t.Error("cache key does not depend on the stored hash")
	}
}

func TestDummyCost(t *testing.T) {
	r, err := New([]Account{
		{User: "a", PasswordHash: hash(t, "x", bcrypt.MinCost), Backend: &fakeBackend{}},
		{User: "b", PasswordHash: hash(t, "x", bcrypt.MinCost+1), Backend: &fakeBackend{}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if cost, err := bcrypt.Cost(r.dummy); err != nil || cost != bcrypt.MinCost+1 {
		t.Errorf("dummy hash cost = %d, %v; want the highest account cost %d", cost, err, bcrypt.MinCost+1)
	}
}

func TestNewErrors(t *testing.T) {
	good := func() string { return hash(t, "x", bcrypt.MinCost) }
	tests := []struct {
		name     string
		accounts []Account
		want     string
	}{
		{"duplicate", []Account{{User: "a", PasswordHash: good(), Backend: &fakeBackend{}}, {User: "a", PasswordHash: good(), Backend: &fakeBackend{}}}, `accounts: duplicate user "a"`},
		{"bad hash", []Account{{User: "a", PasswordHash: "plaintext", Backend: &fakeBackend{}}}, `accounts: user "a": invalid password hash`},
		{"no hash", []Account{{User: "a", Backend: &fakeBackend{}}}, `accounts: user "a": invalid password hash`},
		{"no backend", []Account{{User: "a", PasswordHash: good()}}, `accounts: user "a": no backend`},
		{"passthrough without backend", []Account{{User: "a", Passthrough: true}}, `accounts: user "a": no backend`},
	}
	for _, tt := range tests {
		_, err := New(tt.accounts, Options{})
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: New error %v, want prefix %q", tt.name, err, tt.want)
		}
	}
	if err := func() error { _, err := New(nil, Options{}); return err }(); err != nil {
		t.Errorf("New with no accounts: %v", err)
	}
}

func TestConcurrentLogins(t *testing.T) {
	f := newFixture(t, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Go(func() {
			user, pass := "alice", f.alicePass
			if i%2 == 1 {
				user, pass = "bob@example.org", "wrong"
			}
			mb, err := f.r.Login(context.Background(), user, pass)
			if i%2 == 1 != errors.Is(err, proxy.ErrAuthFailed) {
				errs <- err
				return
			}
			if mb != nil {
				mb.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent login: %v", err)
	}
	if n := f.alice.count(); n != 20 {
		t.Errorf("alice's backend saw %d logins, want 20", n)
	}
}

// passBackend accepts one password itself, as an upstream login would.
type passBackend struct {
	fakeBackend
	pass string
	seen []string // passwords received
}

func (b *passBackend) OpenMaildrop(ctx context.Context, login backends.Login) (proxy.Mailbox, error) {
	b.seen = append(b.seen, login.Password)
	if login.Password != b.pass {
		return nil, fmt.Errorf("upstream: %w", proxy.ErrAuthFailed)
	}
	return b.fakeBackend.OpenMaildrop(ctx, login)
}

func TestPassthrough(t *testing.T) {
	open := &passBackend{pass: "upstream secret"}
	gated := &passBackend{pass: "upstream secret"}
	r, err := New([]Account{
		{User: "carol", Passthrough: true, Backend: open},
		{User: "dave", Passthrough: true, PasswordHash: hash(t, "local", bcrypt.MinCost), Backend: gated},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.Login(ctx, "carol", "upstream secret"); err != nil {
		t.Errorf("passthrough login: %v", err)
	}
	if _, err := r.Login(ctx, "carol", "wrong"); !errors.Is(err, proxy.ErrAuthFailed) {
		t.Errorf("passthrough with a password the backend rejects: %v", err)
	}
	if !reflect.DeepEqual(open.seen, []string{"upstream secret", "wrong"}) {
		t.Errorf("backend got passwords %q", open.seen)
	}
	// With a hash, the hash is checked first.
	if _, err := r.Login(ctx, "dave", "upstream secret"); !errors.Is(err, proxy.ErrAuthFailed) || len(gated.seen) != 0 {
		t.Errorf("passthrough with a hash and the wrong local password: %v, backend saw %q", err, gated.seen)
	}
	if _, err := r.Login(ctx, "dave", "local"); !errors.Is(err, proxy.ErrAuthFailed) || len(gated.seen) != 1 {
		t.Errorf("passthrough with a hash: %v, backend saw %q", err, gated.seen)
	}
	// Only passthrough accounts may go without a hash.
	if _, err := New([]Account{{User: "erin", Backend: open}}, Options{}); err == nil {
		t.Error("New accepted an account without a hash")
	}
}

// topBackend's mailboxes have a TOP fast path.
type topBackend struct{}

type topMailboxFake struct{ fakeMailbox }

func (m *topMailboxFake) OpenTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(fmt.Sprintf("top %s %d", uid, lines))), nil
}

func (b *topBackend) OpenMaildrop(ctx context.Context, _ backends.Login) (proxy.Mailbox, error) {
	return &topMailboxFake{}, nil
}

func TestBackendMailboxUnwraps(t *testing.T) {
	r, err := New([]Account{
		{User: "top", PasswordHash: hash(t, "pw", bcrypt.MinCost), Backend: &topBackend{}},
		{User: "plain", PasswordHash: hash(t, "pw", bcrypt.MinCost), Backend: &fakeBackend{}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := r.Login(context.Background(), "top", "pw")
	if err != nil {
		t.Fatal(err)
	}
	u, ok := mb.(proxy.Unwrapper)
	if !ok {
		t.Fatalf("%T has no Unwrap", mb)
	}
	to, ok := u.Unwrap().(proxy.TopOpener)
	if !ok {
		t.Fatalf("%T unwraps to %T, not the backend's TopOpener", mb, u.Unwrap())
	}
	if _, ok := mb.(proxy.MaildropIDer); !ok {
		t.Fatalf("%T is no MaildropIDer", mb)
	}
	rc, err := to.OpenTop(context.Background(), "u1", 3)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(rc); string(b) != "top u1 3" {
		t.Fatalf("OpenTop through the wrapper: %q", b)
	}
	mb, err = r.Login(context.Background(), "plain", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mb.(proxy.Unwrapper).Unwrap().(proxy.TopOpener); ok {
		t.Fatalf("%T claims a TopOpener its backend lacks", mb)
	}
}

// TestAuthenticate checks the check on its own, as a listener other than
// POP3 uses it: it opens nothing, and it hands the password on only for a
// passthrough account.
func TestAuthenticate(t *testing.T) {
	open := &passBackend{pass: "upstream secret"}
	gated := &passBackend{pass: "upstream secret"}
	local := &fakeBackend{}
	r, err := New([]Account{
		{User: "alice", PasswordHash: hash(t, "pw", bcrypt.MinCost), Backend: local},
		{User: "carol", Passthrough: true, Backend: open},
		{User: "dave", Passthrough: true, PasswordHash: hash(t, "local", bcrypt.MinCost), Backend: gated},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tt := range []struct {
		user, pass string
		want       backends.Login
		ok         bool
	}{
		{"alice", "pw", backends.Login{User: "alice"}, true},
		{"alice", "wrong", backends.Login{}, false},
		{"mallory", "pw", backends.Login{}, false},
		// Not verified here: the upstream does when the maildrop opens.
		{"carol", "anything", backends.Login{User: "carol", Password: "anything"}, true},
		{"dave", "local", backends.Login{User: "dave", Password: "local"}, true},
		{"dave", "upstream secret", backends.Login{}, false},
	} {
		got, err := r.Authenticate(ctx, tt.user, tt.pass)
		if tt.ok && (err != nil || got != tt.want) {
			t.Errorf("Authenticate(%q, %q) = %v, %v; want %v", tt.user, tt.pass, got, err, tt.want)
		}
		if !tt.ok && (!errors.Is(err, proxy.ErrAuthFailed) || got != (backends.Login{})) {
			t.Errorf("Authenticate(%q, %q) = %v, %v; want ErrAuthFailed", tt.user, tt.pass, got, err)
		}
	}
	if n := local.count() + len(open.seen) + len(gated.seen); n != 0 {
		t.Errorf("Authenticate opened %d maildrops", n)
	}

	// Through Login, a password reaches only a passthrough account's backend.
	if _, err := r.Login(ctx, "alice", "pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Login(ctx, "carol", "upstream secret"); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(local.passwords, []string{""}) || !reflect.DeepEqual(open.passwords, []string{"upstream secret"}) {
		t.Errorf("passwords the backends got: local %q, passthrough %q", local.passwords, open.passwords)
	}
}
