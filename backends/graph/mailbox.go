package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/proxy"
)

// mailbox is one session's maildrop.
type mailbox struct {
	b       *Backend
	release func()
	recs    map[string]rec // by UIDL
}

// errChanged is the RETR reply for a message whose $value no longer has
// the listed size.
var errChanged = &proxy.Error{Code: proxy.CodeSysTemp, Text: "The message changed on the server; log in again to get its new version"}

// List syncs with Graph and takes the snapshot: the messages not hidden,
// inside the window and sized, oldest first. Messages not yet sized are
// sized in the background; List waits for them at most LoginWait (and a
// second before ctx's deadline), then offers those sized by then.
func (m *mailbox) List(ctx context.Context) ([]proxy.MessageInfo, error) {
	b := m.b
	start := time.Now()
	before := b.Stats()
	st, err := b.load()
	if err != nil {
		return nil, err
	}
	rep, err := b.sync(ctx, st)
	if err != nil {
		return nil, err
	}
	cands := b.candidates(st)
	need := len(b.needing(st))
	if need > 0 {
		if err := m.wait(ctx, start, len(cands)-need); err != nil {
			return nil, err
		}
		if st, err = b.load(); err != nil {
			return nil, err
		}
	}
	m.recs = map[string]rec{}
	var out []proxy.MessageInfo
	pending := 0
	for _, r := range b.candidates(st) {
		if !b.ready(r) {
			pending++
			continue
		}
		m.recs[r.uidl] = r
		out = append(out, proxy.MessageInfo{UID: r.uidl, Size: r.size})
	}
	b.log.Info().Str("sync", rep.mode).Int("added", rep.added).Int("removed", rep.removed).
		Int("to_size", need).Int("offered", len(out)).Int("pending", pending).
		Int64("calls", b.Stats().Calls-before.Calls).Int64("took_ms", time.Since(start).Milliseconds()).Msg("graph: maildrop listed")
	return out, nil
}

// wait starts the background sizing and waits for it: until it ends,
// LoginWait after start (at least a second from now, and a second before
// ctx's deadline), or, as soon as there is something to offer (ready
// messages, or after a second of sizing), until the sizing cannot finish
// in that time anyway, as the Gmail backend does. A permanent sizing
// failure fails the login.
func (m *mailbox) wait(ctx context.Context, start time.Time, ready int) error {
	b := m.b
	idle := b.kick()
	now := time.Now()
	until := start.Add(b.opts.LoginWait)
	if least := now.Add(time.Second); until.Before(least) {
		until = least
	}
	if d, ok := ctx.Deadline(); ok && d.Add(-time.Second).Before(until) {
		until = d.Add(-time.Second)
	}
	hopeless := now.Add(time.Second)
	if ready > 0 {
		hopeless = now
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-idle:
			if err := b.SyncProgress().Err; err != nil {
				var pe *proxy.Error
				if errors.As(err, &pe) && pe.Code == proxy.CodeSysPerm {
					return err
				}
				b.log.Warn().Err(err).Msg("graph: sizing failed; offering the messages already sized")
			}
			return nil
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			if p := b.SyncProgress(); p.ETA > 0 && !now.Before(hopeless) && now.Add(p.ETA).After(until) {
				return nil
			}
		}
	}
}

func (m *mailbox) rec(uid string) (rec, error) {
	r, ok := m.recs[uid]
	if !ok {
		return r, fmt.Errorf("graph: message %s not in the snapshot: %w", uid, proxy.ErrNoMessage)
	}
	return r, nil
}

// Open streams the message: from the body cache if it is there (the
// bytes that were measured), else from $value, never with a size other
// than the listed one (see the package doc).
func (m *mailbox) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	b := m.b
	r, err := m.rec(uid)
	if err != nil {
		return nil, err
	}
	if body, ok := b.opts.Bodies.Get(b.opts.Account, r.id); ok && (r.estimate || crlfSize(body) == r.size) {
		return io.NopCloser(bytes.NewReader(body)), nil
	}
	if r.estimate || r.size <= b.opts.VerifyLimit {
		body, err := m.whole(ctx, r)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(body)), nil
	}
	rc, err := b.openValue(ctx, r.id)
	if err != nil {
		return nil, err
	}
	return &checkReader{rc: rc, want: r.size, m: m, r: r}, nil
}

// whole downloads r's $value whole (up to VerifyLimit) and checks its size
// against the listed one. An estimate learns the exact size. A changed
// size is recorded with the new body, and answers errChanged.
func (m *mailbox) whole(ctx context.Context, r rec) ([]byte, error) {
	b := m.b
	limit := max(b.opts.VerifyLimit, r.size)
	rc, err := b.openValue(ctx, r.id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		m.resize(r, -1, nil)
		return nil, fmt.Errorf("graph: message %s grew beyond %d octets: %w", r.uidl, limit, errChanged)
	}
	size := crlfSize(body)
	switch {
	case r.estimate:
		m.resize(r, size, body)
	case size != r.size:
		m.resize(r, size, body)
		b.log.Warn().Str("uid", r.uidl).Int64("listed", r.size).Int64("now", size).Msg("graph: $value changed size; RETR refused, the next login lists the new size")
		return nil, fmt.Errorf("graph: message %s: listed %d octets, $value now %d: %w", r.uidl, r.size, size, errChanged)
	default:
		b.opts.Bodies.Put(b.opts.Account, r.id, body)
	}
	return body, nil
}

// resize records a new exact size (and body) for r, or, with size < 0,
// marks it to be sized again. The session's snapshot keeps the listed size.
func (m *mailbox) resize(r rec, size int64, body []byte) {
	b := m.b
	b.opts.Bodies.Remove(b.opts.Account, r.id)
	if size < 0 {
		r.sized, r.estimate = false, false
	} else {
		r.size, r.sized, r.estimate = size, true, false
		if body != nil {
			b.opts.Bodies.Put(b.opts.Account, r.id, body)
		}
	}
	if err := b.apply(cache.Change{Put: []cache.MessageRecord{r.record()}}); err != nil {
		b.log.Warn().Err(err).Str("uid", r.uidl).Msg("graph: could not record a new size")
	}
}

// checkReader streams a large $value and fails, instead of ending, when
// its size is not the listed one: the proxy then closes the connection
// without the final ".", and the message is sized again.
type checkReader struct {
	rc   io.ReadCloser
	c    proxy.SizeCounter
	want int64
	m    *mailbox
	r    rec
	bad  bool
}

func (c *checkReader) Read(p []byte) (int, error) {
	if c.bad {
		return 0, errChanged
	}
	n, err := c.rc.Read(p)
	c.c.Write(p[:n])
	// Only a CR at the very end is counted differently once more comes;
	// allow for it.
	if c.c.Size() > c.want+1 || (err == io.EOF && c.c.Size() != c.want) {
		c.bad = true
		c.m.resize(c.r, -1, nil)
		c.m.b.log.Warn().Str("uid", c.r.uidl).Int64("listed", c.want).Msg("graph: $value changed size while streamed; RETR aborted, resized at the next login")
		return 0, fmt.Errorf("graph: message %s changed size: %w", c.r.uidl, errChanged)
	}
	return n, err
}

func (c *checkReader) Close() error { return c.rc.Close() }

// OpenTop returns the message for TOP, from the body cache or downloaded
// whole and kept there for the RETR that usually follows; a message too
// large for the cache is streamed.
func (m *mailbox) OpenTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	b := m.b
	r, err := m.rec(uid)
	if err != nil {
		return nil, err
	}
	if body, ok := b.opts.Bodies.Get(b.opts.Account, r.id); ok {
		return io.NopCloser(bytes.NewReader(body)), nil
	}
	if r.size > b.keepLimit() && !r.estimate {
		return b.openValue(ctx, r.id)
	}
	rc, err := b.openValue(ctx, r.id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, b.opts.VerifyLimit+1))
	if err != nil {
		return nil, err
	}
	if crlfSize(body) == r.size {
		b.opts.Bodies.Put(b.opts.Account, r.id, body)
	}
	return io.NopCloser(bytes.NewReader(body)), nil
}

// Delete applies the delete policy to uids.
func (m *mailbox) Delete(ctx context.Context, uids []string) error { return m.Commit(ctx, uids, nil) }

// Commit ends a session with QUIT: it applies the delete policy to
// deleted and, for retrieved, sets isRead (MarkReadOnRetr), records the
// download and hides them (DownloadOnce). What Graph did is recorded
// even if a later request fails.
func (m *mailbox) Commit(ctx context.Context, deleted, retrieved []string) error {
	b := m.b
	var c cache.Change
	var items []batchItem
	var ids []string // the message of each item
	del := map[string]bool{}
	for _, uid := range deleted {
		r, ok := m.recs[uid]
		if !ok {
			continue
		}
		del[r.id] = true
		path := b.mbPath + "/messages/" + url.PathEscape(r.id)
		switch p := b.opts.OnDelete; {
		case p == DeletedItems, p == Archive, strings.HasPrefix(string(p), MovePrefix):
			dest := string(p)
			if f, ok := p.MoveTarget(); ok {
				ref, err := b.folderRef(ctx, f)
				if err != nil {
					return err
				}
				dest = ref
			}
			items = append(items, batchItem{Method: http.MethodPost, URL: "/" + path + "/move", Body: map[string]string{"destinationId": dest}})
		case p == Delete:
			items = append(items, batchItem{Method: http.MethodPost, URL: "/" + path + "/permanentDelete"})
		case p == MarkRead:
			items = append(items, batchItem{Method: http.MethodPatch, URL: "/" + path, Body: map[string]bool{"isRead": true}})
		case p == Keep:
			c.AddTombstones = append(c.AddTombstones, r.id)
			continue
		}
		ids = append(ids, r.id)
	}
	var retr []rec
	for _, uid := range retrieved {
		r, ok := m.recs[uid]
		if !ok || del[r.id] {
			continue
		}
		retr = append(retr, r)
		if b.opts.MarkReadOnRetr {
			items = append(items, batchItem{Method: http.MethodPatch, URL: "/" + b.mbPath + "/messages/" + url.PathEscape(r.id), Body: map[string]bool{"isRead": true}})
			ids = append(ids, "")
		}
	}
	done, err := b.batch(ctx, items)
	for i, ok := range done {
		if !ok || ids[i] == "" {
			continue
		}
		if b.opts.OnDelete == MarkRead {
			c.AddTombstones = append(c.AddTombstones, ids[i])
		} else {
			c.Delete = append(c.Delete, ids[i])
			b.opts.Bodies.Remove(b.opts.Account, ids[i])
		}
	}
	for _, r := range retr {
		// The stored record, not the snapshot's: a RETR may have learnt a
		// new size.
		cur, ok, err := b.opts.Store.Message(b.opts.Account, r.id)
		if err == nil && !ok {
			continue // left the folder meanwhile
		}
		if err == nil {
			r = parseRec(cur)
		}
		r.downloaded = true
		c.Put = append(c.Put, r.record())
		if b.opts.DownloadOnce {
			c.AddTombstones = append(c.AddTombstones, r.id)
		}
	}
	if aerr := b.apply(c); aerr != nil {
		return errors.Join(err, aerr)
	}
	if err != nil {
		return err
	}
	b.log.Info().Str("policy", string(b.opts.OnDelete)).Int("deleted", len(deleted)).Int("retrieved", len(retrieved)).Msg("graph: session committed")
	return nil
}

// batchItem is one request of a $batch.
type batchItem struct {
	Method string
	URL    string // relative to the version root: "/me/messages/..."
	Body   any
}

// batch sends items in $batch requests of 20 (GRAPH.md §9) and returns
// which succeeded; a 404 counts as done (already gone). Throttled items
// (429, 424, 503, 504) are sent again after the longest Retry-After, up
// to MaxAttempts; another failure stops with an error.
func (b *Backend) batch(ctx context.Context, items []batchItem) ([]bool, error) {
	done := make([]bool, len(items))
	todo := make([]int, len(items))
	for i := range todo {
		todo[i] = i
	}
	for attempt := 1; len(todo) > 0; attempt++ {
		var again []int
		var wait time.Duration
		for start := 0; start < len(todo); start += 20 {
			part := todo[start:min(start+20, len(todo))]
			retry, w, err := b.batchOnce(ctx, items, part, done)
			if err != nil {
				return done, err
			}
			again = append(again, retry...)
			wait = max(wait, w)
		}
		if len(again) == 0 {
			return done, nil
		}
		if attempt >= b.opts.MaxAttempts {
			return done, b.classify("batch", fmt.Errorf("%d items still throttled after %d attempts", len(again), attempt))
		}
		if wait == 0 {
			wait = b.backoff(attempt)
		}
		wait = min(wait, maxBackoff)
		if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
			return done, b.classify("batch", fmt.Errorf("no time left to retry %d throttled items", len(again)))
		}
		b.backoffs.Add(1)
		select {
		case <-time.After(wait + time.Duration(attempt)*time.Millisecond):
		case <-ctx.Done():
			return done, b.classify("batch", ctx.Err())
		}
		todo = again
	}
	return done, nil
}

// batchOnce sends one $batch of the items part and marks done; it
// returns the items to send again and the longest Retry-After.
func (b *Backend) batchOnce(ctx context.Context, items []batchItem, part []int, done []bool) ([]int, time.Duration, error) {
	type reqItem struct {
		ID      string            `json:"id"`
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
		Body    any               `json:"body,omitempty"`
	}
	var req struct {
		Requests []reqItem `json:"requests"`
	}
	for _, i := range part {
		it := items[i]
		h := map[string]string{"Prefer": preferImmutable}
		if it.Body != nil {
			h["Content-Type"] = "application/json"
		}
		req.Requests = append(req.Requests, reqItem{ID: strconv.Itoa(i), Method: it.Method, URL: it.URL, Headers: h, Body: it.Body})
	}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, 0, err
	}
	resp, err := b.send(ctx, "batch", http.MethodPost, "$batch", data, "application/json", "", b.opts.MaxConcurrent)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Responses []struct {
			ID      string            `json:"id"`
			Status  int               `json:"status"`
			Headers map[string]string `json:"headers"`
			Body    json.RawMessage   `json:"body"`
		} `json:"responses"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, 0, b.classify("batch", fmt.Errorf("decode the answer: %w", err))
	}
	var again []int
	var wait time.Duration
	var first error
	seen := map[int]bool{}
	for _, r := range out.Responses {
		i, err := strconv.Atoi(r.ID)
		if err != nil || i < 0 || i >= len(items) {
			continue
		}
		seen[i] = true
		switch {
		case r.Status/100 == 2, r.Status == http.StatusNotFound:
			done[i] = true
		case r.Status == http.StatusTooManyRequests, r.Status == http.StatusFailedDependency, r.Status == 503, r.Status == 504:
			again = append(again, i)
			if d, ok := parseRetryAfter(r.Headers["Retry-After"], time.Now()); ok {
				wait = max(wait, d)
			}
		default:
			if first == nil {
				var e struct {
					Error struct{ Code, Message string } `json:"error"`
				}
				json.Unmarshal(r.Body, &e)
				first = b.classify("batch item", &apiError{Status: r.Status, Code: e.Error.Code, Message: e.Error.Message})
			}
		}
	}
	for _, i := range part {
		if !seen[i] && first == nil {
			again = append(again, i) // no answer: send again
		}
	}
	return again, wait, first
}

// Close releases the account.
func (m *mailbox) Close() error {
	m.release()
	return nil
}
