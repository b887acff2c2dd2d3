// Package dovecottest runs a private Dovecot IMAP/POP3 server on loopback
// for tests and benchmarks, the way net/http/httptest runs an HTTP server.
// The POP3 client for comparing replies is in internal/pop3test, the
// Maildir corpus of edge cases in internal/testcorpus.
//
// The instance uses its own configuration and directories and never
// touches /etc/dovecot. Dovecot refuses to read mail as root, so as root
// mail is owned by the unprivileged user "vmail" (created with useradd
// when missing); otherwise Dovecot runs rootless as the current user.
package dovecottest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
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

	"github.com/popbridge/popbridge/internal/freeport"
	"github.com/popbridge/popbridge/internal/testcert"
	"github.com/popbridge/popbridge/internal/testcorpus"
	"github.com/popbridge/popbridge/internal/testpeer"
)

// Options configures a Dovecot instance. The zero value gives one user
// "test" with password "secret".
type Options struct {
	// Users maps user names to passwords. Neither may contain ":" or a
	// line break (passwd-file format).
	Users map[string]string
	// LockSession sets pop3_lock_session = yes: a second POP3 session of
	// a user gets -ERR [IN-USE] (after Dovecot waits about 10 s).
	LockSession bool
	// UIDLFormat sets pop3_uidl_format; empty keeps Dovecot's default
	// (%08Xu%08Xv). "%f" gives the Maildir unique name.
	UIDLFormat string
	// ExtraConfig is appended to dovecot.conf; a setting given there
	// overrides the generated one.
	ExtraConfig string
	// StartTimeout bounds the wait for the listeners. Default 20 s.
	StartTimeout time.Duration
	// OAuth2IntrospectURL, if set, also lets users log in with XOAUTH2
	// and OAUTHBEARER: Dovecot's oauth2 passdb posts the access token
	// to this URL (RFC 7662 token introspection) and accepts it when the
	// answer has "active": true and "username": the user.
	OAuth2IntrospectURL string
}

// Dovecot is a running private Dovecot.
type Dovecot struct {
	// Dir holds the configuration, the log, the certificate and mail/.
	Dir string
	// Listener addresses (host:port on 127.0.0.1). POP3S and IMAPS use
	// implicit TLS with the certificate in CertPEM.
	POP3Addr, POP3SAddr, IMAPAddr, IMAPSAddr string
	// Users maps user names to passwords.
	Users map[string]string
	// CertPEM and KeyPEM are the self-signed server certificate (DNS SAN
	// localhost, IP SANs 127.0.0.1 and ::1) and its key.
	CertPEM, KeyPEM []byte
	// UID and GID own the mail: the vmail user when running as root,
	// else the current user.
	UID, GID int
	// LogPath is Dovecot's log file.
	LogPath string

	cmd      *exec.Cmd
	stderr   *SyncBuffer
	done     chan struct{} // closed when the master process has exited
	waitErr  error
	baseDir  string // removed by Stop when it lies outside Dir
	stopOnce sync.Once
	stopErr  error
}

// Binary returns the path of the dovecot binary, or "" if none is found.
func Binary() string {
	if p, err := exec.LookPath("dovecot"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/dovecot", "/usr/local/sbin/dovecot"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// Start runs a Dovecot for the test and stops it in t.Cleanup. Without a
// dovecot binary the test is skipped, or fails when CI=true. The log is
// printed when the test failed.
func Start(t testing.TB, opts Options) *Dovecot {
	t.Helper()
	if Binary() == "" {
		testpeer.Missing(t, "dovecottest: dovecot binary not found; install dovecot-core, dovecot-imapd, dovecot-pop3d")
	}
	dir, err := os.MkdirTemp("", "dovecottest-")
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	d, err := StartProcess(dir, opts)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := os.ReadFile(d.LogPath); err == nil {
				t.Logf("dovecot log:\n%s", tail(log, 8<<10))
			}
		}
		if err := d.Stop(); err != nil {
			t.Errorf("dovecottest: stop: %v", err)
		}
		os.RemoveAll(dir)
	})
	return d
}

// StartProcess runs a Dovecot whose files live under dir (created if
// needed, left in place by Stop). The caller must call Stop.
func StartProcess(dir string, opts Options) (*Dovecot, error) {
	bin := Binary()
	if bin == "" {
		return nil, errors.New("dovecottest: dovecot binary not found")
	}
	users := map[string]string{"test": "secret"}
	if len(opts.Users) > 0 {
		users = maps.Clone(opts.Users)
	}
	for u, p := range users {
		if u == "" || strings.ContainsAny(u, ":\r\n/%") || strings.HasPrefix(u, ".") || strings.ContainsAny(p, ":\r\n") {
			return nil, fmt.Errorf("dovecottest: user %q or its password cannot go in a passwd-file", u)
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("dovecottest: %w", err)
	}
	uid, gid, err := mailUser()
	if err != nil {
		return nil, err
	}
	d := &Dovecot{
		Dir:     dir,
		Users:   users,
		UID:     uid,
		GID:     gid,
		LogPath: filepath.Join(dir, "dovecot.log"),
	}
	if err := d.prepare(); err != nil {
		return nil, err
	}
	// A free port may be taken between choosing and binding it: retry.
	for attempt := 0; ; attempt++ {
		err = d.start(bin, opts)
		if err == nil {
			return d, nil
		}
		d.Stop()
		if attempt == 2 || !strings.Contains(err.Error(), "in use") {
			return nil, err
		}
		d.stopOnce, d.stopErr = sync.Once{}, nil
	}
}

// prepare makes the directories, the certificate and the mail folders.
func (d *Dovecot) prepare() error {
	if err := os.MkdirAll(d.Dir, 0o755); err != nil {
		return fmt.Errorf("dovecottest: %w", err)
	}
	// The mail user must be able to walk down to its mail.
	if err := traversable(d.Dir); err != nil {
		return err
	}
	for _, sub := range []string{"state", "mail"} {
		p := filepath.Join(d.Dir, sub)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("dovecottest: %w", err)
		}
		if err := os.Chmod(p, 0o755); err != nil {
			return fmt.Errorf("dovecottest: %w", err)
		}
	}
	for u := range d.Users {
		if err := d.makeMaildir(d.MaildirPath(u)); err != nil {
			return err
		}
	}
	certPEM, keyPEM, err := SelfSignedCert()
	if err != nil {
		return err
	}
	d.CertPEM, d.KeyPEM = certPEM, keyPEM
	if err := os.WriteFile(filepath.Join(d.Dir, "cert.pem"), certPEM, 0o644); err != nil {
		return fmt.Errorf("dovecottest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d.Dir, "key.pem"), keyPEM, 0o600); err != nil {
		return fmt.Errorf("dovecottest: %w", err)
	}
	var pw strings.Builder
	names := make([]string, 0, len(d.Users))
	for u := range d.Users {
		names = append(names, u)
	}
	slices.Sort(names)
	for _, u := range names {
		fmt.Fprintf(&pw, "%s:{PLAIN}%s\n", u, d.Users[u])
	}
	// The auth process runs as the dovecot user; the passwords are test data.
	if err := os.WriteFile(filepath.Join(d.Dir, "users"), []byte(pw.String()), 0o644); err != nil {
		return fmt.Errorf("dovecottest: %w", err)
	}
	return nil
}

// makeMaildir creates a Maildir (cur, new, tmp) owned by the mail user.
func (d *Dovecot) makeMaildir(path string) error {
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(path, sub), 0o700); err != nil {
			return fmt.Errorf("dovecottest: %w", err)
		}
	}
	return d.Chown(path)
}

// start writes the configuration with fresh ports and runs the master.
func (d *Dovecot) start(bin string, opts Options) error {
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	d.POP3Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	d.POP3SAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	d.IMAPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	d.IMAPSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[3]))

	// Unix socket paths must stay under about 100 bytes.
	d.baseDir = filepath.Join(d.Dir, "run")
	if len(d.baseDir) > 50 {
		if d.baseDir, err = os.MkdirTemp("/tmp", "dc"); err != nil {
			return fmt.Errorf("dovecottest: %w", err)
		}
		if err := os.Chmod(d.baseDir, 0o755); err != nil {
			return fmt.Errorf("dovecottest: %w", err)
		}
	}
	if opts.OAuth2IntrospectURL != "" {
		ext := fmt.Sprintf("introspection_mode = post\nintrospection_url = %s\nusername_attribute = username\nactive_attribute = active\nactive_value = true\n", opts.OAuth2IntrospectURL)
		if err := os.WriteFile(filepath.Join(d.Dir, "oauth2.conf.ext"), []byte(ext), 0o644); err != nil {
			return fmt.Errorf("dovecottest: %w", err)
		}
	}
	conf := filepath.Join(d.Dir, "dovecot.conf")
	if err := os.WriteFile(conf, []byte(d.config(opts, ports)), 0o644); err != nil {
		return fmt.Errorf("dovecottest: %w", err)
	}
	os.Truncate(d.LogPath, 0)

	d.stderr = &SyncBuffer{}
	d.cmd = exec.Command(bin, "-F", "-c", conf)
	d.cmd.Stdout = d.stderr
	d.cmd.Stderr = d.stderr
	// Its own process group, so Stop can end the children too; and the
	// master dies with us if the test binary is killed.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("dovecottest: start %s: %w", bin, err)
	}
	d.done = make(chan struct{})
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()

	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	if err := d.waitReady(timeout); err != nil {
		return fmt.Errorf("%w\n%s", err, d.diagnostics())
	}
	return nil
}

// config returns dovecot.conf. It includes nothing from /etc/dovecot.
func (d *Dovecot) config(opts Options, ports []int) string {
	var c strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&c, format+"\n", args...) }
	w("# Generated by popbridge's dovecottest; a private test instance.")
	w("instance_name = dovecottest-%s", filepath.Base(d.Dir))
	w("base_dir = %s", d.baseDir)
	w("state_dir = %s", filepath.Join(d.Dir, "state"))
	w("log_path = %s", d.LogPath)
	w("auth_verbose = yes")
	w("listen = 127.0.0.1")
	w("protocols = imap pop3")
	w("ssl = yes")
	w("ssl_cert = <%s", filepath.Join(d.Dir, "cert.pem"))
	w("ssl_key = <%s", filepath.Join(d.Dir, "key.pem"))
	w("ssl_min_protocol = TLSv1.2")
	w("disable_plaintext_auth = no")
	if opts.OAuth2IntrospectURL == "" {
		w("auth_mechanisms = plain login")
	} else {
		w("auth_mechanisms = plain login xoauth2 oauthbearer")
		w("passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = %s\n}", filepath.Join(d.Dir, "oauth2.conf.ext"))
	}
	w("auth_failure_delay = 0")
	w("passdb {\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%%u %s\n}", filepath.Join(d.Dir, "users"))
	w("userdb {\n  driver = static\n  args = uid=%d gid=%d\n}", d.UID, d.GID)
	w("mail_location = maildir:%s/%%u", filepath.Join(d.Dir, "mail"))
	w("mail_uid = %d", d.UID)
	w("mail_gid = %d", d.GID)
	w("first_valid_uid = %d", d.UID)
	w("first_valid_gid = %d", d.GID)
	if os.Geteuid() != 0 {
		// Rootless: every process runs as us, without chroot.
		name := strconv.Itoa(os.Geteuid())
		if u, err := user.LookupId(name); err == nil {
			name = u.Username
		}
		group := strconv.Itoa(os.Getegid())
		if g, err := user.LookupGroupId(group); err == nil {
			group = g.Name
		}
		w("default_internal_user = %s", name)
		w("default_internal_group = %s", group)
		w("default_login_user = %s", name)
		w("service imap-login {\n  chroot =\n}\nservice pop3-login {\n  chroot =\n}")
	}
	w("pop3_no_flag_updates = yes")
	w("pop3_lock_session = %s", map[bool]string{true: "yes", false: "no"}[opts.LockSession])
	if opts.UIDLFormat != "" {
		w("pop3_uidl_format = %s", opts.UIDLFormat)
	}
	w("service pop3-login {")
	w("  inet_listener pop3 {\n    port = %d\n  }", ports[0])
	w("  inet_listener pop3s {\n    port = %d\n    ssl = yes\n  }", ports[1])
	w("}")
	w("service imap-login {")
	w("  inet_listener imap {\n    port = %d\n  }", ports[2])
	w("  inet_listener imaps {\n    port = %d\n    ssl = yes\n  }", ports[3])
	w("}")
	w("# No growing delays after failed logins (the anvil auth penalty).")
	w("service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}")
	if opts.ExtraConfig != "" {
		w("%s", opts.ExtraConfig)
	}
	return c.String()
}

// waitReady polls every listener until it sends its greeting.
func (d *Dovecot) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tlsConf := d.TLSConfig()
	checks := []struct {
		addr, greeting string
		tls            bool
	}{
		{d.POP3Addr, "+OK", false},
		{d.POP3SAddr, "+OK", true},
		{d.IMAPAddr, "* OK", false},
		{d.IMAPSAddr, "* OK", true},
	}
	for _, c := range checks {
		for {
			err := probe(c.addr, c.greeting, c.tls, tlsConf)
			if err == nil {
				break
			}
			select {
			case <-d.done:
				return fmt.Errorf("dovecottest: dovecot exited during startup: %v", d.waitErr)
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("dovecottest: %s not ready after %v: %w", c.addr, timeout, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// probe connects to addr and checks that the greeting starts with want.
func probe(addr, want string, useTLS bool, conf *tls.Config) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
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
	if !bytes.HasPrefix(buf[:n], []byte(want)) {
		return fmt.Errorf("greeting %q", buf[:n])
	}
	return nil
}

// diagnostics returns the master's output and the log's tail.
func (d *Dovecot) diagnostics() string {
	var s strings.Builder
	if d.stderr != nil {
		if out := d.stderr.String(); out != "" {
			fmt.Fprintf(&s, "dovecot output:\n%s\n", tail([]byte(out), 4<<10))
		}
	}
	if log, err := os.ReadFile(d.LogPath); err == nil && len(log) > 0 {
		fmt.Fprintf(&s, "dovecot log:\n%s", tail(log, 4<<10))
	}
	return s.String()
}

// Stop stops Dovecot: SIGTERM, and SIGKILL to its process group when it
// has not exited within 3 s (it waits for clients still connected). Dir
// is left in place. Stop may be called more than once.
func (d *Dovecot) Stop() error {
	d.stopOnce.Do(func() {
		if d.cmd == nil || d.cmd.Process == nil || d.done == nil {
			return
		}
		pid := d.cmd.Process.Pid
		select {
		case <-d.done:
		default:
			if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
				d.stopErr = fmt.Errorf("dovecottest: stop: %w", err)
			}
			select {
			case <-d.done:
			case <-time.After(3 * time.Second):
				syscall.Kill(-pid, syscall.SIGKILL)
				<-d.done
			}
		}
		// Children that outlived the master (they normally exit with it).
		syscall.Kill(-pid, syscall.SIGKILL)
		if d.baseDir != "" && !strings.HasPrefix(d.baseDir, d.Dir+string(filepath.Separator)) {
			os.RemoveAll(d.baseDir)
		}
	})
	return d.stopErr
}

// Log returns Dovecot's log so far.
func (d *Dovecot) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}

// MaildirPath returns the Maildir of user (it holds cur/, new/ and tmp/).
func (d *Dovecot) MaildirPath(user string) string {
	return filepath.Join(d.Dir, "mail", user)
}

// Chown gives path and everything under it to the mail user, so Dovecot
// can read and change files the test wrote.
func (d *Dovecot) Chown(path string) error {
	if os.Geteuid() != 0 {
		return nil // rootless: the mail user is us
	}
	err := filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, d.UID, d.GID)
	})
	if err != nil {
		return fmt.Errorf("dovecottest: chown %q: %w", path, err)
	}
	return nil
}

// WriteCorpus writes the edge-case corpus into user's Maildir and hands
// the files to the mail user.
func (d *Dovecot) WriteCorpus(user string) ([]testcorpus.CorpusMessage, error) {
	msgs, err := testcorpus.WriteCorpus(d.MaildirPath(user))
	if err != nil {
		return nil, err
	}
	return msgs, d.Chown(d.MaildirPath(user))
}

// CertPool returns a pool holding the server certificate.
func (d *Dovecot) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d.CertPEM)
	return pool
}

// TLSConfig returns a client configuration that trusts the server
// certificate, for the name localhost.
func (d *Dovecot) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: d.CertPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// SelfSignedCert returns a fresh self-signed certificate for localhost,
// 127.0.0.1 and ::1 and its PKCS #8 key, both PEM encoded: a
// testcert.Cert, for callers that want the PEM only.
func SelfSignedCert() (certPEM, keyPEM []byte, err error) {
	c, err := testcert.Make(testcert.Options{})
	if err != nil {
		return nil, nil, fmt.Errorf("dovecottest: %w", err)
	}
	return c.CertPEM, c.KeyPEM, nil
}

// mailUser returns the ids mail is stored under: the vmail user when
// root (created if missing), otherwise the current user.
func mailUser() (uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return os.Geteuid(), os.Getegid(), nil
	}
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		if u, err := user.Lookup("vmail"); err == nil {
			uid, err1 := strconv.Atoi(u.Uid)
			gid, err2 := strconv.Atoi(u.Gid)
			if err1 != nil || err2 != nil || uid == 0 {
				return 0, 0, fmt.Errorf("dovecottest: user vmail has unusable ids %s:%s", u.Uid, u.Gid)
			}
			return uid, gid, nil
		}
		// Another test binary may be adding it at the same moment: on
		// failure, look again.
		out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "vmail").CombinedOutput()
		if err != nil {
			lastErr = fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
			time.Sleep(100 * time.Millisecond)
		}
	}
	return 0, 0, fmt.Errorf("dovecottest: create user vmail: %w", lastErr)
}

// traversable adds o+x to dir and each parent that lacks it, so the mail
// user can reach its mail.
func traversable(dir string) error {
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("dovecottest: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, fi.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("dovecottest: make %q traversable: %w", p, err)
			}
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1 (freeport).
func freePorts(n int) ([]int, error) {
	ps, err := freeport.Ports(n)
	if err != nil {
		return nil, fmt.Errorf("dovecottest: free port: %w", err)
	}
	return ps, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers (the
// goroutines that copy a command's output) and a reader.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
