package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/dovecottest"
)

// TestCompareRelayWithNginx is the relay benchmark of docs/benchmarks.md
// (issues 5 and 13): popbridge's pop3 backend and nginx's mail proxy
// (ngx_mail_module, Debian package libnginx-mod-mail) both relay the same
// private Dovecot POP3, and popbench drives both, and Dovecot directly for
// reference, in one run, with two corpora: 256 KiB messages and ordinary
// mail of 10 to 60 KB. nginx gets a private configuration and a tiny
// auth_http endpoint served by the test. It runs only when
// POPBENCH_RELAY=1; with POPBENCH_REPORT=FILE it also writes the Markdown
// tables to FILE.
//
//	POPBENCH_RELAY=1 POPBENCH_REPORT=/tmp/relay.md go test -v -run TestCompareRelayWithNginx -timeout 30m ./cmd/popbench
func TestCompareRelayWithNginx(t *testing.T) {
	if os.Getenv("POPBENCH_RELAY") != "1" {
		t.Skip("set POPBENCH_RELAY=1 to run the relay benchmark against nginx's mail proxy")
	}
	nginx, mailModule := findNginx(t)
	const (
		accounts   = 16
		perAccount = 40 // messages per account
	)
	corpora := []relayCorpus{
		{
			name: "256 KiB", prefix: "u",
			size:     func(int) int { return 256 << 10 },
			gen:      genMessage,
			sessions: 10,
		},
		{
			// Shorter sessions: more of them, for a measurement as long.
			name: "10 to 60 KB", prefix: "s",
			size:     smallSize,
			gen:      genSmallMessage,
			sessions: 25,
		},
	}
	users := map[string]string{}
	var prefixes []string
	for _, cp := range corpora {
		for i := 1; i <= accounts; i++ {
			users[fmt.Sprintf("%s%d", cp.prefix, i)] = "pw"
		}
		prefixes = append(prefixes, cp.prefix)
	}
	dc := dovecottest.Start(t, dovecottest.Options{Users: users, ExtraConfig: dovecotTuning})
	for _, cp := range corpora {
		fillMaildirs(t, dc, cp.prefix, accounts, perAccount, cp.size, cp.gen)
	}

	// popbridge: the pop3 backend, passthrough, in front of Dovecot; once
	// with the body cache off, so that every RETR is relayed from
	// upstream, and once as configured by default (64 MiB body cache).
	pbAddr := startRelay(t, dc.POP3Addr, prefixes, accounts, "cache: {body_bytes: \"0\"}\n")
	pbCacheAddr := startRelay(t, dc.POP3Addr, prefixes, accounts, "")

	// nginx: the mail proxy in front of the same Dovecot, with its default
	// proxy_buffer (one page) and with a 64k one.
	ngAddr := startNginxMail(t, nginx, mailModule, dc.POP3Addr, "")
	ngBufAddr := startNginxMail(t, nginx, mailModule, dc.POP3Addr, "proxy_buffer 64k;")

	var report strings.Builder
	fmt.Fprintf(&report, "Machine: %d CPUs (%s/%s), %s. %s. Load average before the run: %s.\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02 15:04 MST"), nginxVersion(nginx), loadAvg())
	for _, cp := range corpora {
		var total int
		for i := 0; i < perAccount; i++ {
			total += cp.size(i)
		}
		fmt.Fprintf(&report, "\nMessage corpus %s: %d accounts × %d messages, %d KiB each on average; %d×sessions sessions per row.\n\n",
			cp.name, accounts, perAccount, total/perAccount>>10, cp.sessions)
		fmt.Fprintf(&report, "| sessions | server | sessions/s | messages/s | MB/s | session p50 ms | session p99 ms | RETR p50 ms | RETR p99 ms | errors | MB/s ÷ faster nginx |\n")
		fmt.Fprintf(&report, "|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, c := range []int{1, 16} {
			n := c * cp.sessions
			// One pass each warms the page cache, Dovecot's index, nginx and
			// popbridge (whose relay learns exact sizes while counting octets).
			servers := []struct{ name, addr string }{
				{"Dovecot direct", dc.POP3Addr},
				{"nginx mail proxy", ngAddr},
				{"nginx mail proxy, proxy_buffer 64k", ngBufAddr},
				{"popbridge pop3 relay, body cache off", pbAddr},
				{"popbridge pop3 relay, default body cache", pbCacheAddr},
			}
			user := cp.prefix + "%d"
			for _, s := range servers {
				benchUser(t, s.addr, user, c, c)
			}
			// Interleaved: the row of each server is the sum of
			// relayRounds rounds, each round running every server in
			// turn, starting one further down the list each time, so that
			// a drift of the machine (or a position in the order) is
			// spread over all rows alike.
			addrs := make([]string, len(servers))
			for i, s := range servers {
				addrs[i] = s.addr
			}
			res := benchInterleaved(t, addrs, user, c, n)
			ng := res[1]
			if res[2].MBPerSec > ng.MBPerSec {
				ng = res[2]
			}
			for i, s := range servers {
				rat := ""
				if i >= 3 {
					rat = fmt.Sprintf("%.2f", res[i].MBPerSec/ng.MBPerSec)
				}
				r := res[i]
				fmt.Fprintf(&report, "| %d | %s | %.1f | %.0f | %.1f | %.1f | %.1f | %.2f | %.2f | %d | %s |\n",
					c, s.name, r.SessionsPerSec, r.MessagesPerSec, r.MBPerSec,
					r.SessionLatency.P50, r.SessionLatency.P99, r.RetrLatency.P50, r.RetrLatency.P99, r.Errors, rat)
				if r.Errors != 0 {
					t.Errorf("%s, c=%d %s: %d errors: %v", cp.name, c, s.name, r.Errors, r.ErrorSamples)
				}
			}
			// Both popbridge rows: every RETR relayed, and as configured by
			// default.
			for i := 3; i < len(servers); i++ {
				if ratio := res[i].MBPerSec / ng.MBPerSec; ratio < 1.0 {
					t.Errorf("%s, c=%d: %s %.1f MB/s is %.2fx nginx's %.1f MB/s, want >= 1.0x", cp.name, c, servers[i].name, res[i].MBPerSec, ratio, ng.MBPerSec)
				}
			}
		}
	}
	fmt.Fprintf(&report, "\nLoad average after the run: %s.\n", loadAvg())

	t.Log("\n" + report.String())
	if p := os.Getenv("POPBENCH_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(report.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// relayCorpus is one message corpus of the relay benchmark, in the
// Maildirs of users prefix1..prefix16.
type relayCorpus struct {
	name, prefix string
	size         func(i int) int // octets on disk of message i
	gen          func(seed, size int) []byte
	sessions     int // sessions measured per concurrent session
}

// smallSizes is a mix of ordinary mail sizes, 10 to 60 KB: mostly text
// with some markup, a few with a small attachment.
var smallSizes = []int{10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 22, 24, 25, 27, 29, 31, 33, 36, 38, 40, 42, 45, 48, 51, 54, 57, 60}

// smallSize returns the size of message i of the small corpus: the sizes
// of smallSizes (in units of 1000 octets) in a scattered order.
func smallSize(i int) int {
	return smallSizes[(i*7)%len(smallSizes)] * 1000
}

// genSmallMessage returns an ordinary message of exactly size octets on
// disk, LF line ends: headers of a real message, a text part of lines of
// varying length (now and then one that starts with a dot, which is
// stuffed on the wire), and above 30 KB a base64 attachment.
func genSmallMessage(seed, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Return-Path: <sender%d@example.org>\nReceived: from mx.example.org (mx.example.org [192.0.2.%d])\n\tby mail.example.net with ESMTPS id %08x\n\tfor <bench@example.net>; Thu, 3 Dec 2026 09:%02d:00 +0000\n", seed, seed%250+1, seed*2654435761&0xffffffff, seed%60)
	fmt.Fprintf(&b, "From: Sender %d <sender%d@example.org>\nTo: bench@example.net\nSubject: ordinary message %d\nDate: Thu, 3 Dec 2026 09:%02d:00 +0000\nMessage-ID: <%d.small@bench.example>\nMIME-Version: 1.0\n", seed, seed, seed, seed%60, seed)
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"b%d\"\n\n--b%d\nContent-Type: text/plain; charset=utf-8\n\n", seed, seed)
	words := strings.Fields("the quick brown fox jumps over a lazy dog while we wait for the meeting notes and the quarterly report to arrive in time")
	attach := 0
	if size > 30000 {
		attach = size / 3
	}
	rest := func() int { return size - attach - b.Len() }
	for k := seed; rest() > 100; k++ {
		var line strings.Builder
		if k%23 == 0 {
			line.WriteString(".")
		}
		for n := 20 + (k*37)%58; line.Len() < n; {
			line.WriteString(words[(k+line.Len())%len(words)])
			line.WriteByte(' ')
		}
		b.WriteString(strings.TrimSpace(line.String()) + "\n")
		if k%9 == 0 {
			b.WriteString("\n")
		}
	}
	if attach > 0 {
		fmt.Fprintf(&b, "\n--b%d\nContent-Type: application/pdf; name=\"doc%d.pdf\"\nContent-Transfer-Encoding: base64\n\n", seed, seed)
		const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
		for k := 0; size-b.Len() > 100; k++ {
			line := make([]byte, 76)
			for j := range line {
				line[j] = b64[(k*31+j*7+seed)%64]
			}
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	end := fmt.Sprintf("\n--b%d--\n", seed)
	for b.Len() < size-len(end) {
		b.WriteByte('x')
	}
	b.WriteString(end)
	return b.Bytes()
}

// relayRounds is how many rounds benchInterleaved splits a row into.
const relayRounds = 5

// benchInterleaved measures n sessions at concurrency c against each
// address, in relayRounds rounds of n/relayRounds sessions; round r
// starts with address r (mod len) and goes through all of them in
// order. Each address's Result sums its rounds: sessions, messages,
// octets, errors and elapsed time, and the rates from those; the
// latencies are the means of the rounds' percentiles.
func benchInterleaved(t *testing.T, addrs []string, user string, c, n int) []Result {
	t.Helper()
	per := max(c, n/relayRounds)
	res := make([]Result, len(addrs))
	for r := range relayRounds {
		for k := range addrs {
			i := (r + k) % len(addrs)
			res[i] = addResult(res[i], benchUser(t, addrs[i], user, c, per))
		}
	}
	for i := range res {
		res[i] = finishResult(res[i], relayRounds)
	}
	return res
}

// addResult adds round b to the running sum a (see benchInterleaved).
func addResult(a, b Result) Result {
	a.Concurrency = b.Concurrency
	a.ElapsedSec += b.ElapsedSec
	a.Sessions += b.Sessions
	a.SessionsOK += b.SessionsOK
	a.SessionsFailed += b.SessionsFailed
	a.Messages += b.Messages
	a.Bytes += b.Bytes
	a.AddedCRLF += b.AddedCRLF
	a.Errors += b.Errors
	a.ErrorSamples = append(a.ErrorSamples, b.ErrorSamples...)
	for _, l := range []struct{ sum, add *Latency }{{&a.SessionLatency, &b.SessionLatency}, {&a.RetrLatency, &b.RetrLatency}} {
		l.sum.Count += l.add.Count
		l.sum.P50 += l.add.P50
		l.sum.P99 += l.add.P99
		l.sum.Mean += l.add.Mean
		l.sum.Max = max(l.sum.Max, l.add.Max)
	}
	return a
}

// finishResult turns the sum of rounds into rates and mean percentiles.
func finishResult(a Result, rounds int) Result {
	if a.ElapsedSec > 0 {
		a.SessionsPerSec = float64(a.SessionsOK) / a.ElapsedSec
		a.MessagesPerSec = float64(a.Messages) / a.ElapsedSec
		a.MBPerSec = float64(a.Bytes) / 1e6 / a.ElapsedSec
	}
	for _, l := range []*Latency{&a.SessionLatency, &a.RetrLatency} {
		l.P50 /= float64(rounds)
		l.P99 /= float64(rounds)
		l.Mean /= float64(rounds)
	}
	return a
}

// benchUser runs popbench's session mode with the user pattern, password pw.
func benchUser(t *testing.T, addr, user string, c, n int) Result {
	return benchArgs(t, addr, []string{"-user", user, "-pass", "pw", "-accounts", strconv.Itoa(c), "-c", strconv.Itoa(c), "-n", strconv.Itoa(n)})
}

// loadAvg returns the first three fields of /proc/loadavg, or "unknown".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// startRelay runs popbridge with a passthrough pop3 account P1..P<n> for
// upstream, for each prefix P, and extra configuration, and returns its
// address.
func startRelay(t *testing.T, upstream string, prefixes []string, n int, extra string) string {
	t.Helper()
	work := t.TempDir()
	var cfg strings.Builder
	port := freePort(t)
	fmt.Fprintf(&cfg, "listen:\n  pop3: 127.0.0.1:%d\nstate_dir: %s\nlog: {level: warn, format: json}\n%s", port, filepath.Join(work, "state"), extra)
	fmt.Fprintf(&cfg, "limits:\n  max_connections: 5000\n  max_connections_per_ip: 5000\naccounts:\n")
	for _, p := range prefixes {
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&cfg, "  - user: %s%d\n    backend: {type: pop3, addr: %q, tls: none, auth: passthrough, on_delete: keep}\n", p, i, upstream)
		}
	}
	cfgPath := filepath.Join(work, "popbridge.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// POPBRIDGE_BIN names a binary to run instead of a fresh build (to
	// profile it with perf, for instance).
	bin := os.Getenv("POPBRIDGE_BIN")
	if bin == "" {
		bin = filepath.Join(work, "popbridge")
		if out, err := exec.Command("go", "build", "-o", bin, "../popbridge").CombinedOutput(); err != nil {
			t.Fatalf("build popbridge: %v\n%s", err, out)
		}
	}
	srv := exec.Command(bin, "serve", "-config", cfgPath)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Signal(os.Interrupt); srv.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitListen(t, addr)
	procs.Store(addr, srv.Process.Pid)
	return addr
}

// fillMaildirs hard-links one set of n messages, of size(i) octets made
// by gen, into the Maildirs of Dovecot users prefix1..prefix<accounts>.
func fillMaildirs(t *testing.T, dc *dovecottest.Dovecot, prefix string, accounts, n int, size func(int) int, gen func(seed, size int) []byte) {
	t.Helper()
	src := t.TempDir()
	var names []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("17000%05d.M%dP1.bench,S=%d", i, i, size(i))
		body := gen(i, size(i))
		if len(body) != size(i) {
			t.Fatalf("message %d: %d octets, want %d", i, len(body), size(i))
		}
		if err := os.WriteFile(filepath.Join(src, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	for i := 1; i <= accounts; i++ {
		dir := dc.MaildirPath(fmt.Sprintf("%s%d", prefix, i))
		for _, name := range names {
			if err := os.Link(filepath.Join(src, name), filepath.Join(dir, "cur", name+":2,")); err != nil {
				t.Fatal(err)
			}
		}
		if err := dc.Chown(dir); err != nil {
			t.Fatal(err)
		}
	}
}

const nginxInstallHint = "install nginx and its mail module: apt-get install nginx-light libnginx-mod-mail (Debian/Ubuntu)"

// findNginx returns the nginx binary and the path of ngx_mail_module.so
// ("" when the mail module is built in).
func findNginx(t *testing.T) (bin, module string) {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
				break
			}
		}
	}
	if bin == "" {
		t.Fatalf("nginx not found: %s", nginxInstallHint)
	}
	out, _ := exec.Command(bin, "-V").CombinedOutput()
	if strings.Contains(string(out), "--with-mail ") || strings.HasSuffix(strings.TrimSpace(string(out)), "--with-mail") {
		return bin, ""
	}
	for _, dir := range []string{"/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/lib64/nginx/modules", "/usr/local/nginx/modules"} {
		p := filepath.Join(dir, "ngx_mail_module.so")
		if _, err := os.Stat(p); err == nil {
			return bin, p
		}
	}
	t.Fatalf("nginx's mail module (ngx_mail_module.so) not found: %s", nginxInstallHint)
	return "", ""
}

func nginxVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: "))
}

// startNginxMail runs nginx's POP3 proxy in front of upstream and returns
// its address. Authentication goes to an auth_http endpoint in the test
// that accepts every login and names upstream as the server.
func startNginxMail(t *testing.T, bin, module, upstream, extra string) string {
	t.Helper()
	host, upPort, err := net.SplitHostPort(upstream)
	if err != nil {
		t.Fatal(err)
	}
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ngx_mail_auth_http_module: Auth-User, Auth-Pass, Auth-Protocol
		// in; Auth-Status, Auth-Server (an IP address), Auth-Port out.
		if r.Header.Get("Auth-User") == "" {
			w.Header().Set("Auth-Status", "Invalid login or password")
			w.Header().Set("Auth-Wait", "1")
			return
		}
		w.Header().Set("Auth-Status", "OK")
		w.Header().Set("Auth-Server", host)
		w.Header().Set("Auth-Port", upPort)
	}))
	t.Cleanup(auth.Close)

	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	var conf strings.Builder
	if module != "" {
		fmt.Fprintf(&conf, "load_module %s;\n", module)
	}
	if os.Geteuid() == 0 {
		conf.WriteString("user root;\n")
	}
	fmt.Fprintf(&conf, `worker_processes auto;
error_log %[1]s/error.log warn;
pid %[1]s/nginx.pid;
events { worker_connections 4096; }
mail {
    server_name bench.example;
    auth_http %[2]s/auth;
    proxy_pass_error_message on;
    %[4]s
    server {
        listen 127.0.0.1:%[3]d;
        protocol pop3;
        pop3_auth plain;
    }
}
`, dir, strings.TrimPrefix(auth.URL, "http://"), port, extra)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-e", filepath.Join(dir, "error.log"), "-c", confPath, "-p", dir, "-g", "daemon off;")
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited: %s\n%s", cmd.ProcessState, log)
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			procs.Store(addr, cmd.Process.Pid)
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not accept connections on %s", addr)
		}
	}
}
