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

// List syncs with Gmail and takes the snapshot: the messages not hidden
// and inside the window, oldest first (internalDate, then id). Messages
// not yet sized are fetched first, unless EstimateSizes.
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

	cut := b.cutoff().UnixMilli()
	if b.cutoff().IsZero() {
		cut = 0
	}
	var offer []rec
	for _, r := range st.recs {
		if st.tombs[r.id] || (r.sized && r.date < cut) || (b.opts.Window.Batch > 0 && r.downloaded) {
			continue
		}
		offer = append(offer, r)
	}
	if n := b.opts.Window.Batch; n > 0 && len(offer) > n {
		slices.SortFunc(offer, func(x, y rec) int {
			if idLess(x.id, y.id) {
				return -1
			}
			return 1
		})
		offer = offer[:n]
	}
	var need []rec
	for _, r := range offer {
		if !r.sized || (r.estimate && !b.opts.EstimateSizes) {
			need = append(need, r)
		}
	}
	if err := b.fetchSizes(ctx, st, need); err != nil {
		return nil, err
	}

	m.recs = make(map[string]rec, len(offer))
	out := make([]proxy.MessageInfo, 0, len(offer))
	list := make([]rec, 0, len(offer))
	for _, o := range offer {
		r, ok := st.recs[o.id]
		if !ok || !r.sized || r.date < cut {
			continue
		}
		list = append(list, r)
		m.recs[r.id] = r
	}
	slices.SortFunc(list, func(x, y rec) int {
		if c := cmp.Compare(x.date, y.date); c != 0 {
			return c
		}
		if idLess(x.id, y.id) {
			return -1
		}
		return 1
	})
	for _, r := range list {
		out = append(out, proxy.MessageInfo{UID: r.id, Size: r.size})
	}
	after := b.Stats()
	b.log.Info().Str("sync", rep.mode).Int("added", rep.added).Int("removed", rep.removed).
		Int("fetched", len(need)).Int("offered", len(out)).Int64("calls", after.Calls-before.Calls).
		Int64("units", after.Units-before.Units).Dur("took", time.Since(start)).Msg("gmail: maildrop listed")
	return out, nil
}

// Open streams the message, from the body cache if it is there, else as
// Gmail's reply arrives. A message whose size was estimated is fetched
// and decoded whole, so that its exact size is recorded.
func (m *mailbox) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	if r, ok := m.recs[uid]; ok && !r.estimate {
		if body, ok := m.b.opts.Bodies.Get(m.b.opts.Account, uid); ok {
			return io.NopCloser(bytes.NewReader(body)), nil
		}
		return m.b.openRaw(ctx, uid)
	}
	body, r, msg, err := m.fetch(ctx, uid)
	if err != nil {
		return nil, err
	}
	if body == nil {
		if body, err = m.learn(r, msg); err != nil {
			return nil, err
		}
	}
	return io.NopCloser(bytes.NewReader(body)), nil
}

// OpenTop returns the whole message (Gmail has no partial fetch) and keeps
// it in the body cache for the RETR that usually follows.
func (m *mailbox) OpenTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	body, r, msg, err := m.fetch(ctx, uid)
	if err != nil {
		return nil, err
	}
	if body == nil {
		if body, err = m.learn(r, msg); err != nil {
			return nil, err
		}
		m.b.opts.Bodies.Put(m.b.opts.Account, uid, body)
	}
	return io.NopCloser(bytes.NewReader(body)), nil
}

// fetch returns the kept body of message uid, or else its record and
// its format=raw reply.
func (m *mailbox) fetch(ctx context.Context, uid string) (body []byte, r rec, msg *gmailapi.Message, err error) {
	if body, ok := m.b.opts.Bodies.Get(m.b.opts.Account, uid); ok {
		if body == nil {
			body = []byte{} // an empty message is still a hit
		}
		return body, rec{}, nil, nil
	}
	r, ok := m.recs[uid]
	if !ok {
		return nil, r, nil, fmt.Errorf("gmail: message %s not in the snapshot: %w", uid, proxy.ErrNoMessage)
	}
	msg, err = m.b.get(ctx, uid, "raw")
	return nil, r, msg, err
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
	switch b.opts.OnDelete {
	case Archive:
		var done []string
		done, err = b.batchModify(ctx, deleted, nil, b.opts.Labels)
		for _, id := range done {
			removed[id] = true
		}
	case MarkRead:
		var done []string
		done, err = b.batchModify(ctx, deleted, nil, []string{"UNREAD"})
		c.AddTombstones = append(c.AddTombstones, done...)
	case Trash:
		var done []string
		done, err = b.trash(ctx, deleted)
		for _, id := range done {
			removed[id] = true
		}
	case Delete:
		var done []string
		done, err = b.batchDelete(ctx, deleted)
		for _, id := range done {
			removed[id] = true
		}
	case Keep:
		c.AddTombstones = append(c.AddTombstones, deleted...)
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

// batchModify changes the labels of ids, 1000 at a time (the API's
// limit). It returns the ids done, also on error.
func (b *Backend) batchModify(ctx context.Context, ids, add, remove []string) ([]string, error) {
	var done []string
	for _, part := range chunks(ids, 1000) {
		err := b.call(ctx, "messages.batchModify", 50, func(ctx context.Context) error {
			return b.svc.Users.Messages.BatchModify(b.opts.UserID, &gmailapi.BatchModifyMessagesRequest{
				Ids: part, AddLabelIds: add, RemoveLabelIds: remove,
			}).Context(ctx).Do()
		})
		if err != nil {
			return done, err
		}
		done = append(done, part...)
	}
	return done, nil
}

// batchDelete removes ids for good, 1000 at a time.
func (b *Backend) batchDelete(ctx context.Context, ids []string) ([]string, error) {
	var done []string
	for _, part := range chunks(ids, 1000) {
		err := b.call(ctx, "messages.batchDelete", 50, func(ctx context.Context) error {
			return b.svc.Users.Messages.BatchDelete(b.opts.UserID, &gmailapi.BatchDeleteMessagesRequest{Ids: part}).Context(ctx).Do()
		})
		if err != nil {
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
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan string)
	for range min(b.opts.MaxConcurrent, len(ids)) {
		wg.Go(func() {
			for id := range jobs {
				err := b.call(ctx, "messages.trash", 5, func(ctx context.Context) error {
					_, err := b.svc.Users.Messages.Trash(b.opts.UserID, id).Context(ctx).Do()
					return err
				})
				mu.Lock()
				if err == nil || notFound(err) {
					done = append(done, id)
				} else if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		})
	}
feed:
	for _, id := range ids {
		select {
		case jobs <- id:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	return done, first
}

// Close releases the account.
func (m *mailbox) Close() error {
	m.release()
	return nil
}
