package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/internal/dovecottest"
	"github.com/popbridge/popbridge/internal/freeport"
)

// TestCompareWithDovecot is the benchmark of docs/benchmarks.md: popbridge
// and Dovecot's POP3 serve the same Maildirs, popbench drives both in the
// same run. It is slow and runs only when POPBENCH_COMPARE=1; with
// POPBENCH_REPORT=FILE it also writes the Markdown tables to FILE.
//
//	POPBENCH_COMPARE=1 POPBENCH_REPORT=/tmp/bench.md go test -v -run TestCompareWithDovecot -timeout 30m ./cmd/popbench
func TestCompareWithDovecot(t *testing.T) {
	if os.Getenv("POPBENCH_COMPARE") != "1" {
		t.Skip("set POPBENCH_COMPARE=1 to run the comparison benchmark")
	}
	const (
		streamAccounts = 16
		perAccount     = 40        // messages per account
		msgSize        = 256 << 10 // octets per message on disk
		idleSessions   = 1000
	)
	users := map[string]string{"big": "pw"}
	for i := 1; i <= streamAccounts; i++ {
		users[fmt.Sprintf("u%d", i)] = "pw"
	}
	dc := dovecottest.Start(t, dovecottest.Options{Users: users, ExtraConfig: dovecotTuning})

	// One set of message files, hard-linked into every account.
	src := t.TempDir()
	var names []string
	for i := 0; i < perAccount; i++ {
		name := fmt.Sprintf("17000%05d.M%dP1.bench,S=%d", i, i, msgSize)
		if err := os.WriteFile(filepath.Join(src, name), genMessage(i, msgSize), 0o600); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	for i := 1; i <= streamAccounts; i++ {
		dir := dc.MaildirPath(fmt.Sprintf("u%d", i))
		for _, n := range names {
			if err := os.Link(filepath.Join(src, n), filepath.Join(dir, "cur", n+":2,")); err != nil {
				t.Fatal(err)
			}
		}
		if err := dc.Chown(dir); err != nil {
			t.Fatal(err)
		}
	}
	bigName := "1700100000.M1P1.bench"
	if err := os.WriteFile(filepath.Join(dc.MaildirPath("big"), "cur", bigName+":2,"), genMessage(0, 20<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := dc.Chown(dc.MaildirPath("big")); err != nil {
		t.Fatal(err)
	}

	// popbridge: the same Maildirs, plus empty ones for idle sessions.
	work := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	port := freePort(t)
	fmt.Fprintf(&cfg, "listen:\n  pop3: 127.0.0.1:%d\nstate_dir: %s\nlog: {level: warn, format: json}\n", port, filepath.Join(work, "state"))
	fmt.Fprintf(&cfg, "limits:\n  max_connections: 5000\n  max_connections_per_ip: 5000\naccounts:\n")
	account := func(user, path string) {
		fmt.Fprintf(&cfg, "  - user: %s\n    password_hash: %q\n    backend: {type: maildir, path: %s, on_delete: keep}\n", user, hash, path)
	}
	for u := range users {
		account(u, dc.MaildirPath(u))
	}
	for i := 1; i <= idleSessions; i++ {
		dir := filepath.Join(work, "idle", strconv.Itoa(i))
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		account(fmt.Sprintf("idle%d", i), dir)
	}
	cfgPath := filepath.Join(work, "popbridge.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(work, "popbridge")
	build := exec.Command("go", "build", "-o", bin, "../popbridge")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build popbridge: %v\n%s", err, out)
	}
	srv := exec.Command(bin, "serve", "-config", cfgPath)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Signal(os.Interrupt); srv.Wait() })
	pbAddr := fmt.Sprintf("127.0.0.1:%d", port)
	waitListen(t, pbAddr)

	var report strings.Builder
	fmt.Fprintf(&report, "Machine: %d CPUs (%s/%s), %s. Message corpus: %d accounts × %d messages of %d KiB; one 20 MiB message.\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02"), streamAccounts, perAccount, msgSize>>10)
	fmt.Fprintf(&report, "| concurrency | server | sessions/s | messages/s | MB/s | session p50 ms | session p99 ms | RETR p50 ms | RETR p99 ms | RETR MB/s at p50 | errors | ratio (MB/s) |\n")
	fmt.Fprintf(&report, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range []int{1, 16} {
		n := c * 4
		// Warm the page cache and both servers once, then measure.
		bench(t, dc.POP3Addr, c, c)
		bench(t, pbAddr, c, c)
		dv := bench(t, dc.POP3Addr, c, n)
		pb := bench(t, pbAddr, c, n)
		ratio := pb.MBPerSec / dv.MBPerSec
		for _, r := range []struct {
			name string
			res  Result
			rat  string
		}{{"dovecot", dv, "1.00"}, {"popbridge", pb, fmt.Sprintf("%.2f", ratio)}} {
			perMsg := float64(r.res.Bytes) / float64(max(r.res.Messages, 1))
			fmt.Fprintf(&report, "| %d | %s | %.1f | %.0f | %.1f | %.1f | %.1f | %.2f | %.2f | %.0f | %d | %s |\n",
				c, r.name, r.res.SessionsPerSec, r.res.MessagesPerSec, r.res.MBPerSec,
				r.res.SessionLatency.P50, r.res.SessionLatency.P99, r.res.RetrLatency.P50, r.res.RetrLatency.P99,
				perMsg/1e6/(r.res.RetrLatency.P50/1e3), r.res.Errors, r.rat)
		}
		if dv.Errors != 0 || pb.Errors != 0 {
			t.Errorf("c=%d: errors: dovecot %d %v, popbridge %d %v", c, dv.Errors, dv.ErrorSamples, pb.Errors, pb.ErrorSamples)
		}
		if ratio < 0.9 {
			t.Errorf("c=%d: popbridge RETR throughput %.1f MB/s is %.2fx Dovecot's %.1f MB/s, want >= 0.9x", c, pb.MBPerSec, ratio, dv.MBPerSec)
		}
	}

	// Memory growth while streaming a 20 MiB message.
	base := rss(t, srv.Process.Pid)
	peak := base
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				if r := rss(t, srv.Process.Pid); r > peak {
					peak = r
				}
			}
		}
	}()
	big := benchArgs(t, pbAddr, []string{"-user", "big", "-pass", "pw", "-c", "1", "-n", "3"})
	close(stop)
	wg.Wait()
	growth := peak - base
	fmt.Fprintf(&report, "\nStreaming a 20 MiB message 3 times (%.1f MB/s, %d errors): RSS %d KiB before, peak %d KiB, growth %d KiB (target at most 4096 KiB).\n",
		big.MBPerSec, big.Errors, base>>10, peak>>10, growth>>10)
	if growth > 4<<20 {
		t.Errorf("RSS grew by %d KiB while streaming 20 MiB, want at most 4096 KiB", growth>>10)
	}

	// Idle authenticated sessions.
	before := rss(t, srv.Process.Pid)
	idleDone := make(chan Result, 1)
	go func() {
		idleDone <- benchArgs(t, pbAddr, []string{"-user", "idle%d", "-pass", "pw", "-accounts", strconv.Itoa(idleSessions),
			"-idle", strconv.Itoa(idleSessions), "-hold", "15s", "-timeout", "60s"})
	}()
	time.Sleep(12 * time.Second)
	during := rss(t, srv.Process.Pid)
	idle := <-idleDone
	per := float64(during-before) / float64(idleSessions)
	loggedIn := 0
	if idle.Idle != nil {
		loggedIn = idle.Idle.LoggedIn
	}
	fmt.Fprintf(&report, "\n%d idle authenticated sessions (%d logged in): RSS %d KiB before, %d KiB while held: %.1f KiB per session (target at most 64 KiB).\n",
		idleSessions, loggedIn, before>>10, during>>10, per/1024)
	if loggedIn != idleSessions {
		t.Errorf("idle: %d of %d sessions logged in: %v", loggedIn, idleSessions, idle.ErrorSamples)
	}
	if per > 64<<10 {
		t.Errorf("idle sessions cost %.1f KiB each, want at most 64 KiB", per/1024)
	}

	t.Log("\n" + report.String())
	if p := os.Getenv("POPBENCH_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(report.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// dovecotTuning gives Dovecot its documented high-performance login mode
// and warm processes, so that its process start-up is not what is measured.
const dovecotTuning = `mail_max_userip_connections = 100
service pop3-login {
  service_count = 0
  process_min_avail = 2
}
service pop3 {
  process_min_avail = 16
}
`

// bench runs popbench's session mode with user uN, password pw.
func bench(t *testing.T, addr string, c, n int) Result {
	return benchArgs(t, addr, []string{"-user", "u%d", "-pass", "pw", "-accounts", strconv.Itoa(c), "-c", strconv.Itoa(c), "-n", strconv.Itoa(n)})
}

func benchArgs(t *testing.T, addr string, args []string) Result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"-addr", addr, "-json"}, args...), &out, &errOut)
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("popbench %v: exit %d, %v\n%s\n%s", args, code, err, out.String(), errOut.String())
	}
	return r
}

// genMessage returns a message of exactly size octets on disk, LF line
// ends, with lines of mail-like length.
func genMessage(seed, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: sender%d@example.org\nTo: bench@example.org\nSubject: benchmark message %d\nMessage-ID: <%d@bench.example>\n\n", seed, seed, seed)
	line := []byte(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2)[:76] + "\n")
	for b.Len()+len(line) <= size {
		b.Write(line)
	}
	for b.Len() < size-1 {
		b.WriteByte('x')
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// freePort returns a free TCP port on 127.0.0.1 (freeport: not one an
// outgoing connection can take before the server binds it).
func freePort(t *testing.T) int { return freeport.Port(t) }

func waitListen(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("%s does not accept connections", addr)
}

// rss returns the resident set size of process pid in bytes.
func rss(t *testing.T, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Error(err)
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
