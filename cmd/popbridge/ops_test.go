package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/freeport"
)

// httpGet returns the status code and body of GET url with the optional
// bearer token.
func httpGet(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// metricValue returns the value of the series (name and labels exactly
// as exposed, labels sorted by name) in a /metrics body.
func metricValue(body, series string) (float64, bool) {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// TestOpsEndpoints serves a configuration with listen.http, runs POP3
// sessions, and reads them back from /metrics and /status; healthcheck
// answers 0 while the server runs and 1 once it stopped.
func TestOpsEndpoints(t *testing.T) {
	httpAddr := "127.0.0.1:" + strconv.Itoa(opsPort(t))
	path := writeConfig(t, "")
	cfgText := must(os.ReadFile(path))
	cfgText = []byte(strings.Replace(string(cfgText), "  pop3: 127.0.0.1:0\n", "  pop3: 127.0.0.1:0\n  http: "+httpAddr+"\n", 1))
	if err := os.WriteFile(path, cfgText, 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop := startRun(t, "serve", "-config", path)
	addr := listenerAddr(t, stderr, "pop3")
	if got := listenerAddr(t, stderr, "http"); got != httpAddr {
		t.Fatalf("http listener on %s, want %s", got, httpAddr)
	}
	base := "http://" + httpAddr

	if code, body := httpGet(t, base+"/healthz", ""); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/readyz", ""); code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}

	// A failed login, then a hang-up.
	p := dialPOP3(t, addr)
	p.cmd("USER alice")
	if s := p.cmd("PASS wrong"); !strings.HasPrefix(s, "-ERR [AUTH]") {
		t.Fatalf("PASS wrong: %q", s)
	}
	p.c.Close()
	// A session that reads a message. USER for a name that is not
	// configured never becomes a label.
	p = dialPOP3(t, addr)
	p.cmd("USER mallory")
	p.cmd("USER alice")
	if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS: %q", s)
	}
	size := strings.Fields(p.cmd("LIST 1"))[2]
	p.multi("RETR 1")
	if s := p.cmd("XYZZY"); !strings.HasPrefix(s, "-ERR") {
		t.Fatalf("XYZZY: %q", s)
	}
	p.cmd("QUIT")

	var metrics string
	waitFor(t, "both sessions counted", func() string {
		_, metrics = httpGet(t, base+"/metrics", "")
		q, _ := metricValue(metrics, `popbridge_sessions_total{outcome="quit"}`)
		a, _ := metricValue(metrics, `popbridge_sessions_total{outcome="auth_failed"}`)
		if q == 1 && a == 1 {
			return "yes"
		}
		return ""
	})
	for series, want := range map[string]float64{
		`popbridge_sessions_active`:                                                    0,
		`popbridge_sessions_total{outcome="dropped"}`:                                  0,
		`popbridge_commands_total{command="USER",result="ok"}`:                         3,
		`popbridge_commands_total{command="PASS",result="err"}`:                        1,
		`popbridge_commands_total{command="PASS",result="ok"}`:                         1,
		`popbridge_commands_total{command="LIST",result="ok"}`:                         1,
		`popbridge_commands_total{command="RETR",result="ok"}`:                         1,
		`popbridge_commands_total{command="other",result="err"}`:                       1,
		`popbridge_commands_total{command="QUIT",result="ok"}`:                         1,
		`popbridge_auth_failures_total`:                                                1,
		`popbridge_sent_bytes_total`:                                                   must(strconv.ParseFloat(size, 64)),
		`popbridge_body_cache_hits_total`:                                              0,
		`popbridge_oauth_reauth_needed{account="alice"}`:                               -1, // absent: no OAuth2
		`popbridge_gmail_quota_units_total{account="alice"}`:                           -1, // absent until used
		`popbridge_backend_call_duration_seconds_count{backend="maildir",op="login"}`:  1,
		`popbridge_backend_call_duration_seconds_count{backend="maildir",op="list"}`:   1,
		`popbridge_backend_call_duration_seconds_count{backend="maildir",op="open"}`:   1,
		`popbridge_backend_call_duration_seconds_count{backend="maildir",op="delete"}`: -1, // absent until used
	} {
		got, ok := metricValue(metrics, series)
		if want < 0 {
			if ok {
				t.Errorf("%s present: %v", series, got)
			}
			continue
		}
		if !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "popbridge_build_info{version="} {
		if !strings.Contains(metrics, "\n"+name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if strings.Contains(metrics, "mallory") || strings.Contains(metrics, "s3cret") {
		t.Errorf("/metrics names a client-typed user or password:\n%s", metrics)
	}

	code, body := httpGet(t, base+"/status", "")
	if code != 200 {
		t.Fatalf("/status without a configured token: %d %s", code, body)
	}
	var st app.StatusReply
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	if !st.Ready || len(st.Accounts) != 2 || st.Accounts[0].Account != "alice" || st.Accounts[1].Account != "bob" {
		t.Fatalf("/status: %s", body)
	}
	alice, bob := st.Accounts[0], st.Accounts[1]
	if alice.Backend != "maildir" || alice.LastLogin == nil || alice.LastSync == nil || alice.LastError != nil || alice.Token != nil {
		t.Errorf("/status alice: %s", body)
	}
	if bob.LastLogin != nil || bob.LastError != nil {
		t.Errorf("/status bob: %s", body)
	}

	for _, args := range [][]string{{"-url", base}, {"-config", path}, {"-config", path, "-ready"}} {
		if r := runCmd(t, "", append([]string{"healthcheck"}, args...)...); r.code != 0 || !strings.Contains(r.stdout, "200 OK") {
			t.Errorf("healthcheck %v while serving: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
	}
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, stderr)
	}
	r := runCmd(t, "", "healthcheck", "-config", path, "-timeout", "2s")
	if r.code != 1 || !strings.Contains(r.stderr, "popbridge healthcheck: http://"+httpAddr+"/healthz: not answering") {
		t.Errorf("healthcheck after stop: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestHealthcheckUsage(t *testing.T) {
	dead := httptestServer(t, http.StatusServiceUnavailable)
	for _, c := range []struct {
		args []string
		code int
		err  string
	}{
		{nil, 2, "give -config or -url"},
		{[]string{"-url", "http://x", "-config", "y"}, 2, "give -config or -url"},
		{[]string{"-url", dead, "-ready"}, 1, "/readyz: 503 Service Unavailable"},
		{[]string{"-config", writeConfig(t, "")}, 1, "listen.http is not set"},
	} {
		r := runCmd(t, "", append([]string{"healthcheck"}, c.args...)...)
		if r.code != c.code || !strings.Contains(r.stderr, c.err) {
			t.Errorf("healthcheck %v: exit %d, stderr %q; want %d and %q", c.args, r.code, r.stderr, c.code, c.err)
		}
	}
	for in, want := range map[string]string{"0.0.0.0:9110": "127.0.0.1:9110", "[::]:9110": "[::1]:9110", ":9110": "127.0.0.1:9110", "10.0.0.1:9110": "10.0.0.1:9110"} {
		path := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(path, []byte("listen:\n  http: \""+in+"\"\naccounts: []\n"), 0o600)
		if got, err := httpAddr(path); err != nil || got != want {
			t.Errorf("httpAddr(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// opsPort returns a free TCP port on 127.0.0.1 (freeport: not one an
// outgoing connection can take before the server binds it).
func opsPort(t *testing.T) int { return freeport.Port(t) }

// httptestServer serves code on every path and returns its URL.
func httptestServer(t *testing.T, code int) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}

// TestStatusReauth serves an IMAP account with XOAUTH2 tokens from the
// fake authorization server; /status (behind its bearer token) shows
// the token ok, then re-auth needed once the grant is revoked.
func TestStatusReauth(t *testing.T) {
	f := oauthtest.Start(t)
	f.AccessTTL = 30 * time.Second // shorter than oauth.Early: every login refreshes
	up := startXOAUTHIMAP(t, f.ValidAccess)
	t.Setenv(oauth.KeyEnv, "")
	os.Unsetenv(oauth.KeyEnv)
	t.Setenv("POPBRIDGE_TEST_STATUS_TOKEN", "status-Secret-42")

	dir := t.TempDir()
	f.AddRefreshToken("rt-live")
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir)}
	if err := store.Save("ann", &oauth2.Token{RefreshToken: "rt-live", Expiry: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("pop-pw"), bcrypt.MinCost)
	httpAddr := "127.0.0.1:" + strconv.Itoa(opsPort(t))
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
  http: %s
http:
  status_token: ${POPBRIDGE_TEST_STATUS_TOKEN}
state_dir: state
log:
  format: json
accounts:
  - user: ann
    password_hash: "%s"
    backend:
      type: imap
      addr: %s
      tls: none
      auth: xoauth2
      username: %s
      oauth2:
        provider: custom
        client_id: %s
        auth_url: %s
        token_url: %s
        scopes: [mail, offline_access]
`, httpAddr, hash, up.addr, xoUser, f.ClientID, f.AuthURL, f.TokenURL)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, log, stop := startRun(t, "serve", "-config", path)
	addr := listenerAddr(t, log, "pop3")
	base := "http://" + listenerAddr(t, log, "http")

	for _, tok := range []string{"", "wrong", "status-Secret-4", "status-Secret-42x"} {
		if code, body := httpGet(t, base+"/status", tok); code != 401 || strings.Contains(body, "ann") {
			t.Fatalf("/status with token %q: %d %s", tok, code, body)
		}
	}
	status := func() app.AccountReport {
		t.Helper()
		code, body := httpGet(t, base+"/status", "status-Secret-42")
		if code != 200 {
			t.Fatalf("/status with the token: %d %s", code, body)
		}
		for _, secret := range []string{"rt-", "at-", "pop-pw", "status-Secret"} {
			if strings.Contains(body, secret) {
				t.Fatalf("/status shows a secret (%s):\n%s", secret, body)
			}
		}
		var st app.StatusReply
		if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.Accounts) != 1 {
			t.Fatalf("/status: %v\n%s", err, body)
		}
		return st.Accounts[0]
	}
	if a := status(); a.Token == nil || a.Token.State != app.TokenUnknown || a.LastLogin != nil {
		t.Fatalf("/status before any login: %+v", a)
	}

	p := dialPOP3(t, addr)
	p.cmd("USER ann")
	if s := p.cmd("PASS pop-pw"); s != "+OK Logged in." {
		t.Fatalf("PASS %q\n%s", s, log)
	}
	p.cmd("QUIT")
	a := status()
	if a.Backend != "imap" || a.LastLogin == nil || a.LastSync == nil || a.LastError != nil ||
		a.Token == nil || a.Token.State != app.TokenOK || a.Token.ExpiresAt == nil || time.Until(*a.Token.ExpiresAt) > time.Minute {
		t.Fatalf("/status after a login: %+v %+v", a, a.Token)
	}
	_, metrics := httpGet(t, base+"/metrics", "")
	if v, ok := metricValue(metrics, `popbridge_oauth_reauth_needed{account="ann"}`); !ok || v != 0 {
		t.Errorf("reauth_needed before revocation: %v %v", v, ok)
	}
	if v, ok := metricValue(metrics, `popbridge_oauth_token_expiry_timestamp_seconds{account="ann"}`); !ok || v != float64(a.Token.ExpiresAt.Unix()) {
		t.Errorf("token expiry metric %v %v, /status says %v", v, ok, a.Token.ExpiresAt)
	}

	f.RevokeAll()
	p = dialPOP3(t, addr)
	p.cmd("USER ann")
	if s := p.cmd("PASS pop-pw"); !strings.HasPrefix(s, "-ERR [SYS/PERM]") {
		t.Fatalf("revoked grant: PASS %q", s)
	}
	a = status()
	if a.Token == nil || a.Token.State != app.TokenReauth || a.LastError == nil || a.LastError.Class != "re-auth needed" || a.LastLogin == nil {
		t.Fatalf("/status after revocation: %+v token %+v error %+v", a, a.Token, a.LastError)
	}
	_, metrics = httpGet(t, base+"/metrics", "")
	if v, _ := metricValue(metrics, `popbridge_oauth_reauth_needed{account="ann"}`); v != 1 {
		t.Errorf("reauth_needed after revocation: %v", v)
	}
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
}
