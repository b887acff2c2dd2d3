package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/internal/app"
	"github.com/popbridge/popbridge/internal/postfixtest"
	"github.com/popbridge/popbridge/internal/testpeer"
)

// smtplibScript sends one message with Python's smtplib and prints the
// outcome as JSON: {"ok": true} or {"code": 550, "error": "..."}.
const smtplibScript = `
import json, smtplib, ssl, sys
host, port, mode, cafile, user, pw, sender, rcpts, path = sys.argv[1:10]
ctx = ssl.create_default_context(cafile=cafile)
msg = open(path, 'rb').read()
try:
    if mode == 'ssl':
        c = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=60)
    else:
        c = smtplib.SMTP(host, int(port), timeout=60)
        c.starttls(context=ctx)
    c.login(user, pw)
    c.sendmail(sender, rcpts.split(','), msg)
    c.quit()
    print(json.dumps({"ok": True}))
except smtplib.SMTPRecipientsRefused as e:
    print(json.dumps({"code": list(e.recipients.values())[0][0], "error": str(e)}))
except smtplib.SMTPResponseException as e:
    print(json.dumps({"code": e.smtp_code, "error": str(e.smtp_error)}))
`

type smtpResult struct {
	OK    bool   `json:"ok"`
	Code  int    `json:"code"`
	Error string `json:"error"`
}

// sendSmtplib sends msg through addr ("localhost:PORT") with smtplib,
// STARTTLS or ssl (implicit TLS), trusting the certificate in cafile.
func sendSmtplib(t *testing.T, addr, mode, cafile, user, pass, from string, rcpts []string, msg []byte) smtpResult {
	t.Helper()
	py := needProgram(t, "python3")
	dir := t.TempDir()
	script, path := filepath.Join(dir, "send.py"), filepath.Join(dir, "msg.eml")
	os.WriteFile(script, []byte(smtplibScript), 0o600)
	os.WriteFile(path, msg, 0o600)
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(py, script, host, port, mode, cafile, user, pass, from, strings.Join(rcpts, ","), path).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 smtplib: %v\n%s", err, out)
	}
	var r smtpResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("python3 smtplib output %q: %v", out, err)
	}
	return r
}

// localhostAddr is addr (127.0.0.1:PORT) with the name the self-signed
// certificate has.
func localhostAddr(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return net.JoinHostPort("localhost", port)
}

// deliveredAs waits for the n-th message at box and compares it, trace
// fields aside, with want as submitted.
func deliveredAs(t *testing.T, p *postfixtest.Postfix, box string, n int, want []byte) {
	t.Helper()
	msgs, err := p.WaitMessages(box, n, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := postfixtest.Stripped(msgs[n-1]); !bytes.Equal(got, postfixtest.AsDelivered(want)) {
		t.Fatalf("%s: delivered\n%q\nwant\n%q", box, got, postfixtest.AsDelivered(want))
	}
}

var smtpMessage = []byte("From: alice@example.com\r\nTo: bob@example.net\r\nSubject: through popbridge serve\r\n\r\n" +
	".leading dot\r\n\xc3\xa9t\xc3\xa9 8-bit\r\ntrailing space \r\n" + strings.Repeat("z", 998) + "\r\n\r\nend\r\n")

// TestServeSMTP runs serve with listen.submission and listen.submissions
// in front of a private Postfix (password login upstream): Python
// smtplib and curl send through popbridge and the messages arrive
// byte for byte; Bcc recipients get the message and never see a Bcc
// header; a foreign sender, an unknown recipient (the upstream's 550),
// an oversized message, a wrong password, an account without a send
// section and an unreachable upstream are refused with the right codes
// and deliver nothing; AUTH before STARTTLS is refused under
// cleartext_auth: never; /metrics and /status report the sends; a
// reload gives an account a send section.
func TestServeSMTP(t *testing.T) {
	const alice, bob, carol = "alice@example.com", "bob@example.net", "carol@elsewhere.org"
	p := postfixtest.Start(t, postfixtest.Options{Users: map[string]string{alice: "upstream-pw", bob: "bob-pw"}})
	dir := t.TempDir()
	for _, f := range []struct {
		name string
		data []byte
	}{{"upstream-ca.pem", p.CertPEM}, {"alice.smtp", []byte("upstream-pw\n")}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"alice", "dan", "erin"} {
		os.MkdirAll(filepath.Join(dir, "mail", u, "new"), 0o700)
		os.MkdirAll(filepath.Join(dir, "mail", u, "cur"), 0o700)
		os.MkdirAll(filepath.Join(dir, "mail", u, "tmp"), 0o700)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("local-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// Port 1, not a port just freed, which a test process beside this
	// one may have taken.
	dead := "127.0.0.1:1"
	send := fmt.Sprintf(`
    send:
      type: smtp
      addr: %s
      ca_file: upstream-ca.pem
      server_name: localhost
      username: %s
      password_file: alice.smtp`, p.Addr, alice)
	cfg := func(erinSends bool) string {
		erin := ""
		if erinSends {
			erin = send
		}
		return fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
  submission: 127.0.0.1:0
  submissions: 127.0.0.1:0
  http: localhost:0
tls: {self_signed: true}
cleartext_auth: never
limits: {auth_failure_delay: 10ms}
state_dir: state
log: {format: json}
accounts:
  - user: alice
    password_hash: "%[1]s"
    backend: {type: maildir, path: mail/alice}%[2]s
  - user: dan
    password_hash: "%[1]s"
    backend: {type: maildir, path: mail/dan}
    send: {type: smtp, addr: "%[3]s", username: %[4]s, password: x}
  - user: erin
    password_hash: "%[1]s"
    backend: {type: maildir, path: mail/erin}%[5]s
`, hash, send, dead, alice, erin)
	}
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg(false)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop := startRun(t, "serve", "-config", path)
	sub, subs := listenerAddr(t, stderr, "submission"), listenerAddr(t, stderr, "submissions")
	httpAddr := listenerAddr(t, stderr, "http")
	ca := filepath.Join(dir, "state", "tls", "cert.pem")
	if res := sendSmtplib(t, localhostAddr(sub), "starttls", ca, "alice", "local-pw", alice, []string{bob, carol}, smtpMessage); !res.OK {
		t.Fatalf("smtplib: %+v\n%s", res, stderr)
	}
	deliveredAs(t, p, bob, 1, smtpMessage)
	deliveredAs(t, p, postfixtest.Outbound, 1, smtpMessage)
	withBcc := bytes.Replace(smtpMessage, []byte("Subject:"), []byte("Bcc: carol@elsewhere.org\r\nSubject:"), 1)
	if res := sendSmtplib(t, localhostAddr(subs), "ssl", ca, "alice", "local-pw", alice, []string{bob, carol}, withBcc); !res.OK {
		t.Fatalf("smtplib with a Bcc header: %+v", res)
	}
	deliveredAs(t, p, bob, 2, smtpMessage)
	deliveredAs(t, p, postfixtest.Outbound, 2, smtpMessage)
	t.Logf("smtp: serve: python smtplib STARTTLS and implicit TLS -> popbridge -> Postfix: delivered byte for byte; Bcc (envelope only, and a Bcc header) delivered and invisible")

	curl := needProgram(t, "curl")
	msgFile := filepath.Join(dir, "msg.eml")
	os.WriteFile(msgFile, smtpMessage, 0o600)
	for i, url := range []string{"smtp://" + localhostAddr(sub), "smtps://" + localhostAddr(subs)} {
		out, err := exec.Command(curl, "-sS", "--ssl-reqd", "--url", url, "--cacert", ca, "--user", "alice:local-pw",
			"--mail-from", alice, "--mail-rcpt", bob, "--upload-file", msgFile).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v\n%s", url, err, out)
		}
		deliveredAs(t, p, bob, 3+i, smtpMessage)
	}
	t.Logf("smtp: serve: curl smtp:// (STARTTLS) and smtps:// -> popbridge -> Postfix: delivered byte for byte")

	for _, c := range []struct {
		what, user, pass, from, rcpt string
		msg                          []byte
		code                         int
	}{
		{"foreign sender", "alice", "local-pw", bob, bob, smtpMessage, 553},
		{"unknown recipient (upstream 550)", "alice", "local-pw", alice, "nobody@example.com", smtpMessage, 550},
		{"oversized", "alice", "local-pw", alice, bob, append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte(strings.Repeat("b", 78)+"\r\n"), int(p.MessageSizeLimit/80)+10)...), 552},
		{"wrong password", "alice", "wrong", alice, bob, smtpMessage, 535},
		{"upstream down", "dan", "local-pw", alice, bob, smtpMessage, 451},
		{"no send section", "erin", "local-pw", alice, bob, smtpMessage, 550},
	} {
		if res := sendSmtplib(t, localhostAddr(sub), "starttls", ca, c.user, c.pass, c.from, []string{c.rcpt}, c.msg); res.Code != c.code {
			t.Fatalf("%s: %+v, want %d", c.what, res, c.code)
		}
	}
	if !strings.Contains(stderr.String(), "no send section (a maildir backend has no default): add one") {
		t.Fatalf("the log does not say why erin cannot send:\n%s", stderr)
	}
	// AUTH before STARTTLS, with cleartext_auth: never.
	conn, err := net.Dial("tcp", sub)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	readReply := func() string {
		var all string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading a reply: %v (so far %q)", err, all)
			}
			all += line
			if len(line) < 4 || line[3] != '-' {
				return all
			}
		}
	}
	cmd := func(s string) string { fmt.Fprintf(conn, "%s\r\n", s); return readReply() }
	readReply()
	if ehlo := cmd("EHLO client.test"); strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("EHLO before STARTTLS: %q", ehlo)
	}
	if s := cmd("AUTH PLAIN AGFsaWNlAGxvY2FsLXB3"); !strings.HasPrefix(s, "538 ") {
		t.Fatalf("AUTH before STARTTLS: %q", s)
	}
	if s := cmd("MAIL FROM:<" + alice + ">"); !strings.HasPrefix(s, "530 ") {
		t.Fatalf("MAIL before AUTH: %q", s)
	}
	// Commands pipelined with STARTTLS are discarded.
	fmt.Fprintf(conn, "STARTTLS\r\nMAIL FROM:<%s>\r\n", alice)
	if s := readReply(); !strings.HasPrefix(s, "220 ") {
		t.Fatalf("STARTTLS: %q", s)
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
	conn, r = tc, bufio.NewReader(tc)
	if s := cmd("EHLO client.test"); !strings.HasPrefix(s, "250") || !strings.Contains(s, "AUTH PLAIN LOGIN") {
		t.Fatalf("first reply after STARTTLS: %q (the pipelined MAIL must be discarded)", s)
	}
	conn.Close()
	time.Sleep(500 * time.Millisecond)
	if msgs, _ := p.Messages(bob); len(msgs) != 4 || p.Queued() {
		t.Fatalf("%d messages at bob (queued %v), want only the 4 accepted", len(msgs), p.Queued())
	}
	t.Logf("smtp: serve refusals: foreign sender 553, upstream 550 passed on, oversize 552, wrong password 535, upstream down 451, no send section 550; AUTH before STARTTLS 538, MAIL before AUTH 530, STARTTLS injection discarded; nothing else delivered")

	_, metrics := httpGet(t, "http://"+httpAddr+"/metrics", "")
	for _, want := range []string{
		`popbridge_smtp_messages_total{account="alice",result="sent"} 4`,
		`popbridge_smtp_messages_total{account="dan",result="deferred"} 1`,
		`popbridge_smtp_messages_total{account="erin",result="refused"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !strings.Contains(metrics, `popbridge_smtp_bytes_total{account="alice",result="sent"} `+fmt.Sprint(4*len(smtpMessage)+len("Bcc: carol@elsewhere.org\r\n"))) {
		t.Errorf("/metrics: bytes sent by alice:\n%s", grepLines(metrics, "popbridge_smtp_"))
	}
	_, status := httpGet(t, "http://"+httpAddr+"/status", "")
	var st struct {
		Accounts []struct {
			Account       string                  `json:"account"`
			LastSend      *time.Time              `json:"last_send"`
			LastSendError *struct{ Class string } `json:"last_send_error"`
		} `json:"accounts"`
	}
	if err := json.Unmarshal([]byte(status), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Accounts) != 3 || st.Accounts[0].LastSend == nil || st.Accounts[1].LastSendError == nil || st.Accounts[1].LastSendError.Class != "upstream_unreachable" ||
		st.Accounts[2].LastSendError == nil || st.Accounts[2].LastSendError.Class != "not_configured" {
		t.Errorf("/status: %s", status)
	}
	if n := strings.Count(stderr.String(), `"message":"submission: transaction"`); n < 7 {
		t.Errorf("%d transaction log lines, want one per transaction", n)
	}
	for _, secret := range []string{"upstream-pw", "local-pw", "AGFsaWNlAGxvY2FsLXB3"} {
		if strings.Contains(stderr.String(), secret) {
			t.Fatalf("a secret appears in the log:\n%s", stderr)
		}
	}
	t.Logf("smtp: serve: /metrics counts messages and bytes by account and result, /status has last_send and last_send_error, one log line per transaction, no secrets")

	// Reload: erin gets a send section and can send at once.
	if err := os.WriteFile(path, []byte(cfg(true)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := runningApp(t, stderr).Reload(); err != nil {
		t.Fatal(err)
	}
	if res := sendSmtplib(t, localhostAddr(sub), "starttls", ca, "erin", "local-pw", alice, []string{bob}, smtpMessage); !res.OK {
		t.Fatalf("erin after the reload: %+v", res)
	}
	deliveredAs(t, p, bob, 5, smtpMessage)
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, stderr)
	}
	t.Logf("smtp: serve: a reload gave an account a send section; it sent at once")
}

// grepLines returns the lines of s containing sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// needProgram returns the path of a client program (a Debian package of
// the same name). Without it the test is skipped, or fails when CI=true.
func needProgram(t *testing.T, name string) string {
	t.Helper()
	return testpeer.LookPath(t, name, name)
}

// TestServeSMTPXOAUTH2: an account whose imap backend has an oauth2
// grant sends with that grant: the send section names only the server,
// the credentials (auth xoauth2, username) and the refreshing token come
// from the backend, as stored by popbridge auth. The upstream Postfix
// checks the token at the fake authorization server's introspection
// endpoint.
func TestServeSMTPXOAUTH2(t *testing.T) {
	const alice, bob = "alice@example.com", "bob@example.net"
	tokens := oauthtest.Start(t)
	tokens.Username = alice
	tokens.AddRefreshToken("rt-ann")
	p := postfixtest.Start(t, postfixtest.Options{Users: map[string]string{alice: "upstream-pw", bob: "bob-pw"}, IntrospectURL: tokens.IntrospectURL})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "upstream-ca.pem"), p.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`listen:
  pop3: 127.0.0.1:0
  submissions: 127.0.0.1:0
tls: {self_signed: true}
state_dir: state
log: {format: json}
accounts:
  - user: ann
    password_hash: %q
    backend:
      type: imap
      addr: imap.example.com:993   # not used here: ann only sends
      auth: xoauth2
      username: %s
      oauth2:
        provider: custom
        client_id: %s
        auth_url: %s
        token_url: %s
        scopes: [mail]
    send:
      type: smtp
      addr: %s
      ca_file: upstream-ca.pem
      server_name: localhost
`, testHash(t), alice, tokens.ClientID, tokens.AuthURL, tokens.TokenURL, p.Addr)
	path := filepath.Join(dir, "popbridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	store := &oauth.Store{Dir: filepath.Join(dir, "state", app.TokenDir)}
	if err := store.Save("ann", &oauth2.Token{RefreshToken: "rt-ann"}); err != nil {
		t.Fatal(err)
	}
	_, stderr, stop := startRun(t, "serve", "-config", path)
	subs := localhostAddr(listenerAddr(t, stderr, "submissions"))
	ca := filepath.Join(dir, "state", "tls", "cert.pem")
	if res := sendSmtplib(t, subs, "ssl", ca, "ann", "s3cret", alice, []string{bob}, smtpMessage); !res.OK {
		t.Fatalf("smtplib: %+v\n%s", res, stderr)
	}
	deliveredAs(t, p, bob, 1, smtpMessage)
	if tokens.Refreshes() != 1 || !strings.Contains(p.Log(), "sasl_method=XOAUTH2") {
		t.Fatalf("refreshes %d; the upstream log does not show XOAUTH2:\n%s", tokens.Refreshes(), p.Log())
	}
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, stderr)
	}
	r := runCmd(t, "", "check", "-offline", "-config", path)
	if want := regexp.MustCompile(`(?m)^SEND +ann +smtp ` + regexp.QuoteMeta(p.Addr) + `, tls starttls, auth xoauth2 \(the backend's oauth2 grant\), from alice@example\.com$`); r.code != 0 || !want.MatchString(r.stdout) {
		t.Fatalf("check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("smtp: serve: an imap account's oauth2 grant (the token popbridge auth stores) sends over XOAUTH2 to Postfix, which checks it: delivered byte for byte")
}
