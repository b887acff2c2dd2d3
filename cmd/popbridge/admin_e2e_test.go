package main

import (
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/dovecottest"
)

// webClient is a browser without a browser: it keeps the admin page's
// session cookie and sends each form with the page's form token.
type webClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

var (
	webCSRF    = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	webAuthURL = regexp.MustCompile(`id="auth-url" href="([^"]+)"`)
	webFlowID  = regexp.MustCompile(`name="id" value="([^"]+)"`)
)

// do sends req and returns the code, the final URL and the unescaped body.
func (w *webClient) do(req *http.Request, err error) (int, string, string) {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
	resp, err := w.c.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Request.URL.String(), html.UnescapeString(string(b))
}

func (w *webClient) get(path string) (int, string, string) {
	return w.do(http.NewRequest("GET", w.base+path, nil))
}

// post sends form to path with the form token of page.
func (w *webClient) post(path, page string, form url.Values) (int, string, string) {
	w.t.Helper()
	if m := webCSRF.FindStringSubmatch(page); m != nil {
		form.Set("csrf", m[1])
	}
	req, err := http.NewRequest("POST", w.base+path, strings.NewReader(form.Encode()))
	if req != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return w.do(req, err)
}

// TestServeAdminReauthorize runs popbridge serve with listen.admin and a
// gmail account whose grant the provider revoked: the client gets the
// re-auth error, the admin page says "Re-authorization needed", the owner
// re-authorizes through the page's paste-back flow (as when the browser
// runs elsewhere), and the next POP3 login works without a restart.
func TestServeAdminReauthorize(t *testing.T) {
	tokens := oauthtest.Start(t)
	fake := gmailtest.Start(t)
	fake.SetValidToken(tokens.ValidAccess)
	fake.Add([]byte("From: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n"), "INBOX")

	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
  admin: 127.0.0.1:0
log: {format: json}
state_dir: state
admin:
  password_hash: %[1]q
accounts:
  - user: gina
    password_hash: %[1]q
    backend:
      type: gmail
      api_endpoint: %[2]s
      oauth2:
        provider: custom
        client_id: %[3]s
        auth_url: %[4]s
        token_url: %[5]s
        scopes: [https://www.googleapis.com/auth/gmail.modify]
`, testHash(t), fake.Endpoint(), tokens.ClientID, tokens.AuthURL, tokens.TokenURL)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir)}
	at, rt, exp := tokens.Issue()
	if err := store.Save("gina", &oauth2.Token{AccessToken: at, RefreshToken: rt, Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	tokens.RevokeAccess()
	tokens.RevokeAll()

	_, stderr, stop := startRun(t, "serve", "-config", path)
	addr := listenerAddr(t, stderr, "pop3")
	adminAddr := listenerAddr(t, stderr, "admin")
	pass := func() string {
		p := dialPOP3(t, addr)
		p.cmd("USER gina")
		r := p.cmd("PASS s3cret")
		if strings.HasPrefix(r, "+OK") {
			if s := p.cmd("STAT"); !strings.HasPrefix(s, "+OK 1 ") {
				t.Fatalf("STAT: %q", s)
			}
		}
		p.cmd("QUIT")
		return r
	}
	if r := pass(); r != oauthtest.GrantText {
		t.Fatalf("PASS with the grant revoked: %q\n%s", r, stderr)
	}

	w := &webClient{t: t, base: "http://" + adminAddr, c: &http.Client{Jar: must(cookiejar.New(nil)), Timeout: 30 * time.Second}}
	if code, at, _ := w.get("/"); code != http.StatusOK || !strings.HasSuffix(at, "/login") {
		t.Fatalf("GET / without a session: %d at %s", code, at)
	}
	code, at0, body := w.post("/login", "", url.Values{"password": {"s3cret"}})
	if code != http.StatusOK || !strings.HasSuffix(at0, "/") || !strings.Contains(body, `id="acct-gina"`) {
		t.Fatalf("sign-in: %d at %s\n%s", code, at0, body)
	}
	if !strings.Contains(body, "Re-authorization needed") || !strings.Contains(body, "re-authorize the account") {
		t.Fatalf("the overview does not say the grant is gone:\n%s", body)
	}
	t.Logf("web: serve: grant revoked: the overview says %q", "Re-authorization needed")

	code, flowURL, body := w.post("/connect", body, url.Values{"a": {"gina"}})
	m := webAuthURL.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		t.Fatalf("connect: %d at %s\n%s", code, flowURL, body)
	}
	// The browser, elsewhere, grants access and ends on the loopback
	// redirect; the owner pastes that address into the page.
	final := browserRedirect(t, m[1])
	if !strings.Contains(final, "code=") {
		t.Fatalf("the provider's redirect: %q", final)
	}
	id := webFlowID.FindStringSubmatch(body)
	if id == nil {
		t.Fatalf("no flow id on the page:\n%s", body)
	}
	code, _, body = w.post("/flow/paste", body, url.Values{"id": {id[1]}, "url": {final}})
	if code != http.StatusOK || !strings.Contains(body, `id="flow-result" class="ok"`) {
		t.Fatalf("paste: %d\n%s", code, body)
	}
	t.Logf("web: serve: re-authorized through the page's paste-back flow")

	if r := pass(); r != "+OK Logged in." {
		t.Fatalf("PASS after the page's re-authorization: %q\n%s", r, stderr)
	}
	if _, _, body = w.get("/"); strings.Contains(body, "Re-authorization needed") || !strings.Contains(body, "Valid until") {
		t.Errorf("the overview after the grant:\n%s", body)
	}
	t.Logf("web: serve: the next POP3 login works with the new grant, no restart; the overview says Valid until")
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	log := stderr.String()
	for _, secret := range []string{rt, at, "s3cret"} {
		if strings.Contains(log, secret) {
			t.Fatalf("a secret appears in the log")
		}
	}
}

// TestServeAdminDeviceCode runs popbridge serve with listen.admin and a
// Microsoft-style IMAP account (XOAUTH2 at a private Dovecot that checks
// tokens at the fake provider) that has no grant yet: the owner connects
// it from the page with the device code, approves the code on the
// provider's page, the page says the grant is saved, and the next POP3
// login works.
func TestServeAdminDeviceCode(t *testing.T) {
	tokens := oauthtest.Start(t)
	tokens.Username = "alice"
	tokens.DevicePending = 1000 // until the code is approved
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"alice": "pw"}, OAuth2IntrospectURL: tokens.IntrospectURL})

	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
  admin: 127.0.0.1:0
log: {format: json}
state_dir: state
admin:
  password_hash: %[1]q
accounts:
  - user: mia
    password_hash: %[1]q
    backend:
      type: imap
      addr: %[2]s
      tls: none
      auth: xoauth2
      username: alice
      oauth2:
        provider: microsoft
        client_id: %[3]s
        token_url: %[4]s
        device_url: %[5]s
`, testHash(t), d.IMAPAddr, tokens.ClientID, tokens.TokenURL, tokens.DeviceURL)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop := startRun(t, "serve", "-config", path)
	addr := listenerAddr(t, stderr, "pop3")
	pass := func() string {
		p := dialPOP3(t, addr)
		p.cmd("USER mia")
		r := p.cmd("PASS s3cret")
		p.cmd("QUIT")
		return r
	}
	if r := pass(); !strings.HasPrefix(r, "-ERR [SYS/PERM]") {
		t.Fatalf("PASS without a grant: %q\n%s", r, stderr)
	}

	w := &webClient{t: t, base: "http://" + listenerAddr(t, stderr, "admin"), c: &http.Client{Jar: must(cookiejar.New(nil)), Timeout: 30 * time.Second}}
	code, _, body := w.post("/login", "", url.Values{"password": {"s3cret"}})
	if code != http.StatusOK || !strings.Contains(body, `id="acct-mia"`) {
		t.Fatalf("sign-in: %d\n%s", code, body)
	}
	code, flowURL, body := w.post("/connect", body, url.Values{"a": {"mia"}})
	userCode := regexp.MustCompile(`id="user-code">([^<]+)<`).FindStringSubmatch(body)
	verify := regexp.MustCompile(`id="verify-uri" href="([^"]+)"`).FindStringSubmatch(body)
	if code != http.StatusOK || userCode == nil || verify == nil {
		t.Fatalf("connect: %d at %s\n%s", code, flowURL, body)
	}
	t.Logf("web: serve: device code %s shown with its link", userCode[1])
	// The owner enters the code on the provider's page, on any device.
	resp, err := http.PostForm(verify[1], url.Values{"user_code": {userCode[1]}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	flowPath := strings.TrimPrefix(flowURL, w.base)
	waitFor(t, "the page to say the grant is saved", func() string {
		if _, _, body = w.get(flowPath); strings.Contains(body, `id="flow-result"`) {
			return "done"
		}
		time.Sleep(200 * time.Millisecond)
		return ""
	})
	if !strings.Contains(body, `id="flow-result" class="ok"`) {
		t.Fatalf("device flow:\n%s", body)
	}
	if r := pass(); r != "+OK Logged in." {
		t.Fatalf("PASS after connecting from the page: %q\n%s", r, stderr)
	}
	t.Logf("web: serve: Microsoft device code from the page, then POP3 login over XOAUTH2 at Dovecot works")
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
}
