package gmail_test

import (
	"encoding/base64"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
)

// TestBenchGmail is the Gmail benchmark of docs/benchmarks.md (issue 7):
// full POP3 sessions (USER, PASS, UIDL, LIST, QUIT) through a
// proxy.Server in front of a gmail.Backend, against the fake Gmail API
// holding 10,000 messages and answering every request after 50 ms. It
// measures, per session, the wall time, the API calls by method, the
// quota units, the peak of requests in flight and the backend's
// backoffs. It is slow (two cold logins of about 100 s each) and runs
// only when POPBENCH_GMAIL=1; with POPBENCH_REPORT=FILE it also writes
// the Markdown table to FILE. POPBENCH_GMAIL_MESSAGES=N (above 250)
// changes the mailbox's size, for a quick try.
//
//	POPBENCH_GMAIL=1 POPBENCH_REPORT=/tmp/gmail-bench.md go test -count=1 -v -run TestBenchGmail -timeout 30m ./backends/gmail
func TestBenchGmail(t *testing.T) {
	if os.Getenv("POPBENCH_GMAIL") != "1" {
		t.Skip("set POPBENCH_GMAIL=1 to run the Gmail API benchmark")
	}
	messages := 10000
	if v := os.Getenv("POPBENCH_GMAIL_MESSAGES"); v != "" { // for a quick try
		n, err := strconv.Atoi(v)
		if err != nil || n <= 250 {
			t.Fatalf("POPBENCH_GMAIL_MESSAGES=%q: want a number above 250", v)
		}
		messages = n
	}
	const (
		latency  = 50 * time.Millisecond
		arrivals = 10  // new messages for the incremental scenario
		batch    = 250 // Window.Batch of the batch scenario
		// quota is high enough that latency and the concurrency bound,
		// not the token bucket, decide the time of a cold login.
		quota = 10_000_000
	)

	fake := gmailtest.Start(t)
	rng := rand.New(rand.NewPCG(2026, 7))
	var octets int64
	var smallest, largest int
	for i := range messages {
		raw := benchMessage(rng, i)
		octets += int64(len(raw))
		if i == 0 || len(raw) < smallest {
			smallest = len(raw)
		}
		largest = max(largest, len(raw))
		fake.Add(raw, "INBOX", "UNREAD")
	}
	fake.SetLatency(latency)
	corpus := fmt.Sprintf("%d messages in INBOX, %d to %d octets, %.1f KB on average, %.1f MB in all",
		messages, smallest, largest, float64(octets)/float64(messages)/1000, float64(octets)/1e6)
	t.Log(corpus)

	type row struct {
		n, name  string
		offered  int
		wall     time.Duration // dial to QUIT's reply
		pass     time.Duration // PASS: login and sync
		calls    map[string]int
		units    int
		peak     int
		backoffs int64
	}
	var rows []row

	// session runs one POP3 session and records what it cost.
	session := func(f *fixture, n, name string) (row, listing) {
		t.Helper()
		f.srv.BackendTimeout = 30 * time.Minute
		fake.ResetStats()
		before := f.b.Stats()
		start := time.Now()
		c, err := pop3test.Dial(f.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Timeout = 30 * time.Minute
		if _, err := c.Cmd("USER alice"); err != nil {
			t.Fatalf("%s: USER: %v", name, err)
		}
		p := time.Now()
		if _, err := c.Cmd("PASS pw"); err != nil {
			t.Fatalf("%s: PASS: %v", name, err)
		}
		pass := time.Since(p)
		l := list(t, c)
		if r := quit(t, c); !strings.HasPrefix(r, "+OK") {
			t.Fatalf("%s: QUIT: %s", name, r)
		}
		wall := time.Since(start)
		after := f.b.Stats()
		r := row{n: n, name: name, offered: len(l.uids), wall: wall, pass: pass,
			calls: fake.Calls(), units: fake.Units(), peak: fake.MaxInFlight(),
			backoffs: after.Backoffs - before.Backoffs}
		if got := after.Calls - before.Calls; got != int64(sum(r.calls)) {
			t.Errorf("%s: the backend counts %d calls, the fake %d", name, got, sum(r.calls))
		}
		if got := after.Units - before.Units; got != int64(r.units) {
			t.Errorf("%s: the backend counts %d units, the fake %d", name, got, r.units)
		}
		if r.backoffs != 0 {
			t.Errorf("%s: %d backoffs", name, r.backoffs)
		}
		t.Logf("%s. %s: %d offered, %v (PASS %v), calls %v, %d units, peak %d in flight, %d backoffs",
			n, name, r.offered, wall.Round(time.Millisecond), pass.Round(time.Millisecond), r.calls, r.units, r.peak, r.backoffs)
		rows = append(rows, r)
		return r, l
	}
	opts := func(mod func(*gmail.Options)) func(*gmail.Options) {
		return func(o *gmail.Options) {
			o.BackoffBase = 0 // the default
			o.QuotaPerMinute = quota
			// These scenarios measure a login that sizes every message;
			// TestBenchGmailFirstLogin measures the default wait.
			o.LoginWait = time.Hour
			if mod != nil {
				mod(o)
			}
		}
	}

	// 1. Cold, exact sizes: every message is fetched once (format=raw).
	f := newFixture(t, fake, opts(nil))
	r, cold := session(f, "1", "cold, exact sizes")
	if r.offered != messages || r.calls[gmailtest.MGet] != messages {
		t.Errorf("cold: %d offered, %d fetched, want %d", r.offered, r.calls[gmailtest.MGet], messages)
	}
	var listed int64
	for _, s := range cold.sizes {
		listed += s
	}
	if listed != octets {
		t.Errorf("cold: LIST totals %d octets, want %d", listed, octets)
	}
	coldUnits := r.units

	// 2. Warm, no change: the same Backend, a second session.
	r, warm := session(f, "2", "warm, no change")
	if sum(r.calls) > 2 {
		t.Errorf("warm login with no change made %d calls %v, want at most 2", sum(r.calls), r.calls)
	}
	if !slices.Equal(warm.uids, cold.uids) || !slices.Equal(warm.sizes, cold.sizes) {
		t.Errorf("the warm listing differs from the cold one")
	}

	// 5. Cold with estimated sizes, on a store of its own (run before
	// the arrivals of scenario 3, so that it sees the same mailbox).
	fe := newFixture(t, fake, opts(func(o *gmail.Options) { o.EstimateSizes = true }))
	r, est := session(fe, "5", "cold, estimated sizes")
	if r.offered != messages {
		t.Errorf("cold, estimated sizes: %d offered", r.offered)
	}
	var estimated int64
	for _, s := range est.sizes {
		estimated += s
	}
	t.Logf("estimated sizes total %d octets, %.2f%% over the exact %d", estimated, 100*float64(estimated-octets)/float64(octets), octets)
	fe.stop()

	// 6. Cold with Window{Batch: 250}: only the oldest 250 are fetched.
	fb := newFixture(t, fake, opts(func(o *gmail.Options) { o.Window.Batch = batch }))
	r, _ = session(fb, "6", fmt.Sprintf("cold, window batch %d", batch))
	if r.offered != batch || r.calls[gmailtest.MGet] != batch {
		t.Errorf("batch: %d offered, %d fetched, want %d", r.offered, r.calls[gmailtest.MGet], batch)
	}
	fb.stop()

	// 3. Warm after new mail.
	for i := range arrivals {
		fake.Add(benchMessage(rng, messages+i), "INBOX", "UNREAD")
	}
	r, _ = session(f, "3", fmt.Sprintf("warm, %d new messages", arrivals))
	if r.offered != messages+arrivals || r.calls[gmailtest.MGet] != arrivals || r.calls[gmailtest.MList] != 0 {
		t.Errorf("after %d arrivals: %d offered, calls %v", arrivals, r.offered, r.calls)
	}

	// 4. Warm after a restart: a new store handle on the same file, a
	// new Backend, an empty body cache.
	f.restart()
	r, _ = session(f, "4", "warm, after a restart")
	if sum(r.calls) > 2 || r.offered != messages+arrivals {
		t.Errorf("warm login after a restart: %d offered, calls %v, want at most 2", r.offered, r.calls)
	}

	// 7. Gmail no longer has the history: a full listing, no message
	// fetched again.
	fake.ExpireHistory()
	r, _ = session(f, "7", "resync after history expiry")
	if r.offered != messages+arrivals || r.calls[gmailtest.MGet] != 0 {
		t.Errorf("resync: %d offered, calls %v, want no messages.get", r.offered, r.calls)
	}

	slices.SortStableFunc(rows, func(a, b row) int { return strings.Compare(a.n, b.n) })
	var rep strings.Builder
	fmt.Fprintf(&rep, "Machine: %d CPUs (%s/%s), %s. Fake Gmail: %s; %v per request; quota raised to %d units/minute.\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().Format("2006-01-02"), corpus, latency, quota)
	rep.WriteString("| # | session | offered | wall time | of which PASS | API calls | calls by method | quota units | min. time at 6,000 units/min | peak in flight | backoffs |\n")
	rep.WriteString("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|\n")
	for _, r := range rows {
		var by []string
		for _, m := range slices.Sorted(maps.Keys(r.calls)) {
			by = append(by, fmt.Sprintf("%s %d", m, r.calls[m]))
		}
		fmt.Fprintf(&rep, "| %s | %s | %d | %s | %s | %d | %s | %d | %s | %d | %d |\n",
			r.n, r.name, r.offered, dur(r.wall), dur(r.pass), sum(r.calls), strings.Join(by, ", "),
			r.units, dur(quotaTime(r.units)), r.peak, r.backoffs)
	}
	fmt.Fprintf(&rep, "\nAt Gmail's %d units/minute per user, the cold login's %d units take at least %.1f minutes by quota alone.\n",
		modes.DefaultGmailQuotaPerMinute, coldUnits, quotaTime(coldUnits).Minutes())
	t.Log("\n" + rep.String())
	if p := os.Getenv("POPBENCH_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(rep.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// quotaTime is the least time a session spending units takes at Gmail's
// default quota: the backend's bucket starts full with 250 units (its
// burst at 6,000 units/minute) and refills 100 units a second.
func quotaTime(units int) time.Duration {
	const burst = 250
	perSecond := float64(modes.DefaultGmailQuotaPerMinute) / 60
	if units <= burst {
		return 0
	}
	return time.Duration(float64(units-burst) / perSecond * float64(time.Second))
}

func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d >= time.Minute:
		return fmt.Sprintf("%.1f s (%.1f min)", d.Seconds(), d.Minutes())
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
}

var (
	benchWords = strings.Fields(`the a of to and in for on with at by from is are was were be been
		meeting report invoice order shipment account project update review schedule budget
		please find attached below regards thanks team customer request support ticket
		delivery status payment due quarter results draft version release notes agenda
		tomorrow today next week monday friday office call conference minutes summary`)
	benchNames = []string{"Alice Martin", "Bob Dupont", "Chloé Bernard", "David Chen",
		"Eva Müller", "Farid Haddad", "Grace Okafor", "Hiro Tanaka", "Ines Silva", "Jan Novák"}
	benchDomains = []string{"example.org", "example.net", "mail.example.com", "lists.example.org"}
)

// benchMessage returns message i of the benchmark mailbox, CRLF line
// ends throughout (so that its exact POP3 size is its length): headers
// as a mail provider writes them, then a text body (70 %), a text and
// HTML alternative (25 %) or a text with a base64 attachment (5 %).
// Sizes run from about 1 KB to about 60 KB, a few KB on average; the
// same rng state gives the same messages.
func benchMessage(rng *rand.Rand, i int) []byte {
	var b strings.Builder
	name := benchNames[rng.IntN(len(benchNames))]
	domain := benchDomains[rng.IntN(len(benchDomains))]
	from := strings.ToLower(strings.Fields(name)[1]) + "@" + domain
	date := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 17 * time.Minute)
	subject := sentence(rng, 3+rng.IntN(6))
	fmt.Fprintf(&b, "Return-Path: <%s>\r\n", from)
	fmt.Fprintf(&b, "Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\r\n\tby mx.google.com with ESMTPS id %016x\r\n\tfor <user@example.com>;\r\n\t%s\r\n",
		rng.IntN(9), domain, rng.IntN(9), domain, 1+rng.IntN(250), rng.Uint64(), date.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=s1;\r\n\th=from:to:subject:date:message-id; bh=%s;\r\n\tb=%s\r\n",
		domain, randB64(rng, 32), randB64(rng, 128))
	fmt.Fprintf(&b, "From: %s <%s>\r\nTo: user@example.com\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d.%08x@%s>\r\nMIME-Version: 1.0\r\n",
		mime64(name), from, subject, date.Format(time.RFC1123Z), i, rng.Uint32(), domain)

	boundary := fmt.Sprintf("b%016x", rng.Uint64())
	switch k := rng.IntN(100); {
	case k < 70:
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
		paragraphs(&b, rng, 600+rng.IntN(3400))
	case k < 95:
		fmt.Fprintf(&b, "Content-Type: multipart/alternative; boundary=%q\r\n\r\n", boundary)
		fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", boundary)
		text := paragraphs(&b, rng, 1000+rng.IntN(3000))
		fmt.Fprintf(&b, "--%s\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n", boundary)
		for _, p := range text {
			fmt.Fprintf(&b, "<p>%s</p>\r\n", p)
		}
		fmt.Fprintf(&b, "</body></html>\r\n--%s--\r\n", boundary)
	default:
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=%q\r\n\r\n", boundary)
		fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", boundary)
		paragraphs(&b, rng, 300+rng.IntN(700))
		fmt.Fprintf(&b, "--%s\r\nContent-Type: application/pdf; name=\"report-%d.pdf\"\r\nContent-Disposition: attachment; filename=\"report-%d.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
			boundary, i, i)
		enc := randB64(rng, 15000+rng.IntN(30000))
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\r\n")
		fmt.Fprintf(&b, "--%s--\r\n", boundary)
	}
	return []byte(b.String())
}

// paragraphs writes about n octets of text wrapped at 72 columns and
// returns the paragraphs unwrapped.
func paragraphs(b *strings.Builder, rng *rand.Rand, n int) []string {
	var out []string
	for written := 0; written < n; {
		p := sentence(rng, 20+rng.IntN(60))
		out = append(out, p)
		line := ""
		for _, w := range strings.Fields(p) {
			if len(line)+1+len(w) > 72 {
				b.WriteString(line + "\r\n")
				written += len(line) + 2
				line = ""
			}
			if line != "" {
				line += " "
			}
			line += w
		}
		b.WriteString(line + "\r\n\r\n")
		written += len(line) + 4
	}
	return out
}

func sentence(rng *rand.Rand, words int) string {
	ws := make([]string, words)
	for i := range ws {
		ws[i] = benchWords[rng.IntN(len(benchWords))]
	}
	ws[0] = strings.ToUpper(ws[0][:1]) + ws[0][1:]
	return strings.Join(ws, " ") + "."
}

func randB64(rng *rand.Rand, n int) string {
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	return base64.StdEncoding.EncodeToString(buf)
}

// mime64 encodes a display name as an RFC 2047 word when it is not ASCII.
func mime64(s string) string {
	for _, r := range s {
		if r > 127 {
			return "=?utf-8?b?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?="
		}
	}
	return s
}

// TestBenchGmailFirstLogin is the first-login benchmark of
// docs/benchmarks.md (issue 12): the time to the first +OK on a cold
// mailbox of 10,000 and of 50,000 messages, the fake Gmail answering
// every request after 50 ms, with the documented setup (the default
// Options: 5 requests in flight, 6,000 quota units a minute, LoginWait
// 8 s). It then logs in again after a pause, to show later sessions
// offering more. Opt-in like TestBenchGmail (POPBENCH_GMAIL=1; with
// POPBENCH_REPORT=FILE the table goes to FILE; POPBENCH_GMAIL_MESSAGES=N
// runs one mailbox of N messages).
//
//	POPBENCH_GMAIL=1 POPBENCH_REPORT=/tmp/first-login.md go test -count=1 -v -run TestBenchGmailFirstLogin -timeout 30m ./backends/gmail
func TestBenchGmailFirstLogin(t *testing.T) {
	if os.Getenv("POPBENCH_GMAIL") != "1" {
		t.Skip("set POPBENCH_GMAIL=1 to run the Gmail API benchmark")
	}
	sizes := []int{10_000, 50_000}
	if v := os.Getenv("POPBENCH_GMAIL_MESSAGES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("POPBENCH_GMAIL_MESSAGES=%q: want a positive number", v)
		}
		sizes = []int{n}
	}
	const (
		latency = 50 * time.Millisecond
		pause   = 30 * time.Second // between the first and the second login
	)
	var rep strings.Builder
	fmt.Fprintf(&rep, "Machine: %d CPUs (%s/%s), %s. Fake Gmail: %v per request; default options "+
		"(5 requests in flight, 6,000 quota units/minute, login_wait 8 s); messages of about 1 KB.\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().Format("2006-01-02"), latency)
	rep.WriteString("| mailbox | first PASS → +OK | offered | API calls (by method) | quota units | second login after 30 s: PASS, offered | estimated time to size all |\n")
	rep.WriteString("|---:|---:|---:|---|---:|---:|---:|\n")
	for _, n := range sizes {
		fake := gmailtest.Start(t)
		gen := time.Now()
		for i := range n {
			fake.Add(firstLoginMessage(i), "INBOX", "UNREAD")
		}
		t.Logf("%d messages generated in %v", n, time.Since(gen).Round(time.Millisecond))
		fake.SetLatency(latency)
		f := newFixture(t, fake, func(o *gmail.Options) { o.BackoffBase = 0 })
		f.srv.BackendTimeout = 0 // the default, 2 minutes

		login := func() (time.Duration, listing) {
			c, err := pop3test.Dial(f.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Cmd("USER alice")
			start := time.Now()
			if r, err := c.Cmd("PASS pw"); err != nil || !strings.HasPrefix(r, "+OK") {
				t.Fatalf("%d messages: PASS: %q %v", n, r, err)
			}
			took := time.Since(start)
			l := list(t, c)
			quit(t, c)
			return took, l
		}
		fake.ResetStats()
		took, first := login()
		calls, units := fake.Calls(), fake.Units()
		var by []string
		for _, m := range slices.Sorted(maps.Keys(calls)) {
			by = append(by, fmt.Sprintf("%s %d", m, calls[m]))
		}
		ids := fake.IDs("INBOX")
		if len(first.uids) == 0 || !slices.Equal(first.uids, ids[:len(first.uids)]) {
			t.Errorf("%d messages: the first login offered %d, not the oldest", n, len(first.uids))
		}
		time.Sleep(pause)
		took2, second := login()
		if len(second.uids) <= len(first.uids) || !slices.Equal(second.uids[:len(first.uids)], first.uids) {
			t.Errorf("%d messages: the second login offered %d after %d", n, len(second.uids), len(first.uids))
		}
		p := f.b.SyncProgress()
		t.Logf("%d messages: first +OK after %v with %d offered, calls %v, %d units; after %v: +OK after %v with %d; progress %d/%d, ETA %v",
			n, took.Round(time.Millisecond), len(first.uids), calls, units, pause, took2.Round(time.Millisecond), len(second.uids), p.Done, p.Total, p.ETA.Round(time.Second))
		fmt.Fprintf(&rep, "| %d | %s | %d | %d (%s) | %d | %s, %d | %s |\n", n, dur(took), len(first.uids), sum(calls), strings.Join(by, ", "),
			units, dur(took2), len(second.uids), dur(p.ETA+pause+took))
		f.stop()
		fake.Close()
	}
	t.Log("\n" + rep.String())
	if p := os.Getenv("POPBENCH_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(rep.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// firstLoginMessage returns message i of the first-login benchmark:
// about 1 KB, CRLF line ends, cheap to make by the 50,000.
func firstLoginMessage(i int) []byte {
	date := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 17 * time.Minute)
	return fmt.Appendf(nil, "Received: from mx%d.example.org by mx.google.com; %s\r\n"+
		"From: Sender %d <sender%d@example.org>\r\nTo: user@example.com\r\nSubject: Message %d of the benchmark mailbox\r\n"+
		"Date: %s\r\nMessage-ID: <%d@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s",
		i%9, date.Format(time.RFC1123Z), i%97, i%97, i, date.Format(time.RFC1123Z), i,
		strings.Repeat("The quick brown fox jumps over the lazy dog, message "+strconv.Itoa(i)+".\r\n", 1+i%15))
}
