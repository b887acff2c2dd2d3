package graph

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/proxy"
)

// openValue streams the message's raw MIME ($value). The stream fails
// when a Read waits CallTimeout for data, or ctx ends; it holds a
// request slot until closed.
func (b *Backend) openValue(ctx context.Context, id string) (io.ReadCloser, error) {
	resp, err := b.send(ctx, "value", http.MethodGet, b.mbPath+"/messages/"+url.PathEscape(id)+"/$value", nil, "", "", 1)
	if notFound(err) {
		return nil, fmt.Errorf("graph: message %s: %w", UIDL(id), proxy.ErrNoMessage)
	}
	if err != nil {
		return nil, err
	}
	return newStallReader(resp.Body, b.opts.CallTimeout), nil
}

// stallReader closes its body when a Read waits longer than wait: only
// the time spent in Read counts, not a slow POP3 client.
type stallReader struct {
	body io.ReadCloser
	idle *time.Timer
	wait time.Duration
	once sync.Once
}

func newStallReader(body io.ReadCloser, wait time.Duration) *stallReader {
	r := &stallReader{body: body, wait: wait}
	r.idle = time.AfterFunc(wait, func() { body.Close() })
	r.idle.Stop()
	return r
}

func (r *stallReader) Read(p []byte) (int, error) {
	r.idle.Reset(r.wait)
	n, err := r.body.Read(p)
	r.idle.Stop()
	if err != nil && err != io.EOF {
		err = fmt.Errorf("graph: reading $value: %w: %w", proxy.ErrTemporary, err)
	}
	return n, err
}

func (r *stallReader) Close() error {
	r.once.Do(func() { r.idle.Stop(); r.body.Close() })
	return nil
}

// keepLimit is the largest body kept for the body cache.
func (b *Backend) keepLimit() int64 {
	if b.opts.Bodies == nil {
		return 0
	}
	if b.opts.Bodies.MaxItem > 0 {
		return b.opts.Bodies.MaxItem
	}
	return cache.DefaultBodyItem
}

// fetched is what sizing learnt about one message.
type fetched struct {
	r    rec
	body []byte // the whole message, when within keep
	gone bool
	err  error // stops the run
	bad  error // this message cannot be fetched; the others go on
}

// measure downloads $value and counts its size; it keeps the body when
// it is at most keep bytes.
func (b *Backend) measure(ctx context.Context, r rec, keep int64) fetched {
	rc, err := b.openValue(ctx, r.id)
	if errors.Is(err, proxy.ErrNoMessage) {
		return fetched{r: r, gone: true}
	}
	if isBad(err) {
		return fetched{r: r, bad: err}
	}
	if err != nil {
		return fetched{err: err}
	}
	defer rc.Close()
	var c proxy.SizeCounter
	var buf []byte
	chunk := make([]byte, 32<<10)
	total := int64(0)
	for {
		n, err := rc.Read(chunk)
		c.Write(chunk[:n])
		total += int64(n)
		if total <= keep {
			buf = append(buf, chunk[:n]...)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fetched{err: err}
		}
	}
	r.size, r.sized, r.estimate = c.Size(), true, false
	f := fetched{r: r}
	if total <= keep {
		f.body = buf
		if f.body == nil {
			f.body = []byte{}
		}
	}
	return f
}

// isBad reports an error of one message's request that another attempt
// will not mend (a 4xx other than throttling and the token's or the
// permission's faults, which concern every message).
func isBad(err error) bool {
	var ae *apiError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
		return false
	}
	return ae.Status >= 400 && ae.Status < 500
}

// background is the sizing's state: at most one run at a time.
type background struct {
	mu     sync.Mutex
	closed bool
	idle   chan struct{} // closed when the run ends; nil if none
	prog   proxy.SyncProgress
}

// needing returns the candidates not sized yet, oldest first.
func (b *Backend) needing(st *state) []rec {
	var need []rec
	for _, r := range b.candidates(st) {
		if !b.ready(r) {
			need = append(need, r)
		}
	}
	return need
}

// kick starts a background run unless one runs or the Backend is closed;
// the channel is closed when the run ends.
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
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		err := b.sizeAll(b.ctx)
		if err != nil && b.ctx.Err() != nil {
			err = errors.New("graph: sizing stopped: the backend was closed")
		}
		g.mu.Lock()
		g.prog.Running, g.prog.Ended, g.prog.ETA, g.prog.Err = false, time.Now(), 0, err
		p := g.prog
		g.idle = nil
		g.mu.Unlock()
		close(idle)
		ev := b.log.Info()
		if err != nil {
			ev = b.log.Warn().Err(err)
		}
		if p.Done > 0 || err != nil {
			ev.Int("done", p.Done).Int("total", p.Total).Int64("took_ms", p.Ended.Sub(p.Started).Milliseconds()).Msg("graph: sizing ended")
		}
	}()
	return idle
}

// sizeAll sizes, round after round, the messages that need it.
func (b *Backend) sizeAll(ctx context.Context) error {
	g := &b.bg
	bad := map[string]bool{}
	for {
		st, err := b.load()
		if err != nil {
			return err
		}
		need := slices.DeleteFunc(b.needing(st), func(r rec) bool { return bad[r.id] })
		if len(need) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		g.mu.Lock()
		g.prog.Total = g.prog.Done + len(need)
		before := g.prog.Done
		g.mu.Unlock()
		if err := b.sizeSome(ctx, need, bad); err != nil {
			return err
		}
		g.mu.Lock()
		progressed := g.prog.Done > before
		g.mu.Unlock()
		if !progressed {
			return errors.New("graph: sizing made no progress")
		}
	}
}

// sizeSome sizes recs (oldest first), MaxConcurrent at a time. A size
// is recorded only once those of every older message of recs are, so
// that what sessions see grows in arrival order: a message offered later
// never arrived before one offered already. Sizes are written to the
// Store in batches (flushBatch, or every flushEvery).
func (b *Backend) sizeSome(ctx context.Context, recs []rec, bad map[string]bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	keep := b.keepLimit()
	type result struct {
		i int
		fetched
	}
	results := make(chan result)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(b.opts.MaxConcurrent, len(recs)) {
		wg.Go(func() {
			for i := range jobs {
				results <- result{i, b.measure(ctx, recs[i], keep)}
			}
		})
	}
	go func() {
	feed:
		for i := range recs {
			select {
			case jobs <- i:
			case <-ctx.Done():
				break feed
			}
		}
		close(jobs)
		wg.Wait()
		close(results)
	}()
	var first error
	early := map[int]fetched{}
	next := 0
	var batch []fetched
	last := time.Now()
	for res := range results {
		if res.err != nil {
			if first == nil {
				first = res.err
				bad[recs[res.i].id] = true
				cancel()
			}
			continue
		}
		if first != nil {
			continue
		}
		if res.bad != nil {
			bad[res.r.id] = true
		}
		early[res.i] = res.fetched
		for f, ok := early[next]; ok; f, ok = early[next] {
			delete(early, next)
			next++
			batch = append(batch, f)
		}
		if len(batch) >= flushBatch || (len(batch) > 0 && time.Since(last) >= flushEvery) {
			if err := b.learn(batch); err != nil {
				first = err
				cancel()
			}
			batch, last = nil, time.Now()
		}
	}
	if first == nil && len(batch) > 0 {
		first = b.learn(batch)
	}
	return first
}

// flushEvery bounds how long, and flushBatch how many, learnt sizes wait
// before they are written to the Store.
const (
	flushEvery = 200 * time.Millisecond
	flushBatch = 256
)

// learn records what measure found, in one Store change: exact sizes
// (and bodies, in the body cache), or messages gone. Messages that left
// the maildrop meanwhile are skipped.
func (b *Backend) learn(fs []fetched) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	snap, err := b.opts.Store.Snapshot(b.opts.Account)
	if err != nil {
		return b.storeError("read", err)
	}
	var c cache.Change
	for _, f := range fs {
		cur, ok := snap.Message(f.r.id)
		if !ok {
			continue
		}
		if f.bad != nil {
			b.log.Warn().Err(f.bad).Str("uid", UIDL(f.r.id)).Msg("graph: a message cannot be fetched; it is not offered, the next login tries again")
			continue
		}
		if f.gone {
			b.opts.Bodies.Remove(b.opts.Account, f.r.id)
			c.Delete = append(c.Delete, f.r.id)
			continue
		}
		r := parseRec(cur)
		r.size, r.sized, r.estimate = f.r.size, true, false
		if f.body != nil {
			b.opts.Bodies.Put(b.opts.Account, r.id, f.body)
		}
		c.Put = append(c.Put, r.record())
	}
	if err := b.applyLocked(c); err != nil {
		return err
	}
	b.bg.mu.Lock()
	b.bg.prog.Done += len(fs)
	b.bg.mu.Unlock()
	return nil
}

// SyncProgress says how far the background sizing got. While it runs,
// ETA extrapolates the rate seen so far (once 10 messages took at least
// half a second); it is 0 before.
func (b *Backend) SyncProgress() proxy.SyncProgress {
	b.bg.mu.Lock()
	p := b.bg.prog
	b.bg.mu.Unlock()
	if elapsed := time.Since(p.Started); p.Running && p.Done >= 10 && elapsed >= 500*time.Millisecond {
		p.ETA = time.Duration(float64(elapsed) / float64(p.Done) * float64(max(p.Total-p.Done, 0)))
	}
	return p
}

// Sync brings the Store up to date with the folder and sizes every
// message a session would offer, for popbridge sync.
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
