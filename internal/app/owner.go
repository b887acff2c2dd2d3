package app

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/popbridge/popbridge/cache"
)

// ownerFile in the state directory holds the absolute path of the
// configuration file whose server uses the directory. Two files in one
// directory without state_dir would otherwise share the default state
// directory, each server seeing the other's cache and tokens.
const ownerFile = "owner"

// stateOwner returns the configuration file recorded in dir, or "" when
// none is (a directory from before owner files, or a new one).
func stateOwner(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("state directory %s: %w", dir, err)
	}
	return strings.TrimSpace(string(data)), nil
}

// CheckOwner returns an error when the state directory dir belongs to
// another configuration file than cfgPath, one that still exists. A
// directory whose recorded file is gone (moved or renamed) is free.
func CheckOwner(dir, cfgPath string) error {
	owner, err := stateOwner(dir)
	if err != nil || owner == "" {
		return err
	}
	abs, err := filepath.Abs(cfgPath)
	if err != nil {
		return fmt.Errorf("config file %s: %w", cfgPath, err)
	}
	if owner == abs {
		return nil
	}
	ofi, err := os.Stat(owner)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if fi, err2 := os.Stat(abs); err == nil && err2 == nil && os.SameFile(fi, ofi) {
		return nil // the same file by another path
	}
	return fmt.Errorf("state directory %s is used by the server of config %s; set state_dir in %s to a directory of its own",
		dir, owner, abs)
}

// claimOwner records cfgPath as the owner of dir, after CheckOwner, and
// returns the configuration file it replaces: "" if none was recorded, or
// the recorded one still exists (the same file by another path).
func claimOwner(dir, cfgPath string) (previous string, err error) {
	abs, err := filepath.Abs(cfgPath)
	if err != nil {
		return "", fmt.Errorf("config file %s: %w", cfgPath, err)
	}
	owner, err := stateOwner(dir)
	if err != nil || owner == abs {
		return "", err
	}
	if owner != "" {
		if _, err := os.Stat(owner); err == nil {
			return "", nil
		}
	}
	if err := cache.WriteFile(filepath.Join(dir, ownerFile), []byte(abs+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("state directory %s: recording its configuration file: %w", dir, err)
	}
	return owner, nil
}
