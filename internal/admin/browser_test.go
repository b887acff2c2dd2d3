package admin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/internal/testpeer"
	"github.com/popbridge/popbridge/proxy"
)

// ScreenshotsEnv, set to 1, makes the browser test write its
// screenshots to docs/web/ (as well as to the test's artifact
// directory): POPBRIDGE_WEB_SCREENSHOTS=1 go test -run InBrowser ./internal/admin/
const screenshotsEnv = "POPBRIDGE_WEB_SCREENSHOTS"

// newBrowser starts headless Debian chromium for one test. Without
// chromium it skips, except under CI=true, where it fails.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	exe := os.Getenv("CHROMIUM")
	if exe == "" {
		exe, _ = exec.LookPath("chromium")
	}
	if exe == "" {
		testpeer.Missing(t, "chromium not found; install the Debian package chromium")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox, // root in a container: chromium refuses to start without it
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
		// Other names for the test servers: a cross-site origin and a
		// DNS-rebinding name.
		chromedp.Flag("host-resolver-rules", "MAP *.test 127.0.0.1"),
		// Its singleton socket directory (org.chromium.Chromium.*) goes
		// to TMPDIR and stays there: the test's own, removed after.
		chromedp.Env("TMPDIR="+t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute) // a loaded CI machine under -race
	t.Cleanup(func() { cancelTimeout(); cancelTab(); cancelAlloc() })
	start := time.Now()
	if err := chromedp.Do(ctx); err != nil { // starts the browser and opens the tab
		t.Fatal(err)
	}
	t.Logf("web: chromium started in %v", time.Since(start).Round(time.Millisecond))
	// A phone's width: the page must read there.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(412, 800)); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// browserFixture serves a fixture's page on 127.0.0.1.
func browserFixture(t *testing.T) (*fixture, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	f := newFixture(t, func(o *Options) { o.Hosts = append(o.Hosts, addr) })
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: f.s}}
	srv.Start()
	t.Cleanup(srv.Close)
	return f, "http://" + addr
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// text returns the text of the element with id, "" if there is none
// (or the page is changing).
func text(ctx context.Context, id string) string {
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.getElementById(%q) || {}).textContent || ""`, id)))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(s)
}

// waitText waits until js (a string expression) has a value containing
// want, across page loads.
func waitText(t *testing.T, ctx context.Context, js, want string) string {
	t.Helper()
	var got string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err == nil && strings.Contains(s, want) {
			return s
		}
		got = s
	}
	t.Fatalf("waited 20 s for %q in %s; last %q", want, js, got)
	return ""
}

// click clicks the element with id and waits for the next page.
func click(t *testing.T, ctx context.Context, id string) *network.Response {
	t.Helper()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID(id)))
	must(t, "click #"+id, err)
	return resp
}

// screenshot saves the page as name.png in the test's artifact
// directory, and in docs/web/ when POPBRIDGE_WEB_SCREENSHOTS=1.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must(t, "screenshot", err)
	dirs := []string{t.ArtifactDir()}
	if os.Getenv(screenshotsEnv) == "1" {
		dirs = append(dirs, filepath.Join("..", "..", "docs", "web"))
	}
	for _, d := range dirs {
		must(t, "screenshot", os.MkdirAll(d, 0o755))
		must(t, "screenshot", os.WriteFile(filepath.Join(d, name+".png"), png, 0o644))
	}
	t.Logf("web: screenshot %s.png (%d bytes)", name, len(png))
}

func TestAdminInBrowser(t *testing.T) {
	ctx := newBrowser(t)
	f, base := browserFixture(t)

	// Signed out: / goes to the login form.
	must(t, "navigate", chromedp.Do(ctx, chromedp.Navigate(base+"/")))
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || loc != base+"/login" {
		t.Fatalf("location %q, %v", loc, err)
	}
	screenshot(t, ctx, "login")
	must(t, "type the password", chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("password"), "wrong")))
	if resp := click(t, ctx, "submit"); resp.Status != http.StatusUnauthorized || text(ctx, "error") != "Wrong password." {
		t.Fatalf("wrong password: %d %q", resp.Status, text(ctx, "error"))
	}
	must(t, "type the password", chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("password"), testPassword)))
	if resp := click(t, ctx, "submit"); resp.Status != http.StatusOK || text(ctx, "title") != "Accounts" {
		t.Fatalf("login: %d, title %q", resp.Status, text(ctx, "title"))
	}

	// The cookie as chromium keeps it, out of the script's reach.
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
	must(t, "cookies", err)
	if len(cookies.Cookies) != 1 {
		t.Fatalf("cookies %d, want 1", len(cookies.Cookies))
	}
	c := cookies.Cookies[0]
	if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Secure {
		t.Fatalf("cookie %s: HttpOnly %v SameSite %q Secure %v", c.Name, c.HTTPOnly, c.SameSite, c.Secure)
	}
	dc, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	if err != nil || dc != "" {
		t.Fatalf("document.cookie %q, %v", dc, err)
	}
	// app.js ran under the CSP.
	js, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.dataset.js || ""`))
	if err != nil || js != "on" {
		t.Fatalf("app.js did not run: %q, %v", js, err)
	}
	t.Logf("web: signed in; cookie HttpOnly, SameSite=Strict, not Secure over http, hidden from document.cookie; app.js ran under the CSP")

	// The overview, and the progress bar moving without a reload.
	count := `(document.querySelector('section[data-user="alice@example.org"] .sync-count') || {}).textContent || ""`
	if got := waitText(t, ctx, count, "300 of 1200"); got != "300 of 1200" {
		t.Fatal(got)
	}
	for _, want := range []string{"gmail (Gmail API)", "1234 messages, 56.0 MiB, 2 hidden", "Re-authorization needed", "The upstream refused the password."} {
		waitText(t, ctx, `document.body.innerText`, want)
	}
	screenshot(t, ctx, "overview")
	f.app.setSync("alice@example.org", &proxy.SyncProgress{Running: true, Done: 900, Total: 1200})
	waitText(t, ctx, count, "900 of 1200")
	bar, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelector('section[data-user="alice@example.org"] progress').value`))
	if err != nil || bar != 900 {
		t.Fatalf("progress bar %d, %v", bar, err)
	}
	f.app.setSync("alice@example.org", &proxy.SyncProgress{Done: 1200, Total: 1200})
	waitText(t, ctx, `String(document.querySelectorAll("progress").length)`, "0")
	t.Logf("web: overview read; the progress bar moved 300 -> 900 of 1200 by app.js and left when the sync ended")

	// Google through the paste-back: the browser that grants access is
	// on another machine (a Go client here); the owner pastes its URL.
	must(t, "account page", chromedp.Do(ctx, chromedp.Navigate(base+"/account?a=alice@example.org")))
	if resp := click(t, ctx, "connect"); resp.Status != http.StatusOK {
		t.Fatalf("connect: %d", resp.Status)
	}
	authURL, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("auth-url").href`))
	must(t, "auth url", err)
	screenshot(t, ctx, "connect-google")
	final := fetchCode(t, authURL)
	must(t, "paste", chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("url"), final)))
	click(t, ctx, "paste")
	if got := text(ctx, "flow-result"); !strings.HasPrefix(got, "Connected: the new grant of alice@example.org is saved") {
		t.Fatalf("paste-back: %q", got)
	}
	tok, err := f.store.Load("alice@example.org")
	if err != nil || !f.fake.LiveRefreshToken(tok.RefreshToken) {
		t.Fatalf("stored %+v, %v", tok, err)
	}
	t.Logf("web: google connected through the paste-back form; grant in the token store")

	// Microsoft through the device code: the page shows the code and the
	// link; the owner opens the link, enters the code and approves; the
	// page follows the polling by itself.
	f.fake.DevicePending = 1000 // pending until approved
	must(t, "account page", chromedp.Do(ctx, chromedp.Navigate(base+"/account?a=carol@example.com")))
	click(t, ctx, "connect")
	code := text(ctx, "user-code")
	if code != "ABCD-EFGH" {
		t.Fatalf("user code %q", code)
	}
	verify, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("verify-uri").href`))
	if err != nil || verify != f.fake.URL+"/devicelogin" {
		t.Fatalf("verification link %q, %v", verify, err)
	}
	deviceFlow, _ := chromedp.Run(ctx, chromedp.Location())
	screenshot(t, ctx, "connect-microsoft")
	time.Sleep(1500 * time.Millisecond) // a poll or two while pending
	if st, _ := f.s.getFlowByURL(deviceFlow); st != flowPending {
		t.Fatalf("the device flow is %s before the approval", st)
	}
	must(t, "device login", chromedp.Do(ctx, chromedp.Navigate(verify), chromedp.SendKeys(chromedp.ID("user_code"), code)))
	click(t, ctx, "approve")
	if got := text(ctx, "result"); !strings.HasPrefix(got, "Approved") {
		t.Fatalf("device login: %q", got)
	}
	must(t, "back to the flow", chromedp.Do(ctx, chromedp.Navigate(deviceFlow)))
	waitText(t, ctx, `(document.getElementById("flow-result") || {}).textContent || ""`, "Connected: the new grant of carol@example.com is saved")
	if _, err := f.store.Load("carol@example.com"); err != nil {
		t.Fatal(err)
	}
	polls := f.fake.Polls()
	t.Logf("web: microsoft connected through the device code: code and link shown, approved at the link, %d polls (last %s)", len(polls), polls[len(polls)-1])

	// Re-authorize a revoked grant, the browser on the server itself: the
	// loopback redirect completes it, and the token source the backend
	// logs in with works again at its next use.
	at, rt, _ := f.fake.Issue()
	must(t, "save", f.store.Save("alice@example.org", &oauth2.Token{AccessToken: at, RefreshToken: rt, Expiry: time.Now().Add(-time.Minute)}))
	f.fake.RevokeAll()
	src := oauth.NewSource(context.Background(), "alice@example.org", f.app.clients["alice@example.org"], f.store, nil)
	if _, err := src.Token(); err == nil {
		t.Fatal("a revoked grant gave a token")
	}
	if _, reauth, _ := src.Status(); !reauth {
		t.Fatal("the revoked grant does not say re-auth")
	}
	must(t, "account page", chromedp.Do(ctx, chromedp.Navigate(base+"/account?a=alice@example.org")))
	click(t, ctx, "connect")
	authURL, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("auth-url").href`))
	must(t, "auth url", err)
	flowURL, _ := chromedp.Run(ctx, chromedp.Location())
	must(t, "authorize", chromedp.Do(ctx, chromedp.Navigate(authURL)))
	landed, _ := chromedp.Run(ctx, chromedp.Location())
	if !strings.HasPrefix(landed, "http://127.0.0.1:") || !strings.Contains(text2(ctx), "Connected") {
		t.Fatalf("loopback redirect landed on %q: %q", landed, text2(ctx))
	}
	must(t, "back to the flow", chromedp.Do(ctx, chromedp.Navigate(flowURL)))
	if got := text(ctx, "flow-result"); !strings.HasPrefix(got, "Connected") {
		t.Fatalf("flow page after the loopback redirect: %q", got)
	}
	tok2, err := src.Token()
	if err != nil || !f.fake.ValidAccess(tok2.AccessToken) {
		t.Fatalf("after re-authorizing: %v", err)
	}
	if _, reauth, err := src.Status(); reauth || err != nil {
		t.Fatalf("status after re-authorizing: reauth %v, %v", reauth, err)
	}
	t.Logf("web: revoked grant re-authorized through the loopback redirect; the token source's next login gets a valid access token")

	// Test and forget, with the confirmation.
	must(t, "account page", chromedp.Do(ctx, chromedp.Navigate(base+"/account?a=alice@example.org")))
	click(t, ctx, "test")
	waitText(t, ctx, `(document.getElementById("result") || {}).textContent || ""`, "Logged in upstream")
	must(t, "account page", chromedp.Do(ctx, chromedp.Navigate(base+"/account?a=alice@example.org")))
	screenshot(t, ctx, "account")
	click(t, ctx, "forget")
	if got := text(ctx, "what"); !strings.Contains(got, "1234 message records") {
		t.Fatalf("confirmation %q", got)
	}
	screenshot(t, ctx, "forget")
	click(t, ctx, "confirm")
	if got := text(ctx, "result"); !strings.Contains(got, "is forgotten") || len(f.app.forgot) != 1 {
		t.Fatalf("forget: %q, forgot %v", got, f.app.forgot)
	}
	t.Logf("web: test and forget (after its confirmation) from the account page")

	// Cross-site and same-site forms are refused; the session cookie
	// would go along from the same site, the Origin check stops it.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><form method="post" action="%s/forget"><input name="a" value="alice@example.org"><input name="csrf" value="guess"><button id="go">win a prize</button></form>`, base)
	}))
	defer evil.Close()
	_, evilPort, _ := net.SplitHostPort(strings.TrimPrefix(evil.URL, "http://"))
	for _, origin := range []string{"http://evil.test:" + evilPort, evil.URL} {
		must(t, "evil page", chromedp.Do(ctx, chromedp.Navigate(origin+"/")))
		resp := click(t, ctx, "go")
		if resp.Status != http.StatusForbidden || !strings.Contains(text2(ctx), "sent from another site") {
			t.Fatalf("form from %s: %d %q", origin, resp.Status, text2(ctx))
		}
		t.Logf("web: form POST from %s refused: %d", origin, resp.Status)
	}
	if len(f.app.forgot) != 1 {
		t.Fatalf("a cross-site form forgot: %v", f.app.forgot)
	}

	// DNS rebinding: the same server under a name not on the list.
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse("http://rebind.test:"+port+"/login"))
	if err != nil || resp.Status != http.StatusMisdirectedRequest {
		t.Fatalf("rebinding name: %v, %v", resp, err)
	}
	t.Logf("web: the page under a name not on the allow-list: %d", resp.Status)
}

// getFlowByURL returns the state of the flow of a /flow?id= URL.
func (s *Server) getFlowByURL(u string) (string, string) {
	_, id, _ := strings.Cut(u, "id=")
	s.mu.Lock()
	f := s.flows[id]
	s.mu.Unlock()
	if f == nil {
		return "", ""
	}
	return f.Status()
}

// text2 is the page's whole visible text.
func text2(ctx context.Context) string {
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	return s
}

// TestAdminWithoutJavaScript uses the page with scripts off: plain
// forms, and the device code page follows the polling by its meta
// refresh.
func TestAdminWithoutJavaScript(t *testing.T) {
	ctx := newBrowser(t)
	f, base := browserFixture(t)
	_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
	must(t, "scripts off", err)
	must(t, "navigate", chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.SendKeys(chromedp.ID("password"), testPassword)))
	if resp := click(t, ctx, "submit"); resp.Status != http.StatusOK {
		t.Fatalf("login: %d", resp.Status)
	}
	js, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.dataset.js || "off"`))
	if js != "off" {
		t.Fatalf("app.js ran with scripts off: %q", js)
	}
	waitText(t, ctx, `document.body.innerText`, "Syncing: 300 of 1200")

	must(t, "account page", chromedp.Do(ctx, chromedp.Navigate(base+"/account?a=bob@example.org")))
	click(t, ctx, "test")
	waitText(t, ctx, `(document.getElementById("result") || {}).textContent || ""`, "the upstream refused the password")

	must(t, "account page", chromedp.Do(ctx, chromedp.Navigate(base+"/account?a=carol@example.com")))
	click(t, ctx, "connect")
	waitText(t, ctx, `(document.getElementById("flow-result") || {}).textContent || ""`, "Connected: the new grant of carol@example.com is saved")
	if _, err := f.store.Load("carol@example.com"); err != nil {
		t.Fatal(err)
	}
	t.Logf("web: without JavaScript: sign-in, overview, test and the device code flow (meta refresh) work")
}
