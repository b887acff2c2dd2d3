package admin

import (
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

var authURLRe = regexp.MustCompile(`id="auth-url" href="([^"]+)"`)

// startFlow posts connect for account and returns the flow page.
func (f *fixture) startFlow(account string) (id, body string) {
	f.t.Helper()
	w := f.post("/connect", url.Values{"a": {account}})
	loc := w.Header().Get("Location")
	if w.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/flow?id=") {
		f.t.Fatalf("connect %s: %d %q %s", account, w.Code, loc, w.Body)
	}
	w = f.do(http.MethodGet, loc, nil)
	if w.Code != http.StatusOK {
		f.t.Fatalf("flow page: %d %s", w.Code, w.Body)
	}
	return strings.TrimPrefix(loc, "/flow?id="), w.Body.String()
}

func (f *fixture) flowStatus(id string) string {
	f.t.Helper()
	var st struct{ Status string }
	w := f.do(http.MethodGet, "/flow/status?id="+id, nil)
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		f.t.Fatalf("flow status %d %s: %v", w.Code, w.Body, err)
	}
	return st.Status
}

// waitFlow waits (at most 20 s) until the flow is no longer pending.
func (f *fixture) waitFlow(id string) string {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if st := f.flowStatus(id); st != flowPending {
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatal("the flow is still pending after 20 s")
	return ""
}

func (f *fixture) authURL(body string) string {
	f.t.Helper()
	m := authURLRe.FindStringSubmatch(body)
	if m == nil {
		f.t.Fatalf("no authorization link on the flow page:\n%s", body)
	}
	return html.UnescapeString(m[1])
}

func TestGoogleConnectPaste(t *testing.T) {
	f := newFixture(t, nil)
	f.login()
	id, body := f.startFlow("alice@example.org")
	au := f.authURL(body)
	u, _ := url.Parse(au)
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("access_type") != "offline" || q.Get("state") == "" {
		t.Fatalf("authorization URL without PKCE S256, offline access or state: %s", au)
	}
	if strings.Contains(body, q.Get("code_challenge")) && strings.Contains(body, "code_verifier") {
		t.Fatal("the page shows the PKCE verifier")
	}
	final := fetchCode(t, au)

	// A URL without a code, then one from another attempt: explained,
	// and the first leaves the flow pending.
	w := f.post("/flow/paste", url.Values{"id": {id}, "url": {"http://127.0.0.1:1/?foo=bar"}})
	mustContain(t, "paste without code", w, http.StatusBadRequest, "has no code=")
	if f.flowStatus(id) != flowPending {
		t.Fatal("a URL without a code ended the flow")
	}

	w = f.post("/flow/paste", url.Values{"id": {id}, "url": {final}})
	mustContain(t, "paste", w, http.StatusOK, "Connected: the new grant of alice@example.org is saved")
	tok, err := f.store.Load("alice@example.org")
	if err != nil || tok.RefreshToken == "" || !f.fake.LiveRefreshToken(tok.RefreshToken) {
		t.Fatalf("stored token %+v, %v", tok, err)
	}
	if strings.Contains(w.Body.String(), tok.AccessToken) || strings.Contains(w.Body.String(), tok.RefreshToken) {
		t.Fatal("a token is on the page")
	}
	for _, l := range f.logs.Lines("alice@example.org") {
		if strings.Contains(l, tok.RefreshToken) || strings.Contains(l, tok.AccessToken) {
			t.Fatalf("a token in the log: %s", l)
		}
	}
	// The same code again does nothing more: the flow is over.
	w = f.post("/flow/paste", url.Values{"id": {id}, "url": {final}})
	mustContain(t, "second paste", w, http.StatusOK, "Connected")
	t.Logf("web: google paste-back: PKCE S256 authorization, pasted final URL exchanged, grant saved to the token store")

	// A URL with the wrong state is refused in plain words, at the
	// paste form and at the loopback listener, and leaves the flow
	// pending.
	id2, body2 := f.startFlow("alice@example.org")
	final2 := fetchCode(t, f.authURL(body2))
	forged := strings.Replace(final2, "state=", "state=x", 1)
	w = f.post("/flow/paste", url.Values{"id": {id2}, "url": {forged}})
	mustContain(t, "forged state", w, http.StatusBadRequest, "does not match this authorization")
	resp, err := http.Get(forged)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || f.flowStatus(id2) != flowPending {
		t.Fatalf("forged state at the listener: %s, flow %s", resp.Status, f.flowStatus(id2))
	}
	w = f.post("/flow/paste", url.Values{"id": {id2}, "url": {final2}})
	mustContain(t, "paste after a forged one", w, http.StatusOK, "Connected")

	// Another session cannot see or finish the flow.
	cookie, csrf := f.cookie, f.csrf
	f.cookie, f.csrf = nil, ""
	f.login()
	g := f
	if w := g.do(http.MethodGet, "/flow?id="+id2, nil); w.Code != http.StatusNotFound {
		t.Fatalf("another session's flow: %d", w.Code)
	}
	f.cookie, f.csrf = cookie, csrf
	if w := f.do(http.MethodGet, "/flow?id="+id2, nil); w.Code != http.StatusOK {
		t.Fatalf("the own session's flow: %d", w.Code)
	}
}

func TestGoogleConnectLoopback(t *testing.T) {
	f := newFixture(t, nil)
	f.login()
	id, body := f.startFlow("alice@example.org")
	if !strings.Contains(body, "If the browser runs on this server") {
		t.Fatalf("no loopback hint:\n%s", body)
	}
	// The browser on the server follows the redirect to the listener.
	resp, err := http.Get(f.authURL(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Hostname() != "127.0.0.1" {
		t.Fatalf("loopback redirect: %s at %s", resp.Status, resp.Request.URL.Host)
	}
	if st := f.flowStatus(id); st != flowDone {
		t.Fatalf("flow %s after the loopback redirect", st)
	}
	if _, err := f.store.Load("alice@example.org"); err != nil {
		t.Fatal(err)
	}
	// The listener is closed once the flow is over.
	time.Sleep(100 * time.Millisecond)
	if _, err := http.Get(resp.Request.URL.String()); err == nil {
		t.Fatal("the loopback listener still answers after the flow")
	}
	t.Logf("web: google loopback: the redirect to 127.0.0.1 completed the flow, listener closed")

	// With the listener off, the page asks for the pasted URL only.
	g := newFixture(t, func(o *Options) { o.LoopbackAddr = "off" })
	g.login()
	_, body = g.startFlow("alice@example.org")
	if strings.Contains(body, "If the browser runs on this server") || !strings.Contains(body, "http://127.0.0.1/?code=") {
		t.Fatalf("LoopbackAddr off:\n%s", body)
	}
}

func TestMicrosoftDeviceCode(t *testing.T) {
	f := newFixture(t, nil)
	f.fake.DevicePending = 1
	f.login()
	id, body := f.startFlow("carol@example.com")
	for _, s := range []string{`id="user-code">ABCD-EFGH<`, f.fake.URL + "/devicelogin", `<meta http-equiv="refresh" content="3">`} {
		if !strings.Contains(body, s) {
			t.Fatalf("device flow page lacks %q:\n%s", s, body)
		}
	}
	if st := f.waitFlow(id); st != flowDone {
		t.Fatalf("device flow %s", st)
	}
	if got := strings.Join(f.fake.Polls(), ","); got != "authorization_pending,token" {
		t.Fatalf("polls %s", got)
	}
	w := f.do(http.MethodGet, "/flow?id="+id, nil)
	mustContain(t, "device done", w, http.StatusOK, "Connected: the new grant of carol@example.com is saved")
	if strings.Contains(w.Body.String(), `http-equiv="refresh"`) {
		t.Fatal("the finished flow page still refreshes")
	}
	tok, err := f.store.Load("carol@example.com")
	if err != nil || !f.fake.LiveRefreshToken(tok.RefreshToken) {
		t.Fatalf("stored %+v, %v", tok, err)
	}
	t.Logf("web: microsoft device code: code and link shown, polled (%s), grant saved", strings.Join(f.fake.Polls(), ","))

	// Pending until the user approves at the verification link.
	f.fake.DevicePending = 1000
	id, _ = f.startFlow("carol@example.com")
	time.Sleep(1500 * time.Millisecond)
	if st := f.flowStatus(id); st != flowPending {
		t.Fatalf("device flow %s before the approval", st)
	}
	resp, err := http.PostForm(f.fake.URL+"/devicelogin", url.Values{"user_code": {"ABCD-EFGH"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("device login: %s", resp.Status)
	}
	if st := f.waitFlow(id); st != flowDone {
		t.Fatalf("device flow %s after the approval", st)
	}

	// Denied at the provider: said in plain words, nothing saved.
	g := newFixture(t, nil)
	g.fake.DeviceDeny = true
	g.login()
	id, _ = g.startFlow("carol@example.com")
	if st := g.waitFlow(id); st != flowFailed {
		t.Fatalf("denied device flow %s", st)
	}
	mustContain(t, "denied", g.do(http.MethodGet, "/flow?id="+id, nil), http.StatusOK, "The authorization was denied at the provider.")
	if _, err := g.store.Load("carol@example.com"); err == nil {
		t.Fatal("a denied flow saved a token")
	}
}
