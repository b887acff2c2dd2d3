package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestMigrationsMatchSchemaVersion(t *testing.T) {
	if len(migrations) != SchemaVersion {
		t.Fatalf("%d migrations for schema version %d", len(migrations), SchemaVersion)
	}
}

// rawFile builds a bbolt file by hand; fill sees an empty file.
func rawFile(t *testing.T, fill func(tx *bolt.Tx) error) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cache.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fill); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// rawVersion reads meta/version straight from the file.
func rawVersion(t *testing.T, path string) string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	db.View(func(tx *bolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil {
			v = string(m.Get(keyVersion))
		}
		return nil
	})
	return v
}

func stampVersion(v string) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		m, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketAccounts); err != nil {
			return err
		}
		return m.Put(keyVersion, []byte(v))
	}
}

// v0File is a store from before the version key: accounts only.
func v0File(t *testing.T) string {
	return rawFile(t, func(tx *bolt.Tx) error {
		acc, err := tx.CreateBucket(bucketAccounts)
		if err != nil {
			return err
		}
		alice, err := acc.CreateBucket([]byte("alice"))
		if err != nil {
			return err
		}
		m, err := alice.CreateBucket(bucketMessages)
		if err != nil {
			return err
		}
		if err := m.Put([]byte("k1"), encodeMessageV1(MessageRecord{Size: 321, UIDL: "uidl-1"})); err != nil {
			return err
		}
		tb, err := alice.CreateBucket(bucketTombs)
		if err != nil {
			return err
		}
		if err := tb.Put([]byte("k0"), nil); err != nil {
			return err
		}
		return alice.Put(keySync, encodeSync(SyncState{UIDValidity: 3, HighestUID: 17}))
	})
}

func TestNewFileIsStamped(t *testing.T) {
	s, path := openTemp(t, nil)
	s.Close()
	if v := rawVersion(t, path); v != "2" {
		t.Errorf("new file version %q, want \"2\"", v)
	}
}

func TestMigrateV0(t *testing.T) {
	path := v0File(t)
	s, err := Open(path, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r, ok, err := s.Message("alice", "k1"); err != nil || !ok || r != (MessageRecord{Key: "k1", Size: 321, UIDL: "uidl-1"}) {
		t.Errorf("migrated k1 = %+v %v %v", r, ok, err)
	}
	if ok, _ := s.IsTombstoned("alice", "k0"); !ok {
		t.Error("migrated tombstone k0 missing")
	}
	if st, _ := s.SyncState("alice"); st.UIDValidity != 3 || st.HighestUID != 17 {
		t.Errorf("migrated sync state %+v", st)
	}
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "k2", Size: 1}}})
	s.Close()
	if v := rawVersion(t, path); v != "2" {
		t.Errorf("migrated file version %q, want \"2\"", v)
	}
}

// v1File is a schema 1 store: message records without a UIDL length or
// stamp, for two accounts, one of them without messages.
func v1File(t *testing.T, recs map[string][]MessageRecord) string {
	return rawFile(t, func(tx *bolt.Tx) error {
		if err := stampVersion("1")(tx); err != nil {
			return err
		}
		for name, rs := range recs {
			acc, err := tx.Bucket(bucketAccounts).CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			tb, err := acc.CreateBucket(bucketTombs)
			if err != nil {
				return err
			}
			if err := tb.Put([]byte("hidden"), nil); err != nil {
				return err
			}
			if len(rs) == 0 {
				continue
			}
			m, err := acc.CreateBucket(bucketMessages)
			if err != nil {
				return err
			}
			for _, r := range rs {
				if err := m.Put([]byte(r.Key), encodeMessageV1(r)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func TestMigrateV1ToV2(t *testing.T) {
	var alice []MessageRecord
	for i := range 1000 {
		alice = append(alice, MessageRecord{Key: fmt.Sprintf("key-%04d", i), Size: int64(i * 1000), UIDL: fmt.Sprintf("uidl-%d", i)})
	}
	alice = append(alice, MessageRecord{Key: "no-uidl", Size: 9})
	bob := []MessageRecord{{Key: "b", Size: 1 << 40, UIDL: strings.Repeat("u", 70)}}
	path := v1File(t, map[string][]MessageRecord{"alice": alice, "bob": bob, "carol": nil})

	s, err := Open(path, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]MessageRecord{"alice": alice, "bob": bob, "carol": nil} {
		got, err := s.Messages(name)
		if err != nil || len(got) != len(want) {
			t.Fatalf("%s: %d records after migration (%v), want %d", name, len(got), err, len(want))
		}
		for _, r := range want {
			if got[r.Key] != r {
				t.Errorf("%s: %q migrated to %+v, want %+v", name, r.Key, got[r.Key], r)
			}
		}
		if ok, _ := s.IsTombstoned(name, "hidden"); !ok {
			t.Errorf("%s: tombstone lost in the migration", name)
		}
	}
	mustApply(t, s, "bob", Change{Put: []MessageRecord{{Key: "b", Size: 3, UIDL: "u", Stamp: "st"}}})
	s.Close()
	if v := rawVersion(t, path); v != "2" {
		t.Errorf("migrated file version %q, want \"2\"", v)
	}
	s, err = Open(path, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r, _, _ := s.Message("bob", "b"); r.Stamp != "st" || r.Size != 3 {
		t.Errorf("record written after the migration reads back as %+v", r)
	}
	if st, _ := s.Stats(); len(st) != 3 || st[0].Messages != 1001 || st[0].Bytes != 999*1000*1000/2+9 {
		t.Errorf("Stats after migration: %+v", st)
	}

	// A corrupt schema 1 record fails the migration and leaves the file
	// at version 1.
	path = v1File(t, map[string][]MessageRecord{"alice": alice[:3]})
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).Bucket([]byte("alice")).Bucket(bucketMessages).Put([]byte("bad"), []byte{0x80})
	})
	db.Close()
	_, err = Open(path, testOptions)
	if err == nil || !strings.Contains(err.Error(), `migrate schema 1 to 2`) || !errors.Is(err, errCorrupt) {
		t.Errorf("migration of a corrupt record: %v", err)
	}
	if v := rawVersion(t, path); v != "1" {
		t.Errorf("failed migration left version %q, want \"1\"", v)
	}
}

func TestReadOnly(t *testing.T) {
	s, path := openTemp(t, testOptions)
	mustApply(t, s, "alice", Change{Put: []MessageRecord{{Key: "k", Size: 4, UIDL: "u"}}})
	s.Close()

	// Read-only Stores share the file; a writable one waits for them.
	ro := &Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond}
	r1, err := Open(path, ro)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := Open(path, ro)
	if err != nil {
		t.Fatalf("second read-only Open: %v", err)
	}
	defer r2.Close()
	if r, ok, err := r2.Message("alice", "k"); err != nil || !ok || r.Size != 4 {
		t.Errorf("read-only Message = %+v %v %v", r, ok, err)
	}
	if st, err := r1.Stats(); err != nil || len(st) != 1 {
		t.Errorf("read-only Stats = %+v %v", st, err)
	}
	if err := r1.PutMessages("alice", []MessageRecord{{Key: "x"}}); err == nil {
		t.Error("write to a read-only Store succeeded")
	}
	if err := r1.Forget("alice"); err == nil {
		t.Error("Forget on a read-only Store succeeded")
	}
	if _, err := Open(path, &Options{LockTimeout: 100 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("writable Open beside read-only ones: %v", err)
	}
	r1.Close()
	r2.Close()

	// Nothing is created, and an older schema is not migrated.
	missing := filepath.Join(t.TempDir(), "none", "cache.db")
	if _, err := Open(missing, ro); err == nil {
		t.Error("read-only Open created a file")
	}
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read-only Open created its directory: %v", err)
	}
	old := v1File(t, map[string][]MessageRecord{"a": {{Key: "k", Size: 1}}})
	_, err = Open(old, ro)
	if !errors.Is(err, ErrNeedsMigration) || !strings.Contains(err.Error(), "schema version 1 must be migrated to 2") {
		t.Errorf("read-only Open of a version 1 file: %v, want ErrNeedsMigration", err)
	}
	if v := rawVersion(t, old); v != "1" {
		t.Errorf("read-only Open changed the version to %q", v)
	}
	newer := rawFile(t, stampVersion("9"))
	if _, err := Open(newer, ro); err == nil || !strings.Contains(err.Error(), "schema version 9 is newer") {
		t.Errorf("read-only Open of a version 9 file: %v", err)
	}
}

// TestMigrationFramework adds a made-up version 3 step that creates a
// bucket, to show steps run in order, once, and that the result is then
// too new for this build.
func TestMigrationFramework(t *testing.T) {
	path := v0File(t)
	runs := 0
	v3 := migration{"test: add a bucket", func(tx *bolt.Tx) error {
		runs++
		if tx.Bucket(bucketMeta) == nil {
			return errors.New("step 1 did not run before step 3")
		}
		r, err := decodeMessage([]byte("k1"), tx.Bucket(bucketAccounts).Bucket([]byte("alice")).Bucket(bucketMessages).Get([]byte("k1")))
		if err != nil || r.UIDL != "uidl-1" {
			return fmt.Errorf("step 2 did not run before step 3: %+v, %v", r, err)
		}
		_, err = tx.CreateBucket([]byte("extra"))
		return err
	}}
	migs := append(append([]migration(nil), migrations...), v3)
	for range 2 {
		s, err := open(path, testOptions, migs)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Message("alice", "k1"); !ok {
			t.Error("migration to version 3 lost alice's k1")
		}
		s.Close()
	}
	if runs != 1 {
		t.Errorf("step 3 ran %d times over two opens, want 1", runs)
	}
	if v := rawVersion(t, path); v != "3" {
		t.Errorf("version %q after migration, want \"3\"", v)
	}
	_, err := Open(path, testOptions)
	if err == nil || !strings.Contains(err.Error(), "schema version 3 is newer than the 2") {
		t.Errorf("version 2 build opened a version 3 file: %v", err)
	}

	// A failing step leaves the file as it was.
	path = v0File(t)
	fail := migration{"test: fail", func(tx *bolt.Tx) error {
		tx.Bucket(bucketAccounts).DeleteBucket([]byte("alice"))
		return errors.New("disk on fire")
	}}
	_, err = open(path, testOptions, append(append([]migration(nil), migrations...), fail))
	if err == nil || !strings.Contains(err.Error(), "migrate schema 2 to 3 (test: fail): disk on fire") || !strings.Contains(err.Error(), path) {
		t.Fatalf("failing migration: %v", err)
	}
	if v := rawVersion(t, path); v != "" {
		t.Errorf("failed migration left version %q, want none (v0)", v)
	}
	s, err := Open(path, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok, _ := s.Message("alice", "k1"); !ok {
		t.Error("failed migration lost alice's data")
	}
}

func TestRefuseNewerSchema(t *testing.T) {
	path := rawFile(t, stampVersion("7"))
	_, err := Open(path, nil)
	if err == nil {
		t.Fatal("opened a version 7 file")
	}
	for _, want := range []string{path, "schema version 7 is newer than the 2 this popbridge supports"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if v := rawVersion(t, path); v != "7" {
		t.Errorf("refused file changed to version %q", v)
	}
}

func TestRefuseOtherFiles(t *testing.T) {
	for name, tc := range map[string]struct {
		fill func(tx *bolt.Tx) error
		want string
	}{
		"foreign bucket": {func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("widgets")); return err }, `not a popbridge cache: unexpected top-level bucket "widgets"`},
		"bad version":    {stampVersion("one"), `bad schema version "one"`},
	} {
		path := rawFile(t, tc.fill)
		if _, err := Open(path, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	path := filepath.Join(t.TempDir(), "junk.db")
	if err := writeFile(path, []byte(strings.Repeat("not bbolt ", 1000))); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, nil); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "cache: "+path+" is damaged") {
		t.Errorf("junk file: %v", err)
	}
}
