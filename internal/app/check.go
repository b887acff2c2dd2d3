package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/control"
)

// CheckState describes the state directory: the running server's, or its
// cache file opened read-only, or a directory where one can be created.
func CheckState(dir string) (string, error) {
	if r, ok, err := control.Ask(dir, control.Request{Op: "stats"}); err != nil {
		return dir, err
	} else if ok {
		return fmt.Sprintf("%s, in use by the running popbridge (pid %d), %d account(s) cached", dir, r.PID, len(r.Accounts)), nil
	}
	path := filepath.Join(dir, StoreFile)
	if _, err := os.Stat(path); err == nil {
		store, err := cache.Open(path, &cache.Options{ReadOnly: true})
		if errors.Is(err, cache.ErrNeedsMigration) {
			return fmt.Sprintf("%s (popbridge serve will migrate it: %v)", path, err), nil
		}
		if errors.Is(err, cache.ErrDamaged) {
			return dir, DamagedStore(err)
		}
		if err != nil {
			return path, err
		}
		defer store.Close()
		st, err := store.Stats()
		if err != nil {
			return path, err
		}
		return fmt.Sprintf("%s, %d account(s) cached", path, len(st)), nil
	}
	// No cache yet: the directory must be creatable and writable.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return dir, err
	}
	f, err := os.CreateTemp(dir, ".check-*")
	if err != nil {
		return dir, err
	}
	f.Close()
	os.Remove(f.Name())
	return fmt.Sprintf("%s (%s is created at the first start)", dir, StoreFile), nil
}
