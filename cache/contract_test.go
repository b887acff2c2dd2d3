package cache_test

import (
	"path/filepath"
	"testing"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/cache/storetest"
)

// TestContract runs the StateStore contract, which pgstore runs too,
// on a bbolt Store that commits at once.
func TestContract(t *testing.T) {
	opts := &cache.Options{BatchDelay: -1}
	open := func(t *testing.T, path string) cache.StateStore {
		t.Helper()
		s, err := cache.Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	storetest.Run(t, storetest.Opener{
		Open: func(t *testing.T) cache.StateStore {
			return open(t, filepath.Join(t.TempDir(), "state", "cache.db"))
		},
		Reopen: func(t *testing.T, s cache.StateStore) cache.StateStore {
			t.Helper()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, s.(*cache.Store).Path())
		},
	})
}
