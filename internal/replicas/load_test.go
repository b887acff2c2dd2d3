package replicas

import (
	"bytes"
	"encoding/json"
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

// benchResult is the part of popbench -json's report used here.
type benchResult struct {
	Sessions       int64 `json:"sessions"`
	SessionsOK     int64 `json:"sessions_ok"`
	SessionsFailed int64 `json:"sessions_failed"`
	Messages       int64 `json:"messages"`
	Bytes          int64 `json:"bytes"`
	Errors         int64 `json:"errors"`
	ErrorSamples   []string
}

// TestLoadReplicas is the load run of docs/benchmarks.md ("Replicas on
// PostgreSQL"): popbench against three replicas on one PostgreSQL, and
// against one replica on bbolt, with thousands of imap accounts on a
// private Dovecot. Opt-in:
//
//	POPBENCH_REPLICAS=1 go test -count=1 -v -run TestLoadReplicas -timeout 30m ./internal/replicas
//
// Each setup gets two passes over all the accounts, one session each:
// the first fills the state (cold), the second finds it (warm).
// POPBENCH_REPLICAS_ACCOUNTS (default 2000) and POPBENCH_REPLICAS_C
// (concurrent sessions in all, default 24) change the size;
// POPBENCH_REPORT=FILE writes the Markdown table to FILE.
func TestLoadReplicas(t *testing.T) {
	if os.Getenv("POPBENCH_REPLICAS") != "1" {
		t.Skip("set POPBENCH_REPLICAS=1 to run the replica load run")
	}
	nAccounts := envInt(t, "POPBENCH_REPLICAS_ACCOUNTS", 2000)
	conc := envInt(t, "POPBENCH_REPLICAS_C", 24)
	const perAccount, msgSize = 20, 2048
	dsn := newDB(t)
	popbench := filepath.Join(t.TempDir(), "popbench")
	if err := build(popbench, "github.com/popbridge/popbridge/cmd/popbench"); err != nil {
		t.Fatal(err)
	}

	// Dovecot: nAccounts users, 20 messages of 2 KB each, hard links of
	// one set of files.
	users := map[string]string{}
	for i := 1; i <= nAccounts; i++ {
		users[fmt.Sprintf("u%d", i)] = "pw"
	}
	d := dovecottest.Start(t, dovecottest.Options{Users: users, ExtraConfig: dovecotLoadTuning})
	src := t.TempDir()
	var names []string
	for i := range perAccount {
		name := fmt.Sprintf("17000%05d.M%dP1.load,S=%d", i, i, msgSize)
		body := fmt.Sprintf("From: load@example.org\nSubject: message %d\n\n", i)
		body += strings.Repeat("x", msgSize-len(body)-1) + "\n"
		writeFile(t, filepath.Join(src, name), body)
		names = append(names, name)
	}
	for i := 1; i <= nAccounts; i++ {
		dir := d.MaildirPath(fmt.Sprintf("u%d", i))
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range names {
			if err := os.Link(filepath.Join(src, n), filepath.Join(dir, "cur", n+":2,S")); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Chown(dir); err != nil {
			t.Fatal(err)
		}
	}
	hash := hashOf(t, "pop")
	var acc strings.Builder
	for i := 1; i <= nAccounts; i++ {
		fmt.Fprintf(&acc, "  - user: u%d\n    password_hash: %q\n    backend: {type: imap, addr: %s, tls: none, username: u%d, password_file: imap.password}\n",
			i, hash, d.IMAPAddr, i)
	}
	files := map[string]string{"imap.password": "pw\n"}

	// pass drives popbench against the replicas at once, each with its
	// share of the accounts and of the concurrency, until every account
	// had one session (login, UIDL, LIST, RETR of all, QUIT). popbench's
	// worker i always uses account i, so each replica runs it on
	// successive batches of as many accounts as workers. It returns the
	// totals and the wall time of the whole pass.
	pass := func(rs []*replica) (benchResult, time.Duration) {
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			sum benchResult
		)
		share, workers := nAccounts/len(rs), max(1, conc/len(rs))
		start := time.Now()
		for i, r := range rs {
			from, to := 1+i*share, 1+(i+1)*share
			if i == len(rs)-1 {
				to = nAccounts + 1
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for first := from; first < to; first += workers {
					n := strconv.Itoa(min(workers, to-first))
					args := []string{"-addr", r.addr, "-user", "u%d", "-pass", "pop", "-first", strconv.Itoa(first),
						"-accounts", n, "-c", n, "-n", n, "-json", "-timeout", "60s"}
					var out, errOut bytes.Buffer
					cmd := exec.Command(popbench, args...)
					cmd.Stdout, cmd.Stderr = &out, &errOut
					err := cmd.Run()
					var res benchResult
					if jerr := json.Unmarshal(out.Bytes(), &res); jerr != nil {
						t.Errorf("popbench %v: %v, %v\n%s", args, err, jerr, errOut.String())
						return
					}
					mu.Lock()
					sum.Sessions += res.Sessions
					sum.SessionsOK += res.SessionsOK
					sum.SessionsFailed += res.SessionsFailed
					sum.Messages += res.Messages
					sum.Bytes += res.Bytes
					sum.Errors += res.Errors
					sum.ErrorSamples = append(sum.ErrorSamples, res.ErrorSamples...)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if sum.Errors > 0 || sum.SessionsFailed > 0 {
			t.Errorf("popbench: %d errors, %d sessions failed: %q", sum.Errors, sum.SessionsFailed, sum.ErrorSamples[:min(5, len(sum.ErrorSamples))])
		}
		if sum.SessionsOK != int64(nAccounts) {
			t.Errorf("popbench: %d sessions served in a pass over %d accounts", sum.SessionsOK, nAccounts)
		}
		return sum, time.Since(start)
	}

	type row struct {
		name             string
		cold, warm       benchResult
		coldDur, warmDur time.Duration
	}
	var rows []row
	one := startCluster(t, clusterOptions{n: 1, accounts: acc.String(), files: files, logLevel: "warn"})
	r := row{name: "1 replica, bbolt"}
	r.cold, r.coldDur = pass(one)
	r.warm, r.warmDur = pass(one)
	rows = append(rows, r)
	one[0].stop()
	three := startCluster(t, clusterOptions{dsn: dsn, accounts: acc.String(), files: files, logLevel: "warn"})
	r = row{name: "3 replicas, PostgreSQL"}
	r.cold, r.coldDur = pass(three)
	r.warm, r.warmDur = pass(three)
	rows = append(rows, r)
	if t.Failed() {
		t.FailNow()
	}

	dbBytes := query[int64](t, dsn, "SELECT sum(pg_total_relation_size(oid))::bigint FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
	msgRows := query[int64](t, dsn, "SELECT count(*) FROM message")
	var md strings.Builder
	fmt.Fprintf(&md, "%d accounts × %d messages of %d octets (imap upstream: a private Dovecot), %d concurrent sessions in all:\n\n", nAccounts, perAccount, msgSize, conc)
	fmt.Fprintf(&md, "| setup | first pass (cold): logins/s | RETR messages/s | MB/s | second pass (warm): logins/s | RETR messages/s | MB/s |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		c, w := r.coldDur.Seconds(), r.warmDur.Seconds()
		fmt.Fprintf(&md, "| %s | %.0f | %.0f | %.1f | %.0f | %.0f | %.1f |\n", r.name,
			float64(r.cold.SessionsOK)/c, float64(r.cold.Messages)/c, float64(r.cold.Bytes)/c/1e6,
			float64(r.warm.SessionsOK)/w, float64(r.warm.Messages)/w, float64(r.warm.Bytes)/w/1e6)
	}
	fmt.Fprintf(&md, "\nPostgreSQL after the run: %d message rows, tables and indexes %.1f MB, %.0f octets per account (%.0f per message record).\n",
		msgRows, float64(dbBytes)/1e6, float64(dbBytes)/float64(nAccounts), float64(dbBytes)/float64(max(msgRows, 1)))
	t.Logf("replicas load run:\n%s", md.String())
	if p := os.Getenv("POPBENCH_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(md.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// dovecotLoadTuning keeps Dovecot's IMAP processes warm and allows the
// load's connections.
const dovecotLoadTuning = `mail_max_userip_connections = 100
service imap-login {
  service_count = 0
  process_min_avail = 2
}
service imap {
  process_limit = 512
  process_min_avail = 8
}
`

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
