package cache

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the file layout this package reads and writes. Open
// migrates an older file and refuses a newer one.
const SchemaVersion = 2

// A migration upgrades a file from its index in migrations to the next
// version, inside the transaction that then stamps the new version, so a
// crash leaves the file at the old version or the new one.
type migration struct {
	name string
	fn   func(tx *bolt.Tx) error
}

// migrations[v] upgrades version v to v+1; len(migrations) == SchemaVersion.
var migrations = []migration{
	// Version 0 is a file without meta/version; its accounts bucket, if
	// any, already has the version 1 layout.
	{"baseline: add the meta and accounts buckets", func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketAccounts} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	}},
	{"message records: length-prefixed UIDL and a stamp", migrateV1Messages},
}

// migrateV1Messages rewrites every message record from the schema 1
// layout to schema 2's, with an empty stamp.
func migrateV1Messages(tx *bolt.Tx) error {
	accounts := tx.Bucket(bucketAccounts)
	var names [][]byte
	if err := accounts.ForEachBucket(func(name []byte) error {
		names = append(names, bytes.Clone(name))
		return nil
	}); err != nil {
		return err
	}
	for _, name := range names {
		m := accounts.Bucket(name).Bucket(bucketMessages)
		if m == nil {
			continue
		}
		// Collected first: a bucket must not change under ForEach.
		var recs []MessageRecord
		if err := m.ForEach(func(k, v []byte) error {
			r, err := decodeMessageV1(k, v)
			recs = append(recs, r)
			return err
		}); err != nil {
			return fmt.Errorf("account %q: %w", name, err)
		}
		for _, r := range recs {
			if err := m.Put([]byte(r.Key), encodeMessage(r)); err != nil {
				return fmt.Errorf("account %q: message %q: %w", name, r.Key, err)
			}
		}
	}
	return nil
}

// ErrNeedsMigration is returned by a read-only Open of a file with an
// older schema, which only a writable Open can migrate.
var ErrNeedsMigration = errors.New("cache: schema needs migrating")

// prepare brings the file to len(migs): a new file is initialised, an
// older one migrated, a newer one or a foreign bbolt file refused. With
// readOnly, a file that is not at len(migs) is refused.
func prepare(db *bolt.DB, migs []migration, readOnly bool) error {
	latest := len(migs)
	var version int
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		version, err = readVersion(tx)
		return err
	})
	if err != nil {
		return err
	}
	if version == latest {
		return nil
	}
	if version > latest {
		return fmt.Errorf("schema version %d is newer than the %d this popbridge supports; upgrade popbridge, or move the file away to start an empty cache", version, latest)
	}
	if readOnly {
		return fmt.Errorf("schema version %d must be migrated to %d by a writable open (popbridge serve does it): %w", version, latest, ErrNeedsMigration)
	}
	return db.Update(func(tx *bolt.Tx) error {
		version, err := readVersion(tx) // another process may have migrated it
		if err != nil || version >= latest {
			return err
		}
		if version == 0 && tx.Bucket(bucketAccounts) == nil {
			version = latest // a new file: nothing to migrate
		}
		for v := version; v < latest; v++ {
			if err := migs[v].fn(tx); err != nil {
				return fmt.Errorf("migrate schema %d to %d (%s): %w", v, v+1, migs[v].name, err)
			}
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err == nil {
			_, err = tx.CreateBucketIfNotExists(bucketAccounts)
		}
		if err == nil {
			err = meta.Put(keyVersion, []byte(strconv.Itoa(latest)))
		}
		if err != nil {
			return fmt.Errorf("stamp schema version %d: %w", latest, err)
		}
		return nil
	})
}

// readVersion returns the file's schema version; 0 for a file without
// one, which must hold nothing but our buckets.
func readVersion(tx *bolt.Tx) (int, error) {
	if meta := tx.Bucket(bucketMeta); meta != nil {
		if v := meta.Get(keyVersion); v != nil {
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 0 {
				return 0, fmt.Errorf("bad schema version %q", v)
			}
			return n, nil
		}
	}
	return 0, tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if string(name) != string(bucketMeta) && string(name) != string(bucketAccounts) {
			return fmt.Errorf("not a popbridge cache: unexpected top-level bucket %q", name)
		}
		return nil
	})
}
