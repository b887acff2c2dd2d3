package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestMetricsManyAccounts: with 1,000 configured accounts /metrics stays
// small at idle (no series made per account in advance), and a session
// still shows up in it.
func TestMetricsManyAccounts(t *testing.T) {
	httpAddr := "127.0.0.1:" + strconv.Itoa(opsPort(t))
	var extra strings.Builder
	h := testHash(t)
	for i := range 998 {
		fmt.Fprintf(&extra, "  - user: user%d\n    password_hash: %q\n    backend: {type: maildir, path: m%d}\n", i, h, i)
	}
	path := writeConfig(t, "")
	cfgText := string(must(os.ReadFile(path)))
	cfgText = strings.Replace(cfgText, "  pop3: 127.0.0.1:0\n", "  pop3: 127.0.0.1:0\n  http: "+httpAddr+"\n", 1)
	cfgText = strings.Replace(cfgText, "accounts:\n", "accounts:\n"+extra.String(), 1)
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, _ := startRun(t, "serve", "-config", path)
	addr := listenerAddr(t, stderr, "pop3")
	if !strings.Contains(stderr.String(), `"accounts":1000,`) {
		t.Fatalf("not 1000 accounts:\n%.2000s", stderr)
	}
	base := "http://" + httpAddr

	code, idle := httpGet(t, base+"/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	series := 0
	for _, l := range strings.Split(idle, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			series++
		}
	}
	t.Logf("/metrics with 1000 accounts at idle: %d octets, %d series", len(idle), series)
	if len(idle) > 200<<10 || series > 1000 {
		t.Fatalf("/metrics at idle is %d octets and %d series with 1000 accounts; want < 200 KB and < 1000", len(idle), series)
	}

	p := dialPOP3(t, addr)
	p.cmd("USER alice")
	if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS: %q", s)
	}
	p.multi("RETR 1")
	p.cmd("QUIT")
	// user0's Maildir does not exist: an account error.
	p = dialPOP3(t, addr)
	p.cmd("USER user0")
	if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "-ERR [SYS/") {
		t.Fatalf("PASS for a missing Maildir: %q", s)
	}
	p.cmd("QUIT")
	var after string
	waitFor(t, "the session counted", func() string {
		_, after = httpGet(t, base+"/metrics", "")
		if v, _ := metricValue(after, `popbridge_sessions_total{outcome="quit"}`); v == 2 {
			return "yes"
		}
		return ""
	})
	for s, want := range map[string]float64{
		`popbridge_backend_call_duration_seconds_count{backend="maildir",op="login"}`: 2,
		`popbridge_backend_call_duration_seconds_count{backend="maildir",op="open"}`:  1,
		`popbridge_commands_total{command="RETR",result="ok"}`:                        1,
	} {
		if v, ok := metricValue(after, s); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", s, v, ok, want)
		}
	}
	if !strings.Contains(after, "\npopbridge_account_errors_total{account=\"user0\",class=") ||
		strings.Count(after, "popbridge_account_errors_total{") != 1 {
		t.Errorf("want one account error series, for user0:\n%s", after)
	}
}
