package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/backends/dovecottest"
)

// TestCompareRelayWithNginx is the relay benchmark of docs/benchmarks.md
// (issue 5): popbridge's pop3 backend and nginx's mail proxy
// (ngx_mail_module, Debian package libnginx-mod-mail) both relay the same
// private Dovecot POP3, and popbench drives both, and Dovecot directly for
// reference, in one run. nginx gets a private configuration and a tiny
// auth_http endpoint served by the test. It runs only when
// POPBENCH_RELAY=1; with POPBENCH_REPORT=FILE it also writes the Markdown
// table to FILE.
//
//	POPBENCH_RELAY=1 POPBENCH_REPORT=/tmp/relay.md go test -v -run TestCompareRelayWithNginx -timeout 30m ./cmd/popbench
func TestCompareRelayWithNginx(t *testing.T) {
	if os.Getenv("POPBENCH_RELAY") != "1" {
		t.Skip("set POPBENCH_RELAY=1 to run the relay benchmark against nginx's mail proxy")
	}
	nginx, mailModule := findNginx(t)
	const (
		accounts   = 16
		perAccount = 40        // messages per account
		msgSize    = 256 << 10 // octets per message on disk
	)
	users := map[string]string{}
	for i := 1; i <= accounts; i++ {
		users[fmt.Sprintf("u%d", i)] = "pw"
	}
	dc := dovecottest.Start(t, dovecottest.Options{Users: users, ExtraConfig: dovecotTuning})
	fillMaildirs(t, dc, accounts, perAccount, msgSize)

	// popbridge: the pop3 backend, passthrough, in front of Dovecot; once
	// with the body cache off, so that every RETR is relayed from
	// upstream, and once as configured by default (64 MiB body cache).
	pbAddr := startRelay(t, dc.POP3Addr, accounts, "cache: {body_bytes: \"0\"}\n")
	pbCacheAddr := startRelay(t, dc.POP3Addr, accounts, "")

	// nginx: the mail proxy in front of the same Dovecot, with its default
	// proxy_buffer (one page) and with a 64k one.
	ngAddr := startNginxMail(t, nginx, mailModule, dc.POP3Addr, "")
	ngBufAddr := startNginxMail(t, nginx, mailModule, dc.POP3Addr, "proxy_buffer 64k;")

	var report strings.Builder
	fmt.Fprintf(&report, "Machine: %d CPUs (%s/%s), %s. %s. Message corpus: %d accounts × %d messages of %d KiB.\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02"), nginxVersion(nginx), accounts, perAccount, msgSize>>10)
	fmt.Fprintf(&report, "| sessions | server | sessions/s | messages/s | MB/s | session p50 ms | session p99 ms | RETR p50 ms | RETR p99 ms | errors | MB/s ÷ faster nginx |\n")
	fmt.Fprintf(&report, "|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range []int{1, 16} {
		n := c * 4
		// One pass each warms the page cache, Dovecot's index, nginx and
		// popbridge (whose relay learns exact sizes while counting octets).
		servers := []struct{ name, addr string }{
			{"Dovecot direct", dc.POP3Addr},
			{"nginx mail proxy", ngAddr},
			{"nginx mail proxy, proxy_buffer 64k", ngBufAddr},
			{"popbridge pop3 relay, body cache off", pbAddr},
			{"popbridge pop3 relay, default body cache", pbCacheAddr},
		}
		for _, s := range servers {
			bench(t, s.addr, c, c)
		}
		res := make([]Result, len(servers))
		for i, s := range servers {
			res[i] = bench(t, s.addr, c, n)
		}
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
				t.Errorf("c=%d %s: %d errors: %v", c, s.name, r.Errors, r.ErrorSamples)
			}
		}
		// Both popbridge rows: every RETR relayed, and as configured by
		// default.
		for i := 3; i < len(servers); i++ {
			if ratio := res[i].MBPerSec / ng.MBPerSec; ratio < 1.0 {
				t.Errorf("c=%d: %s %.1f MB/s is %.2fx nginx's %.1f MB/s, want >= 1.0x", c, servers[i].name, res[i].MBPerSec, ratio, ng.MBPerSec)
			}
		}
	}

	t.Log("\n" + report.String())
	if p := os.Getenv("POPBENCH_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(report.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// startRelay runs popbridge with a passthrough pop3 account u1..u<n> for
// upstream each, and extra configuration, and returns its address.
func startRelay(t *testing.T, upstream string, n int, extra string) string {
	t.Helper()
	work := t.TempDir()
	var cfg strings.Builder
	port := freePort(t)
	fmt.Fprintf(&cfg, "listen:\n  pop3: 127.0.0.1:%d\nstate_dir: %s\nlog: {level: warn, format: json}\n%s", port, filepath.Join(work, "state"), extra)
	fmt.Fprintf(&cfg, "limits:\n  max_connections: 5000\n  max_connections_per_ip: 5000\naccounts:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&cfg, "  - user: u%d\n    backend: {type: pop3, addr: %q, tls: none, auth: passthrough, on_delete: keep}\n", i, upstream)
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
	return addr
}

// fillMaildirs hard-links one set of n messages of size octets into the
// Maildirs of Dovecot users u1..u<accounts>.
func fillMaildirs(t *testing.T, dc *dovecottest.Dovecot, accounts, n, size int) {
	t.Helper()
	src := t.TempDir()
	var names []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("17000%05d.M%dP1.bench,S=%d", i, i, size)
		if err := os.WriteFile(filepath.Join(src, name), genMessage(i, size), 0o600); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	for i := 1; i <= accounts; i++ {
		dir := dc.MaildirPath(fmt.Sprintf("u%d", i))
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
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not accept connections on %s", addr)
		}
	}
}
