package gmail

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	gmailapi "google.golang.org/api/gmail/v1"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// mailbox is one session's maildrop.
type mailbox struct {
	b       *Backend
	release func() // the Store's Hold on the account
	recs    map[string]rec
}

var (
	_ proxy.Mailbox   = (*mailbox)(nil)
	_ proxy.TopOpener = (*mailbox)(nil)
	_ proxy.Committer = (*mailbox)(nil)
)

// List syncs with Gmail and takes the snapshot: the messages not hidden,
// inside the window and sized, oldest first (internalDate, then id).
// Messages not yet sized are sized in the background, oldest (Gmail id)
// first; List waits for them (see wait), then offers those sized by
// then. A permanent failure of the sizing in that time (a rejected
// token, a missing scope) fails the login; a temporary one is logged and
// the messages already sized are offered.
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
	need := 0
	for _, r := range cands {
		if !b.ready(r) {
			need++
		}
	}
	if need > 0 {
		if st, err = m.wait(ctx, start, len(cands)-need); err != nil {
			return nil, err
		}
	}

	m.recs = make(map[string]rec)
	var list []rec
	pending := 0
	for _, r := range b.candidates(st) {
		if !b.ready(r) {
			pending++
			continue
		}
		list = append(list, r)
		m.recs[r.id] = r
	}
	slices.SortFunc(list, func(x, y rec) int {
		if c := cmp.Compare(x.date, y.date); c != 0 {
			return c
		}
		return byID(x, y)
	})
	out := make([]proxy.MessageInfo, 0, len(list))
	for _, r := range list {
		out = append(out, proxy.MessageInfo{UID: r.id, Size: r.size})
	}
	after := b.Stats()
	b.log.Info().Str("sync", rep.mode).Int("added", rep.added).Int("removed", rep.removed).
		Int("to_size", need).Int("offered", len(out)).Int("pending", pending).Int64("calls", after.Calls-before.Calls).
		Int64("units", after.Units-before.Units).Int64("took_ms", time.Since(start).Milliseconds()).Msg("gmail: maildrop listed")
	return out, nil
}

// wait starts the background sizing and waits for it: until every
// message is sized, or LoginWait after start (at least a second from now,
// and a second before ctx's deadline), or, as soon as there is something
// to offer, until the sizing cannot finish in that time anyway. ready is
// the number of messages the session could offer at once. It returns the
// state with the sizes learnt.
func (m *mailbox) wait(ctx context.Context, start time.Time, ready int) (*state, error) {
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
	// Without anything to offer, size for a second at least: the quota
	// bucket's burst then gives a first login a useful maildrop.
	hopeless := now.Add(time.Second)
	if ready > 0 {
		hopeless = now
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	ended := false
wait:
	for {
		select {
		case <-idle:
			ended = true
			break wait
		case <-t.C:
			break wait
		case <-ctx.Done():
			break wait
		case now := <-tick.C:
			if p := b.SyncProgress(); !now.Before(hopeless) && now.Add(p.ETA).After(until) {
				break wait
			}
		}
	}
	if err := b.flush(true); err != nil {
		return nil, err
	}
	if ended {
		if err := b.SyncProgress().Err; err != nil {
			var pe *proxy.Error
			if errors.As(err, &pe) && pe.Code == proxy.CodeSysPerm {
				return nil, err
			}
			b.log.Warn().Err(err).Msg("gmail: sizing failed; offering the messages already sized")
		}
	}
	return b.load()
}

// Open streams the message, from the body cache if it is there, else as
// Gmail's reply arrives. A message whose size was estimated is fetched
// and decoded whole, so that its exact size is recorded.
func (m *mailbox) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	if body, ok := m.b.opts.Bodies.Get(m.b.opts.Account, uid); ok {
		return io.NopCloser(bytes.NewReader(body)), nil
	}
	r, err := m.rec(uid)
	if err != nil {
		return nil, err
	}
	if !r.estimate {
		return m.b.openRaw(ctx, uid)
	}
	body, err := m.whole(ctx, r)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(body)), nil
}

// OpenTop returns the whole message (Gmail has no partial fetch) and keeps
// it in the body cache for the RETR that usually follows.
func (m *mailbox) OpenTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	body, ok := m.b.opts.Bodies.Get(m.b.opts.Account, uid)
	if !ok {
		r, err := m.rec(uid)
		if err != nil {
			return nil, err
		}
		if body, err = m.whole(ctx, r); err != nil {
			return nil, err
		}
		m.b.opts.Bodies.Put(m.b.opts.Account, uid, body)
	}
	return io.NopCloser(bytes.NewReader(body)), nil
}

// rec returns the snapshot's record of message uid.
func (m *mailbox) rec(uid string) (rec, error) {
	r, ok := m.recs[uid]
	if !ok {
		return r, fmt.Errorf("gmail: message %s not in the snapshot: %w", uid, proxy.ErrNoMessage)
	}
	return r, nil
}

// whole fetches message r (format=raw) and decodes it.
func (m *mailbox) whole(ctx context.Context, r rec) ([]byte, error) {
	msg, err := m.b.get(ctx, r.id, "raw")
	if err != nil {
		return nil, err
	}
	return m.learn(r, msg)
}

// learn decodes a raw message and records its exact size if only an
// estimate was known.
func (m *mailbox) learn(r rec, msg *gmailapi.Message) ([]byte, error) {
	body, err := decodeAll(msg.Raw)
	if err != nil {
		return nil, fmt.Errorf("gmail: message %s: %w: %w", r.id, proxy.ErrTemporary, err)
	}
	if r.estimate {
		r.size, r.estimate, r.date = crlfSize(body), false, msg.InternalDate
		m.recs[r.id] = r
		if err := m.b.apply(cache.Change{Put: []cache.MessageRecord{r.record()}}); err != nil {
			m.b.log.Warn().Err(err).Str("id", r.id).Msg("gmail: could not record an exact size")
		}
	}
	return body, nil
}

// Delete applies the delete policy to uids.
func (m *mailbox) Delete(ctx context.Context, uids []string) error {
	return m.Commit(ctx, uids, nil)
}

// Commit ends a session with QUIT: it applies the delete policy to
// deleted, and marks retrieved as downloaded (hidden too, with
// DownloadOnce). What Gmail accepted is recorded even if a later request
// fails.
func (m *mailbox) Commit(ctx context.Context, deleted, retrieved []string) error {
	b := m.b
	var c cache.Change
	removed := make(map[string]bool)
	var err error
	var done []string // gone from the maildrop in Gmail
	switch b.opts.OnDelete {
	case modes.Archive:
		done, err = b.batchModify(ctx, deleted, nil, b.opts.Labels)
	case modes.Trash:
		done, err = b.trash(ctx, deleted)
	case modes.Delete:
		done, err = b.batchDelete(ctx, deleted)
	case modes.MarkRead:
		var read []string
		read, err = b.batchModify(ctx, deleted, nil, []string{"UNREAD"})
		c.AddTombstones = append(c.AddTombstones, read...)
	case modes.Keep:
		c.AddTombstones = append(c.AddTombstones, deleted...)
	}
	for _, id := range done {
		removed[id] = true
	}
	for id := range removed {
		c.Delete = append(c.Delete, id)
		b.opts.Bodies.Remove(b.opts.Account, id)
	}
	for _, id := range retrieved {
		r, ok := m.recs[id]
		if !ok || removed[id] {
			continue
		}
		r.downloaded = true
		c.Put = append(c.Put, r.record())
		if b.opts.DownloadOnce {
			c.AddTombstones = append(c.AddTombstones, id)
		}
	}
	if aerr := b.apply(c); aerr != nil {
		return errors.Join(err, aerr)
	}
	if err != nil {
		return err
	}
	b.log.Info().Str("policy", string(b.opts.OnDelete)).Int("deleted", len(deleted)).
		Int("retrieved", len(retrieved)).Msg("gmail: session committed")
	return nil
}

// batchModify changes the labels of ids. It returns the ids done, also
// on error.
func (b *Backend) batchModify(ctx context.Context, ids, add, remove []string) ([]string, error) {
	return inChunks(ids, func(part []string) error {
		return b.call(ctx, "messages.batchModify", 50, func(ctx context.Context) error {
			return b.svc.Users.Messages.BatchModify(b.opts.UserID, &gmailapi.BatchModifyMessagesRequest{
				Ids: part, AddLabelIds: add, RemoveLabelIds: remove,
			}).Context(ctx).Do()
		})
	})
}

// batchDelete removes ids for good. It returns the ids done, also on
// error.
func (b *Backend) batchDelete(ctx context.Context, ids []string) ([]string, error) {
	return inChunks(ids, func(part []string) error {
		return b.call(ctx, "messages.batchDelete", 50, func(ctx context.Context) error {
			return b.svc.Users.Messages.BatchDelete(b.opts.UserID, &gmailapi.BatchDeleteMessagesRequest{Ids: part}).Context(ctx).Do()
		})
	})
}

// inChunks calls f with ids 1000 at a time, the batch methods' limit, and
// returns the ids of the calls that succeeded, up to the first failure.
func inChunks(ids []string, f func(part []string) error) ([]string, error) {
	var done []string
	for part := range slices.Chunk(ids, 1000) {
		if err := f(part); err != nil {
			return done, err
		}
		done = append(done, part...)
	}
	return done, nil
}

// trash moves ids to the trash, one request each (there is no batch
// form), MaxConcurrent at a time. A message already gone counts as done.
func (b *Backend) trash(ctx context.Context, ids []string) ([]string, error) {
	var (
		mu    sync.Mutex
		done  []string
		first error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	each(ctx, b.opts.MaxConcurrent, ids, func(id string) {
		err := b.call(ctx, "messages.trash", 5, func(ctx context.Context) error {
			_, err := b.svc.Users.Messages.Trash(b.opts.UserID, id).Context(ctx).Do()
			return err
		})
		mu.Lock()
		defer mu.Unlock()
		if err == nil || notFound(err) {
			done = append(done, id)
		} else if first == nil {
			first = err
			cancel()
		}
	})
	return done, first
}

// Close releases the account.
func (m *mailbox) Close() error {
	m.release()
	return nil
}
