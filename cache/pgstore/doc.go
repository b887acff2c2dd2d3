// Package pgstore keeps popbridge's per-account state in PostgreSQL, so
// that several replicas behind a load balancer share it: message records
// (key, exact size, UIDL, stamp), tombstones, sync state (IMAP
// UIDVALIDITY and highest UID, Gmail historyId, the upstream POP3 UIDL
// listing), named cursors (a Microsoft Graph delta link), OAuth2 tokens,
// and the maildrop lock. It is the shared counterpart of cache.Store
// (bbolt, one process); the binary uses it under state.driver: postgres.
//
// # Same operations as cache.Store
//
// Store has cache.Store's methods, with the same names and signatures,
// and uses cache's types (MessageRecord, SyncState, Change,
// AccountStats, Snapshot) and error values (cache.ErrNoAccount,
// cache.ErrInUse); both are a cache.StateStore: Snapshot, Messages, Message,
// Tombstones, IsTombstoned, SyncState, PutMessages, DeleteMessages,
// AddTombstones, RemoveTombstones, PutSyncState, Apply, Forget, Hold,
// Holders, Stats, Close. Where it differs, and why:
//
//   - Open(ctx, dsn, *Options) instead of Open(path, *Options): a
//     database, not a file; Path does not exist. Options differ
//     (Timeout, MaxConns, NoMigrate instead of LockTimeout,
//     MemoryRecords, BatchDelay, ReadOnly).
//   - The methods take no context, like cache.Store's; each is bounded
//     by Options.Timeout. The replica-only operations (Acquire, Fenced,
//     Tokens.Refresh, ...) take one.
//   - Nothing is kept in memory: every read goes to the database, so a
//     replica never serves another's stale records. Replicas that cache
//     derived state drop it on the Invalidations of a Subscriber.
//   - Keys and account names are limited to MaxKeySize (2048) bytes
//     (bbolt: 32768), and an account name must be UTF-8 without NUL.
//   - Errors start with "pgstore: "; those caused by PostgreSQL being
//     unreachable wrap ErrUnavailable (IsTemporary).
//   - Hold is per process, as in cache; across replicas, Forget also
//     refuses (cache.ErrInUse) while any replica holds a live lease on
//     the account.
//   - Cursor and PutCursor are new: cache.SyncState has no field for a
//     Graph delta link.
//   - OAuth2 tokens live in Tokens (Load and Save as oauth.Store, plus
//     LoadVersion, CompareAndSwap, Refresh, TokenSource), not in files.
//
// # Replicas
//
// The maildrop lock is a lease (Acquire, KeepAlive, Renew, Extend, Release) with
// a fencing token from a sequence. The writes of a POP3 UPDATE state go
// through Fenced, which checks the lease in the same transaction: a
// replica that lost its lease (expired during a pause or a partition,
// then taken over) writes nothing and gets ErrLeaseLost. Tokens.Refresh
// refreshes a token once across replicas under a row lock and writes the
// result with compare-and-set. Every change is announced with NOTIFY on
// Channel in its own transaction; Subscribe delivers them.
//
// # Schema
//
// The schema is versioned by the numbered files in migrations/,
// embedded in the binary; Open applies the missing ones in one
// transaction under an advisory lock, and refuses a database whose
// schema is newer than the binary's (ErrSchemaNewer). See docs/scale.md.
//
// The DSN comes from the caller; LoadDSN, DSNFromFile and DSNFromEnv
// read it from a file or an environment variable, so it never has to be
// written into the configuration.
package pgstore
