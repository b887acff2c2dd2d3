package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/internal/testpeer"
)

// docFilter returns the fail2ban filter of docs/operations.md: the ini
// block with [Definition], and its failregex.
func docFilter(t *testing.T) (block, failregex string) {
	t.Helper()
	doc := string(must(os.ReadFile("../../docs/operations.md")))
	for _, b := range strings.Split(doc, "```ini\n")[1:] {
		b, _, _ = strings.Cut(b, "```")
		if !strings.HasPrefix(b, "[Definition]\n") {
			continue
		}
		for _, l := range strings.Split(b, "\n") {
			if re, ok := strings.CutPrefix(l, "failregex = "); ok {
				return b, re
			}
		}
	}
	t.Fatal("docs/operations.md has no fail2ban filter with a failregex")
	return "", ""
}

// TestFail2banFilter serves, fails a login, and matches the documented
// fail2ban filter against the log lines: exactly the failed logins match,
// with the client's address as <HOST>; a user name cannot fake one. With
// fail2ban-regex installed (Debian package fail2ban) it runs that too.
func TestFail2banFilter(t *testing.T) {
	path := writeConfig(t, "limits: {trusted_networks: [127.0.0.0/8]}\n") // no failure delay
	_, stderr, stop := startRun(t, "serve", "-config", path)
	addr := listenerAddr(t, stderr, "pop3")
	p := dialPOP3(t, addr)
	p.cmd("USER alice")
	if s := p.cmd("PASS wrong"); !strings.HasPrefix(s, "-ERR [AUTH]") {
		t.Fatalf("PASS wrong: %q", s)
	}
	p.cmd(`USER x","client":"10.9.9.9`)
	if s := p.cmd("PASS wrong"); !strings.HasPrefix(s, "-ERR [AUTH]") {
		t.Fatalf("PASS wrong: %q", s)
	}
	p.cmd("USER alice")
	if s := p.cmd("PASS s3cret"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS: %q", s)
	}
	p.cmd("QUIT")
	waitFor(t, "the session to end", func() string {
		if strings.Contains(stderr.String(), `"session closed"`) {
			return "yes"
		}
		return ""
	})
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	log := stderr.String()
	if !regexp.MustCompile(`"duration_ms":\d+,`).MatchString(log) {
		t.Errorf("session closed line without duration_ms:\n%s", log)
	}

	block, failregex := docFilter(t)
	re := regexp.MustCompile(strings.Replace(failregex, "<HOST>", `(?P<host>[0-9A-Fa-f:.]+)`, 1))
	var hosts []string
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			hosts = append(hosts, m[1])
		}
	}
	if strings.Join(hosts, " ") != "127.0.0.1 127.0.0.1" {
		t.Errorf("failregex matched hosts %q, want the two failed logins from 127.0.0.1; log:\n%s", hosts, log)
	}

	bin := testpeer.LookPath(t, "fail2ban-regex", "fail2ban")
	dir := t.TempDir()
	logFile, filter := filepath.Join(dir, "popbridge.log"), filepath.Join(dir, "popbridge.conf")
	if err := os.WriteFile(logFile, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filter, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-v", logFile, filter).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^Lines: \d+ lines, 0 ignored, 2 matched,`).Match(out) ||
		strings.Count(string(out), "|      127.0.0.1  ") != 2 || strings.Contains(string(out), "10.9.9.9  ") {
		t.Errorf("fail2ban-regex did not find the two failures from 127.0.0.1:\n%s", out)
	}
	t.Logf("fail2ban-regex: the documented filter bans the client of a failed login")
}
