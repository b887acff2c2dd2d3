package app

import (
	"context"
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
