package pgstore

import (
	"testing"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/cache/storetest"
)

// TestContract runs the StateStore contract, which cache.Store runs too,
// on a fresh database per case.
func TestContract(t *testing.T) {
	dsns := map[cache.StateStore]string{}
	storetest.Run(t, storetest.Opener{
		Open: func(t *testing.T) cache.StateStore {
			s, dsn := openTemp(t)
			dsns[s] = dsn
			return s
		},
		Reopen: func(t *testing.T, s cache.StateStore) cache.StateStore {
			dsn := dsns[s]
			n := reopen(t, s.(*Store), dsn)
			dsns[n] = dsn
			return n
		},
	})
}
