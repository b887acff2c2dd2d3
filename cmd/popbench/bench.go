package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// account is one login.
type account struct{ user, pass string }

// config is a parsed command line.
type config struct {
	addr     string
	accounts []account
	c        int           // concurrent sessions
	n        int64         // total sessions; 0: until d
	d        time.Duration // run time; 0: until n
	tls      tlsMode
	tlsConf  *tls.Config
	timeout  time.Duration // per read, write and dial
	idle     int           // idle mode: sessions to hold
	hold     time.Duration // idle mode: how long
	progress io.Writer     // idle mode: "holding" notice (stderr)
	strict   bool          // a RETR 2 octets over the LIST size is an error too
}

// accountFor returns the account of worker (or idle session) i. Worker i
// always uses the same account, so with at least c accounts no two
// concurrent sessions share a maildrop.
func (c *config) accountFor(i int) account { return c.accounts[i%len(c.accounts)] }

// hist is a latency histogram with about 1% resolution, safe for
// concurrent use and bounded in memory.
type hist struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sumNs  atomic.Int64
	maxNs  atomic.Int64
}

const (
	histBuckets = 2200 // 1 µs * 1.01^2200 is over 10^9 µs
	histGrowth  = 1.01
)

var logGrowth = math.Log(histGrowth)

func (h *hist) add(d time.Duration) {
	us := float64(d) / float64(time.Microsecond)
	i := 0
	if us > 1 {
		i = min(int(math.Log(us)/logGrowth)+1, histBuckets-1)
	}
	h.counts[i].Add(1)
	h.n.Add(1)
	h.sumNs.Add(int64(d))
	for {
		m := h.maxNs.Load()
		if int64(d) <= m || h.maxNs.CompareAndSwap(m, int64(d)) {
			break
		}
	}
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *hist) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			if i == 0 {
				return time.Microsecond
			}
			d := time.Duration(math.Pow(histGrowth, float64(i)) * float64(time.Microsecond))
			return min(d, time.Duration(h.maxNs.Load()))
		}
	}
	return time.Duration(h.maxNs.Load())
}

// Latency is a histogram summary in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func (h *hist) summary() Latency {
	l := Latency{Count: h.n.Load(), P50: ms(h.quantile(0.5)), P99: ms(h.quantile(0.99)), Max: ms(time.Duration(h.maxNs.Load()))}
	if l.Count > 0 {
		l.Mean = ms(time.Duration(h.sumNs.Load() / int64(l.Count)))
	}
	return l
}

// maxErrorSamples bounds the error texts kept for the report.
const maxErrorSamples = 5

// errorLog counts errors and keeps the first few texts.
type errorLog struct {
	mu      sync.Mutex
	n       int64
	samples []string
}

func (e *errorLog) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if len(e.samples) < maxErrorSamples {
		e.samples = append(e.samples, err.Error())
	}
}

// Result is the report, printed as text or JSON.
type Result struct {
	Mode        string  `json:"mode"` // "sessions" or "idle"
	Addr        string  `json:"addr"`
	TLS         string  `json:"tls"`
	Concurrency int     `json:"concurrency"`
	ElapsedSec  float64 `json:"elapsed_s"`

	Sessions       int64 `json:"sessions"`
	SessionsOK     int64 `json:"sessions_ok"`
	SessionsFailed int64 `json:"sessions_failed"`
	Messages       int64 `json:"messages"`
	Bytes          int64 `json:"bytes"`
	// AddedCRLF counts RETRs of exactly LIST size + 2 octets, accepted
	// without -strict: the CRLF a server adds before the final "." when
	// a message does not end with a line end (as Dovecot does).
	AddedCRLF      int64   `json:"added_crlf"`
	SessionsPerSec float64 `json:"sessions_per_s"` // sessions without an error
	MessagesPerSec float64 `json:"messages_per_s"`
	MBPerSec       float64 `json:"mb_per_s"` // 10^6 octets of message per second
	SessionLatency Latency `json:"session_latency"`
	RetrLatency    Latency `json:"retr_latency"`

	Idle *IdleResult `json:"idle,omitempty"`

	Errors       int64    `json:"errors"`
	ErrorSamples []string `json:"error_samples"`
}

// IdleResult is the idle mode's part of the report.
type IdleResult struct {
	Requested    int     `json:"requested"`
	LoggedIn     int     `json:"logged_in"`
	HoldSec      float64 `json:"hold_s"`
	NoopOK       int     `json:"noop_ok"`
	QuitOK       int     `json:"quit_ok"`
	LoginLatency Latency `json:"login_latency"`
}

// counters are the totals of a sessions run.
type counters struct {
	sessions, ok, failed, messages, bytes atomic.Int64
	addedCRLF                             atomic.Int64
	sessionLat, retrLat                   hist
	errs                                  errorLog
}

// runSessions runs full sessions with cfg.c workers until cfg.n sessions
// have started, cfg.d has passed, or ctx is done.
func runSessions(ctx context.Context, cfg *config) *Result {
	var k counters
	var tickets atomic.Int64
	stop := ctx
	if cfg.d > 0 {
		var cancel context.CancelFunc
		stop, cancel = context.WithTimeout(ctx, cfg.d)
		defer cancel()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < cfg.c; w++ {
		acct := cfg.accountFor(w)
		wg.Go(func() {
			for stop.Err() == nil {
				if cfg.n > 0 && tickets.Add(1) > cfg.n {
					return
				}
				k.sessions.Add(1)
				t0 := time.Now()
				// A session started before the -d stop runs to its end
				// (the per-step timeout bounds it); ctx aborts it.
				if session(ctx, cfg, acct, &k) {
					k.ok.Add(1)
					k.sessionLat.add(time.Since(t0))
				} else {
					k.failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	r := &Result{
		Mode: "sessions", Addr: cfg.addr, TLS: string(cfg.tls), Concurrency: cfg.c,
		ElapsedSec:     el.Seconds(),
		Sessions:       k.sessions.Load(),
		SessionsOK:     k.ok.Load(),
		SessionsFailed: k.failed.Load(),
		Messages:       k.messages.Load(),
		Bytes:          k.bytes.Load(),
		AddedCRLF:      k.addedCRLF.Load(),
		SessionLatency: k.sessionLat.summary(),
		RetrLatency:    k.retrLat.summary(),
	}
	if s := el.Seconds(); s > 0 {
		r.SessionsPerSec = float64(r.SessionsOK) / s
		r.MessagesPerSec = float64(r.Messages) / s
		r.MBPerSec = float64(r.Bytes) / 1e6 / s
	}
	r.Errors, r.ErrorSamples = k.errs.n, k.errs.samples
	return r
}

// session runs one session: login, UIDL, LIST, RETR of every message,
// QUIT. It reports whether everything succeeded; errors go to k.errs.
func session(ctx context.Context, cfg *config, a account, k *counters) bool {
	c, err := dialClient(ctx, cfg.addr, cfg.tls, cfg.tlsConf, cfg.timeout, bigReadBuf)
	if err != nil {
		k.errs.add(err)
		return false
	}
	defer c.Close()
	if err := c.login(a.user, a.pass); err != nil {
		k.errs.add(err)
		return false
	}
	uidl, err := c.list("UIDL")
	if err != nil {
		k.errs.add(err)
		return false
	}
	list, err := c.list("LIST")
	if err != nil {
		k.errs.add(err)
		return false
	}
	ok := true
	if len(uidl) != len(list) {
		k.errs.add(fmt.Errorf("UIDL lists %d messages, LIST %d", len(uidl), len(list)))
		ok = false
	}
	for _, m := range list {
		t0 := time.Now()
		n, badEnds, err := c.retr(m.n)
		if err != nil {
			k.errs.add(err)
			var pe *popError
			if !errors.As(err, &pe) { // the connection is out of step
				return false
			}
			ok = false
			continue
		}
		k.retrLat.add(time.Since(t0))
		k.messages.Add(1)
		k.bytes.Add(n)
		if badEnds {
			k.errs.add(&lineEndError{m.n})
			ok = false
		}
		switch {
		case n == m.size:
		case n == m.size+2 && !cfg.strict:
			k.addedCRLF.Add(1)
		default:
			k.errs.add(&sizeError{msg: m.n, listed: m.size, got: n})
			ok = false
		}
	}
	if err := c.quit(); err != nil {
		k.errs.add(err)
		return false
	}
	return ok
}

// runIdle logs in cfg.idle sessions, cfg.c at a time, holds them for
// cfg.hold, then sends NOOP and QUIT on each.
func runIdle(ctx context.Context, cfg *config) *Result {
	var errs errorLog
	var loginLat hist
	clients := make([]*client, cfg.idle)
	start := time.Now()
	forEach(cfg.idle, cfg.c, func(i int) {
		if ctx.Err() != nil {
			return
		}
		t0 := time.Now()
		c, err := dialClient(ctx, cfg.addr, cfg.tls, cfg.tlsConf, cfg.timeout, smallReadBuf)
		if err == nil {
			a := cfg.accountFor(i)
			if err = c.login(a.user, a.pass); err != nil {
				c.Close()
			}
		}
		if err != nil {
			errs.add(err)
			return
		}
		loginLat.add(time.Since(t0))
		clients[i] = c
	})
	ir := &IdleResult{Requested: cfg.idle, LoginLatency: loginLat.summary()}
	for _, c := range clients {
		if c != nil {
			ir.LoggedIn++
		}
	}
	if cfg.progress != nil {
		fmt.Fprintf(cfg.progress, "popbench: %d of %d sessions logged in; holding them for %s\n", ir.LoggedIn, cfg.idle, cfg.hold)
	}
	t0 := time.Now()
	select {
	case <-time.After(cfg.hold):
	case <-ctx.Done():
	}
	ir.HoldSec = time.Since(t0).Seconds()
	var noop, quit atomic.Int64
	forEach(cfg.idle, cfg.c, func(i int) {
		c := clients[i]
		if c == nil {
			return
		}
		if _, err := c.cmd("NOOP"); err != nil {
			errs.add(err)
			c.Close()
			return
		}
		noop.Add(1)
		if err := c.quit(); err != nil {
			errs.add(err)
			return
		}
		quit.Add(1)
	})
	ir.NoopOK, ir.QuitOK = int(noop.Load()), int(quit.Load())
	ok := int64(ir.QuitOK)
	return &Result{
		Mode: "idle", Addr: cfg.addr, TLS: string(cfg.tls), Concurrency: cfg.c,
		ElapsedSec:     time.Since(start).Seconds(),
		Sessions:       int64(cfg.idle),
		SessionsOK:     ok,
		SessionsFailed: int64(cfg.idle) - ok,
		Idle:           ir,
		Errors:         errs.n,
		ErrorSamples:   errs.samples,
	}
}

// forEach calls fn(0..n-1) on c goroutines.
func forEach(n, c int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(c, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}
