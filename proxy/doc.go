// Package proxy is popbridge's POP3 server (RFC 1939, with CAPA and
// response codes from RFC 2449 and 3206, SASL PLAIN from RFC 5034, STLS
// from RFC 2595 and implicit TLS from RFC 8314). It owns the protocol:
// message numbers, deletion marks, RSET, STAT, LIST, UIDL and the UPDATE
// state. What a maildrop holds is asked of a Backend; a backend never
// sees a message number. The package imports nothing else from popbridge.
//
// # Sessions
//
// Server.Serve and Server.ServeTLS accept connections, one goroutine
// each; a connection over MaxConnections or MaxConnectionsPerIP is
// closed (with a SYS/TEMP response code on a plain listener). A session then goes through:
//
//   - AUTHORIZATION: the greeting, then CAPA, STLS, USER/PASS and AUTH
//     PLAIN. Without TLS, a login is allowed only where the
//     CleartextPolicy says so. Backend.Login is called with the user name
//     and password, bounded by BackendTimeout. A failed login is answered
//     after a delay that grows per client address (AuthFailureDelay).
//   - The maildrop lock: one session per maildrop, taken from the
//     Server's Locker (see below). The lock key is the user name, or the
//     MaildropID of a Mailbox implementing MaildropIDer; a second session
//     gets ErrInUse (response code IN-USE).
//   - The snapshot: Mailbox.List is called once. Its UIDs and sizes are
//     checked (valid, unique UIDs; sizes not negative) and numbered 1 to
//     n; they do not change for the rest of the session.
//   - TRANSACTION: STAT, LIST, UIDL, DELE and RSET work on the snapshot
//     alone. RETR calls Mailbox.Open, TOP calls TopOpener.OpenTop when
//     the Mailbox has it and Open otherwise; the stream is opened before
//     +OK is sent, and is dot-stuffed with CRLF line ends on the way out.
//   - UPDATE, on QUIT only: Lock.Check, then Mailbox.Delete with the
//     marked UIDs (not called when none are marked), or
//     Committer.Commit when the Mailbox has it. +OK is sent only when
//     that call returns nil. A session that ends any other way (dropped
//     connection, idle timeout, shutdown, lost lock) deletes nothing.
//   - Close: Mailbox.Close is called exactly once, and the lock released,
//     before the reply to QUIT, so the client may log in again at once.
//
// Every input the client controls is bounded: command lines (255 octets,
// RFC 2449 §4), SASL lines, bad commands (MaxBadCommandsAuth,
// MaxBadCommands), idle time (AuthIdleTimeout, IdleTimeout); every write
// has its own deadline (WriteTimeout). A panic in a session is recovered,
// logged with its stack and ends that session only.
//
// # The maildrop lock
//
// Server.Locker takes the locks. The default keeps them in this
// process's memory, which is enough for one server; replicas behind a
// load balancer share one Locker's state (popbridge's is a lease in
// PostgreSQL, internal/pglock), so that a second session on any
// replica gets IN-USE. Lock is called after a successful login: an
// error wrapping ErrInUse is answered with IN-USE, any other (the lock's
// database unreachable) like a backend's error, SYS/TEMP unless it
// carries an *Error; the session stays unauthenticated either way and
// the opened Mailbox is closed.
//
// A lock held by a replica that then stalls (a pause, a partition) may
// expire and be taken by another session. So on QUIT, with something to
// delete or commit, the server calls Lock.Check with the context of the
// Delete or Commit first; Check confirms that the lock is still the
// session's until that context's deadline. If it fails, nothing is
// deleted or committed, and QUIT answers
//
//	-ERR [SYS/TEMP] Could not confirm the lock on the mailbox; no messages were deleted. Log in again and retry.
//
// A lock known to be lost before QUIT (Lock.Lost closed: a renewal that
// found the lease taken over, or no renewal for a whole lease) ends the
// session at once, at its next command or during its wait for one,
// with
//
//	-ERR [SYS/TEMP] Lost the lock on the mailbox; no messages were deleted. Log in again.
//
// and without entering the UPDATE state; a command already running
// (a RETR) completes first. Lock.Release is called once, when the
// session leaves the maildrop: before the reply to QUIT, or when the
// session ends any other way. A lock whose Release fails must free
// itself (a lease expires).
//
// # The Backend and Mailbox contract
//
// Backend.Login authenticates and opens a Mailbox. In popbridge the one
// Backend is backends/accounts' Router, the only component that checks
// passwords; the storage backends behind it open maildrops
// (backends.Opener) and are not Backends. The Mailbox's methods
// are called from the session's goroutine, one at a time, with a
// context that ends with the session. List gives each message's UID
// (the UIDL: stable across sessions, never reused) and exact size in
// octets with CRLF line ends, which is what RETR sends. Open streams the
// raw message; if the stream fails midway, the connection is closed
// without the terminating ".", so a client never takes a truncated
// message for a whole one. A size that differs from the listed one is
// logged. Only Delete and Commit may remove or hide messages upstream.
//
// # Optional interfaces and the Unwrap chain
//
// A Mailbox may implement small extra interfaces: TopOpener (a cheap TOP),
// Committer (work at QUIT beyond deleting, such as Gmail's download
// once), MaildropIDer (a lock key other than the user name). The server
// looks for each on the Mailbox, then on what Unwrapper.Unwrap returns,
// and so on down the chain, the way http.ResponseController finds
// http.Flusher; so a wrapper (the accounts router) does not hide its
// backend's fast paths. A
// wrapper that must see one of those calls implements the interface
// itself. A message stream may also carry its upstream's wire form
// (WireWriterTo, found on the io.ReadCloser
// that Open returns); the relay backend's RETR then goes to the client
// without being unstuffed and stuffed again. A Backend may implement
// SyncReporter to tell how far it got learning a large maildrop.
//
// # Errors
//
// The client never sees a backend's error text. The server looks for the
// first *Error in an error's chain (errors.As) and sends its Code and
// Text; its Err is only logged. An error without an *Error becomes
// ErrTemporary, and the whole error goes to the log:
//
//	-ERR [AUTH] Authentication failed.
//	-ERR [SYS/TEMP] Temporary server failure, try again later.
//
// Backends return or wrap the sentinels: ErrAuthFailed for wrong
// credentials (the login delay applies, and the log line is the one
// fail2ban matches), ErrInUse, ErrNoMessage for a message removed
// upstream during the session, ErrTemporary, ErrPermanent. A failed
// Delete or Commit at QUIT is answered with a SYS/TEMP line saying that
// some deleted messages were not removed, and ends the session.
//
// # Shutdown
//
// Server.Shutdown closes the listeners, then ends each session at its
// next command boundary with a SYS/TEMP line saying so, never entering
// the UPDATE state; a QUIT already being processed completes.
// Serve returns ErrServerClosed. When Shutdown's context ends first, it
// calls Close, which closes every connection at once and cancels the
// backend calls in progress.
//
// # Observing
//
// Server.Observer, if set, is told about each session and command for
// metrics. If it is also a BackendObserver, it is told about each call to
// the Backend and the Mailbox (op, maildrop, duration, error), so that no
// timing wrapper around a backend is needed. A Backend that checks a
// password before opening a maildrop calls OpeningMaildrop once the check
// passed: the login is then timed and reported from there, and a login
// that fails its check is only an AuthFailure.
package proxy
