package proxy

import (
	"context"
	"io"
)

// Backend authenticates POP3 users and opens their maildrops.
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
