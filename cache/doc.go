// Package cache keeps what popbridge has learnt about upstream mailboxes,
// so that network backends never recompute it: exact message sizes and the
// UIDLs handed out for them, tombstones of messages hidden from POP, and
// incremental sync state. A Store persists this per account in one bbolt
// file per instance (state_dir/cache.db) and serves warm reads from
// memory; Bodies keeps recently fetched small message bodies in memory,
// bounded in bytes, so that TOP followed by RETR, or a retried download,
// fetches from upstream once.
//
// # State and cache
//
// Not everything in the file is a cache. Per account (named by its POP3
// user) a Store holds:
//
//   - Message records (MessageRecord: key, exact size, UIDL, stamp):
//     cache. Dropped, they are learnt again from upstream at the next
//     login or sync, which costs time and, for Gmail, API quota. The
//     UIDLs come back the same, because every backend derives them from
//     the upstream (Maildir file names, IMAP UIDVALIDITY and UID,
//     upstream POP3 UIDLs, Gmail ids).
//   - Sync state (SyncState: IMAP UIDVALIDITY and highest UID, Gmail
//     historyId, the upstream POP3 UIDL listing): cache; without it the
//     next sync is a full one.
//   - Tombstones (AddTombstones): state. They hide from POP3 the messages
//     that a delete policy keeps upstream: on_delete: keep (maildir, pop3,
//     imap, gmail), the imap backend's seen, the gmail backend's
//     mark-read and download_once. Nothing upstream records them, so
//     removing cache.db, or Forget, brings those messages back and clients
//     that leave mail on the server may download them again.
//
// Bodies live in memory only and are a cache. Other state of the state
// directory (OAuth2 tokens, the self-signed certificate) is kept in files
// of its own, written with WriteFile.
//
// # The file
//
// A Store holds its file alone (a bbolt lock; a second Open waits
// Options.LockTimeout, then fails with ErrLocked), except that read-only
// Stores share it. Every Apply is committed with fsync before it returns,
// so a crash loses nothing that was used. Open reads the whole file first
// and refuses a damaged one (ErrDamaged), migrates an older schema
// (SchemaVersion) and refuses a newer one. Hold marks an account as used
// by a session, so that Forget refuses to remove its data meanwhile.
package cache
