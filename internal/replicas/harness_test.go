package replicas

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/freeport"
	"github.com/popbridge/popbridge/internal/pgtest"
	"github.com/popbridge/popbridge/internal/pop3test"
)

// leaseTTL is the replicas' state.lease_ttl: short, so that the tests
// that wait for a lease to run out stay short.
const leaseTTL = 2 * time.Second

// dsnEnv is the environment variable the replicas read their DSN from
// (state.dsn_env).
const dsnEnv = "POPBRIDGE_STATE_DSN"

var (
	pg  *pgtest.Server // one PostgreSQL for the package, one database per test
	bin string         // the popbridge binary
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "replicas")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "popbridge")
	if err := build(bin, "github.com/popbridge/popbridge/cmd/popbridge"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	pg, err = pgtest.ForPackage()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	if pg != nil {
		pg.Close()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles the package pkg into out.
func build(out, pkg string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command is not on PATH: %w", err)
	}
	// -buildvcs=false: VCS stamping fails in a checkout owned by
	// another user than the one running the tests.
	if b, err := exec.Command(goTool, "build", "-buildvcs=false", "-o", out, pkg).CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// newDB returns the DSN of a fresh database on the package's PostgreSQL.
// Without PostgreSQL the test is skipped (it failed in TestMain under
// CI=true).
func newDB(t *testing.T) string {
	t.Helper()
	if pg == nil {
		t.Skip(pgtest.ErrNotInstalled)
	}
	return pg.CreateDB(t)
}

// query runs sql on dsn and returns the first column of the first row.
func query[T any](t *testing.T, dsn, sql string, args ...any) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var v T
	if err := c.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// ---------------------------------------------------------------------
// The upstream

// imapUpstream is a private Dovecot whose users have Maildirs with
// messages in them.
type imapUpstream struct {
	*dovecottest.Dovecot
}

// startDovecot runs a Dovecot with the users (password "pw-USER") and
// msgs messages in each INBOX, of different sizes.
func startDovecot(t *testing.T, users []string, msgs int, extra string) *imapUpstream {
	t.Helper()
	m := map[string]string{}
	for _, u := range users {
		m[u] = "pw-" + u
	}
	d := dovecottest.Start(t, dovecottest.Options{Users: m, ExtraConfig: extra})
	for _, u := range users {
		dir := d.MaildirPath(u)
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		for i := range msgs {
			msg := fmt.Sprintf("From: sender@example.org\nTo: %s@example.org\nSubject: %s message %d\n\n%s\n",
				u, u, i, strings.Repeat("line of the body\n", 1+i*7))
			name := fmt.Sprintf("17000000%02d.M%dP1.replicas", i, i)
			if err := os.WriteFile(filepath.Join(dir, "cur", name+":2,"), []byte(msg), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Chown(dir); err != nil {
			t.Fatal(err)
		}
	}
	return &imapUpstream{d}
}

// listing is what a POP3 server lists: UIDL and size by message number.
type listing struct {
	UIDLs []string
	Sizes []int
}

func (l listing) String() string {
	var b strings.Builder
	for i := range l.UIDLs {
		fmt.Fprintf(&b, "%d %s %d; ", i+1, l.UIDLs[i], l.Sizes[i])
	}
	return b.String()
}

// pop3Listing is what Dovecot's own POP3 lists for user now.
func (d *imapUpstream) pop3Listing(t *testing.T, user string) listing {
	t.Helper()
	c, err := pop3test.Dial(d.POP3Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, "pw-"+user); err != nil {
		t.Fatalf("dovecot POP3 login %s: %v", user, err)
	}
	l := list(t, c)
	c.Quit()
	return l
}

// list sends UIDL and LIST.
func list(t *testing.T, c *pop3test.Client) listing {
	t.Helper()
	var l listing
	_, body, err := c.CmdMulti("UIDL")
	if err != nil {
		t.Fatalf("UIDL: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\r\n") {
		if f := strings.Fields(line); len(f) == 2 {
			l.UIDLs = append(l.UIDLs, f[1])
		}
	}
	_, body, err = c.CmdMulti("LIST")
	if err != nil {
		t.Fatalf("LIST: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\r\n") {
		if f := strings.Fields(line); len(f) == 2 {
			n, _ := strconv.Atoi(f[1])
			l.Sizes = append(l.Sizes, n)
		}
	}
	return l
}

// ---------------------------------------------------------------------
// The replicas

// replica is one `popbridge serve` process.
type replica struct {
	name   string
	dir    string // the configuration file and state_dir
	config string
	addr   string // POP3
	http   string // listen.http: /readyz
	log    *dovecottest.SyncBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// clusterOptions configures startCluster.
type clusterOptions struct {
	n        int    // replicas; default 3
	dsn      string // state.driver postgres with this DSN; "" means bbolt
	accounts string // the YAML of the accounts: list, indented by 2
	extraEnv []string
	// files are written into every replica's directory (name -> content),
	// with mode 0600, before it starts.
	files map[string]string
	// logLevel is log.level; default debug.
	logLevel string
}

// startCluster runs the replicas with the same configuration (their own
// ports and state_dir) and waits until each greets.
func startCluster(t *testing.T, o clusterOptions) []*replica {
	t.Helper()
	if o.n == 0 {
		o.n = 3
	}
	if o.logLevel == "" {
		o.logLevel = "debug"
	}
	var rs []*replica
	for i := range o.n {
		r := &replica{name: string(rune('A' + i)), dir: t.TempDir(), log: &dovecottest.SyncBuffer{}}
		r.addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
		r.http = "127.0.0.1:" + strconv.Itoa(freePort(t))
		r.config = filepath.Join(r.dir, "popbridge.yaml")
		var cfg strings.Builder
		fmt.Fprintf(&cfg, "# replica %s\nlisten:\n  pop3: %s\n  http: %s\nstate_dir: state\n", r.name, r.addr, r.http)
		if o.dsn != "" {
			fmt.Fprintf(&cfg, "state:\n  driver: postgres\n  dsn_env: %s\n  lease_ttl: %s\n", dsnEnv, leaseTTL)
		}
		fmt.Fprintf(&cfg, "log: {level: %s, format: json}\naccounts:\n%s", o.logLevel, o.accounts)
		writeFile(t, r.config, cfg.String())
		for name, content := range o.files {
			writeFile(t, filepath.Join(r.dir, name), content)
		}
		env := append(os.Environ(), o.extraEnv...)
		if o.dsn != "" {
			env = append(env, dsnEnv+"="+o.dsn)
		}
		r.start(t, env)
		t.Cleanup(func() {
			r.stop()
			if t.Failed() {
				t.Logf("replica %s configuration:\n%s\nreplica %s log:\n%s", r.name, tail(cfg.String(), 4<<10), r.name, tail(r.log.String(), 12<<10))
			}
		})
		rs = append(rs, r)
	}
	for _, r := range rs {
		r.waitGreeting(t)
	}
	return rs
}

func (r *replica) start(t *testing.T, env []string) {
	t.Helper()
	cmd := exec.Command(bin, "serve", "-config", r.config)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = r.log, r.log
	// Dies with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
}

// stop ends the replica: SIGCONT (it may be stopped), SIGTERM, and
// SIGKILL after 10 s.
func (r *replica) stop() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// kill9 kills the replica with SIGKILL and waits until it is gone.
func (r *replica) kill9(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-r.done
}

// pause sends SIGSTOP, resume SIGCONT.
func (r *replica) pause(t *testing.T)  { r.signal(t, syscall.SIGSTOP) }
func (r *replica) resume(t *testing.T) { r.signal(t, syscall.SIGCONT) }

func (r *replica) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("replica %s: %v: %v", r.name, sig, err)
	}
}

// waitGreeting polls the POP3 listener until it sends +OK.
func (r *replica) waitGreeting(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			t.Fatalf("replica %s exited at start:\n%s", r.name, tail(r.log.String(), 8<<10))
		default:
		}
		var c net.Conn
		if c, err = net.DialTimeout("tcp", r.addr, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			var line string
			line, err = bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err == nil && strings.HasPrefix(line, "+OK") {
				return
			}
			if err == nil {
				err = fmt.Errorf("greeting %q", line)
			}
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Fatalf("replica %s did not greet on %s within 30 s: %v\n%s", r.name, r.addr, err, tail(r.log.String(), 8<<10))
}

// ready returns the status code of GET /readyz, or 0 when it does not
// answer.
func (r *replica) ready() int {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + r.http + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// dial connects a POP3 client to the replica.
func (r *replica) dial(t *testing.T) *pop3test.Client {
	t.Helper()
	c, err := pop3test.Dial(r.addr)
	if err != nil {
		t.Fatalf("replica %s: %v", r.name, err)
	}
	c.Timeout = 20 * time.Second
	t.Cleanup(func() { c.Close() })
	return c
}

// login dials and logs in; it returns the client and the PASS reply.
func (r *replica) login(t *testing.T, user, pass string) (*pop3test.Client, string) {
	t.Helper()
	c := r.dial(t)
	if _, err := c.Cmd("USER " + user); err != nil {
		t.Fatalf("replica %s: USER %s: %v", r.name, user, err)
	}
	reply, err := c.Cmd("PASS " + pass)
	var re *pop3test.ResponseError
	if err != nil && !errors.As(err, &re) {
		t.Fatalf("replica %s: PASS for %s: %v", r.name, user, err)
	}
	return c, reply
}

// mustLogin logs in and fails the test on -ERR.
func (r *replica) mustLogin(t *testing.T, user, pass string) *pop3test.Client {
	t.Helper()
	c, reply := r.login(t, user, pass)
	if !strings.HasPrefix(reply, "+OK") {
		t.Fatalf("replica %s: login %s: %q", r.name, user, reply)
	}
	return c
}

// ---------------------------------------------------------------------
// Configuration

// hashOf returns a bcrypt hash of pass at the lowest cost.
func hashOf(t *testing.T, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// imapAccounts returns the accounts: YAML of users served from the
// Dovecot over IMAP (plain, on loopback), with POP3 password "pop-USER",
// and the password files they name.
func imapAccounts(t *testing.T, d *imapUpstream, users []string) (string, map[string]string) {
	t.Helper()
	var b strings.Builder
	files := map[string]string{}
	for _, u := range users {
		fmt.Fprintf(&b, `  - user: %s
    password_hash: %q
    backend:
      type: imap
      addr: %s
      tls: none
      username: %s
      password_file: %s.password
`, u, hashOf(t, "pop-"+u), d.IMAPAddr, u, u)
		files[u+".password"] = "pw-" + u + "\n"
	}
	return b.String(), files
}

// ---------------------------------------------------------------------
// Small things

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// freePort returns a free TCP port on 127.0.0.1 (freeport: not one an
// outgoing connection can take before the server binds it).
func freePort(t *testing.T) int { return freeport.Port(t) }

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// eventually polls f every 50 ms until it returns true or d has passed.
func eventually(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dialClient connects to the replica without a testing.T (for
// goroutines).
func dialClient(r *replica) (*pop3test.Client, error) {
	c, err := pop3test.Dial(r.addr)
	if err != nil {
		return nil, err
	}
	c.Timeout = 20 * time.Second
	return c, nil
}
