package pgstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// SchemaVersion is the schema this package reads and writes: the number
// of the newest file in migrations/.
var SchemaVersion = mustCount(migrationFiles)

// migrateLock is the advisory lock key that serialises migrations of
// every replica.
const migrateLock = 0x706f7062726467 // "popbrdg"

type migrationFile struct {
	version int
	name    string
	sql     string
}

// readMigrations returns the files NNN_name.sql of fsys's migrations/,
// which must be numbered 1, 2, ... without gaps.
func readMigrations(fsys fs.FS) ([]migrationFile, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migrationFile
	for _, n := range names {
		base := path.Base(n)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNN_name.sql", base)
		}
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		out = append(out, migrationFile{v, base, string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: expected number %d", m.name, i+1)
		}
	}
	return out, nil
}

func mustCount(fsys fs.FS) int {
	m, err := readMigrations(fsys)
	if err != nil {
		panic(err)
	}
	return len(m)
}

// ErrSchemaNewer is wrapped by Open and Migrate when the database has a
// newer schema than this popbridge knows.
var ErrSchemaNewer = fmt.Errorf("pgstore: the database schema is newer than this popbridge")

// Migrate brings the database to SchemaVersion in one transaction, under
// an advisory lock so that replicas starting together migrate once. It
// refuses a newer schema, changing nothing.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrate(ctx, pool, migrationFiles)
}

func migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) error {
	migs, err := readMigrations(fsys)
	if err != nil {
		return fmt.Errorf("pgstore: %w", err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// The lock first: CREATE TABLE IF NOT EXISTS is not safe when
		// run concurrently.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"); err != nil {
			return err
		}
		var version int
		err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&version)
		if err != nil {
			return err
		}
		if version > len(migs) {
			return fmt.Errorf("%w: the database has schema version %d and this popbridge knows versions up to %d; upgrade popbridge on this replica to the release the other replicas run (or point state.dsn to another database)", ErrSchemaNewer, version, len(migs))
		}
		for _, m := range migs[version:] {
			// No arguments: the simple protocol, so a file may hold
			// several statements.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
		}
		if version == len(migs) {
			return nil
		}
		if _, err := tx.Exec(ctx, "DELETE FROM schema_version"); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO schema_version (version) VALUES ($1)", len(migs))
		return err
	})
	if err != nil {
		return wrap("migrate the schema", err)
	}
	return nil
}
