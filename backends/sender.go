package backends

import (
	"context"
	"errors"
	"io"
)

// ErrUpstreamLogin is wrapped by a Sender's errors when the upstream
// refused its login (password or token): not the client's fault, and
// never reported to it as a bad password.
var ErrUpstreamLogin = errors.New("the upstream server refused the login")

// ErrSenderRefused is wrapped, with the upstream's reply, by an error of
// Transaction.Rcpt when the upstream refused MAIL FROM: a Sender that
// pipelines (RFC 2920) reads MAIL's reply together with the first
// RCPT's. The listener reports it as a refused sender.
var ErrSenderRefused = errors.New("the upstream server refused the sender")

// Sender sends mail for one account: the upstream side of SMTP
// submission (internal/submission). backends/smtp implements it.
type Sender interface {
	// MaySend reports whether the account may use from as its envelope
	// sender; the submission listener refuses any other (never an open
	// relay).
	MaySend(from string) bool
	// Begin starts an upstream transaction with MAIL FROM. An error
	// that is (or wraps) a *smtp.SMTPError of github.com/emersion/go-smtp
	// is the upstream's reply to MAIL; an error wrapping
	// ErrUpstreamLogin means the upstream refused the login; any other
	// error is a local or network fault (temporary).
	Begin(ctx context.Context, from string, opts MailOptions) (Transaction, error)
}

// MailOptions are the MAIL FROM parameters passed upstream.
type MailOptions struct {
	// Size is the client's SIZE= (0: not given).
	Size int64
	// UTF8 is the client's SMTPUTF8 parameter.
	UTF8 bool
}

// Transaction is one upstream mail transaction. Errors are as for
// Sender.Begin. After an error from Data the transaction is over; Close
// must still be called.
type Transaction interface {
	// Rcpt adds an envelope recipient. Its error may also be the
	// upstream's refusal of MAIL FROM (see ErrSenderRefused).
	Rcpt(ctx context.Context, to string) error
	// Data streams the message from r to the upstream and returns its
	// final reply text (e.g. a queue id) once it accepted the message.
	// If reading r fails, the upstream transaction is aborted, never
	// committed with a truncated message, and Data returns that error.
	Data(ctx context.Context, r io.Reader) (string, error)
	// Close ends the transaction and releases the upstream connection.
	Close() error
}
