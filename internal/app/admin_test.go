package app

import (
	"context"
	"crypto/tls"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/admin"
)

// adminClient signs in to the admin page at base and returns a client
// holding the session.
func adminClient(t *testing.T, base, password string) *http.Client {
	t.Helper()
	c := &http.Client{Jar: must(cookiejar.New(nil))}
	resp, err := c.PostForm(base+"/login", url.Values{"password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" {
		t.Fatalf("sign-in: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	return c
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// adminPage GETs path and returns the code and the unescaped body.
func adminPage(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, html.UnescapeString(string(b))
}

// adminPost POSTs form with the session's form token taken from page.
func adminPost(t *testing.T, c *http.Client, url, page string, form url.Values) (int, string) {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no form token on the page:\n%s", page)
	}
	form.Set("csrf", m[1])
	resp, err := c.PostForm(url, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, html.UnescapeString(string(b))
}

// TestAdminListener: listen.admin serves the page from the running app:
// only on loopback names, with every account of the configuration (a
// reload's too), the sessions and the cache, an account's log lines, the
// test and the forget of an account; Close stops it.
func TestAdminListener(t *testing.T) {
	path := writeConfig(t, "admin:\n  password_hash: "+testHash(t)+"\n")
	src := strings.Replace(string(must(os.ReadFile(path))), "  pop3: 127.0.0.1:0\n", "  pop3: 127.0.0.1:0\n  admin: 127.0.0.1:0\n", 1)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := must(config.Load(path))
	ring := new(admin.LogRing)
	logs := &syncBuffer{}
	log := zerolog.New(zerolog.MultiLevelWriter(logs, ring)).With().Timestamp().Logger()
	a, err := Build(cfg, &log, Options{ConfigPath: path, AdminLogs: ring})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Addr("admin") == nil || a.Addr("http") != nil {
		t.Fatalf("Addr: admin %v, http %v", a.Addr("admin"), a.Addr("http"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	base := "http://" + a.Addr("admin").String()
	_, port, _ := net.SplitHostPort(a.Addr("admin").String())

	// Another name than the loopback ones is refused (DNS rebinding).
	req := must(http.NewRequest("GET", base+"/login", nil))
	req.Host = "evil.test:" + port
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("foreign Host: %v %v", resp, err)
	}
	req.Host = "localhost:" + port
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("localhost: %v %v", resp, err)
	}
	if resp, err := http.PostForm(base+"/login", url.Values{"password": {"wrong"}}); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %v %v", resp, err)
	}

	// A POP3 session on alice: the page shows it open, then the cache.
	p := dialPOP3(t, a.Addr("pop3").String())
	p.cmd("USER alice")
	if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("login: %q", s)
	}
	c := adminClient(t, base, "s3cret")
	_, body := adminPage(t, c, base+"/")
	t.Logf("web: overview of the running app: %d bytes", len(body))
	for _, want := range []string{`id="acct-alice"`, `id="acct-bob"`, `<dd class="sessions">1</dd>`, "maildir"} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q:\n%s", want, body)
		}
	}
	code, accountPage := adminPage(t, c, base+"/account?a=alice")
	if code != 200 || !regexp.MustCompile(`<pre id="logs">[^<]*INFO `).MatchString(accountPage) {
		t.Errorf("account page (%d) without log lines:\n%s", code, accountPage)
	}
	// Forget is refused while the session holds the account.
	if code, res := adminPost(t, c, base+"/forget", accountPage, url.Values{"a": {"alice"}}); code != http.StatusConflict || !strings.Contains(res, "POP3 session open") {
		t.Errorf("forget during a session (%d):\n%s", code, res)
	}
	p.cmd("QUIT")

	_, body = adminPage(t, c, base+"/")
	if !strings.Contains(body, `<dd class="sessions">0</dd>`) || !regexp.MustCompile(`<dd class="cache">[1-9]\d* messages`).MatchString(body) {
		t.Errorf("overview after the session:\n%s", body)
	}
	code, res := adminPost(t, c, base+"/test", accountPage, url.Values{"a": {"alice"}})
	if code != 200 || !strings.Contains(res, `<p id="result" class="ok">OK: `) {
		t.Errorf("test of alice (%d):\n%s", code, res)
	}
	code, res = adminPost(t, c, base+"/test", accountPage, url.Values{"a": {"bob"}})
	if code != 200 || !strings.Contains(res, `<p id="result" class="error">`) {
		t.Errorf("test of bob, whose Maildir is missing (%d):\n%s", code, res)
	}
	if code, res = adminPost(t, c, base+"/forget", accountPage, url.Values{"a": {"alice"}}); code != 200 || !strings.Contains(res, "is forgotten") {
		t.Errorf("forget (%d):\n%s", code, res)
	}
	if st, _ := a.st.store.Stats(); len(st) != 0 {
		t.Errorf("after forget, the cache holds %+v", st)
	}

	// A reload's new account shows.
	src = strings.Replace(src, "accounts:\n", "accounts:\n  - user: carol\n    password_hash: "+cfg.Accounts[0].PasswordHash+"\n    backend: {type: maildir, path: carol}\n", 1)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, body = adminPage(t, c, base+"/"); !strings.Contains(body, `id="acct-carol"`) {
		t.Errorf("overview after the reload lacks carol:\n%s", body)
	}

	addr := a.Addr("admin").String()
	cancel()
	<-done
	a.Close()
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Errorf("the admin listener still accepts after Close")
	}
	done <- nil // for the deferred wait
}

// TestAdminTLS: with admin.tls the page is HTTPS with the tls section's
// certificate, its cookie Secure and __Host- prefixed, with HSTS; plain
// HTTP is not answered.
func TestAdminTLS(t *testing.T) {
	path := writeConfig(t, "tls: {self_signed: true}\nadmin:\n  password_hash: "+testHash(t)+"\n  tls: true\n  cleartext: never\n")
	src := strings.Replace(string(must(os.ReadFile(path))), "  pop3: 127.0.0.1:0\n", "  pop3: 127.0.0.1:0\n  admin: 127.0.0.1:0\n", 1)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := must(config.Load(path))
	log := zerolog.Nop()
	a, err := Build(cfg, &log, Options{ConfigPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	base := "https://" + a.Addr("admin").String()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(base+"/login", url.Values{"password": {"s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookie := resp.Header.Get("Set-Cookie")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(cookie, "__Host-") || !strings.Contains(cookie, "Secure") ||
		resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("sign-in over TLS: %d, cookie %q, HSTS %q", resp.StatusCode, cookie, resp.Header.Get("Strict-Transport-Security"))
	}
	if resp, err := http.Get("http://" + a.Addr("admin").String() + "/login"); err == nil && resp.StatusCode == http.StatusOK {
		t.Errorf("plain HTTP on the TLS listener answered 200")
	}
	t.Logf("web: admin.tls: HTTPS with the tls section's certificate, cookie %s…", cookie[:min(len(cookie), 22)])
}

// TestAdminHosts: the loopback names on the bound port always, the
// bound address when it is a specific one, then the configured names.
func TestAdminHosts(t *testing.T) {
	for _, tt := range []struct {
		bound string
		extra []string
		want  string
	}{
		{"127.0.0.1:8025", nil, "localhost:8025 127.0.0.1:8025 [::1]:8025"},
		{"0.0.0.0:8025", []string{"nas.lan"}, "localhost:8025 127.0.0.1:8025 [::1]:8025 nas.lan"},
		{"192.168.1.10:8025", []string{"nas.lan:8025"}, "localhost:8025 127.0.0.1:8025 [::1]:8025 192.168.1.10:8025 nas.lan:8025"},
	} {
		addr := must(net.ResolveTCPAddr("tcp", tt.bound))
		if got := strings.Join(adminHosts(addr, tt.extra), " "); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.bound, got, tt.want)
		}
	}
}
