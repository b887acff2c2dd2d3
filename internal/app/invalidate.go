package app

import (
	"sync"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/cache/pgstore"
)

// invalidator drops what this replica keeps in memory when another
// replica changes the shared state (pgstore's LISTEN/NOTIFY): the bodies
// of an account whose records changed while no session or sync of this
// replica holds it (a Forget, a sync, a delete elsewhere), and the access
// token of an account whose token changed (a refresh elsewhere, a new
// grant from popbridge auth), which the next login reads again. After a
// reconnection of the listener, changes may have gone unheard: it drops
// every body and token then. The records themselves are never kept in
// memory under PostgreSQL.
type invalidator struct {
	sub    *pgstore.Subscriber
	store  cache.StateStore
	bodies *cache.Bodies
	log    *zerolog.Logger
	done   chan struct{}

	mu      sync.Mutex
	sources map[string][]*oauth.Source // by account, the newest last
}

func startInvalidator(dsn string, store cache.StateStore, bodies *cache.Bodies, log *zerolog.Logger) (*invalidator, error) {
	sub, err := pgstore.Subscribe(dsn)
	if err != nil {
		return nil, err
	}
	v := &invalidator{sub: sub, store: store, bodies: bodies, log: log, done: make(chan struct{}), sources: map[string][]*oauth.Source{}}
	go v.run()
	return v, nil
}

func (v *invalidator) run() {
	defer close(v.done)
	for inv := range v.sub.C() {
		v.apply(inv)
	}
}

func (v *invalidator) apply(inv pgstore.Invalidation) {
	switch {
	case inv.All:
		v.bodies.Purge()
		v.mu.Lock()
		for _, srcs := range v.sources {
			for _, s := range srcs {
				s.StoreChanged()
			}
		}
		v.mu.Unlock()
		if v.log != nil {
			v.log.Debug().Msg("state: listening for changes of other replicas; in-memory caches dropped")
		}
	case inv.Kind == "token":
		v.mu.Lock()
		for _, s := range v.sources[inv.Account] {
			s.StoreChanged()
		}
		v.mu.Unlock()
	case inv.Kind == "state":
		// This replica's own changes keep the bodies it fetched: its
		// sessions and syncs made them (the notification may arrive
		// after they let the account go), as under bbolt.
		if o, ok := v.store.(interface{ Origin() string }); ok && inv.Origin == o.Origin() {
			return
		}
		if v.store.Holders(inv.Account) == 0 {
			v.bodies.Forget(inv.Account)
		}
	}
}

// keepSources bounds the sources kept per account: those of the last
// builds (a reload makes new ones; a failed one keeps the old in use).
const keepSources = 4

// watch registers src for the token changes of its account.
func (v *invalidator) watch(src *oauth.Source) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	srcs := append(v.sources[src.Account()], src)
	if len(srcs) > keepSources {
		srcs = srcs[len(srcs)-keepSources:]
	}
	v.sources[src.Account()] = srcs
}

func (v *invalidator) close() {
	if v == nil {
		return
	}
	v.sub.Close()
	<-v.done
}
