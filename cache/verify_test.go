package cache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// filledStore writes a store holding a few thousand records across
// several accounts, so that it spans many pages, and returns its path
// and the number of pages in use.
func filledStore(t *testing.T) (path string, pages int64) {
	t.Helper()
	s, path := openTemp(t, testOptions)
	for a := range 4 {
		var recs []MessageRecord
		for i := range 1000 {
			recs = append(recs, MessageRecord{Key: fmt.Sprintf("key-%05d", i), Size: int64(i), UIDL: fmt.Sprintf("uidl-%05d", i)})
		}
		acct := fmt.Sprintf("acct%d", a)
		mustApply(t, s, acct, Change{Put: recs, AddTombstones: []string{"key-00001"}})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error { pages = tx.Size() / int64(db.Info().PageSize); return nil })
	return path, pages
}

// messagesRoot returns the page of account acct2's message bucket: a
// branch page in the middle of the file.
func messagesRoot(t *testing.T, path string) (page int64, pageSize int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		page = int64(tx.Bucket(bucketAccounts).Bucket([]byte("acct2")).Bucket(bucketMessages).Root())
		return nil
	})
	if page < 2 {
		t.Fatalf("acct2's messages are inline (page %d)", page)
	}
	return page, db.Info().PageSize
}

func overwrite(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// damages are the ways a test breaks a store file.
var damages = []struct {
	name   string
	damage func(t *testing.T, path string)
	reason string // in the error
}{
	{"truncated to half", func(t *testing.T, path string) {
		fi, _ := os.Stat(path)
		if err := os.Truncate(path, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}, "truncated"},
	{"garbage in a middle page", func(t *testing.T, path string) {
		page, size := messagesRoot(t, path)
		overwrite(t, path, page*int64(size), randomBytes(size))
	}, ""},
	{"garbage after a middle page's header", func(t *testing.T, path string) {
		page, size := messagesRoot(t, path)
		overwrite(t, path, page*int64(size)+16, randomBytes(size-16))
	}, ""},
	{"zeroed meta pages", func(t *testing.T, path string) {
		overwrite(t, path, 0, make([]byte, 2*os.Getpagesize()))
	}, "invalid database"},
	{"zero length", func(t *testing.T, path string) {
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
	}, "the file is empty"},
	{"random bytes", func(t *testing.T, path string) {
		if err := os.WriteFile(path, randomBytes(64<<10), 0o600); err != nil {
			t.Fatal(err)
		}
	}, "invalid database"},
}

// TestDamagedFile breaks a store file in several ways: Verify and Open,
// writable or not, return an error matching ErrDamaged naming the file;
// none panics or faults.
func TestDamagedFile(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			path, pages := filledStore(t)
			if pages < 20 {
				t.Fatalf("the store has %d pages; the test needs more", pages)
			}
			if err := Verify(path, nil); err != nil {
				t.Fatalf("Verify before the damage: %v", err)
			}
			d.damage(t, path)
			for _, open := range []struct {
				name string
				f    func() error
			}{
				{"Verify", func() error { return Verify(path, nil) }},
				{"Open", func() error { s, err := Open(path, nil); closeIf(s); return err }},
				{"Open read-only", func() error { s, err := Open(path, &Options{ReadOnly: true}); closeIf(s); return err }},
			} {
				err := open.f()
				var de *DamagedError
				if !errors.Is(err, ErrDamaged) || !errors.As(err, &de) || de.Path != path {
					t.Errorf("%s: %v, want a DamagedError for %s", open.name, err, path)
					continue
				}
				if !strings.Contains(err.Error(), path+" is damaged: ") || !strings.Contains(de.Reason, d.reason) {
					t.Errorf("%s: %q, want %q and %q", open.name, err, path+" is damaged", d.reason)
				}
			}
		})
	}
}

func closeIf(s *Store) {
	if s != nil {
		s.Close()
	}
}

// TestVerifySound: a sound file verifies, and Verify changes nothing.
func TestVerifySound(t *testing.T) {
	path, _ := filledStore(t)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(path, nil); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("Verify changed the file")
	}
	if err := Verify(path+".missing", nil); err == nil || errors.Is(err, ErrDamaged) {
		t.Errorf("Verify of a missing file: %v, want a plain error", err)
	}
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := Verify(path, &Options{LockTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Errorf("Verify of a file held by a Store: %v, want ErrLocked", err)
	}
}

// TestStoreVerify checks an open store, as the running server does for
// popbridge cache verify: sound, then with garbage written into a middle
// page under it, which is reported, not a crash.
func TestStoreVerify(t *testing.T) {
	path, _ := filledStore(t)
	page, size := messagesRoot(t, path)
	s, err := Open(path, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Verify(); err != nil {
		t.Fatalf("Verify of a sound store: %v", err)
	}
	overwrite(t, path, page*int64(size)+16, randomBytes(size-16))
	if err := s.Verify(); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Verify after damage: %v, want ErrDamaged", err)
	}
}

// TestDamagedEveryPage writes garbage over each page of a store in turn,
// whole or after its header: Open either refuses the file as damaged or,
// for a free page, opens it and reads every account; nothing panics.
func TestDamagedEveryPage(t *testing.T) {
	path, pages := filledStore(t)
	sound, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	size := os.Getpagesize()
	refused := 0
	for page := int64(2); page < pages; page++ {
		for _, skip := range []int{0, 16} {
			if err := os.WriteFile(path, sound, 0o600); err != nil {
				t.Fatal(err)
			}
			overwrite(t, path, page*int64(size)+int64(skip), randomBytes(size-skip))
			s, err := Open(path, testOptions)
			if errors.Is(err, ErrDamaged) {
				refused++
				continue
			}
			if err != nil {
				t.Fatalf("page %d+%d: %v", page, skip, err)
			}
			for a := range 4 {
				if _, err := s.Snapshot(fmt.Sprintf("acct%d", a)); err != nil {
					t.Errorf("page %d+%d: acct%d: %v", page, skip, a, err)
				}
			}
			s.Close()
		}
	}
	if refused < int(pages) {
		t.Errorf("only %d of %d damaged files refused", refused, 2*(pages-2))
	}
	t.Logf("%d pages, %d of %d damaged files refused (the others had garbage in free pages)", pages, refused, 2*(pages-2))
}
