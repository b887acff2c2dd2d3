package cache

import "slices"

// StateStore is the per-account state popbridge keeps, whichever engine
// holds it: Store (bbolt, one process) or pgstore.Store (PostgreSQL,
// shared by replicas). Backends, the control socket and the server take
// a StateStore; what only one engine can do (Store.Verify, the lease and
// tokens of pgstore) stays on the concrete type.
type StateStore interface {
	Snapshot(account string) (*Snapshot, error)
	Messages(account string) (map[string]MessageRecord, error)
	Message(account, key string) (MessageRecord, bool, error)
	Tombstones(account string) (map[string]struct{}, error)
	IsTombstoned(account, key string) (bool, error)
	SyncState(account string) (SyncState, error)
	PutMessages(account string, recs []MessageRecord) error
	DeleteMessages(account string, keys []string) error
	AddTombstones(account string, keys []string) error
	RemoveTombstones(account string, keys []string) error
	PutSyncState(account string, st SyncState) error
	Apply(account string, c Change) error
	Forget(account string) error
	Hold(account string) (release func(), err error)
	Holders(account string) int
	Stats() ([]AccountStats, error)
	Close() error
}

var _ StateStore = (*Store)(nil)

// NewSnapshot returns a snapshot of msgs (by their Key), tombstones and
// sync, for stores other than Store; it copies what it is given.
func NewSnapshot(msgs []MessageRecord, tombstones []string, sync SyncState) *Snapshot {
	s := &Snapshot{msgs: make(map[string]MessageRecord, len(msgs)), tombs: make(map[string]struct{}, len(tombstones))}
	for _, r := range msgs {
		s.msgs[r.Key] = r
	}
	for _, k := range tombstones {
		s.tombs[k] = struct{}{}
	}
	s.sync = sync
	s.sync.POP3UIDLs = slices.Clone(sync.POP3UIDLs)
	return s
}
