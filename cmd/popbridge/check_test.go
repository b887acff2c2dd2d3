package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/demomail"
	"github.com/popbridge/popbridge/internal/dovecottest"
)

// TestCheckOffline: check -offline checks the file, the certificate
// files and the state directory, and contacts no upstream.
func TestCheckOffline(t *testing.T) {
	// An upstream that counts the connections it gets.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	up := "http://" + ln.Addr().String()
	path := writeConfig(t, fmt.Sprintf(`  - user: carl
    password_hash: %q
    backend: {type: pop3, addr: %q, tls: none, username: carl, password: x}
  - user: gail
    password_hash: %q
    backend:
      type: gmail
      api_endpoint: %s/
      oauth2: {provider: custom, client_id: c, auth_url: %s/auth, token_url: %s/token, scopes: [s], token_key_file: token.key}
tls: {cert_file: cert.pem, key_file: key.pem}
`, testHash(t), ln.Addr(), testHash(t), up, up, up))
	dir := filepath.Dir(path)
	writeTestCert(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "token.key"), []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "state", app.TokenDir), 0o700); err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir), Key: must(oauth.LoadKey(filepath.Join(dir, "token.key")))}
	if err := store.Save("gail", &oauth2.Token{RefreshToken: "rt"}); err != nil { // a refresh would connect
		t.Fatal(err)
	}

	r := runCmd(t, "", "check", "-offline", "-config", path)
	if r.code != 0 || r.stderr != "" {
		t.Errorf("check -offline: exit %d, stderr %q\n%s", r.code, r.stderr, r.stdout)
	}
	checkLines(t, r.stdout, []*regexp.Regexp{
		regexp.MustCompile(`configuration valid, 4 account\(s\)$`),
		regexp.MustCompile(`^OK +tls +` + regexp.QuoteMeta(filepath.Join(dir, "cert.pem")) + `, certificate for localhost`),
		regexp.MustCompile(`^OK +state +` + regexp.QuoteMeta(filepath.Join(dir, "state"))),
		regexp.MustCompile(`^SKIP +alice +maildir .* \(not tried: -offline\)$`),
		regexp.MustCompile(`^SKIP +bob +maildir .* \(not tried: -offline\)$`), // its Maildir is missing
		regexp.MustCompile(`^SKIP +carl +pop3 ` + regexp.QuoteMeta(ln.Addr().String()) + `, tls none, auth password \(not tried: -offline\)$`),
		regexp.MustCompile(`^SKIP +gail +gmail ` + regexp.QuoteMeta(up) + `/, .* \(not tried: -offline\)$`),
	})
	time.Sleep(50 * time.Millisecond)
	if n := conns.Load(); n != 0 {
		t.Errorf("check -offline made %d connection(s) to the upstream", n)
	}
	// Without -offline the upstream is tried (and bob's Maildir fails).
	if r := runCmd(t, "", "check", "-config", path); r.code != 1 || conns.Load() == 0 {
		t.Errorf("check: exit %d, %d connection(s)\n%s", r.code, conns.Load(), r.stdout)
	}
	time.Sleep(50 * time.Millisecond)
	online := conns.Load()

	// A bad certificate file, a bad ca_file, a missing token_key_file and
	// a state directory that cannot be created fail.
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(must(os.ReadFile(path))), "password: x}", "password: x, ca_file: nope.pem}", 1)
	cfg = strings.Replace(cfg, "state_dir: state", "state_dir: state-file", 1)
	cfg = strings.Replace(cfg, "token_key_file: token.key", "token_key_file: nope.key", 1)
	if err := os.WriteFile(filepath.Join(dir, "state-file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, "", "check", "-offline", "-config", path)
	if r.code != 1 {
		t.Errorf("check -offline with bad files: exit %d", r.code)
	}
	checkLines(t, r.stdout, []*regexp.Regexp{
		regexp.MustCompile(`configuration valid`),
		regexp.MustCompile(`^FAIL +tls +.*cert\.pem: `),
		regexp.MustCompile(`^FAIL +state +.*state-file: `),
		regexp.MustCompile(`^SKIP +alice `),
		regexp.MustCompile(`^SKIP +bob `),
		regexp.MustCompile(`^FAIL +carl +pop3 .*: ca_file: open .*nope\.pem: no such file or directory$`),
		regexp.MustCompile(`^FAIL +gail +gmail .*: oauth: token key: open .*nope\.key: no such file or directory$`),
	})
	time.Sleep(50 * time.Millisecond)
	if n := conns.Load() - online; n != 0 {
		t.Errorf("the second check -offline made %d connection(s) to the upstream", n)
	}
}

// TestStateDirOwner: two configuration files in one directory without
// state_dir share the default state directory; the second is told so by
// check and serve, in plain words.
func TestStateDirOwner(t *testing.T) {
	dir := t.TempDir()
	if _, err := demomail.Ensure(filepath.Join(dir, "mail"), time.Now()); err != nil {
		t.Fatal(err)
	}
	write := func(name, user string) string {
		path := filepath.Join(dir, name)
		cfg := fmt.Sprintf("listen: {pop3: 127.0.0.1:0}\nlog: {format: json}\naccounts:\n"+
			"  - user: %s\n    password_hash: %q\n    backend: {type: maildir, path: mail}\n", user, testHash(t))
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	a, b := write("a.yaml", "ann"), write("b.yaml", "bea")
	state := filepath.Join(dir, "popbridge-state")
	want := fmt.Sprintf("state directory %s is used by the server of config %s; set state_dir in %s to a directory of its own", state, a, b)

	// A state directory from before owner files is taken as it is.
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop := startRun(t, "serve", "-config", a)
	runningApp(t, stderr) // a's server
	if got := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(state, app.OwnerFile))))); got != a {
		t.Errorf("owner file holds %q, want %q", got, a)
	}
	if r := runCmd(t, "", "check", "-offline", "-config", a); r.code != 0 {
		t.Errorf("check of a: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The same file by another path is the same owner.
	alias := filepath.Join(dir, "alias.yaml")
	if err := os.Symlink(a, alias); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, "", "check", "-offline", "-config", alias); r.code != 0 {
		t.Errorf("check of a symlink to a: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r := runCmd(t, "", "check", "-offline", "-config", b)
	if r.code != 1 || !strings.Contains(r.stdout, "FAIL  state  "+state+": "+want+"\n") {
		t.Errorf("check of b while a runs: exit %d\n%s", r.code, r.stdout)
	}
	r = runCmd(t, "", "serve", "-config", b)
	if r.code != 1 || r.stderr != "popbridge serve: "+want+"\n" {
		t.Errorf("serve b while a runs: exit %d, stderr %q, want %q", r.code, r.stderr, want)
	}
	for _, args := range [][]string{{"stats"}, {"forget", "ann"}} {
		r = runCmd(t, "", append(append([]string{"cache"}, args...), "-config", b)...)
		if r.code != 1 || r.stderr != "popbridge cache: "+want+"\n" {
			t.Errorf("cache %s of b: exit %d, stderr %q", args[0], r.code, r.stderr)
		}
	}
	if code := stop(); code != 0 {
		t.Fatalf("a's server exited %d", code)
	}
	// Not only while a runs.
	r = runCmd(t, "", "serve", "-config", b)
	if r.code != 1 || r.stderr != "popbridge serve: "+want+"\n" {
		t.Errorf("serve b after a stopped: exit %d, stderr %q", r.code, r.stderr)
	}
	// a renamed: its state directory follows the new name.
	moved := filepath.Join(dir, "a2.yaml")
	if err := os.Rename(a, moved); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop = startRun(t, "serve", "-config", moved)
	waitFor(t, "the take-over log line", func() string {
		if strings.Contains(stderr.String(), `"previous_config":"`+a+`"`) {
			return "ok"
		}
		return ""
	})
	stop()
	if got := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(state, app.OwnerFile))))); got != moved {
		t.Errorf("owner file holds %q, want %q", got, moved)
	}
}

// TestCheckUpstreamPlainWords: check says what failed upstream and what
// to do, without POP3 or IMAP reply codes.
func TestCheckUpstreamPlainWords(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"ann": "right"}})
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(d.MaildirPath("ann"), sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Chown(d.MaildirPath("ann")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), d.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	refused := func() string { // a port where nothing listens
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()
	tests := []struct {
		user, typ, addr, extra, want string
	}{
		{"p-ok", "pop3", d.POP3Addr, "tls: none, password: right", ""},
		{"p-password", "pop3", d.POP3Addr, "tls: none, password: wrong",
			d.POP3Addr + ` refused the login of "ann": wrong user name or password (the server said "Authentication failed.")`},
		{"i-password", "imap", d.IMAPAddr, "tls: none, password: wrong",
			d.IMAPAddr + ` refused the login of "ann": wrong user name or password (the server said "Authentication failed.")`},
		{"p-refused", "pop3", refused, "password: x",
			"nothing answers at " + refused + " (connection refused); check addr and that the server runs"},
		{"i-untrusted", "imap", d.IMAPSAddr, "password: right",
			"the certificate of " + d.IMAPSAddr + " is not signed by an authority this machine trusts; " +
				"set ca_file to the PEM file of the authority (or of the certificate itself)"},
		{"p-untrusted", "pop3", d.POP3Addr, "tls: starttls, password: right",
			"the certificate of " + d.POP3Addr + " is not signed by an authority this machine trusts; " +
				"set ca_file to the PEM file of the authority (or of the certificate itself)"},
		{"p-name", "pop3", d.POP3SAddr, "password: right, ca_file: ca.pem, server_name: mail.example",
			"the certificate of " + d.POP3SAddr + " is not valid for the name mail.example (it is for localhost, 127.0.0.1, ::1); " +
				"set server_name to one of its names"},
		{"i-not-tls", "imap", d.IMAPAddr, "password: right",
			d.IMAPAddr + " does not start TLS when connected (tls: implicit); " +
				"use its TLS port (usually 995 for POP3, 993 for IMAP) or set tls: starttls"},
	}
	cfg := "listen: {pop3: 127.0.0.1:0}\nstate_dir: state\naccounts:\n"
	for _, tt := range tests {
		cfg += fmt.Sprintf("  - user: %s\n    password_hash: %q\n    backend: {type: %s, addr: %q, username: ann, %s}\n",
			tt.user, testHash(t), tt.typ, tt.addr, tt.extra)
	}
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, "", "check", "-config", path)
	if r.code != 1 {
		t.Errorf("check: exit %d", r.code)
	}
	for _, tt := range tests {
		re := regexp.MustCompile(`(?m)^OK +` + tt.user + ` +` + tt.typ + ` .*$`)
		if tt.want != "" {
			re = regexp.MustCompile(`(?m)^FAIL +` + tt.user + ` +` + tt.typ + ` [^:]*(:\d+)?[^:]*: ` + regexp.QuoteMeta(tt.want) + `$`)
		}
		if !re.MatchString(r.stdout) {
			t.Errorf("%s: no line matching %s in\n%s", tt.user, re, r.stdout)
		}
	}
	for _, bad := range []string{"-ERR", "[AUTH]", "[SYS/", "Temporary server failure", "Authentication failed.:", "NO ["} {
		if strings.Contains(r.stdout, bad) {
			t.Errorf("check output holds %q:\n%s", bad, r.stdout)
		}
	}
}

// TestCheckGmailPlainWords: the Gmail API's refusals that a new setup
// meets are explained by check.
func TestCheckGmailPlainWords(t *testing.T) {
	tokens := oauthtest.Start(t)
	tokens.AddRefreshToken("rt-gmail")
	fake := gmailtest.Start(t)
	fake.SetValidToken(tokens.ValidAccess)
	down := func() string { // an endpoint where nothing listens
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()
	dir := t.TempDir()
	write := func(name string, users ...string) string {
		cfg := "listen: {pop3: 127.0.0.1:0}\nstate_dir: state\naccounts:\n"
		for _, u := range users {
			endpoint := fake.Endpoint()
			if u == "gus" {
				endpoint = "http://" + down + "/"
			}
			cfg += fmt.Sprintf(`  - user: %s
    password_hash: %q
    backend:
      type: gmail
      api_endpoint: %s
      oauth2: {provider: custom, client_id: %s, auth_url: %q, token_url: %q, scopes: [https://www.googleapis.com/auth/gmail.modify]}
`, u, testHash(t), endpoint, tokens.ClientID, tokens.AuthURL, tokens.TokenURL)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	both, path := write("both.yaml", "gina", "gus"), write("gina.yaml", "gina")
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir)}
	for _, u := range []string{"gina", "gus"} {
		if err := store.Save(u, &oauth2.Token{RefreshToken: "rt-gmail"}); err != nil {
			t.Fatal(err)
		}
	}
	// An endpoint that does not answer (checked once: the backend retries).
	r := runCmd(t, "", "check", "-config", both)
	gus := regexp.MustCompile(`(?m)^FAIL +gus +gmail http://` + regexp.QuoteMeta(down) + `/, [^:]*: nothing answers at ` +
		regexp.QuoteMeta(down) + ` \(connection refused\); check api_endpoint and that the server runs$`)
	if r.code != 1 || !gus.MatchString(r.stdout) || !regexp.MustCompile(`(?m)^OK +gina `).MatchString(r.stdout) {
		t.Errorf("check: exit %d\n%s\nwant a line matching %s", r.code, r.stdout, gus)
	}
	fakeHost := strings.TrimSuffix(strings.TrimPrefix(fake.Endpoint(), "http://"), "/")
	for _, tt := range []struct {
		name string
		fail gmailtest.Failure
		want string
	}{
		{"API not enabled", gmailtest.Failure{N: 1, Status: 403, Reason: "accessNotConfigured",
			Message: "Gmail API has not been used in project 123 before or it is disabled."},
			`the Gmail API is not enabled in the Google Cloud project of this OAuth2 client; enable it (APIs & Services → Library → Gmail API → Enable) ` +
				`and try again in a few minutes (Google said "Gmail API has not been used in project 123 before or it is disabled.")`},
		{"scope", gmailtest.Failure{N: 1, Status: 403, Reason: "insufficientPermissions"},
			"the OAuth2 grant does not allow reading this mailbox through the Gmail API; leave oauth2.scopes out " +
				"(or include https://www.googleapis.com/auth/gmail.modify) and run popbridge auth gina -config " + path + " again"},
	} {
		fake.FailNextWith(tt.fail)
		r = runCmd(t, "", "check", "-config", path)
		gina := regexp.MustCompile(`(?m)^FAIL +gina +gmail ` + regexp.QuoteMeta(fake.Endpoint()) + `, [^:]*: ` + regexp.QuoteMeta(tt.want) + `$`)
		if r.code != 1 || !gina.MatchString(r.stdout) {
			t.Errorf("%s: exit %d\n%s\nwant a line matching %s", tt.name, r.code, r.stdout, gina)
		}
		if strings.Contains(r.stdout, "[SYS/") || strings.Contains(r.stdout, fakeHost+"/gmail") {
			t.Errorf("%s: reply codes or request URLs in\n%s", tt.name, r.stdout)
		}
	}
}
