package proxy

import "errors"

// RespCode is an extended response code (RFC 2449 §8, RFC 3206).
type RespCode string

// Response codes the server sends.
const (
	CodeNone    RespCode = ""
	CodeAuth    RespCode = "AUTH"     // RFC 3206 §4: credentials rejected
	CodeInUse   RespCode = "IN-USE"   // RFC 2449 §8.1.1: maildrop locked
	CodeSysTemp RespCode = "SYS/TEMP" // RFC 3206 §5: temporary system fault
	CodeSysPerm RespCode = "SYS/PERM" // RFC 3206 §5: permanent system fault
)

// Error is an error whose code and text are safe to send to the client.
// Backends return it (or wrap it) when the client should see something
// more specific than a generic temporary failure. Err, if set, is the
// cause; it is logged, never sent.
type Error struct {
	Code RespCode
	Text string
	Err  error
}

func (e *Error) Error() string {
	s := e.Text
	if e.Code != CodeNone {
		s = "[" + string(e.Code) + "] " + s
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is match two *Error values with the same code and text,
// so a backend may wrap a fresh copy of a sentinel.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Text == e.Text
}

// Sentinel errors for backends to return or wrap.
var (
	// ErrAuthFailed: the user name or password is wrong.
	ErrAuthFailed = &Error{Code: CodeAuth, Text: "Authentication failed."}
	// ErrInUse: the maildrop is locked by another session.
	ErrInUse = &Error{Code: CodeInUse, Text: "Mailbox is locked by another POP3 session."}
	// ErrNoMessage: the message was removed upstream during the session.
	ErrNoMessage = &Error{Text: "Message was removed from the mailbox."}
	// ErrTemporary: an upstream or local fault that may go away.
	ErrTemporary = &Error{Code: CodeSysTemp, Text: "Temporary server failure, try again later."}
	// ErrPermanent: a fault that needs the operator's attention.
	ErrPermanent = &Error{Code: CodeSysPerm, Text: "Permanent server failure."}
)

// publicError returns the *Error to show the client for err: the first
// *Error in its chain, or ErrTemporary.
func publicError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return ErrTemporary
}
