package cache

import (
	"os"
	"path/filepath"
)

// WriteFile writes data to name as os.WriteFile does, but atomically: a
// temporary file in the same directory is written with mode perm,
// synced and renamed over name, then the directory is synced, so that a
// crash leaves the old file or the new one, whole. It is for the small
// files of the state directory (tokens, certificates).
func WriteFile(name string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly after the rename
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: not every system syncs directories
		d.Close()
	}
	return nil
}
