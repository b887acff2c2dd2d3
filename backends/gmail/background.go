package gmail

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/proxy"
)

var _ proxy.SyncReporter = (*Backend)(nil)

// background is the state of a Backend's background sizing: at most one
// run at a time, which sizes the messages sessions would offer, oldest
// (by Gmail id) first, until none is left.
type background struct {
	mu        sync.Mutex
	closed    bool
	idle      chan struct{} // closed when the run in progress ends; nil if none
	prog      proxy.SyncProgress
	units0    int64                 // b.units when the run started
	pending   []cache.MessageRecord // sized, not yet in the Store
	gone      []string              // no longer in Gmail, not yet removed
	bad       map[string]bool       // cannot be sized; not tried again in this run
	lastFlush time.Time
}

// flushEvery bounds how long, and flushBatch how many, learnt sizes wait
// before they are written to the Store.
const (
	flushEvery = 500 * time.Millisecond
	flushBatch = 256
)

// candidates returns the records a session may offer once sized: not
// hidden, not known to be before the window, and with Window.Batch only
// the oldest Batch not downloaded. They are in Gmail id order (arrival
// order) when Window.Batch is set, else in no particular order.
func (b *Backend) candidates(st *state) []rec {
	var cut int64 // internalDate of the window's start; 0 for none
	if t := b.cutoff(); !t.IsZero() {
		cut = t.UnixMilli()
	}
	var out []rec
	for _, r := range st.recs {
		if st.tombs[r.id] || (r.sized && r.date < cut) || (b.opts.Window.Batch > 0 && r.downloaded) {
			continue
		}
		out = append(out, r)
	}
	if n := b.opts.Window.Batch; n > 0 && len(out) > n {
		slices.SortFunc(out, byID)
		out = out[:n]
	}
	return out
}

func byID(x, y rec) int {
	switch {
	case x.id == y.id:
		return 0
	case idLess(x.id, y.id):
		return -1
	}
	return 1
}

// ready reports whether a session can offer r: its size is exact, or an
// estimate is enough.
func (b *Backend) ready(r rec) bool {
	return r.sized && (!r.estimate || b.opts.EstimateSizes)
}

// needing returns the candidates whose size is not known yet, oldest
// (by Gmail id) first: the order in which they are sized.
func (b *Backend) needing(st *state) []rec {
	var need []rec
	for _, r := range b.candidates(st) {
		if !b.ready(r) {
			need = append(need, r)
		}
	}
	slices.SortFunc(need, byID)
	return need
}

// kick starts a background run unless one is running or the Backend is
// closed, and returns a channel that is closed when the run ends.
func (b *Backend) kick() <-chan struct{} {
	g := &b.bg
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.idle != nil {
		return g.idle
	}
	idle := make(chan struct{})
	if g.closed {
		close(idle)
		return idle
	}
	g.idle = idle
	g.prog = proxy.SyncProgress{Running: true, Started: time.Now()}
	g.units0 = b.units.Load()
	g.lastFlush = time.Now()
	g.bad = map[string]bool{}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.run(idle)
	}()
	return idle
}

// run sizes messages until none is left, the Backend closes or a request
// fails for good, then records the outcome and closes idle.
func (b *Backend) run(idle chan struct{}) {
	stop := b.logProgress()
	err := b.sizeAll(b.ctx)
	stop()
	if ferr := b.flush(true); err == nil {
		err = ferr
	}
	closed := err != nil && b.ctx.Err() != nil
	if closed {
		err = errors.New("gmail: stopped: the backend was closed")
	}
	g := &b.bg
	g.mu.Lock()
	g.prog.Running, g.prog.Ended, g.prog.ETA, g.prog.Err = false, time.Now(), 0, err
	g.prog.Units = b.units.Load() - g.units0
	p := g.prog
	g.idle = nil
	g.mu.Unlock()
	close(idle)
	ev := b.log.Info()
	msg := "gmail: sizing done"
	switch {
	case closed:
		msg = "gmail: sizing paused (backend closed); the next login goes on"
	case err != nil:
		ev, msg = b.log.Warn().Err(err), "gmail: sizing stopped; the next login goes on"
	}
	if p.Done > 0 || err != nil {
		ev.Int("done", p.Done).Int("total", p.Total).Int64("units", p.Units).
			Int64("took_ms", p.Ended.Sub(p.Started).Milliseconds()).Msg(msg)
	}
}

// sizeAll sizes, round after round, the messages that need it: a session
// may have added some meanwhile.
func (b *Backend) sizeAll(ctx context.Context) error {
	g := &b.bg
	for {
		st, err := b.load()
		if err != nil {
			return err
		}
		g.mu.Lock()
		need := slices.DeleteFunc(b.needing(st), func(r rec) bool { return g.bad[r.id] })
		g.mu.Unlock()
		if len(need) == 0 {
			return nil
		}
		g.mu.Lock()
		g.prog.Total = g.prog.Done + len(need)
		before := g.prog.Done
		g.mu.Unlock()
		if err := b.sizeSome(ctx, need); err != nil {
			return err
		}
		if err := b.flush(true); err != nil {
			return err
		}
		g.mu.Lock()
		progressed := g.prog.Done > before
		g.mu.Unlock()
		if !progressed {
			return errors.New("gmail: sizing made no progress")
		}
	}
}

// sizeSome learns the sizes and dates of recs (in Gmail id order),
// MaxConcurrent at a time, and writes them to the Store in batches. A
// size is recorded only once those of every earlier message of recs
// are, so that what sessions see grows in arrival order: a message
// offered later never arrived before one offered already (see
// docs/gmail.md). With EstimateSizes it asks for format=minimal
// (sizeEstimate), else for the raw message, whose body goes to the body
// cache.
func (b *Backend) sizeSome(ctx context.Context, recs []rec) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		i int
		fetched
	}
	results := make(chan result)
	go func() {
		each(ctx, b.opts.MaxConcurrent, seq(len(recs)), func(i int) {
			results <- result{i, b.fetchOne(ctx, recs[i], b.opts.EstimateSizes)}
		})
		close(results)
	}()
	g := &b.bg
	var firstErr error
	early := make(map[int]fetched) // done before an earlier message
	next := 0                      // the first message not recorded
	for res := range results {
		if res.err != nil {
			if firstErr == nil {
				firstErr = res.err
				cancel()
			}
			continue
		}
		if res.body != nil {
			b.opts.Bodies.Put(b.opts.Account, res.r.id, res.body)
		}
		if firstErr != nil {
			continue
		}
		early[res.i] = res.fetched
		g.mu.Lock()
		for f, ok := early[next]; ok; f, ok = early[next] {
			delete(early, next)
			next++
			switch {
			case f.bad != nil:
				// Not offered, tried again by the next run; the
				// messages after it go on.
				g.bad[f.r.id] = true
				b.log.Warn().Err(f.bad).Msg("gmail: a message cannot be sized; it is not offered")
			case f.gone:
				g.gone = append(g.gone, f.r.id)
			default:
				g.pending = append(g.pending, f.r.record())
			}
			g.prog.Done++
		}
		due := len(g.pending)+len(g.gone) >= flushBatch || time.Since(g.lastFlush) >= flushEvery
		g.mu.Unlock()
		if due {
			if err := b.flush(false); err != nil && firstErr == nil {
				firstErr = err
				cancel()
			}
		}
	}
	return firstErr
}

// seq returns 0, 1, ..., n-1.
func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// flush writes the learnt sizes to the Store, dropping those of messages
// that left the maildrop meanwhile. Unless wait, it gives up at once if
// a session is writing (the sizes wait for the next flush).
func (b *Backend) flush(wait bool) error {
	if wait {
		b.mu.Lock()
	} else if !b.mu.TryLock() {
		return nil
	}
	defer b.mu.Unlock()
	g := &b.bg
	g.mu.Lock()
	put, gone := g.pending, g.gone
	g.pending, g.gone, g.lastFlush = nil, nil, time.Now()
	g.mu.Unlock()
	if len(put)+len(gone) == 0 {
		return nil
	}
	snap, err := b.opts.Store.Snapshot(b.opts.Account)
	if err != nil {
		return b.storeError("read", err)
	}
	c := cache.Change{Delete: gone}
	for _, m := range put {
		if cur, ok := snap.Message(m.Key); ok && !b.ready(parseRec(cur)) {
			c.Put = append(c.Put, m)
		}
	}
	return b.applyLocked(c)
}

// logProgress logs the run's progress every ProgressEvery until stop is
// called.
func (b *Backend) logProgress() (stop func()) {
	return proxy.Every(b.opts.ProgressEvery, func() {
		p := b.SyncProgress()
		b.log.Info().Int("done", p.Done).Int("total", p.Total).Int64("units", p.Units).
			Int64("eta_s", p.ETASeconds()).
			Msg("gmail: sizing messages in the background")
	})
}

// SyncProgress says how far the background sizing got; Units counts all
// the quota the account spent since the run started.
func (b *Backend) SyncProgress() proxy.SyncProgress {
	g := &b.bg
	g.mu.Lock()
	p := g.prog
	if p.Running {
		p.Units = b.units.Load() - g.units0
	}
	g.mu.Unlock()
	if p.Running {
		p.ETA = b.eta(p)
	}
	return p
}

// eta estimates the time the run still needs: at the rate seen so far,
// but no faster than the quota allows (the units left in the bucket
// first, then its refill), at 5 units a message (messages.get).
func (b *Backend) eta(p proxy.SyncProgress) time.Duration {
	left := p.Total - p.Done
	if left <= 0 {
		return 0
	}
	units := max(float64(left*5)-b.quota.Tokens(), 0)
	quota := time.Duration(units / float64(b.opts.QuotaPerMinute) * float64(time.Minute))
	elapsed := time.Since(p.Started)
	if p.Done < 10 || elapsed < time.Second {
		return quota
	}
	return max(quota, time.Duration(float64(elapsed)/float64(p.Done)*float64(left)))
}

// Sync brings the Store up to date with the mailbox and sizes every
// message a session would offer, for popbridge sync: a first login then
// offers them all at once. It returns when done, or when ctx ends (the
// sizing then goes on until Close).
func (b *Backend) Sync(ctx context.Context) error {
	release, err := b.opts.Store.Hold(b.opts.Account)
	if err != nil {
		return b.storeError("hold", err)
	}
	defer release()
	st, err := b.load()
	if err != nil {
		return err
	}
	if _, err := b.sync(ctx, st); err != nil {
		return err
	}
	select {
	case <-b.kick():
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.SyncProgress().Err
}

// Close stops the background sizing and waits for it to end; what it
// learnt is in the Store. Logins after Close offer only the messages
// already sized.
func (b *Backend) Close() error {
	b.bg.mu.Lock()
	b.bg.closed = true
	b.bg.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	return nil
}
