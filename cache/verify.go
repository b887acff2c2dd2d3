package cache

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrDamaged is matched (errors.Is) by the errors of Open and Verify for a
// file that is not a sound bbolt file: truncated, overwritten, empty.
var ErrDamaged = errors.New("cache: file damaged")

// DamagedError says why a store file is damaged. It matches ErrDamaged.
type DamagedError struct {
	Path   string
	Reason string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("cache: %s is damaged: %s", e.Path, e.Reason)
}

// Is makes errors.Is(err, ErrDamaged) true.
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

func damaged(path, format string, args ...any) error {
	return &DamagedError{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// maxCheckProblems is how many of bbolt's consistency problems a
// DamagedError quotes.
const maxCheckProblems = 3

// Verify reads the whole store file at path without changing it: every
// page of every bucket, then bbolt's consistency check. It returns nil
// for a sound file, an error matching ErrDamaged for a damaged one,
// ErrLocked if another process holds the file for writing longer than
// opts.LockTimeout, or another error (e.g. a missing file). Open runs it
// on every existing file.
func Verify(path string, opts *Options) error {
	timeout := DefaultLockTimeout
	if opts != nil && opts.LockTimeout > 0 {
		timeout = opts.LockTimeout
	}
	size, err := fileSize(path)
	if err != nil {
		return err
	}
	db, err := openBolt(path, &bolt.Options{Timeout: timeout, ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	return verifyDB(db, path, size)
}

// fileSize returns the size of the existing file at path; an empty file
// is damaged (bbolt would silently start a new one in its place).
func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	if fi.Size() == 0 {
		return 0, damaged(path, "the file is empty")
	}
	return fi.Size(), nil
}

// openBolt opens path, turning bbolt's panics and its errors for a bad
// file into DamagedErrors.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, damaged(path, "%v", p)
		}
	}()
	db, err = bolt.Open(path, 0o600, o)
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("cache: open %s: %w after %v (is another popbridge running?)", path, ErrLocked, o.Timeout.Round(time.Millisecond))
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrInvalidMapping):
		return nil, damaged(path, "%v", err)
	}
	return nil, fmt.Errorf("cache: open %s: %w", path, err)
}

// verifyDB checks db, opened from a file of size bytes. Reading a page
// outside the file faults; SetPanicOnFault turns that into a panic, which
// is recovered like bbolt's own.
func verifyDB(db *bolt.DB, path string, size int64) error {
	return db.View(func(tx *bolt.Tx) error { return verifyTx(tx, path, size) })
}

// verifyTx checks the file as tx sees it.
func verifyTx(tx *bolt.Tx, path string, size int64) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = damaged(path, "%v", p)
		}
	}()
	if need := tx.Size(); need > size {
		return damaged(path, "the file has %d bytes but its pages need %d (truncated)", size, need)
	}
	// Touch every page in this goroutine first, so that a wild page
	// reference panics here rather than faulting in tx.Check's.
	if err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
		walkBucket(b)
		return nil
	}); err != nil {
		return damaged(path, "%v", err)
	}
	var problems []string
	n := 0
	for err := range tx.Check() {
		if n++; n <= maxCheckProblems {
			problems = append(problems, err.Error())
		}
	}
	if n > maxCheckProblems {
		problems = append(problems, fmt.Sprintf("and %d more problems", n-maxCheckProblems))
	}
	if n > 0 {
		return damaged(path, "%s", strings.Join(problems, "; "))
	}
	return nil
}

// walkBucket reads every key and value of b and its nested buckets.
func walkBucket(b *bolt.Bucket) (sum byte) {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		sum += k[len(k)-1]
		if v == nil {
			if child := b.Bucket(k); child != nil {
				sum += walkBucket(child)
			}
		} else if len(v) > 0 {
			sum += v[len(v)-1]
		}
	}
	return sum
}

// Verify checks the open store like the package's Verify, in a
// writable transaction that it rolls back: writes wait until it is done
// (about 0.1 s per 100 MB of file), reads go on.
func (s *Store) Verify() (err error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	tx, err := s.db.Begin(true)
	if err != nil {
		return fmt.Errorf("cache: verify %s: %w", s.path, err)
	}
	defer tx.Rollback()
	return verifyTx(tx, s.path, fi.Size())
}
