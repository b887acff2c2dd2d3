package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/internal/dovecottest"
)

// TestServeIMAP runs serve with imap accounts against a private Dovecot:
// implicit TLS with ca_file and server_name and a password_file, on_delete
// keep through the shared cache store, TOP through the account router,
// and a passthrough account without password_hash over STARTTLS; then
// check tries both.
func TestServeIMAP(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"ann": "ann-imap", "ben": "ben-imap"}})
	for _, u := range []string{"ann", "ben"} {
		dir := d.MaildirPath(u)
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			msg := fmt.Sprintf("From: x@example.org\nSubject: %s %d\n\nline 1\nline 2\nline 3\n", u, i)
			if err := os.WriteFile(filepath.Join(dir, "new", fmt.Sprintf("1700000000.M%dP1.t", i)), []byte(msg), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Chown(dir); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), d.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ann.password"), []byte("ann-imap\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("pop-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
state_dir: state
log:
  format: json
accounts:
  - user: ann
    password_hash: "%s"
    backend:
      type: imap
      addr: %s
      ca_file: ca.pem
      server_name: localhost
      username: ann
      password_file: ann.password
      on_delete: keep
  - user: ben
    backend:
      type: imap
      addr: %s
      tls: starttls
      ca_file: ca.pem
      server_name: localhost
      auth: passthrough
`, hash, d.IMAPSAddr, d.IMAPAddr)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	addr, stderr, stop := startServe(t, path)
	p := dialPOP3(t, addr)
	p.cmd("USER ann")
	if s := p.cmd("PASS pop-secret"); s != "+OK Logged in." {
		t.Fatalf("ann: PASS %q\n%s", s, stderr)
	}
	if got := p.multi("TOP 1 1"); got != "From: x@example.org\nSubject: ann 0\n\nline 1\n" {
		t.Fatalf("TOP 1 1: %q", got)
	}
	p.cmd("DELE 1")
	if s := p.cmd("QUIT"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("QUIT: %q", s)
	}
	p = dialPOP3(t, addr)
	p.cmd("USER ann")
	p.cmd("PASS pop-secret")
	if s := p.cmd("STAT"); !strings.HasPrefix(s, "+OK 2 ") {
		t.Fatalf("ann after DELE with keep: STAT %q", s)
	}
	p.cmd("QUIT")

	p = dialPOP3(t, addr)
	p.cmd("USER ben")
	if s := p.cmd("PASS wrong"); !strings.HasPrefix(s, "-ERR [AUTH]") {
		t.Fatalf("ben with a wrong password: %q", s)
	}
	p.cmd("USER ben")
	if s := p.cmd("PASS ben-imap"); s != "+OK Logged in." {
		t.Fatalf("ben passthrough: %q\n%s", s, stderr)
	}
	if s := p.cmd("STAT"); !strings.HasPrefix(s, "+OK 3 ") {
		t.Fatalf("ben: STAT %q", s)
	}
	p.cmd("QUIT")
	if strings.Contains(stderr.String(), "ann-imap") || strings.Contains(stderr.String(), "ben-imap") {
		t.Fatalf("a password appears in the log:\n%s", stderr)
	}
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, stderr)
	}

	r := runCmd(t, "", "check", "-config", path)
	if r.code != 0 || !regexp.MustCompile(`(?m)^OK +ann +imap `).MatchString(r.stdout) || !regexp.MustCompile(`(?m)^OK +ben +imap `).MatchString(r.stdout) {
		t.Fatalf("check: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// popbridge sync lists the folder as a login would; a passthrough
	// account has no password to log in with.
	r = runCmd(t, "", "sync", "ann", "-config", path)
	if r.code != 0 || !regexp.MustCompile(`(?m)^ann: done in \d+s: 2 messages listed`).MatchString(r.stdout) {
		t.Fatalf("sync ann: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, "", "sync", "ben", "-config", path)
	if r.code != 1 || !strings.Contains(r.stderr, "only a client login can sync it") {
		t.Fatalf("sync ben (passthrough): exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("imap: serve with imap accounts (implicit TLS + ca_file, STARTTLS passthrough without password_hash, keep, TOP), check and sync")
}
