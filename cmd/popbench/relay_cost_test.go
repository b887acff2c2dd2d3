package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/dovecottest"
)

// procs maps the address of a server the benchmarks started (popbridge,
// nginx) to its process id.
var procs sync.Map

// procCost is the CPU time and the read and write system calls of a
// process and its children (nginx's workers), so far.
type procCost struct {
	ticks        int64 // user + system, in clock ticks (1/100 s)
	reads, write int64
}

// costOf sums procCost over pid and its children.
func costOf(t *testing.T, pid int) procCost {
	t.Helper()
	var c procCost
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name in parentheses; utime and stime
	// are fields 14 and 15.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	for _, s := range f[11:13] {
		n, _ := strconv.ParseInt(s, 10, 64)
		c.ticks += n
	}
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(io), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			c.reads += n
		case "syscw":
			c.write += n
		}
	}
	for _, cp := range children(pid) {
		cc := costOf(t, cp)
		c.ticks += cc.ticks
		c.reads += cc.reads
		c.write += cc.write
	}
	return c
}

// children returns the process ids of pid's children.
func children(pid int) []int {
	var out []int
	kids, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, k := range kids {
		b, _ := os.ReadFile(k)
		for _, s := range strings.Fields(string(b)) {
			if cp, err := strconv.Atoi(s); err == nil {
				out = append(out, cp)
			}
		}
	}
	return out
}

// perfSyscalls counts the system calls of pid and its children with
// perf stat until the returned function is called, which returns the
// count; -1 when perf is missing or may not trace.
func perfSyscalls(t *testing.T, pid int) func() float64 {
	t.Helper()
	perf, err := exec.LookPath("perf")
	if err != nil {
		return func() float64 { return -1 }
	}
	pids := []string{strconv.Itoa(pid)}
	for _, c := range children(pid) {
		pids = append(pids, strconv.Itoa(c))
	}
	out := filepath.Join(t.TempDir(), "perf.csv")
	cmd := exec.Command(perf, "stat", "-x", ",", "-o", out, "-e", "raw_syscalls:sys_enter", "-p", strings.Join(pids, ","))
	if err := cmd.Start(); err != nil {
		return func() float64 { return -1 }
	}
	time.Sleep(300 * time.Millisecond) // perf attaches
	return func() float64 {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		b, _ := os.ReadFile(out)
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Split(l, ",")
			if len(f) > 2 && strings.Contains(l, "raw_syscalls:sys_enter") {
				if n, err := strconv.ParseFloat(f[0], 64); err == nil {
					return n
				}
			}
		}
		return -1
	}
}

// TestRelayCost measures what the relay costs per message, in CPU time
// and in read and write system calls, next to nginx's mail proxy with
// proxy_buffer 64k, both in front of the same Dovecot, with the small
// messages (10 to 60 KB) of TestCompareRelayWithNginx at 16 sessions.
// The system call counts hardly depend on what else the machine runs;
// the CPU time does, less than throughput. It runs only when
// POPBENCH_RELAY_COST=1 and fails only on errors: these figures have no
// target, they show where the relay's CPU goes (docs/benchmarks.md).
//
//	POPBENCH_RELAY_COST=1 go test -count=1 -v -run TestRelayCost ./cmd/popbench
func TestRelayCost(t *testing.T) {
	if os.Getenv("POPBENCH_RELAY_COST") != "1" {
		t.Skip("set POPBENCH_RELAY_COST=1 to measure the relay's CPU time and system calls per message")
	}
	nginx, mailModule := findNginx(t)
	const (
		accounts   = 16
		perAccount = 40
		sessions   = 16 * 8
	)
	users := map[string]string{}
	for i := 1; i <= accounts; i++ {
		users[fmt.Sprintf("s%d", i)] = "pw"
	}
	dc := dovecottest.Start(t, dovecottest.Options{Users: users, ExtraConfig: dovecotTuning})
	fillMaildirs(t, dc, "s", accounts, perAccount, smallSize, genSmallMessage)
	servers := []struct{ name, addr string }{
		{"nginx mail proxy, proxy_buffer 64k", startNginxMail(t, nginx, mailModule, dc.POP3Addr, "proxy_buffer 64k;")},
		{"popbridge pop3 relay, body cache off", startRelay(t, dc.POP3Addr, []string{"s"}, accounts, "cache: {body_bytes: \"0\"}\n")},
	}
	var report strings.Builder
	fmt.Fprintf(&report, "Load average before: %s.\n\n| server | messages | CPU µs/message | system calls/message | read calls/message | write calls/message | MB/s |\n|---|---|---|---|---|---|---|\n", loadAvg())
	for _, s := range servers {
		benchUser(t, s.addr, "s%d", accounts, accounts) // warm up
		v, _ := procs.Load(s.addr)
		pid := v.(int)
		stop := perfSyscalls(t, pid)
		before := costOf(t, pid)
		r := benchUser(t, s.addr, "s%d", accounts, sessions)
		after := costOf(t, pid)
		calls := stop()
		if r.Errors != 0 || r.Messages == 0 {
			t.Fatalf("%s: %d errors, %d messages: %v", s.name, r.Errors, r.Messages, r.ErrorSamples)
		}
		m := float64(r.Messages)
		cpu := float64(after.ticks-before.ticks) * 1e4 / m // 1 tick = 10^4 µs
		fmt.Fprintf(&report, "| %s | %d | %.0f | %.2f | %.2f | %.2f | %.1f |\n", s.name, r.Messages, cpu, calls/m,
			float64(after.reads-before.reads)/m, float64(after.write-before.write)/m, r.MBPerSec)
	}
	fmt.Fprintf(&report, "\nLoad average after: %s.\n", loadAvg())
	t.Log("\n" + report.String())
}
