package cache

import (
	"iter"
	"maps"
	"math"
	"slices"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Snapshot is an immutable view of one account at one moment. It is safe
// for concurrent use and stays valid after later writes, which replace it
// in the memory layer instead of changing it.
type Snapshot struct {
	msgs  map[string]MessageRecord
	tombs map[string]struct{}
	sync  SyncState
}

// Len returns the number of message records.
func (s *Snapshot) Len() int { return len(s.msgs) }

// Message returns the record for key, and whether there is one.
func (s *Snapshot) Message(key string) (MessageRecord, bool) {
	r, ok := s.msgs[key]
	return r, ok
}

// Messages yields every message record, in no particular order.
func (s *Snapshot) Messages() iter.Seq[MessageRecord] {
	return maps.Values(s.msgs)
}

// Tombstoned reports whether key is hidden from POP.
func (s *Snapshot) Tombstoned(key string) bool {
	_, ok := s.tombs[key]
	return ok
}

// TombstoneCount returns the number of hidden keys.
func (s *Snapshot) TombstoneCount() int { return len(s.tombs) }

// Tombstones yields every hidden key, in no particular order.
func (s *Snapshot) Tombstones() iter.Seq[string] {
	return maps.Keys(s.tombs)
}

// Sync returns the sync state; its POP3UIDLs slice is a copy.
func (s *Snapshot) Sync() SyncState {
	st := s.sync
	st.POP3UIDLs = slices.Clone(st.POP3UIDLs)
	return st
}

// weight is the snapshot's cost in Options.MemoryRecords units.
func (s *Snapshot) weight() int64 {
	return int64(len(s.msgs) + len(s.tombs) + len(s.sync.POP3UIDLs) + 1)
}

// with returns a new snapshot with c applied; maps c leaves alone are
// shared. Applying the same change twice gives the same result.
func (s *Snapshot) with(c *Change) *Snapshot {
	n := &Snapshot{msgs: s.msgs, tombs: s.tombs, sync: s.sync}
	if len(c.Put) > 0 || len(c.Delete) > 0 {
		n.msgs = maps.Clone(s.msgs)
		for _, k := range c.Delete {
			delete(n.msgs, k)
		}
		for _, r := range c.Put {
			n.msgs[r.Key] = r
		}
	}
	if len(c.AddTombstones) > 0 || len(c.RemoveTombstones) > 0 {
		n.tombs = maps.Clone(s.tombs)
		for _, k := range c.RemoveTombstones {
			delete(n.tombs, k)
		}
		for _, k := range c.AddTombstones {
			n.tombs[k] = struct{}{}
		}
	}
	if c.Sync != nil {
		n.sync = *c.Sync
		n.sync.POP3UIDLs = slices.Clone(c.Sync.POP3UIDLs)
	}
	return n
}

// memory is the read-through layer of account snapshots.
//
// A reader that misses loads from bbolt and installs its snapshot only if
// no write to the account finished meanwhile: every finished write bumps
// the account's generation. Writers of one account are serialised by
// Store.locks, and each updates a cached snapshot after its commit, so the
// cache follows the file's commit order.
type memory struct {
	mu     sync.Mutex
	lru    *weighted[string, *Snapshot]
	gen    map[string]uint64 // never shrinks: a reset would let a stale load in
	closed bool              // after purge: serve and keep nothing
}

func newMemory(maxRecords int64) *memory {
	return &memory{lru: newWeighted[string, *Snapshot](maxRecords), gen: map[string]uint64{}}
}

func (m *memory) get(account string) (*Snapshot, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.get(account)
}

// generation is read before a load, and passed to install after it.
func (m *memory) generation(account string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen[account]
}

func (m *memory) install(account string, snap *Snapshot, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen[account] == gen && !m.closed {
		m.lru.add(account, snap, snap.weight())
	}
}

// applied records a committed change. The copy is made outside the lock,
// so readers of other accounts wait only for map operations.
func (m *memory) applied(account string, c *Change) {
	m.mu.Lock()
	m.gen[account]++
	old, ok := m.lru.peek(account)
	m.mu.Unlock()
	if !ok {
		return
	}
	n := old.with(c)
	m.mu.Lock()
	defer m.mu.Unlock()
	// Anything else cached now was loaded after the commit: keep it.
	if cur, ok := m.lru.peek(account); ok && cur == old {
		m.lru.add(account, n, n.weight())
	}
}

// drop forgets the account's snapshot, e.g. after a failed write.
func (m *memory) drop(account string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen[account]++
	m.lru.remove(account)
}

// purge empties the layer for good, when the store closes.
func (m *memory) purge() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.lru.purge()
}

// weighted is an LRU bounded by the sum of its entries' weights instead of
// their number. It wraps golang-lru's simplelru, which counts entries, and
// evicts the oldest entries until the new one fits. It is not safe for
// concurrent use.
type weighted[K comparable, V any] struct {
	limit, total int64
	lru          *simplelru.LRU[K, weightedEntry[V]]
}

type weightedEntry[V any] struct {
	v V
	w int64
}

// newWeighted returns an LRU holding at most limit total weight; a limit
// of zero or less holds nothing.
func newWeighted[K comparable, V any](limit int64) *weighted[K, V] {
	l, err := simplelru.NewLRU[K, weightedEntry[V]](math.MaxInt, nil)
	if err != nil {
		panic(err) // only for a size <= 0
	}
	return &weighted[K, V]{limit: limit, lru: l}
}

func (w *weighted[K, V]) get(k K) (V, bool) {
	e, ok := w.lru.Get(k)
	return e.v, ok
}

func (w *weighted[K, V]) peek(k K) (V, bool) {
	e, ok := w.lru.Peek(k)
	return e.v, ok
}

// add inserts or replaces k, evicting the least recently used entries
// until the total fits. An entry heavier than limit is not kept, and evicts
// nothing but an older value of k. It reports whether k was kept.
func (w *weighted[K, V]) add(k K, v V, weight int64) bool {
	w.remove(k)
	if weight > w.limit {
		return false
	}
	for w.total+weight > w.limit {
		_, e, ok := w.lru.RemoveOldest()
		if !ok {
			break
		}
		w.total -= e.w
	}
	w.lru.Add(k, weightedEntry[V]{v, weight})
	w.total += weight
	return true
}

func (w *weighted[K, V]) remove(k K) {
	if e, ok := w.lru.Peek(k); ok {
		w.lru.Remove(k)
		w.total -= e.w
	}
}

// removeFunc removes every entry whose key satisfies f.
func (w *weighted[K, V]) removeFunc(f func(K) bool) {
	for _, k := range w.lru.Keys() {
		if f(k) {
			w.remove(k)
		}
	}
}

func (w *weighted[K, V]) purge() {
	w.lru.Purge()
	w.total = 0
}

func (w *weighted[K, V]) len() int { return w.lru.Len() }
