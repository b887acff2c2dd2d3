package gmail

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	gmailapi "google.golang.org/api/gmail/v1"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/proxy"
)

// rec is what the Store keeps about one message of the maildrop. It is
// kept as a cache.MessageRecord whose Stamp is the internalDate followed
// by flags: "?" not sized yet, "~" size estimated, "r" downloaded.
type rec struct {
	id         string
	size       int64
	date       int64 // internalDate, ms since the epoch; 0 until fetched
	sized      bool  // size known, exact unless estimate
	estimate   bool  // size is Gmail's sizeEstimate
	downloaded bool  // retrieved by a session that ended with QUIT
}

func (r rec) record() cache.MessageRecord {
	st := strconv.FormatInt(r.date, 10)
	if !r.sized {
		st += "?"
	}
	if r.estimate {
		st += "~"
	}
	if r.downloaded {
		st += "r"
	}
	return cache.MessageRecord{Key: r.id, UIDL: r.id, Size: r.size, Stamp: st}
}

func parseRec(m cache.MessageRecord) rec {
	r := rec{id: m.Key, size: m.Size, sized: true}
	i := 0
	for i < len(m.Stamp) && m.Stamp[i] >= '0' && m.Stamp[i] <= '9' {
		i++
	}
	r.date, _ = strconv.ParseInt(m.Stamp[:i], 10, 64)
	for _, c := range m.Stamp[i:] {
		switch c {
		case '?':
			r.sized = false
		case '~':
			r.estimate = true
		case 'r':
			r.downloaded = true
		}
	}
	return r
}

// idLess orders Gmail ids, hex numbers that grow with arrival time.
func idLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// state is a session's copy of the account's records.
type state struct {
	recs  map[string]rec
	tombs map[string]bool
	hist  uint64 // history position of recs; 0 means never listed
}

func (b *Backend) load() (*state, error) {
	snap, err := b.opts.Store.Snapshot(b.opts.Account)
	if err != nil {
		return nil, b.storeError("read", err)
	}
	st := &state{recs: make(map[string]rec, snap.Len()), tombs: make(map[string]bool), hist: snap.Sync().HistoryID}
	for r := range snap.Messages() {
		st.recs[r.Key] = parseRec(r)
	}
	for k := range snap.Tombstones() {
		st.tombs[k] = true
	}
	return st, nil
}

// apply commits c to the Store.
func (b *Backend) apply(c cache.Change) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.applyLocked(c)
}

// applyLocked is apply with b.mu held.
func (b *Backend) applyLocked(c cache.Change) error {
	if len(c.Put)+len(c.Delete)+len(c.AddTombstones)+len(c.RemoveTombstones) == 0 && c.Sync == nil {
		return nil
	}
	if err := b.opts.Store.Apply(b.opts.Account, c); err != nil {
		return b.storeError("update", err)
	}
	return nil
}

func (b *Backend) storeError(op string, err error) error {
	return fmt.Errorf("gmail: %s the cache: %w: %w", op, proxy.ErrTemporary, err)
}

// syncReport says what a sync did, for the log.
type syncReport struct {
	mode           string // warm, cold or resync
	added, removed int
}

// sync brings st up to date with the mailbox: from the history when st
// has a position, else (or when Gmail no longer has that history) by
// listing every message. New messages are recorded unsized; the
// membership and the new position are committed together.
func (b *Backend) sync(ctx context.Context, st *state) (syncReport, error) {
	rep := syncReport{mode: "warm"}
	var changes map[string]bool // id -> in the maildrop
	hist := st.hist
	full := hist == 0
	if !full {
		var err error
		hist, changes, full, err = b.history(ctx, st.hist)
		switch {
		case notFound(err):
			b.log.Info().Uint64("history_id", st.hist).Msg("gmail: history no longer available; listing the mailbox again")
			full, rep.mode = true, "resync"
		case err != nil:
			return rep, err
		case full:
			rep.mode = "resync"
		}
	} else {
		rep.mode = "cold"
	}
	if full {
		var members map[string]bool
		var err error
		hist, members, err = b.list(ctx)
		if err != nil {
			return rep, err
		}
		changes = members
		for id := range st.recs {
			if !members[id] {
				changes[id] = false
			}
		}
	}
	c := cache.Change{Sync: &cache.SyncState{HistoryID: hist}}
	for id, in := range changes {
		_, known := st.recs[id]
		switch {
		case in && !known:
			r := rec{id: id}
			st.recs[id] = r
			c.Put = append(c.Put, r.record())
			rep.added++
		case !in && known:
			delete(st.recs, id)
			c.Delete = append(c.Delete, id)
			if st.tombs[id] {
				delete(st.tombs, id)
				c.RemoveTombstones = append(c.RemoveTombstones, id)
			}
			b.opts.Bodies.Remove(b.opts.Account, id)
			rep.removed++
		}
	}
	if hist == st.hist && len(c.Put)+len(c.Delete) == 0 {
		return rep, nil
	}
	st.hist = hist
	return rep, b.apply(c)
}

// history reads the changes since start: which messages entered or left
// the maildrop. full says they cannot be told from the history alone
// (a query must be evaluated, or a label change on a message whose
// labels are not given), so the mailbox must be listed.
func (b *Backend) history(ctx context.Context, start uint64) (hist uint64, changes map[string]bool, full bool, err error) {
	changes = make(map[string]bool)
	token := ""
	for {
		var resp *gmailapi.ListHistoryResponse
		err := b.call(ctx, "history.list", 2, func(ctx context.Context) (err error) {
			c := b.svc.Users.History.List(b.opts.UserID).StartHistoryId(start).
				HistoryTypes("messageAdded", "messageDeleted", "labelAdded", "labelRemoved").
				LabelId(b.opts.Labels[0]).MaxResults(500).Context(ctx)
			if token != "" {
				c.PageToken(token)
			}
			resp, err = c.Do()
			return err
		})
		if err != nil {
			return 0, nil, false, err
		}
		for _, h := range resp.History {
			for _, a := range h.MessagesAdded {
				if a.Message != nil {
					changes[a.Message.Id] = b.member(a.Message.LabelIds)
				}
			}
			for _, d := range h.MessagesDeleted {
				if d.Message != nil {
					changes[d.Message.Id] = false
				}
			}
			for _, a := range h.LabelsAdded {
				if a.Message == nil || !b.concerns(a.LabelIds) {
					continue
				}
				if a.Message.LabelIds != nil {
					changes[a.Message.Id] = b.member(a.Message.LabelIds)
				} else if hidden(a.LabelIds) {
					changes[a.Message.Id] = false
				} else if len(b.opts.Labels) == 1 {
					changes[a.Message.Id] = true
				} else {
					full = true
				}
			}
			for _, r := range h.LabelsRemoved {
				if r.Message == nil || !b.concerns(r.LabelIds) {
					continue
				}
				if r.Message.LabelIds != nil {
					changes[r.Message.Id] = b.member(r.Message.LabelIds)
				} else if hidden(r.LabelIds) {
					full = true // out of the trash: are the labels still there?
				} else {
					changes[r.Message.Id] = false
				}
			}
		}
		if resp.NextPageToken == "" {
			if b.opts.Query != "" {
				for _, in := range changes {
					if in {
						full = true // only messages.list evaluates the query
						break
					}
				}
			}
			return resp.HistoryId, changes, full, nil
		}
		token = resp.NextPageToken
	}
}

// member reports whether a message with these labels is in the maildrop
// (the query aside): it has every served label, and is not in the trash
// or spam unless those are served.
func (b *Backend) member(labels []string) bool {
	for _, l := range b.opts.Labels {
		if !slices.Contains(labels, l) {
			return false
		}
	}
	for _, l := range labels {
		if (l == "TRASH" || l == "SPAM") && !slices.Contains(b.opts.Labels, l) {
			return false
		}
	}
	return true
}

// concerns reports whether a change of these labels can move a message
// into or out of the maildrop.
func (b *Backend) concerns(labels []string) bool {
	for _, l := range labels {
		if slices.Contains(b.opts.Labels, l) || l == "TRASH" || l == "SPAM" {
			return true
		}
	}
	return false
}

func hidden(labels []string) bool {
	return slices.Contains(labels, "TRASH") || slices.Contains(labels, "SPAM")
}

// list reads the mailbox's history position, then lists every message
// in the maildrop.
func (b *Backend) list(ctx context.Context) (uint64, map[string]bool, error) {
	var prof *gmailapi.Profile
	err := b.call(ctx, "users.getProfile", 1, func(ctx context.Context) (err error) {
		prof, err = b.svc.Users.GetProfile(b.opts.UserID).Context(ctx).Do()
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	q := b.query()
	members := make(map[string]bool)
	token := ""
	for {
		var resp *gmailapi.ListMessagesResponse
		err := b.call(ctx, "messages.list", 5, func(ctx context.Context) (err error) {
			c := b.svc.Users.Messages.List(b.opts.UserID).LabelIds(b.opts.Labels...).MaxResults(500).Context(ctx)
			if q != "" {
				c.Q(q)
			}
			if token != "" {
				c.PageToken(token)
			}
			resp, err = c.Do()
			return err
		})
		if err != nil {
			return 0, nil, err
		}
		for _, m := range resp.Messages {
			members[m.Id] = true
		}
		if resp.NextPageToken == "" {
			return prof.HistoryId, members, nil
		}
		token = resp.NextPageToken
	}
}

// query returns the search string for messages.list: Options.Query and,
// for a time window, "after:" its start in epoch seconds.
func (b *Backend) query() string {
	q := b.opts.Query
	if cut := b.cutoff(); !cut.IsZero() {
		if q != "" {
			q = "(" + q + ") "
		}
		q += "after:" + strconv.FormatInt(cut.Unix(), 10)
	}
	return q
}

// cutoff returns the start of the time window, or zero.
func (b *Backend) cutoff() time.Time {
	var cut time.Time
	if w := b.opts.Window; w.MaxAge > 0 {
		cut = b.opts.Now().Add(-w.MaxAge)
	}
	if s := b.opts.Window.Since; s.After(cut) {
		cut = s
	}
	return cut
}

// fetched is what a worker learnt about one message.
type fetched struct {
	r    rec
	body []byte // the decoded message, when fetched whole
	gone bool   // the message no longer exists
	err  error
	bad  error // this message cannot be sized (its raw does not decode)
}

// fetchOne gets one message: its estimate (format=minimal), or the whole
// message (format=raw), decoded and measured.
func (b *Backend) fetchOne(ctx context.Context, r rec, estimate bool) fetched {
	format := "raw"
	if estimate {
		format = "minimal"
	}
	msg, err := b.get(ctx, r.id, format)
	if err != nil {
		if errors.Is(err, proxy.ErrNoMessage) {
			return fetched{r: r, gone: true}
		}
		return fetched{err: err}
	}
	r.date, r.sized = msg.InternalDate, true
	if estimate {
		r.size, r.estimate = msg.SizeEstimate, true
		return fetched{r: r}
	}
	body, err := decodeAll(msg.Raw)
	if err != nil {
		return fetched{r: r, bad: fmt.Errorf("gmail: message %s: %w: %w", r.id, proxy.ErrTemporary, err)}
	}
	r.size, r.estimate = crlfSize(body), false
	return fetched{r: r, body: body}
}

// get reads one message in format. A message that no longer exists is
// reported with proxy.ErrNoMessage.
func (b *Backend) get(ctx context.Context, id, format string) (*gmailapi.Message, error) {
	var msg *gmailapi.Message
	err := b.call(ctx, "messages.get", 5, func(ctx context.Context) (err error) {
		msg, err = b.svc.Users.Messages.Get(b.opts.UserID, id).Format(format).Context(ctx).Do()
		return err
	})
	if notFound(err) {
		return nil, fmt.Errorf("gmail: message %s: %w", id, proxy.ErrNoMessage)
	}
	return msg, err
}

// crlfSize is the message's size as RETR sends it (RFC 1939 §11).
func crlfSize(body []byte) int64 {
	var c proxy.SizeCounter
	c.Write(body)
	return c.Size()
}

// each calls f for every item, n at a time, and returns when all calls
// have; once ctx ends, the items not started are skipped.
func each[T any](ctx context.Context, n int, items []T, f func(T)) {
	jobs := make(chan T)
	var wg sync.WaitGroup
	for range min(n, len(items)) {
		wg.Go(func() {
			for it := range jobs {
				f(it)
			}
		})
	}
feed:
	for _, it := range items {
		select {
		case jobs <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
}
