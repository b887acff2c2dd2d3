// Command popbench is a load generator for POP3 servers. It runs
// concurrent sessions (login, UIDL, LIST, RETR of every message, QUIT)
// against one address and reports throughput, latency and errors; a RETR
// whose octets differ from the LIST size counts as an error. A RETR of
// exactly 2 octets more is counted apart (a server adds CRLF before the
// final "." to a message without a final line end, and RFC 1939 sizes
// leave it out, as Dovecot does); -strict makes it an error. With -idle it
// instead holds many logged-in sessions open, so that the server's memory
// per idle session can be measured.
//
// Usage:
//
//	popbench -addr HOST:PORT (-user NAME -pass PASSWORD | -users FILE)
//	         [-accounts N -first I] [-c C] [-n N | -d DURATION]
//	         [-tls none|implicit|stls] [-insecure] [-cafile FILE]
//	         [-servername NAME] [-timeout DURATION] [-strict] [-json]
//	         [-idle N -hold DURATION]
//
// The exit status is 0 when there was no error, 1 when there was, and 2
// for a usage error.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Hard bounds on what one run may do.
const (
	maxConcurrency = 10000
	maxSessions    = 100_000_000
	maxIdle        = 100000
	maxAccounts    = 1_000_000
	maxDuration    = 24 * time.Hour
)

const usageLine = `usage: popbench -addr HOST:PORT (-user NAME -pass PASSWORD | -users FILE)
                [-accounts N -first I] [-c C] [-n N | -d DURATION]
                [-tls none|implicit|stls] [-insecure] [-cafile FILE]
                [-servername NAME] [-timeout DURATION] [-strict] [-json]
                [-idle N -hold DURATION]`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, asJSON, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "popbench: %v\n%s\n", err, usageLine)
		return 2
	}
	if cfg.idle == 0 && cfg.c > len(cfg.accounts) {
		fmt.Fprintf(stderr, "popbench: warning: %d concurrent sessions share %d accounts; a server with one session per maildrop answers [IN-USE]\n", cfg.c, len(cfg.accounts))
	}
	if cfg.idle > len(cfg.accounts) {
		fmt.Fprintf(stderr, "popbench: warning: %d idle sessions share %d accounts; a server with one session per maildrop answers [IN-USE]\n", cfg.idle, len(cfg.accounts))
	}
	var r *Result
	if cfg.idle > 0 {
		r = runIdle(ctx, cfg)
	} else {
		r = runSessions(ctx, cfg)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if r.ErrorSamples == nil {
			r.ErrorSamples = []string{}
		}
		enc.Encode(r)
	} else {
		printText(stdout, r)
	}
	if r.Errors > 0 || r.SessionsFailed > 0 {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*config, bool, error) {
	fs := flag.NewFlagSet("popbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, usageLine)
		fs.PrintDefaults()
	}
	var (
		cfg        config
		user       = fs.String("user", "", "user name, or a printf pattern such as user%d with -accounts")
		pass       = fs.String("pass", "", "password; with \"%d\" in it, a pattern like -user")
		usersFile  = fs.String("users", "", "file of user:password lines (# starts a comment)")
		nAccounts  = fs.Int("accounts", 1, "number of accounts a -user pattern expands to")
		first      = fs.Int("first", 1, "first index of a -user pattern")
		mode       = fs.String("tls", "none", "TLS: none, implicit (e.g. port 995) or stls")
		insecure   = fs.Bool("insecure", false, "do not verify the server certificate")
		caFile     = fs.String("cafile", "", "PEM file of CA certificates to trust")
		serverName = fs.String("servername", "", "TLS server name (default: the host of -addr)")
		asJSON     = fs.Bool("json", false, "print the report as JSON")
	)
	fs.StringVar(&cfg.addr, "addr", "", "server address HOST:PORT (required)")
	fs.IntVar(&cfg.c, "c", 1, "concurrent sessions")
	fs.Int64Var(&cfg.n, "n", 0, "total sessions (default 100 unless -d is set)")
	fs.DurationVar(&cfg.d, "d", 0, "run for this long instead of, or as well as, -n")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "limit for each dial, read and write")
	fs.BoolVar(&cfg.strict, "strict", false, "count a RETR of LIST size + 2 octets (an added final CRLF) as an error")
	fs.IntVar(&cfg.idle, "idle", 0, "idle mode: log in this many sessions and hold them")
	fs.DurationVar(&cfg.hold, "hold", 30*time.Second, "idle mode: how long to hold the sessions")
	if err := fs.Parse(args); err != nil {
		return nil, false, err
	}
	if fs.NArg() > 0 {
		return nil, false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.addr == "" {
		return nil, false, errors.New("-addr is required")
	}
	host, _, err := net.SplitHostPort(cfg.addr)
	if err != nil {
		return nil, false, fmt.Errorf("-addr: %v", err)
	}
	switch {
	case cfg.c < 1 || cfg.c > maxConcurrency:
		return nil, false, fmt.Errorf("-c must be 1..%d", maxConcurrency)
	case cfg.n < 0 || cfg.n > maxSessions:
		return nil, false, fmt.Errorf("-n must be 0..%d", maxSessions)
	case cfg.d < 0 || cfg.d > maxDuration:
		return nil, false, fmt.Errorf("-d must be 0..%s", maxDuration)
	case cfg.timeout <= 0 || cfg.timeout > 10*time.Minute:
		return nil, false, errors.New("-timeout must be above 0 and at most 10m")
	case cfg.idle < 0 || cfg.idle > maxIdle:
		return nil, false, fmt.Errorf("-idle must be 0..%d", maxIdle)
	case cfg.hold < 0 || cfg.hold > maxDuration:
		return nil, false, fmt.Errorf("-hold must be 0..%s", maxDuration)
	}
	if cfg.n == 0 && cfg.d == 0 {
		cfg.n = 100
	}

	if *usersFile != "" {
		if *user != "" || *pass != "" {
			return nil, false, errors.New("-users excludes -user and -pass")
		}
		cfg.accounts, err = readUsers(*usersFile)
	} else {
		cfg.accounts, err = expandAccounts(*user, *pass, *nAccounts, *first)
	}
	if err != nil {
		return nil, false, err
	}

	cfg.tls = tlsMode(*mode)
	switch cfg.tls {
	case tlsNone:
	case tlsImplicit, tlsSTLS:
		tc := &tls.Config{ServerName: host, InsecureSkipVerify: *insecure, MinVersion: tls.VersionTLS12}
		if *serverName != "" {
			tc.ServerName = *serverName
		}
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				return nil, false, err
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, false, fmt.Errorf("-cafile %s: no PEM certificates", *caFile)
			}
		}
		cfg.tlsConf = tc
	default:
		return nil, false, fmt.Errorf("-tls must be none, implicit or stls, not %q", *mode)
	}
	if cfg.idle > 0 {
		cfg.progress = stderr
	}
	return &cfg, *asJSON, nil
}

// expandAccounts returns the one account, or the accounts of a printf
// pattern for indexes first..first+n-1.
func expandAccounts(user, pass string, n, first int) ([]account, error) {
	if user == "" {
		return nil, errors.New("-user (or -users) is required")
	}
	if !strings.Contains(user, "%") {
		if n != 1 {
			return nil, errors.New("-accounts needs a -user pattern such as user%d")
		}
		return []account{{user, pass}}, nil
	}
	if n < 1 || n > maxAccounts {
		return nil, fmt.Errorf("-accounts must be 1..%d", maxAccounts)
	}
	passPattern := strings.Contains(pass, "%d")
	out := make([]account, n)
	for i := range out {
		a := account{fmt.Sprintf(user, first+i), pass}
		if passPattern {
			a.pass = fmt.Sprintf(pass, first+i)
		}
		if strings.Contains(a.user, "%!") || strings.Contains(a.pass, "%!") {
			return nil, fmt.Errorf("-user %q: a pattern takes one integer verb such as %%d", user)
		}
		out[i] = a
	}
	return out, nil
}

// readUsers reads user:password lines; the first ":" splits them.
func readUsers(path string) ([]account, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []account
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		u, p, ok := strings.Cut(line, ":")
		if !ok || u == "" {
			return nil, fmt.Errorf("%s:%d: want user:password", path, ln)
		}
		if len(out) == maxAccounts {
			return nil, fmt.Errorf("%s: more than %d accounts", path, maxAccounts)
		}
		out = append(out, account{u, p})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no accounts", path)
	}
	return out, nil
}

func printText(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "popbench\t%s mode, %s (tls %s), c=%d, %.3f s\n", r.Mode, r.Addr, r.TLS, r.Concurrency, r.ElapsedSec)
	lat := func(name string, l Latency) {
		fmt.Fprintf(tw, "%s\tp50 %.3f ms\tp99 %.3f ms\tmax %.3f ms\tmean %.3f ms\t(%d)\n", name, l.P50, l.P99, l.Max, l.Mean, l.Count)
	}
	if ir := r.Idle; ir != nil {
		fmt.Fprintf(tw, "logged in\t%d of %d\n", ir.LoggedIn, ir.Requested)
		lat("login latency", ir.LoginLatency)
		fmt.Fprintf(tw, "held\t%.3f s\n", ir.HoldSec)
		fmt.Fprintf(tw, "NOOP ok\t%d\n", ir.NoopOK)
		fmt.Fprintf(tw, "QUIT ok\t%d\n", ir.QuitOK)
	} else {
		fmt.Fprintf(tw, "sessions\t%d (%d ok, %d failed)\t%.1f/s\n", r.Sessions, r.SessionsOK, r.SessionsFailed, r.SessionsPerSec)
		fmt.Fprintf(tw, "messages\t%d\t%.1f/s\n", r.Messages, r.MessagesPerSec)
		fmt.Fprintf(tw, "data\t%.3f MB\t%.2f MB/s\n", float64(r.Bytes)/1e6, r.MBPerSec)
		if r.AddedCRLF > 0 {
			fmt.Fprintf(tw, "added CRLF\t%d\t(RETR = LIST size + 2: no final line end in the message)\n", r.AddedCRLF)
		}
		lat("session latency", r.SessionLatency)
		lat("RETR latency", r.RetrLatency)
	}
	fmt.Fprintf(tw, "errors\t%d\n", r.Errors)
	tw.Flush()
	for _, s := range r.ErrorSamples {
		fmt.Fprintf(w, "  %s\n", s)
	}
}
