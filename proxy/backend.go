package proxy

import (
	"context"
	"io"
)

// Backend authenticates POP3 users and opens their maildrops. A Backend
// must check the password: popbridge has one, backends/accounts' Router.
type Backend interface {
	// Login checks the credentials and opens the maildrop. A wrong user name
	// or password is reported as an error wrapping ErrAuthFailed; any other
	// error is treated as temporary unless it wraps a *Error with a code.
	Login(ctx context.Context, user, pass string) (Mailbox, error)
}

// Mailbox is one opened maildrop. The proxy calls its methods from a single
// goroutine; Close is called exactly once, after every other call.
type Mailbox interface {
	// List returns the messages in a stable order. It is called once per
	// session, right after Login.
	List(ctx context.Context) ([]MessageInfo, error)
	// Open streams the raw RFC 5322 message. Line ends may be LF or CRLF;
	// the proxy converts them to CRLF on the wire. A message that has
	// vanished upstream is reported with an error wrapping ErrNoMessage.
	Open(ctx context.Context, uid string) (io.ReadCloser, error)
	// Delete removes the messages. It is called only from the UPDATE state
	// (QUIT after TRANSACTION), at most once per session. A nil return
	// means every listed message is gone (or hidden, per the backend's
	// delete policy).
	Delete(ctx context.Context, uids []string) error
	// Close releases the maildrop and any upstream connection.
	Close() error
}

// TopOpener is implemented by a Mailbox that can stream the start of a
// message more cheaply than all of it, for TOP (RFC 1939 §7). The stream
// must hold the header, the blank line and at least lines body lines, or
// the whole message when it is shorter; the proxy cuts it after lines body
// lines and closes it. Errors are as for Open.
type TopOpener interface {
	OpenTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error)
}

// Committer is implemented by a Mailbox that acts on a clean QUIT beyond
// removing messages, such as Gmail POP's "download once" mode. In the
// UPDATE state (RFC 1939 §6) the proxy calls Commit instead of Delete,
// even when nothing was marked: deleted holds the messages marked with
// DELE, retrieved those sent whole by RETR in the session (TOP does not
// count), both in message-number order. The reply is +OK only when it
// returns nil. A dropped session calls neither.
type Committer interface {
	Commit(ctx context.Context, deleted, retrieved []string) error
}

// Unwrapper is implemented by a Mailbox that wraps another, such as a
// router or a metrics decorator. The proxy looks for the optional
// interfaces (TopOpener, Committer, MaildropIDer) on the Mailbox first,
// then on what Unwrap returns, and so on, the way
// http.ResponseController does; a wrapper that must see those calls
// implements the interface itself.
type Unwrapper interface {
	Unwrap() Mailbox
}

// find returns the first Mailbox in m's Unwrap chain that implements T.
func find[T any](m Mailbox) (T, bool) {
	for m != nil {
		if t, ok := m.(T); ok {
			return t, true
		}
		u, ok := m.(Unwrapper)
		if !ok {
			break
		}
		m = u.Unwrap()
	}
	var zero T
	return zero, false
}

// MaildropIDer is implemented by a Mailbox whose lock key differs from the
// login name, so that two names for one maildrop share one lock.
type MaildropIDer interface {
	MaildropID() string
}

// MessageInfo describes one message of a snapshot.
type MessageInfo struct {
	// UID is the unique-id listing (RFC 1939 §7): 1 to 70 characters in
	// 0x21-0x7E, stable across sessions and restarts, never reused.
	UID string
	// Size is the exact size in octets with CRLF line ends, before
	// dot-stuffing: the number of octets RETR sends (RFC 1939 §11).
	Size int64
}

// ValidUID reports whether s may be used as a UIDL (RFC 1939 §7).
func ValidUID(s string) bool {
	if len(s) == 0 || len(s) > 70 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
