package admin

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

const testPassword = "correct horse"

// fakeApp plays the app behind the page: accounts, test, forget and
// the OAuth2 clients of the fake authorization server.
type fakeApp struct {
	mu       sync.Mutex
	accounts []Account
	forgot   []string
	forgetFn func(string) error
	clients  map[string]*oauth2.Config
	provider map[string]modes.Provider
}

func (a *fakeApp) Accounts(context.Context) []Account {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Account(nil), a.accounts...)
}

func (a *fakeApp) setSync(user string, p *proxy.SyncProgress) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range a.accounts {
		if a.accounts[i].User == user {
			a.accounts[i].Sync = p
		}
	}
}

func (a *fakeApp) Test(_ context.Context, account string) (string, error) {
	if account == "bob@example.org" {
		return "", errors.New("the upstream refused the password: check the account's password in the configuration")
	}
	return "Logged in upstream; 3 messages, 12 KiB.", nil
}

func (a *fakeApp) Forget(_ context.Context, account string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.forgetFn != nil {
		if err := a.forgetFn(account); err != nil {
			return err
		}
	}
	a.forgot = append(a.forgot, account)
	return nil
}

func (a *fakeApp) OAuthClient(account string) (*oauth2.Config, modes.Provider, bool) {
	cfg, ok := a.clients[account]
	return cfg, a.provider[account], ok
}

type fixture struct {
	t     *testing.T
	s     *Server
	app   *fakeApp
	fake  *oauthtest.Server
	store *oauth.Store
	logs  *LogRing
	host  string
	now   time.Time
	nowMu sync.Mutex

	cookie *http.Cookie
	csrf   string
}

// newFixture makes a page with three accounts: alice (Google, OAuth2,
// a sync running), bob (plain IMAP, a last error) and carol
// (Microsoft, grant revoked). edit may change the options.
func newFixture(t *testing.T, edit func(*Options)) *fixture {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, fake: oauthtest.Start(t), store: &oauth.Store{Dir: t.TempDir()}, logs: &LogRing{}, host: "admin.test:8025", now: time.Now()}
	google, err := oauth.Config{Provider: modes.ProviderGoogle, ClientID: f.fake.ClientID, AuthURL: f.fake.AuthURL, TokenURL: f.fake.TokenURL}.OAuth2(oauth.Gmail)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := oauth.Config{Provider: modes.ProviderMicrosoft, ClientID: f.fake.ClientID, AuthURL: f.fake.AuthURL, TokenURL: f.fake.TokenURL, DeviceURL: f.fake.DeviceURL}.OAuth2(oauth.IMAP)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	f.app = &fakeApp{
		accounts: []Account{
			{User: "alice@example.org", Backend: "gmail (Gmail API)", LastLogin: now.Add(-time.Hour), LastSync: now.Add(-2 * time.Minute),
				Token: &TokenState{Expiry: now.Add(40 * time.Minute)}, Cache: CacheStats{Messages: 1234, Bytes: 56 << 20, Tombstones: 2},
				Sync: &proxy.SyncProgress{Running: true, Done: 300, Total: 1200, Started: now.Add(-time.Minute)}, Sessions: 1},
			{User: "bob@example.org", Backend: "imap imap.example.org:993", LastError: "The upstream refused the password.", LastErrorAt: now.Add(-5 * time.Minute),
				Cache: CacheStats{Messages: 10, Bytes: 2048}},
			{User: "carol@example.com", Backend: "imap outlook.office365.com:993 (XOAUTH2)", Token: &TokenState{Reauth: true, Err: "the grant was revoked"}},
		},
		clients:  map[string]*oauth2.Config{"alice@example.org": google, "carol@example.com": ms},
		provider: map[string]modes.Provider{"alice@example.org": modes.ProviderGoogle, "carol@example.com": modes.ProviderMicrosoft},
	}
	log := zerolog.New(f.logs)
	opt := Options{
		PasswordHash: hash,
		Hosts:        []string{"admin.test:8025", "localhost"},
		Accounts:     f.app, Tester: f.app, Forgetter: f.app, Logs: f.logs,
		OAuth: f.app, Tokens: f.store,
		Log: &log,
		Now: func() time.Time { f.nowMu.Lock(); defer f.nowMu.Unlock(); return f.now },
	}
	if edit != nil {
		edit(&opt)
	}
	s, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	f.s = s
	return f
}

func (f *fixture) advance(d time.Duration) {
	f.nowMu.Lock()
	defer f.nowMu.Unlock()
	f.now = f.now.Add(d)
}

// do sends one request from 127.0.0.1 with the fixture's Host and
// session cookie; mod changes it before it is sent.
func (f *fixture) do(method, target string, form url.Values, mod ...func(*http.Request)) *httptest.ResponseRecorder {
	f.t.Helper()
	var r *http.Request
	if form != nil {
		r = httptest.NewRequest(method, target, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		r = httptest.NewRequest(method, target, nil)
	}
	r.Host = f.host
	r.RemoteAddr = "127.0.0.1:40000"
	if f.cookie != nil {
		r.AddCookie(f.cookie)
	}
	for _, m := range mod {
		m(r)
	}
	w := httptest.NewRecorder()
	f.s.ServeHTTP(w, r)
	return w
}

// post sends a form with the session's token.
func (f *fixture) post(target string, form url.Values, mod ...func(*http.Request)) *httptest.ResponseRecorder {
	f.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf", f.csrf)
	return f.do(http.MethodPost, target, form, mod...)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// login signs in and keeps the cookie and the form token.
func (f *fixture) login() {
	f.t.Helper()
	w := f.do(http.MethodPost, "/login", url.Values{"password": {testPassword}})
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		f.t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	for _, c := range w.Result().Cookies() {
		if c.Name == f.s.cookieName() {
			f.cookie = c
		}
	}
	if f.cookie == nil {
		f.t.Fatal("login set no session cookie")
	}
	w = f.do(http.MethodGet, "/", nil)
	m := csrfField.FindStringSubmatch(w.Body.String())
	if m == nil {
		f.t.Fatalf("overview has no form token: %s", w.Body)
	}
	f.csrf = m[1]
}

func mustContain(t *testing.T, what string, w *httptest.ResponseRecorder, code int, subs ...string) {
	t.Helper()
	if w.Code != code {
		t.Fatalf("%s: status %d, want %d: %s", what, w.Code, code, w.Body)
	}
	body := w.Body.String()
	for _, s := range subs {
		if !strings.Contains(body, s) {
			t.Fatalf("%s: the page lacks %q:\n%s", what, s, body)
		}
	}
}

// fetchCode plays the owner's browser on another machine: it opens the
// authorization URL and returns where the provider sent it, without
// following the redirect.
func fetchCode(t *testing.T, authURL string) string {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %s", resp.Status)
	}
	return resp.Header.Get("Location")
}
