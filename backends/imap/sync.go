package imap

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/proxy"
)

// UIDL returns the POP3 unique-id of the message with IMAP UID uid in a
// folder whose UIDVALIDITY is validity: both as 8 hex digits, which is
// what Dovecot's default pop3_uidl_format %08Xu%08Xv gives (in lower
// case). It is also the message's key in the cache.
func UIDL(uid imap.UID, validity uint32) string {
	const hex = "0123456789abcdef"
	var b [16]byte
	for i, v := range [2]uint32{uint32(uid), validity} {
		for j := 7; j >= 0; j-- {
			b[i*8+j] = hex[v&0xf]
			v >>= 4
		}
	}
	return string(b[:])
}

// parseUIDL is the inverse of UIDL.
func parseUIDL(s string) (uid imap.UID, validity uint32, ok bool) {
	if len(s) != 16 {
		return 0, 0, false
	}
	var v [2]uint32
	for i := range 16 {
		c := s[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, 0, false
		}
		v[i/8] = v[i/8]<<4 | uint32(d)
	}
	return imap.UID(v[0]), v[1], v[0] != 0
}

// msg is one message of a session's snapshot.
type msg struct {
	uid  imap.UID
	size int64
	key  string // UIDL and cache key
}

// delta is what a sync learnt from the server.
type delta struct {
	validity uint32
	// cold: every message was fetched into sizes; known records are void.
	cold  bool
	sizes map[imap.UID]int64 // sizes fetched in this sync
	// present, if not nil, holds every UID in the folder (an expunge was
	// detected); known records not in it are gone.
	present map[imap.UID]bool
	highest imap.UID // every message below it is known after this sync
	search  bool     // UID SEARCH ALL was needed
}

// List takes the snapshot: every message of the folder not hidden by a
// tombstone, in UID order.
func (m *mailbox) List(ctx context.Context) ([]proxy.MessageInfo, error) {
	start := time.Now()
	b := m.b
	store := b.opts.Store
	var snap *cache.Snapshot
	if store != nil {
		var err error
		if snap, err = store.Snapshot(m.account); err != nil {
			m.s.log.Error().Err(err).Msg("reading the cache failed; fetching every size")
			snap = nil
		}
	}
	// known: the records of the cached UIDVALIDITY up to HighestUID;
	// void: the keys of any other record.
	var st cache.SyncState
	var known []msg
	var void []string
	if snap != nil {
		st = snap.Sync()
		known = make([]msg, 0, snap.Len())
		for rec := range snap.Messages() {
			if uid, v, ok := parseUIDL(rec.Key); ok && v == st.UIDValidity && uid <= imap.UID(st.HighestUID) {
				known = append(known, msg{uid: uid, size: rec.Size, key: rec.Key})
			} else {
				void = append(void, rec.Key)
			}
		}
	}

	var d delta
	err := m.s.run(ctx, true, func(c *imapclient.Client) error {
		var err error
		d, err = m.fetchChanges(c, snap != nil, st, len(known))
		return err
	})
	if err != nil {
		return nil, m.mapErr("list the folder at", err)
	}
	m.s.validity = d.validity

	change := cache.Change{Delete: void}
	gone := 0
	switch {
	case d.cold && snap != nil:
		if st.UIDValidity != 0 && st.UIDValidity != d.validity {
			m.s.log.Warn().Uint32("old_uidvalidity", st.UIDValidity).Uint32("uidvalidity", d.validity).
				Int("forgotten", snap.Len()).Int("unhidden", snap.TombstoneCount()).
				Msgf("UIDVALIDITY of %q changed: the server renumbered the folder, so every message gets a new UIDL "+
					"and POP3 clients that keep mail on the server will download it again", b.opts.Folder)
		}
		for _, x := range known {
			change.Delete = append(change.Delete, x.key)
		}
		change.RemoveTombstones = slices.Collect(snap.Tombstones())
		known = known[:0]
	case d.present != nil:
		known = slices.DeleteFunc(known, func(x msg) bool {
			if d.present[x.uid] {
				return false
			}
			change.Delete = append(change.Delete, x.key)
			if snap.Tombstoned(x.key) {
				change.RemoveTombstones = append(change.RemoveTombstones, x.key)
			}
			gone++
			return true
		})
	}

	msgs := known
	for uid, size := range d.sizes {
		key := UIDL(uid, d.validity)
		msgs = append(msgs, msg{uid: uid, size: size, key: key})
		change.Put = append(change.Put, cache.MessageRecord{Key: key, Size: size, UIDL: key})
	}
	slices.SortFunc(msgs, func(a, b msg) int { return cmp.Compare(a.uid, b.uid) })

	if snap != nil {
		if st.UIDValidity != d.validity || st.HighestUID != uint32(d.highest) {
			ns := st
			ns.UIDValidity, ns.HighestUID = d.validity, uint32(d.highest)
			change.Sync = &ns
		}
		if len(change.Put)+len(change.Delete)+len(change.RemoveTombstones) > 0 || change.Sync != nil {
			if err := store.Apply(m.account, change); err != nil {
				// The listing is right; only the next login pays.
				m.s.log.Error().Err(err).Msg("updating the cache failed")
			}
		}
	}

	// Hide tombstoned messages; msgs stays sorted by UID, which is also
	// the order of the keys (fixed-width hex, one UIDVALIDITY).
	hidden := 0
	if snap != nil && !d.cold && snap.TombstoneCount() > 0 {
		msgs = slices.DeleteFunc(msgs, func(x msg) bool {
			if snap.Tombstoned(x.key) {
				hidden++
				return true
			}
			return false
		})
	}
	m.msgs = msgs
	list := make([]proxy.MessageInfo, len(msgs))
	for i, x := range msgs {
		list[i] = proxy.MessageInfo{UID: x.key, Size: x.size}
	}
	mode := "warm"
	if d.cold {
		mode = "cold"
	}
	m.s.log.Debug().Str("sync", mode).Int("messages", len(list)).Int("hidden", hidden).
		Int("fetched", len(d.sizes)).Int("expunged", gone).Bool("search", d.search).
		Int64("took_ms", time.Since(start).Milliseconds()).Msg("listed folder")
	return list, nil
}

// fetchChanges asks the server for what the cache does not know. Cold
// (no cache, or another UIDVALIDITY): UID FETCH 1:* (UID RFC822.SIZE).
// Warm: UID FETCH highest+1:* only if UIDNEXT says there are new UIDs,
// then the message count is compared with the known and new messages; only
// if it differs does UID SEARCH ALL find which were expunged.
func (m *mailbox) fetchChanges(c *imapclient.Client, cached bool, st cache.SyncState, nknown int) (delta, error) {
	sel := m.s.sel
	d := delta{validity: sel.UIDValidity, sizes: map[imap.UID]int64{}}
	d.cold = !cached || st.UIDValidity != sel.UIDValidity || st.UIDValidity == 0
	var from imap.UID = 1
	if !d.cold {
		from = imap.UID(st.HighestUID) + 1
		d.highest = imap.UID(st.HighestUID)
	}
	if sel.UIDNext > 0 {
		d.highest = max(d.highest, sel.UIDNext-1)
	}
	if (d.cold && sel.NumMessages > 0) || (!d.cold && (sel.UIDNext == 0 || sel.UIDNext > from)) {
		total := int(sel.NumMessages) - nknown // an estimate when warm
		done := m.b.prog.start(max(total, 1))
		stop := m.logProgress()
		err := fetchSizes(c, imap.UIDSet{imap.UIDRange{Start: from, Stop: 0}}, from, d.sizes, done)
		stop()
		m.b.prog.end(err)
		if err != nil {
			return d, err
		}
	}
	for uid := range d.sizes {
		d.highest = max(d.highest, uid)
	}
	if d.cold {
		return d, nil
	}
	exists := sel.NumMessages
	if mb := c.Mailbox(); mb != nil {
		exists = mb.NumMessages // EXISTS and EXPUNGE seen since SELECT
	}
	if int(exists) == nknown+len(d.sizes) {
		return d, nil
	}
	// Some known message is gone (or one came or went meanwhile): list
	// every UID.
	d.search = true
	var opts *imap.SearchOptions
	if m.s.caps.Has(imap.CapESearch) {
		opts = &imap.SearchOptions{ReturnAll: true}
	}
	data, err := c.UIDSearch(&imap.SearchCriteria{}, opts).Wait()
	if err != nil {
		return d, err
	}
	d.present = map[imap.UID]bool{}
	var missing imap.UIDSet
	for _, uid := range data.AllUIDs() {
		d.present[uid] = true
		if uid > imap.UID(st.HighestUID) {
			if _, ok := d.sizes[uid]; !ok {
				missing.AddNum(uid)
			}
		}
	}
	// New messages that arrived after the FETCH above.
	if len(missing) > 0 {
		if err := fetchSizes(c, missing, 1, d.sizes, nil); err != nil {
			return d, err
		}
		for uid := range d.sizes {
			d.highest = max(d.highest, uid)
		}
	}
	for uid := range d.sizes {
		if !d.present[uid] {
			delete(d.sizes, uid) // expunged between the FETCH and the SEARCH
		}
	}
	return d, nil
}

// fetchSizes runs UID FETCH set (UID RFC822.SIZE) and records the sizes
// of UIDs from least up (a FETCH of N:* also returns the last message
// when every UID is below N). done, if not nil, is called for each.
func fetchSizes(c *imapclient.Client, set imap.UIDSet, least imap.UID, into map[imap.UID]int64, done func()) error {
	fc := c.Fetch(set, &imap.FetchOptions{UID: true, RFC822Size: true})
	for {
		msg := fc.Next()
		if msg == nil {
			break
		}
		buf, err := msg.Collect()
		if err != nil {
			fc.Close()
			return err
		}
		if buf.UID == 0 {
			fc.Close()
			return errors.New("FETCH reply without UID")
		}
		if buf.UID >= least {
			into[buf.UID] = buf.RFC822Size
		}
		if done != nil {
			done()
		}
	}
	if err := fc.Close(); err != nil {
		return fmt.Errorf("UID FETCH %v (RFC822.SIZE): %w", set, err)
	}
	return nil
}

// progress is what a Backend reports about its last listing that
// fetched sizes: on a first login, one per message of the folder.
type progress struct {
	mu sync.Mutex
	p  proxy.SyncProgress
}

// start begins a listing of about total messages and returns the
// function to call for each message listed.
func (g *progress) start(total int) (done func()) {
	g.mu.Lock()
	g.p = proxy.SyncProgress{Running: true, Total: total, Started: time.Now()}
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		g.p.Done++
		g.p.Total = max(g.p.Total, g.p.Done)
		g.mu.Unlock()
	}
}

// end records the listing's outcome.
func (g *progress) end(err error) {
	g.mu.Lock()
	g.p.Running, g.p.Ended, g.p.Err = false, time.Now(), err
	if err == nil {
		g.p.Total = g.p.Done
	}
	g.mu.Unlock()
}

// SyncProgress says how far the last listing that fetched sizes got.
func (b *Backend) SyncProgress() proxy.SyncProgress {
	b.prog.mu.Lock()
	p := b.prog.p
	b.prog.mu.Unlock()
	if p.Running && p.Done > 0 && p.Total > p.Done {
		elapsed := time.Since(p.Started)
		p.ETA = time.Duration(float64(elapsed) / float64(p.Done) * float64(p.Total-p.Done))
	}
	return p
}

// logProgress logs the listing's progress every ProgressEvery until stop
// is called.
func (m *mailbox) logProgress() (stop func()) {
	return proxy.Every(m.b.opts.ProgressEvery, func() {
		p := m.b.SyncProgress()
		m.s.log.Info().Str("account", m.account).Int("done", p.Done).Int("total", p.Total).
			Int64("eta_s", p.ETASeconds()).
			Msgf("imap: listing the sizes of folder %q", m.b.opts.Folder)
	})
}
