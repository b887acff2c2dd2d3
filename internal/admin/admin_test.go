package admin

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/cache"
)

func TestLoginAndOverview(t *testing.T) {
	f := newFixture(t, nil)
	w := f.do(http.MethodGet, "/", nil)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login" {
		t.Fatalf("GET / signed out: %d %q, want 303 to /login", w.Code, w.Header().Get("Location"))
	}
	w = f.do(http.MethodGet, "/login", nil)
	mustContain(t, "login form", w, http.StatusOK, `name="password"`)
	for k, v := range map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'",
		"X-Frame-Options":         "DENY",
		"X-Content-Type-Options":  "nosniff",
		"Cache-Control":           "no-store",
		"Content-Type":            "text/html; charset=utf-8",
	} {
		if got := w.Header().Get(k); !strings.HasPrefix(got, v) {
			t.Fatalf("%s: %q, want %q", k, got, v)
		}
	}
	if strings.Contains(w.Header().Get("Content-Security-Policy"), "unsafe-inline") || !strings.Contains(w.Header().Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", w.Header().Get("Content-Security-Policy"))
	}
	if regexp.MustCompile(`<script>|style="|onclick=`).MatchString(w.Body.String()) {
		t.Fatalf("inline script or style in the page:\n%s", w.Body)
	}

	// The embedded assets, served without a session.
	for path, ct := range map[string]string{"/static/app.js": "text/javascript", "/static/app.css": "text/css"} {
		w := f.do(http.MethodGet, path, nil)
		if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), ct) || w.Body.Len() < 500 {
			t.Fatalf("%s: %d %q (%d bytes)", path, w.Code, w.Header().Get("Content-Type"), w.Body.Len())
		}
	}

	w = f.do(http.MethodPost, "/login", url.Values{"password": {"wrong"}})
	mustContain(t, "wrong password", w, http.StatusUnauthorized, "Wrong password.")
	if len(w.Result().Cookies()) != 0 {
		t.Fatal("a failed login set a cookie")
	}

	f.login()
	c := f.cookie
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" || len(c.Value) != 64 {
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict, not Secure over plain HTTP, Path=/, 32 random bytes", c)
	}
	w = f.do(http.MethodGet, "/", nil)
	mustContain(t, "overview", w, http.StatusOK,
		"alice@example.org", "gmail (Gmail API)", "1234 messages, 56.0 MiB, 2 hidden", "Valid until ",
		`<progress class="sync-bar" max="1200" value="300">25%</progress>`, "300 of 1200",
		"bob@example.org", "The upstream refused the password.", "10 messages, 2.0 KiB",
		"carol@example.com", "Re-authorization needed", ">Re-authorize</button>",
		`<dd class="sessions">1</dd>`)
	if strings.Count(w.Body.String(), `action="/connect"`) != 2 {
		t.Fatalf("want a connect button for the two OAuth2 accounts only:\n%s", w.Body)
	}
	t.Logf("web: overview: 3 accounts with backend, logins, cache, grant state, last error, sync progress bar, sessions")

	// The progress JSON for app.js.
	w = f.do(http.MethodGet, "/progress", nil)
	var prog []progressJSON
	if err := json.Unmarshal(w.Body.Bytes(), &prog); err != nil || len(prog) != 3 || prog[0] != (progressJSON{"alice@example.org", true, 300, 1200}) {
		t.Fatalf("progress %s: %v", w.Body, err)
	}

	// Sign out: the session is gone server-side.
	old := f.cookie
	w = f.post("/logout", nil)
	if w.Code != http.StatusSeeOther {
		t.Fatalf("logout %d", w.Code)
	}
	f.cookie = old
	if w = f.do(http.MethodGet, "/", nil); w.Code != http.StatusSeeOther {
		t.Fatalf("the old cookie still works after sign-out: %d", w.Code)
	}
}

func TestSessionExpires(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.SessionTTL = time.Hour })
	f.login()
	f.advance(59 * time.Minute)
	if w := f.do(http.MethodGet, "/", nil); w.Code != http.StatusOK {
		t.Fatalf("before expiry: %d", w.Code)
	}
	f.advance(2 * time.Minute)
	if w := f.do(http.MethodGet, "/", nil); w.Code != http.StatusSeeOther {
		t.Fatalf("after expiry: %d, want 303 to the login form", w.Code)
	}
	if w := f.post("/test", url.Values{"a": {"alice@example.org"}}); w.Code != http.StatusUnauthorized {
		t.Fatalf("POST after expiry: %d, want 401", w.Code)
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t, nil)
	check := func(what string, w *httptest.ResponseRecorder, code int, text string) {
		t.Helper()
		got := html.UnescapeString(w.Body.String())
		if w.Code != code || !strings.Contains(got, text) {
			t.Fatalf("%s: %d %q, want %d with %q", what, w.Code, got, code, text)
		}
		t.Logf("web: refused %s: %d", what, code)
	}

	// Before signing in.
	check("POST without a session", f.do(http.MethodPost, "/test", url.Values{"a": {"alice@example.org"}}), http.StatusUnauthorized, "Not signed in")
	check("a Host not on the allow-list", f.do(http.MethodGet, "/login", nil, func(r *http.Request) { r.Host = "evil.example:8025" }), http.StatusMisdirectedRequest, "only under the names")
	check("the allowed name on another port", f.do(http.MethodGet, "/login", nil, func(r *http.Request) { r.Host = "admin.test:9999" }), http.StatusMisdirectedRequest, "only under the names")
	if w := f.do(http.MethodGet, "/login", nil, func(r *http.Request) { r.Host = "localhost:1234" }); w.Code != http.StatusOK {
		t.Fatalf("a bare name on the list must match any port: %d", w.Code)
	}
	check("plain HTTP from a disallowed address", f.do(http.MethodGet, "/login", nil, func(r *http.Request) { r.RemoteAddr = "192.168.1.20:5000" }), http.StatusForbidden, "plain HTTP is not allowed")

	f.login()
	form := func() url.Values { return url.Values{"a": {"alice@example.org"}} }
	check("cross-site POST (Sec-Fetch-Site)", f.post("/test", form(), func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }), http.StatusForbidden, "sent from another site")
	check("same-site POST from another port", f.post("/test", form(), func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-site") }), http.StatusForbidden, "sent from another site")
	check("POST with a foreign Origin", f.post("/test", form(), func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }), http.StatusForbidden, "sent from another site")
	check("POST without the form token", f.do(http.MethodPost, "/test", form()), http.StatusForbidden, "form is stale")
	check("POST with another form token", f.do(http.MethodPost, "/forget", url.Values{"a": {"alice@example.org"}, "csrf": {strings.Repeat("0", 64)}}), http.StatusForbidden, "form is stale")
	check("GET of an unknown account", f.do(http.MethodGet, "/account?a=nobody", nil), http.StatusNotFound, "no account with that name")
	check("connect of an account without OAuth2", f.post("/connect", url.Values{"a": {"bob@example.org"}}), http.StatusBadRequest, "does not log in with OAuth2")
	if len(f.app.forgot) != 0 {
		t.Fatalf("a refused POST forgot %v", f.app.forgot)
	}
	// The same POST from the page itself passes.
	if w := f.post("/test", form(), func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-origin") }); w.Code != http.StatusOK {
		t.Fatalf("same-origin POST: %d %s", w.Code, w.Body)
	}

	// Cleartext allowed from a LAN address by the policy hook.
	lan := netip.MustParsePrefix("192.168.1.0/24")
	g := newFixture(t, func(o *Options) { o.Cleartext = lan.Contains })
	if w := g.do(http.MethodGet, "/login", nil, func(r *http.Request) { r.RemoteAddr = "192.168.1.20:5000" }); w.Code != http.StatusOK {
		t.Fatalf("plain HTTP from an allowed LAN address: %d", w.Code)
	}
	check("plain HTTP from loopback when only the LAN is allowed", g.do(http.MethodGet, "/login", nil), http.StatusForbidden, "plain HTTP is not allowed")
}

func TestLoginRateLimit(t *testing.T) {
	f := newFixture(t, nil)
	var codes []int
	for range 6 {
		codes = append(codes, f.do(http.MethodPost, "/login", url.Values{"password": {"guess"}}).Code)
	}
	want := []int{401, 401, 401, 401, 401, 429}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	w := f.do(http.MethodPost, "/login", url.Values{"password": {testPassword}})
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Fatalf("the right password while blocked: %d (Retry-After %q), want 429", w.Code, w.Header().Get("Retry-After"))
	}
	// Another address may still try.
	other := func(r *http.Request) { r.RemoteAddr = "[::1]:5000" }
	if w := f.do(http.MethodPost, "/login", url.Values{"password": {testPassword}}, other); w.Code != http.StatusSeeOther {
		t.Fatalf("another address: %d", w.Code)
	}
	f.advance(time.Minute)
	if w := f.do(http.MethodPost, "/login", url.Values{"password": {testPassword}}); w.Code != http.StatusSeeOther {
		t.Fatalf("a minute later: %d", w.Code)
	}
	t.Logf("web: login attempts %v, right password while blocked 429, another address and a minute later signed in", codes)

	// The global cap: failures spread over many addresses.
	g := newFixture(t, nil)
	g.s.opt.Cleartext = func(netip.Addr) bool { return true }
	for i := range allFailures {
		addr := fmt.Sprintf("10.0.%d.%d:1000", i/250, i%250+1)
		if w := g.do(http.MethodPost, "/login", url.Values{"password": {"guess"}}, func(r *http.Request) { r.RemoteAddr = addr }); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, w.Code)
		}
	}
	if w := g.do(http.MethodPost, "/login", url.Values{"password": {testPassword}}, func(r *http.Request) { r.RemoteAddr = "10.9.9.9:1000" }); w.Code != http.StatusTooManyRequests {
		t.Fatalf("after %d failures from many addresses, a new address: %d, want 429", allFailures, w.Code)
	}
	t.Logf("web: global cap: after %d failures from %d addresses a new address gets 429", allFailures, allFailures)
}

func TestTLSCookie(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.TLS = true })
	f.s.opt.Cleartext = func(netip.Addr) bool { return false } // TLS: the policy does not apply
	f.login()
	c := f.cookie
	if c.Name != "__Host-popbridge-admin" || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie under TLS %+v", c)
	}
	if w := f.do(http.MethodGet, "/", nil); w.Header().Get("Strict-Transport-Security") == "" || w.Code != http.StatusOK {
		t.Fatalf("TLS overview %d, HSTS %q", w.Code, w.Header().Get("Strict-Transport-Security"))
	}
}

func TestTestAccount(t *testing.T) {
	f := newFixture(t, nil)
	f.login()
	w := f.post("/test", url.Values{"a": {"alice@example.org"}})
	mustContain(t, "test ok", w, http.StatusOK, `id="result" class="ok"`, "Logged in upstream; 3 messages, 12 KiB.")
	w = f.post("/test", url.Values{"a": {"bob@example.org"}})
	mustContain(t, "test failing", w, http.StatusOK, `id="result" class="error"`, "the upstream refused the password: check the account")
	t.Logf("web: test action: ok and failing accounts reported in plain words")
}

func TestForgetCache(t *testing.T) {
	f := newFixture(t, nil)
	f.login()
	w := f.do(http.MethodGet, "/forget?a=alice@example.org", nil)
	mustContain(t, "confirmation", w, http.StatusOK,
		"The cache holds for alice@example.org: 1234 message records (56.0 MiB) and 2 hidden messages.",
		"learnt again from the upstream at the next login or sync", "The UIDLs come back the same",
		"show again", "OAuth2 grant, the mail upstream and the configuration are not touched", `action="/forget"`)
	if len(f.app.forgot) != 0 {
		t.Fatal("the confirmation page forgot already")
	}
	w = f.post("/forget", url.Values{"a": {"alice@example.org"}})
	mustContain(t, "forgotten", w, http.StatusOK, "is forgotten")
	if fmt.Sprint(f.app.forgot) != "[alice@example.org]" {
		t.Fatalf("forgot %v", f.app.forgot)
	}
	f.app.forgetFn = func(string) error { return fmt.Errorf("cache: %w", cache.ErrInUse) }
	w = f.post("/forget", url.Values{"a": {"alice@example.org"}})
	mustContain(t, "in use", w, http.StatusConflict, "a mail client has a POP3 session open")
	f.app.forgetFn = func(string) error { return cache.ErrNoAccount }
	w = f.post("/forget", url.Values{"a": {"bob@example.org"}})
	mustContain(t, "empty", w, http.StatusOK, "there was nothing to forget")
	t.Logf("web: forget: confirmation says what comes back; done, refused while in use, nothing to forget")
}

func TestAccountLogs(t *testing.T) {
	f := newFixture(t, nil)
	log := zerolog.New(f.logs).With().Timestamp().Logger()
	log.Warn().Str("user", "bob@example.org").Str("remote", "192.0.2.7:1100").Msg("login failed")
	log.Info().Str("account", "alice@example.org").Msg("sync finished")
	log.Info().Msg("no account here")
	f.login()
	w := f.do(http.MethodGet, "/account?a=bob@example.org", nil)
	mustContain(t, "bob's logs", w, http.StatusOK, "WARN login failed remote=192.0.2.7:1100")
	if strings.Contains(w.Body.String(), "sync finished") || strings.Contains(w.Body.String(), "no account here") {
		t.Fatalf("another account's lines on bob's page:\n%s", w.Body)
	}
	w = f.do(http.MethodGet, "/account?a=carol@example.com", nil)
	mustContain(t, "carol's logs", w, http.StatusOK, "No log lines for this account")
	t.Logf("web: account page shows the account's own log lines only")
}

func TestLogRing(t *testing.T) {
	l := &LogRing{PerAccount: 3, MaxAccounts: 2}
	log := zerolog.New(l)
	for i := range 5 {
		log.Info().Str("account", "a").Int("n", i).Msg("m")
	}
	if got := strings.Join(l.Lines("a"), "|"); got != "INFO m n=2|INFO m n=3|INFO m n=4" {
		t.Fatalf("ring %q", got)
	}
	log.Info().Str("user", "b").Msg("m")
	log.Info().Str("user", "c").Msg("m") // a is the least recent: dropped
	if l.Lines("a") != nil || len(l.Lines("b")) != 1 || len(l.Lines("c")) != 1 {
		t.Fatalf("after a third account: a %q b %q c %q", l.Lines("a"), l.Lines("b"), l.Lines("c"))
	}
	log.Info().Str("user", "d").Str("x", strings.Repeat("y", 5000)).Msg("m")
	if got := l.Lines("d")[0]; len(got) > maxLine+5 {
		t.Fatalf("a long line kept whole (%d bytes)", len(got))
	}
	n, err := l.Write([]byte("not json\n"))
	if n != 9 || err != nil {
		t.Fatalf("Write of a non-JSON line: %d, %v", n, err)
	}
}

// TestOverviewSending: the overview and the account page show each
// account's SMTP sending: the last send and the last send error, or why
// sending is not configured.
func TestOverviewSending(t *testing.T) {
	f := newFixture(t, nil)
	sent := time.Date(2026, 3, 4, 5, 6, 0, 0, time.Local)
	f.app.mu.Lock()
	f.app.accounts[0].LastSend = sent
	f.app.accounts[0].LastSendError = "The submission server refused the message."
	f.app.accounts[0].LastSendErrorAt = sent.Add(time.Hour)
	f.app.accounts[1].SendOff = "no send section: add one to send mail."
	f.app.mu.Unlock()
	f.login()
	w := f.do(http.MethodGet, "/", nil)
	mustContain(t, "overview", w, http.StatusOK,
		`<dd class="last-send">2026-03-04 05:06</dd>`,
		`<dd class="last-send-error bad">The submission server refused the message. (2026-03-04 06:06)</dd>`,
		`<dd class="last-send">Sending not configured: no send section: add one to send mail.</dd>`,
		`<dd class="last-send">never</dd>`)
	if n := strings.Count(w.Body.String(), `class="last-send-error`); n != 1 {
		t.Fatalf("%d send errors shown, want alice's only:\n%s", n, w.Body)
	}
	w = f.do(http.MethodGet, "/account?a=bob@example.org", nil)
	mustContain(t, "bob's page", w, http.StatusOK, "Sending not configured: no send section: add one to send mail.")
	t.Logf("web: overview shows the last send, the last send error and sending not configured")
}
