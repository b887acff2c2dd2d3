package graph

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/proxy"
)

// rec is what the Store keeps about one message: a cache.MessageRecord
// keyed by the immutable id, with the UIDL, the size, and a Stamp of the
// receivedDateTime (Unix seconds) followed by flags: "?" not sized yet,
// "~" size estimated, "r" downloaded.
type rec struct {
	id, uidl   string
	size       int64
	date       int64
	sized      bool
	estimate   bool
	downloaded bool
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
	return cache.MessageRecord{Key: r.id, UIDL: r.uidl, Size: r.size, Stamp: st}
}

func parseRec(m cache.MessageRecord) rec {
	r := rec{id: m.Key, uidl: m.UIDL, size: m.Size, sized: true}
	if r.uidl == "" {
		r.uidl = UIDL(m.Key)
	}
	i := 0
	for i < len(m.Stamp) && (m.Stamp[i] >= '0' && m.Stamp[i] <= '9' || m.Stamp[i] == '-') {
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

// UIDL is the unique-id listing of the message with immutable id id:
// the first 128 bits of its SHA-256 in hex, 32 characters whatever the
// id's length.
func UIDL(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:16])
}

// byAge orders records oldest first (receivedDateTime, then id).
func byAge(x, y rec) int {
	if x.date != y.date {
		if x.date < y.date {
			return -1
		}
		return 1
	}
	return strings.Compare(x.id, y.id)
}

// The sync state lives in cache.SyncState.POP3UIDLs, a list of strings
// the Store keeps whole: syncTag, the folder setting it belongs to, the
// folder's id or well-known name, and the delta link.
const syncTag = "graph-delta-v1"

// state is a session's copy of the account's records.
type state struct {
	recs   map[string]rec
	tombs  map[string]bool
	folder string // the folder setting the delta link belongs to
	ref    string // the folder's id or well-known name
	delta  string // @odata.deltaLink; "" means never synced
}

func (st *state) syncState() *cache.SyncState {
	return &cache.SyncState{POP3UIDLs: []string{syncTag, st.folder, st.ref, st.delta}}
}

func (b *Backend) load() (*state, error) {
	snap, err := b.opts.Store.Snapshot(b.opts.Account)
	if err != nil {
		return nil, b.storeError("read", err)
	}
	st := &state{recs: make(map[string]rec, snap.Len()), tombs: map[string]bool{}}
	if s := snap.Sync().POP3UIDLs; len(s) == 4 && s[0] == syncTag && s[1] == b.opts.Folder {
		st.folder, st.ref, st.delta = s[1], s[2], s[3]
	}
	for r := range snap.Messages() {
		st.recs[r.Key] = parseRec(r)
	}
	for k := range snap.Tombstones() {
		st.tombs[k] = true
	}
	return st, nil
}

func (b *Backend) apply(c cache.Change) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.applyLocked(c)
}

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
	return fmt.Errorf("graph: %s the cache: %w: %w", op, proxy.ErrTemporary, err)
}

// folderRef returns what names folder spec in API paths: a well-known
// name as is, else the id found by walking the path's display names from
// the root (or from a well-known first segment), one childFolders request
// a level. Ids are kept for the Backend's life (folder ids never change).
func (b *Backend) folderRef(ctx context.Context, spec string) (string, error) {
	spec = strings.Trim(spec, "/")
	if slices.Contains(WellKnownFolders, strings.ToLower(spec)) {
		return strings.ToLower(spec), nil
	}
	b.folderMu.Lock()
	id, ok := b.folders[spec]
	b.folderMu.Unlock()
	if ok {
		return id, nil
	}
	parts := strings.Split(spec, "/")
	cur := "msgfolderroot"
	if slices.Contains(WellKnownFolders, strings.ToLower(parts[0])) && len(parts) > 1 {
		cur, parts = strings.ToLower(parts[0]), parts[1:]
	}
	for _, name := range parts {
		var page struct {
			Value []struct {
				ID          string `json:"id"`
				DisplayName string `json:"displayName"`
			} `json:"value"`
		}
		filter := "displayName eq '" + strings.ReplaceAll(name, "'", "''") + "'"
		p := b.mbPath + "/mailFolders/" + url.PathEscape(cur) + "/childFolders?" + url.Values{"$filter": {filter}}.Encode()
		if err := b.getJSON(ctx, "childFolders", p, &page); err != nil {
			return "", err
		}
		if len(page.Value) == 0 {
			return "", fmt.Errorf("graph: folder %q: no %q in it: %w", spec, name, errFolderNotFound)
		}
		cur = page.Value[0].ID
	}
	b.folderMu.Lock()
	b.folders[spec] = cur
	b.folderMu.Unlock()
	return cur, nil
}

// syncReport says what a sync did, for the log.
type syncReport struct {
	mode           string // warm, cold or resync
	added, removed int
	requests       int
}

// deltaMsg is one entry of a delta page.
type deltaMsg struct {
	ID       string          `json:"id"`
	Received string          `json:"receivedDateTime"`
	Removed  json.RawMessage `json:"@removed"`
	Props    []struct {
		ID    string `json:"id"`
		Value string `json:"value"`
	} `json:"singleValueExtendedProperties"`
}

// change is what a delta round says about one message.
type change struct {
	present  bool
	date     int64
	estimate int64 // PidTagMessageSize, when asked for; 0 if not
}

// sync brings st up to date with the folder: from the stored delta link,
// else (or when Graph no longer has it) with a full round. New messages
// are recorded unsized; membership and the new link are committed
// together.
func (b *Backend) sync(ctx context.Context, st *state) (syncReport, error) {
	rep := syncReport{mode: "warm"}
	var changes map[string]change
	var link string
	full := st.delta == ""
	if !full {
		var err error
		changes, link, rep.requests, err = b.round(ctx, st.delta)
		switch {
		case deltaGone(err):
			b.log.Info().Err(err).Msg("graph: delta token expired; reading the folder again")
			full, rep.mode = true, "resync"
		case err != nil:
			return rep, err
		}
	} else {
		rep.mode = "cold"
	}
	if full {
		ref, err := b.folderRef(ctx, b.opts.Folder)
		if err != nil {
			return rep, err
		}
		q := url.Values{"$select": {"id,receivedDateTime"}}
		if b.opts.EstimateSizes {
			q.Set("$expand", "singleValueExtendedProperties($filter=id eq 'Integer 0x0E08')")
		}
		start := b.mbPath + "/mailFolders/" + url.PathEscape(ref) + "/messages/delta?" + q.Encode()
		var n int
		changes, link, n, err = b.round(ctx, start)
		rep.requests += n
		if err != nil {
			return rep, err
		}
		for id := range st.recs {
			if _, ok := changes[id]; !ok {
				changes[id] = change{}
			}
		}
		st.folder, st.ref = b.opts.Folder, ref
	}
	c := cache.Change{}
	for id, ch := range changes {
		r, known := st.recs[id]
		switch {
		case ch.present && !known:
			r = rec{id: id, uidl: UIDL(id), date: ch.date}
			if ch.estimate > 0 && b.opts.EstimateSizes {
				r.size, r.sized, r.estimate = ch.estimate, true, true
			}
			st.recs[id] = r
			c.Put = append(c.Put, r.record())
			rep.added++
		case !ch.present && known:
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
	if link == st.delta && len(c.Put)+len(c.Delete) == 0 {
		return rep, nil
	}
	st.delta = link
	c.Sync = st.syncState()
	return rep, b.apply(c)
}

// round reads one delta round from link to its deltaLink. Entries are
// merged by id, the last one winning (Graph may repeat an entry, even in
// one page).
func (b *Backend) round(ctx context.Context, link string) (map[string]change, string, int, error) {
	changes := map[string]change{}
	prefer := "odata.maxpagesize=" + strconv.Itoa(b.opts.PageSize)
	for n := 1; ; n++ {
		var page struct {
			Value     []deltaMsg `json:"value"`
			NextLink  string     `json:"@odata.nextLink"`
			DeltaLink string     `json:"@odata.deltaLink"`
		}
		if err := b.getJSON(ctx, "delta", link, &page, prefer); err != nil {
			return nil, "", n, err
		}
		for _, m := range page.Value {
			if m.ID == "" {
				continue
			}
			if m.Removed != nil {
				changes[m.ID] = change{}
				continue
			}
			ch := change{present: true}
			if t, err := time.Parse(time.RFC3339, m.Received); err == nil {
				ch.date = t.Unix()
			}
			for _, p := range m.Props {
				if strings.EqualFold(p.ID, "Integer 0xe08") || strings.EqualFold(p.ID, "Integer 0x0E08") {
					ch.estimate, _ = strconv.ParseInt(p.Value, 10, 64)
				}
			}
			changes[m.ID] = ch
		}
		switch {
		case page.DeltaLink != "":
			return changes, page.DeltaLink, n, nil
		case page.NextLink == "":
			return nil, "", n, b.classify("delta", fmt.Errorf("a delta page has neither nextLink nor deltaLink"))
		}
		link = page.NextLink
	}
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

// candidates returns the records a session may offer once sized, oldest
// first: not hidden, inside the window, and with Window.Batch only the
// oldest Batch not downloaded.
func (b *Backend) candidates(st *state) []rec {
	var cut int64 = -1 << 62
	if t := b.cutoff(); !t.IsZero() {
		cut = t.Unix()
	}
	var out []rec
	for _, r := range st.recs {
		if st.tombs[r.id] || r.date < cut || (b.opts.Window.Batch > 0 && r.downloaded) {
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, byAge)
	if n := b.opts.Window.Batch; n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// ready reports whether a session can offer r.
func (b *Backend) ready(r rec) bool { return r.sized && (!r.estimate || b.opts.EstimateSizes) }

// crlfSize is the message's size as RETR sends it (RFC 1939 §11).
func crlfSize(body []byte) int64 {
	var c proxy.SizeCounter
	c.Write(body)
	return c.Size()
}
