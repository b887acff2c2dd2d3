// Package postfixtest runs a private Postfix submission server on
// loopback for tests, with SASL through a private auth-only Dovecot, the
// way internal/dovecottest runs a Dovecot: its own configuration, queue
// and mail directories, never the system's /etc/postfix or port 25.
//
// Two listeners: Addr (submission, STARTTLS required before MAIL and
// AUTH) and TLSAddr (implicit TLS). Logins are full addresses with a
// password (AUTH PLAIN, LOGIN); with Options.IntrospectURL also XOAUTH2
// and OAUTHBEARER, whose bearer tokens Dovecot's oauth2 passdb checks
// at that RFC 7662 introspection URL. Mail for the users' addresses is
// delivered into one Maildir each; mail for any other domain goes to
// the Maildir Outbound, so nothing leaves the machine. A login may only
// send as its own address (reject_sender_login_mismatch, at RCPT).
//
// It needs root (Postfix's master runs as root) and the postfix and
// dovecot-core packages.
package postfixtest

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/freeport"
	"github.com/popbridge/popbridge/internal/testpeer"
)

// Options configures an instance. The zero value gives one user
// alice@example.com with password "secret".
type Options struct {
	// Users maps addresses (logins) to passwords. Each gets a Maildir.
	Users map[string]string
	// IntrospectURL, if set, enables XOAUTH2 and OAUTHBEARER: Dovecot
	// POSTs token=... there and accepts {"active": true, "username":
	// the login}.
	IntrospectURL string
	// MessageSizeLimit is message_size_limit (EHLO SIZE). Default 10 MiB.
	MessageSizeLimit int64
	// RecipientLimit is smtpd_recipient_limit. Default 100.
	RecipientLimit int
	// ExtraMain is appended to main.cf (a later setting wins), e.g.
	// "message_drop_headers =" to keep Bcc headers.
	ExtraMain string
}

// Postfix is a running private instance.
type Postfix struct {
	// Dir holds configuration, queue, logs and mail.
	Dir string
	// Addr is the STARTTLS submission listener, TLSAddr the implicit
	// TLS one (host:port on 127.0.0.1).
	Addr, TLSAddr string
	// Users maps logins to passwords.
	Users map[string]string
	// CertPEM is the server certificate (localhost, 127.0.0.1).
	CertPEM []byte
	// MessageSizeLimit is the configured limit in octets.
	MessageSizeLimit int64

	master, dovecot *proc
	uid, gid        int
}

// Binary returns the path of Postfix's master daemon, or "" if Postfix
// is not installed.
func Binary() string {
	for _, p := range []string{"/usr/lib/postfix/sbin/master", "/usr/libexec/postfix/master"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// Start runs an instance for the test and stops it in t.Cleanup. Without
// Postfix or Dovecot, or when not root, the test is skipped, or fails
// when CI=true. The logs are printed when the test failed.
func Start(t testing.TB, opts Options) *Postfix {
	t.Helper()
	var missing string
	switch {
	case Binary() == "" || lookPath("postfix") == "":
		missing = "postfix not installed (apt-get install postfix)"
	case dovecottest.Binary() == "":
		missing = "dovecot not installed (apt-get install dovecot-core)"
	case os.Geteuid() != 0:
		missing = "Postfix's master must run as root"
	}
	if missing != "" {
		testpeer.Missing(t, "postfixtest: "+missing)
	}
	// Short: the Dovecot socket path must stay under about 100 bytes.
	dir, err := os.MkdirTemp("", "pfx")
	if err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	p, err := StartProcess(dir, opts)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfix log:\n%s", tail(p.Log(), 8<<10))
			t.Logf("dovecot log:\n%s", tail(p.DovecotLog(), 4<<10))
		}
		p.Stop()
		os.RemoveAll(dir)
	})
	return p
}

func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if fi, err := os.Stat("/usr/sbin/" + name); err == nil && fi.Mode().IsRegular() {
		return "/usr/sbin/" + name
	}
	return ""
}

// StartProcess runs an instance whose files live under dir; the caller
// calls Stop.
func StartProcess(dir string, opts Options) (*Postfix, error) {
	users := map[string]string{"alice@example.com": "secret"}
	if len(opts.Users) > 0 {
		users = maps.Clone(opts.Users)
	}
	for u, pw := range users {
		if !strings.Contains(u, "@") || strings.ContainsAny(u, ": \t\r\n/%") || strings.ContainsAny(pw, ":\r\n") {
			return nil, fmt.Errorf("postfixtest: user %q must be an address without spaces, and the password without : or line breaks", u)
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("postfixtest: %w", err)
	}
	p := &Postfix{Dir: dir, Users: users, MessageSizeLimit: opts.MessageSizeLimit}
	if p.MessageSizeLimit <= 0 {
		p.MessageSizeLimit = 10 << 20
	}
	if p.uid, p.gid, err = ids("vmail"); err != nil {
		return nil, err
	}
	if err := p.prepare(opts); err != nil {
		return nil, err
	}
	if err := p.startDovecot(opts); err != nil {
		p.Stop()
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		err = p.startPostfix(opts)
		if err == nil {
			return p, nil
		}
		if p.master != nil {
			p.master.stop()
			p.master = nil
		}
		if attempt == 2 || !strings.Contains(err.Error(), "in use") {
			p.Stop()
			return nil, err
		}
	}
}

// prepare writes the certificate, the Dovecot files and the Maildirs.
func (p *Postfix) prepare(opts Options) error {
	for _, sub := range []string{"conf", "queue", "data", "mail", "dc", "dc/run", "dc/state"} {
		if err := os.MkdirAll(filepath.Join(p.Dir, sub), 0o755); err != nil {
			return fmt.Errorf("postfixtest: %w", err)
		}
	}
	// The mail user, postfix and dovecot must walk down to their files.
	if err := os.Chmod(p.Dir, 0o755); err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	puid, pgid, err := ids("postfix")
	if err != nil {
		return err
	}
	if err := os.Chown(filepath.Join(p.Dir, "data"), puid, pgid); err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	cert, key, err := dovecottest.SelfSignedCert()
	if err != nil {
		return err
	}
	p.CertPEM = cert
	write := func(name string, data string, mode os.FileMode) error {
		if err := os.WriteFile(filepath.Join(p.Dir, name), []byte(data), mode); err != nil {
			return fmt.Errorf("postfixtest: %w", err)
		}
		return nil
	}
	if err := write("conf/cert.pem", string(cert), 0o644); err != nil {
		return err
	}
	if err := write("conf/key.pem", string(key), 0o600); err != nil {
		return err
	}
	var pw, boxes, senders strings.Builder
	for _, u := range slices.Sorted(maps.Keys(p.Users)) {
		fmt.Fprintf(&pw, "%s:{PLAIN}%s\n", strings.ToLower(u), p.Users[u])
		fmt.Fprintf(&boxes, "%s %s/\n", u, u)
		fmt.Fprintf(&senders, "%s %s\n", u, strings.ToLower(u))
		if err := p.makeMaildir(u); err != nil {
			return err
		}
	}
	if err := p.makeMaildir("outbound"); err != nil {
		return err
	}
	for _, f := range []struct{ name, data string }{
		{"dc/users", pw.String()},
		{"conf/mailboxes", boxes.String()},
		{"conf/senders", senders.String()},
		// Every recipient outside the users' domains lands in outbound/.
		{"conf/outbound.regexp", fmt.Sprintf("!/@(%s)$/ outbound/\n", strings.Join(quoteDomains(p.domains()), "|"))},
	} {
		if err := write(f.name, f.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func quoteDomains(ds []string) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = strings.ReplaceAll(d, ".", `\.`)
	}
	return out
}

// domains returns the users' domains, sorted.
func (p *Postfix) domains() []string {
	set := map[string]bool{}
	for u := range p.Users {
		set[strings.ToLower(u[strings.LastIndexByte(u, '@')+1:])] = true
	}
	return slices.Sorted(maps.Keys(set))
}

func (p *Postfix) makeMaildir(name string) error {
	base := filepath.Join(p.Dir, "mail", name)
	for _, sub := range []string{"", "cur", "new", "tmp"} {
		d := filepath.Join(base, sub)
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("postfixtest: %w", err)
		}
		if err := os.Chown(d, p.uid, p.gid); err != nil {
			return fmt.Errorf("postfixtest: %w", err)
		}
	}
	return nil
}

func (p *Postfix) startDovecot(opts Options) error {
	dc := filepath.Join(p.Dir, "dc")
	var c strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&c, format+"\n", args...) }
	w("# Generated by popbridge's postfixtest: an auth-only Dovecot for Postfix.")
	w("instance_name = postfixtest-%s", filepath.Base(p.Dir))
	w("base_dir = %s/run", dc)
	w("state_dir = %s/state", dc)
	w("log_path = %s/dovecot.log", dc)
	w("auth_verbose = yes")
	w("protocols = none")
	w("listen = 127.0.0.1")
	w("ssl = no")
	w("disable_plaintext_auth = no")
	w("auth_cache_size = 0")
	w("auth_failure_delay = 0")
	if opts.IntrospectURL != "" {
		ext := fmt.Sprintf("introspection_mode = post\nintrospection_url = %s\nforce_introspection = yes\n"+
			"username_attribute = username\nusername_format = %%Lu\nactive_attribute = active\nactive_value = true\n", opts.IntrospectURL)
		if err := os.WriteFile(filepath.Join(dc, "oauth2.conf.ext"), []byte(ext), 0o644); err != nil {
			return fmt.Errorf("postfixtest: %w", err)
		}
		w("auth_mechanisms = plain login xoauth2 oauthbearer")
		w("passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = %s/oauth2.conf.ext\n}", dc)
		w("passdb {\n  driver = passwd-file\n  mechanisms = plain login\n  args = scheme=PLAIN username_format=%%Lu %s/users\n}", dc)
	} else {
		w("auth_mechanisms = plain login")
		w("passdb {\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%%Lu %s/users\n}", dc)
	}
	w("userdb {\n  driver = static\n  args = uid=%d gid=%d\n}", p.uid, p.gid)
	w("service auth {\n  unix_listener auth-postfix {\n    mode = 0660\n    user = postfix\n    group = postfix\n  }\n}")
	w("service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}")
	conf := filepath.Join(dc, "dovecot.conf")
	if err := os.WriteFile(conf, []byte(c.String()), 0o644); err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	pr, err := startProc(dovecottest.Binary(), true, "-F", "-c", conf)
	if err != nil {
		return err
	}
	p.dovecot = pr
	sock := filepath.Join(dc, "run", "auth-postfix")
	return pr.waitReady("dovecot auth socket "+sock, func() error { return dialed("unix", sock) }, p.DovecotLog)
}

func (p *Postfix) mainCF(opts Options) string {
	var c strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&c, format+"\n", args...) }
	d, conf := p.Dir, filepath.Join(p.Dir, "conf")
	limit := opts.RecipientLimit
	if limit <= 0 {
		limit = 100
	}
	w("# Generated by popbridge's postfixtest; a private test instance.")
	w("compatibility_level = 3.6")
	w("queue_directory = %s/queue", d)
	w("data_directory = %s/data", d)
	w("maillog_file = %s/postfix.log", d)
	w("maillog_file_prefixes = %s", d)
	w("syslog_name = postfixtest-%s", filepath.Base(d))
	w("myhostname = smtp-upstream.test")
	w("mydomain = smtp-upstream.test")
	w("myorigin = smtp-upstream.test")
	w("inet_interfaces = 127.0.0.1")
	w("inet_protocols = ipv4")
	w("mydestination =")
	w("mynetworks =")
	w("alias_maps =")
	w("alias_database =")
	w("local_recipient_maps =")
	w("local_transport = error:no local delivery")
	// Nothing ever leaves the machine: every recipient is a virtual one.
	w("default_transport = virtual")
	w("relay_transport = virtual")
	w("virtual_mailbox_domains = %s", strings.Join(p.domains(), " "))
	w("virtual_mailbox_base = %s/mail", d)
	w("virtual_mailbox_maps = texthash:%s/mailboxes, regexp:%s/outbound.regexp", conf, conf)
	w("virtual_uid_maps = static:%d", p.uid)
	w("virtual_gid_maps = static:%d", p.gid)
	w("virtual_minimum_uid = %d", p.uid)
	w("virtual_mailbox_limit = 0")
	w("smtpd_sasl_auth_enable = yes")
	w("smtpd_sasl_type = dovecot")
	w("smtpd_sasl_path = %s/dc/run/auth-postfix", d)
	w("smtpd_tls_cert_file = %s/cert.pem", conf)
	w("smtpd_tls_key_file = %s/key.pem", conf)
	w("smtpd_tls_security_level = encrypt")
	w("smtpd_tls_auth_only = yes")
	w("smtpd_relay_restrictions = permit_sasl_authenticated, reject")
	w("smtpd_recipient_restrictions = permit_sasl_authenticated, reject")
	w("smtpd_sender_login_maps = texthash:%s/senders", conf)
	w("smtpd_sender_restrictions = reject_sender_login_mismatch")
	w("message_size_limit = %d", p.MessageSizeLimit)
	w("smtpd_recipient_limit = %d", limit)
	w("local_header_rewrite_clients =")
	w("always_add_missing_headers = no")
	w("disable_vrfy_command = yes")
	w("smtpd_discard_ehlo_keywords = etrn")
	w("smtpd_error_sleep_time = 0")
	if opts.ExtraMain != "" {
		w("%s", opts.ExtraMain)
	}
	return c.String()
}

func (p *Postfix) startPostfix(opts Options) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	p.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	p.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	conf := filepath.Join(p.Dir, "conf")
	master := fmt.Sprintf(`# Generated by popbridge's postfixtest: no port 25, no pickup, no smtp client.
%s inet n - n - - smtpd
%s inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`, p.Addr, p.TLSAddr)
	if err := os.WriteFile(filepath.Join(conf, "master.cf"), []byte(master), 0o644); err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), []byte(p.mainCF(opts)), 0o644); err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	// "postfix check" creates the queue directories with their owners.
	if out, err := exec.Command(lookPath("postfix"), "-c", conf, "check").CombinedOutput(); err != nil {
		return fmt.Errorf("postfixtest: postfix check: %v: %s\n%s", err, bytes.TrimSpace(out), p.Log())
	}
	// The master in the foreground, as our child: Stop and the death of
	// the test binary end it.
	pr, err := startProc(Binary(), false, "-c", conf, "-s")
	if err != nil {
		return err
	}
	p.master = pr
	log := func() string { return tail(p.Log(), 4<<10) }
	for _, addr := range []string{p.Addr, p.TLSAddr} {
		if err := pr.waitReady("postfix on "+addr, func() error { return probe(addr, addr == p.TLSAddr, p.TLSConfig()) }, log); err != nil {
			return err
		}
	}
	return nil
}

// probe connects and waits for the 220 greeting.
func probe(addr string, useTLS bool, conf *tls.Config) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if useTLS {
		tc := tls.Client(conn, conf)
		if err := tc.Handshake(); err != nil {
			return err
		}
		conn = tc
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(buf[:n], []byte("220")) {
		return fmt.Errorf("greeting %q", buf[:n])
	}
	conn.Write([]byte("QUIT\r\n"))
	return nil
}

// Stop ends Postfix and Dovecot. Dir is left in place.
func (p *Postfix) Stop() {
	if p.master != nil {
		p.master.stop()
	}
	if p.dovecot != nil {
		p.dovecot.stop()
	}
}

// Log returns Postfix's log so far.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "postfix.log"))
	return string(b)
}

// DovecotLog returns the auth Dovecot's log so far.
func (p *Postfix) DovecotLog() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "dc", "dovecot.log"))
	return string(b)
}

// CertPool returns a pool holding the server certificate.
func (p *Postfix) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.CertPEM)
	return pool
}

// CAFile returns the path of the server certificate (PEM), for clients
// that take a CA file.
func (p *Postfix) CAFile() string { return filepath.Join(p.Dir, "conf", "cert.pem") }

// TLSConfig returns a client configuration that trusts the server, for
// the name localhost.
func (p *Postfix) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: p.CertPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// Outbound is the mailbox name that receives every recipient outside the
// users' domains.
const Outbound = "outbound"

// MaildirPath returns the Maildir of a user address or of Outbound.
func (p *Postfix) MaildirPath(mailbox string) string {
	return filepath.Join(p.Dir, "mail", mailbox)
}

// Messages returns the messages delivered so far to mailbox (a user
// address or Outbound), oldest first by file name, as stored.
func (p *Postfix) Messages(mailbox string) ([][]byte, error) {
	dir := filepath.Join(p.MaildirPath(mailbox), "new")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("postfixtest: %w", err)
	}
	// In delivery order: Postfix names a message "sec.VdevIinodeMusec.host",
	// and within one second the inode, not the time, orders the names.
	slices.SortStableFunc(ents, func(a, b os.DirEntry) int { return cmpDelivered(a.Name(), b.Name()) })
	var out [][]byte
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("postfixtest: %w", err)
		}
		out = append(out, b)
	}
	return out, nil
}

// cmpDelivered orders Maildir names of Postfix's local delivery by
// their seconds and microseconds.
func cmpDelivered(a, b string) int {
	key := func(name string) (int64, int64) {
		sec, rest, _ := strings.Cut(name, ".")
		s, _ := strconv.ParseInt(sec, 10, 64)
		uniq, _, _ := strings.Cut(rest, ".")
		var us int64
		if i := strings.LastIndexByte(uniq, 'M'); i >= 0 {
			us, _ = strconv.ParseInt(uniq[i+1:], 10, 64)
		}
		return s, us
	}
	as, au := key(a)
	bs, bu := key(b)
	if c := cmp.Compare(as, bs); c != 0 {
		return c
	}
	return cmp.Compare(au, bu)
}

// WaitMessages waits up to timeout until mailbox holds n messages and
// returns them; fewer after timeout is an error.
func (p *Postfix) WaitMessages(mailbox string, n int, timeout time.Duration) ([][]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := p.Messages(mailbox)
		if err != nil {
			return nil, err
		}
		if len(msgs) >= n {
			return msgs, nil
		}
		if time.Now().After(deadline) {
			return msgs, fmt.Errorf("postfixtest: %s holds %d messages after %v, want %d", mailbox, len(msgs), timeout, n)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Queued reports whether any message is still in Postfix's queue
// (incoming, active or deferred).
func (p *Postfix) Queued() bool {
	for _, q := range []string{"incoming", "active", "deferred", "maildrop", "hold"} {
		found := false
		filepath.WalkDir(filepath.Join(p.Dir, "queue", q), func(_ string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				found = true
			}
			return nil
		})
		if found {
			return true
		}
	}
	return false
}

// Stripped returns a delivered message without the trace fields the
// delivery added at its top (Return-Path, X-Original-To, Delivered-To,
// Received, with continuation lines).
func Stripped(delivered []byte) []byte {
	rest := delivered
	for len(rest) > 0 {
		line, after, _ := bytes.Cut(rest, []byte("\n"))
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			break
		}
		switch strings.ToLower(string(name)) {
		case "return-path", "x-original-to", "delivered-to", "received":
		default:
			return rest
		}
		rest = after
		for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			_, rest, _ = bytes.Cut(rest, []byte("\n"))
		}
	}
	return rest
}

// AsDelivered returns how Postfix stores a submitted message: LF line
// ends, with a final LF.
func AsDelivered(submitted []byte) []byte {
	b := bytes.ReplaceAll(submitted, []byte("\r\n"), []byte("\n"))
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	return b
}

// proc is a child process leading its own process group, which dies
// with us.
type proc struct {
	cmd  *exec.Cmd
	out  *dovecottest.SyncBuffer
	done chan struct{}
	once sync.Once
}

// Postfix's master makes itself a session leader (which fails for a
// process group leader); Dovecot is put in its own group here.
func startProc(bin string, ownGroup bool, args ...string) (*proc, error) {
	pr := &proc{out: &dovecottest.SyncBuffer{}, done: make(chan struct{})}
	pr.cmd = exec.Command(bin, args...)
	pr.cmd.Stdout, pr.cmd.Stderr = pr.out, pr.out
	pr.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: ownGroup, Pdeathsig: syscall.SIGTERM}
	if err := pr.cmd.Start(); err != nil {
		return nil, fmt.Errorf("postfixtest: start %s: %w", bin, err)
	}
	go func() {
		pr.cmd.Wait()
		close(pr.done)
	}()
	return pr, nil
}

// waitReady polls ready until it succeeds, the process exits, or 20 s
// pass; what names the awaited thing and log gives the log for errors.
func (pr *proc) waitReady(what string, ready func() error, log func() string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if pr.exited() {
			return fmt.Errorf("postfixtest: exited during startup, waiting for %s: %s\n%s", what, pr.out.String(), log())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postfixtest: %s not ready after 20 s: %w\n%s", what, err, log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialed reports whether something accepts connections at addr.
func dialed(network, addr string) error {
	c, err := net.Dial(network, addr)
	if err == nil {
		c.Close()
	}
	return err
}

func (pr *proc) exited() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL to the process group after 5 s.
func (pr *proc) stop() {
	pr.once.Do(func() {
		pid := pr.cmd.Process.Pid
		if !pr.exited() {
			pr.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-pr.done:
			case <-time.After(5 * time.Second):
				syscall.Kill(-pid, syscall.SIGKILL)
				<-pr.done
			}
		}
		// Children that outlived the master.
		syscall.Kill(-pid, syscall.SIGKILL)
	})
}

func ids(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		if name == "vmail" {
			// dovecottest creates it.
			out, cerr := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
				"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "vmail").CombinedOutput()
			if u, err = user.Lookup(name); err != nil {
				return 0, 0, fmt.Errorf("postfixtest: create user vmail: %v: %s", cerr, bytes.TrimSpace(out))
			}
		} else {
			return 0, 0, fmt.Errorf("postfixtest: user %s: %w", name, err)
		}
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil || uid == 0 {
		return 0, 0, fmt.Errorf("postfixtest: user %s has unusable ids %s:%s", name, u.Uid, u.Gid)
	}
	return uid, gid, nil
}

// freePorts returns n distinct free TCP ports on 127.0.0.1 (freeport).
func freePorts(n int) ([]int, error) {
	ps, err := freeport.Ports(n)
	if err != nil {
		return nil, fmt.Errorf("postfixtest: free port: %w", err)
	}
	return ps, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
