// Package cache keeps what popbridge has learnt about upstream mailboxes,
// so that network backends never recompute it: exact message sizes and the
// UIDLs handed out for them, tombstones of messages hidden from POP, and
// incremental sync state. A Store persists this per account in one bbolt
// file per instance and serves warm reads from memory; Bodies keeps recently
// fetched small message bodies in memory, bounded in bytes, so that TOP
// followed by RETR, or a retried download, fetches from upstream once.
package cache
