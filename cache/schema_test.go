package cache

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

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
		if err := m.Put([]byte("k1"), encodeMessage(MessageRecord{Size: 321, UIDL: "uidl-1"})); err != nil {
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
	if v := rawVersion(t, path); v != "1" {
		t.Errorf("new file version %q, want \"1\"", v)
	}
}

func TestMigrateV0(t *testing.T) {
	path := v0File(t)
	s, err := Open(path, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r, ok, err := s.Message("alice", "k1"); err != nil || !ok || r.Size != 321 || r.UIDL != "uidl-1" {
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
	if v := rawVersion(t, path); v != "1" {
		t.Errorf("migrated file version %q, want \"1\"", v)
	}
}

// TestMigrationFramework adds a made-up version 2 step that creates a
// bucket, to show steps run in order, once, and that the result is then
// too new for this build.
func TestMigrationFramework(t *testing.T) {
	path := v0File(t)
	runs := 0
	v2 := migration{"test: add a bucket", func(tx *bolt.Tx) error {
		runs++
		if tx.Bucket(bucketMeta) == nil {
			return errors.New("step 1 did not run before step 2")
		}
		_, err := tx.CreateBucket([]byte("extra"))
		return err
	}}
	migs := append(append([]migration(nil), migrations...), v2)
	for range 2 {
		s, err := open(path, testOptions, migs)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Message("alice", "k1"); !ok {
			t.Error("migration to version 2 lost alice's k1")
		}
		s.Close()
	}
	if runs != 1 {
		t.Errorf("step 2 ran %d times over two opens, want 1", runs)
	}
	if v := rawVersion(t, path); v != "2" {
		t.Errorf("version %q after migration, want \"2\"", v)
	}
	_, err := Open(path, testOptions)
	if err == nil || !strings.Contains(err.Error(), "schema version 2 is newer than the 1") {
		t.Errorf("version 1 build opened a version 2 file: %v", err)
	}

	// A failing step leaves the file as it was.
	path = v0File(t)
	fail := migration{"test: fail", func(tx *bolt.Tx) error {
		tx.Bucket(bucketAccounts).DeleteBucket([]byte("alice"))
		return errors.New("disk on fire")
	}}
	_, err = open(path, testOptions, append(append([]migration(nil), migrations...), fail))
	if err == nil || !strings.Contains(err.Error(), "migrate schema 1 to 2 (test: fail): disk on fire") || !strings.Contains(err.Error(), path) {
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
	for _, want := range []string{path, "schema version 7 is newer than the 1 this popbridge supports"} {
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
	if _, err := Open(path, nil); err == nil || !strings.Contains(err.Error(), "cache: open "+path) {
		t.Errorf("junk file: %v", err)
	}
}
