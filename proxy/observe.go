package proxy

import (
	"context"
	"strings"
	"time"
)

// Observer is told what sessions do, for metrics. Its methods are called
// from session goroutines, concurrently, and must be quick and not block.
// Server.Observer nil observes nothing.
type Observer interface {
	// SessionStart is called when a connection is accepted as a session
	// (not for a connection refused by a limit or during shutdown).
	SessionStart()
	// SessionEnd is called once per session started, when it ends.
	SessionEnd(s SessionSummary)
	// Command is called after each command line has been answered. name
	// is one of CommandNames, or "other" for anything else (never the
	// client's text); ok is false when any reply line was -ERR or the
	// command ended the session with a failure.
	Command(name string, ok bool)
	// AuthFailure is called for each rejected login (bad credentials).
	AuthFailure()
	// BytesSent is called after RETR or TOP with the octets of message
	// content sent, before dot-stuffing and without the status line.
	BytesSent(n int64)
}

// SessionSummary describes a session that ended.
type SessionSummary struct {
	// Outcome is one of the Outcome constants.
	Outcome string
	// LoggedIn says whether the session reached the TRANSACTION state.
	LoggedIn bool
	// Retrieved, Topped and Deleted count RETR, TOP and deletions done at
	// QUIT; Bytes is as for Observer.BytesSent, for the whole session.
	Retrieved, Topped, Deleted int
	Bytes                      int64
}

// Session outcomes, for SessionSummary.Outcome.
const (
	// OutcomeQuit: the client sent QUIT (whatever the UPDATE state gave).
	OutcomeQuit = "quit"
	// OutcomeAuthFailed: the session ended without login after at least
	// one rejected login, however it ended.
	OutcomeAuthFailed = "auth_failed"
	// OutcomeTimeout: the idle timeout ended the session.
	OutcomeTimeout = "timeout"
	// OutcomeDropped: the client closed the connection without QUIT.
	OutcomeDropped = "dropped"
	// OutcomeShutdown: the server shut down.
	OutcomeShutdown = "shutdown"
	// OutcomeError: anything else: too many bad commands, a failed TLS
	// handshake, a read or write error, a stream broken mid-message.
	OutcomeError = "error"
)

// CommandOther is the command name reported for unknown commands.
const CommandOther = "other"

// CommandNames are the command names an Observer may be told about,
// besides CommandOther.
var CommandNames = []string{
	"USER", "PASS", "AUTH", "APOP", "STLS", "CAPA", "QUIT",
	"STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP", "LAST",
}

// commandName returns the CommandNames entry for the verb of line, or
// CommandOther. It does not allocate.
func commandName(line string) string {
	verb, _, _ := strings.Cut(line, " ")
	for _, n := range CommandNames {
		if strings.EqualFold(verb, n) {
			return n
		}
	}
	return CommandOther
}

// outcome maps the session's end reason to an Outcome constant.
func (c *conn) outcome(reason string) string {
	switch {
	case reason == "quit" && c.loggedIn != "":
		return OutcomeQuit
	case c.authFailures > 0 && c.loggedIn == "":
		return OutcomeAuthFailed
	case reason == "quit":
		return OutcomeQuit
	case reason == "idle timeout":
		return OutcomeTimeout
	case reason == "disconnected":
		return OutcomeDropped
	case reason == "shutdown":
		return OutcomeShutdown
	}
	return OutcomeError
}

// BackendObserver is an Observer that is also told about each call the
// server makes to its Backend and to a session's Mailbox, to time them
// and count their errors per maildrop. The server uses it when
// Server.Observer implements it. BackendCall is called from session
// goroutines, concurrently, and must be quick and not block.
type BackendObserver interface {
	Observer
	BackendCall(c BackendCall)
}

// BackendCall describes one call to a Backend or Mailbox, after it
// returned.
type BackendCall struct {
	// Op is one of the Op constants.
	Op string
	// Account is the maildrop the call was for: the session's lock key
	// (the MaildropID, or the user name). For a login that failed, it is
	// the id the Backend passed to OpeningMaildrop; a login that failed
	// before that (a wrong user or password) is not reported.
	Account string
	// Duration is how long the call took: for OpLogin from
	// OpeningMaildrop, when the Backend calls it (so that a password
	// check is not counted); for OpOpen and OpTop until the stream was
	// returned, not the transfer.
	Duration time.Duration
	// Err is the error the call returned, or nil.
	Err error
}

// Backend calls, for BackendCall.Op.
const (
	OpLogin  = "login"  // Backend.Login
	OpList   = "list"   // Mailbox.List, the snapshot after login
	OpOpen   = "open"   // Mailbox.Open, for RETR, or TOP without a TopOpener
	OpTop    = "top"    // TopOpener.OpenTop
	OpDelete = "delete" // Mailbox.Delete at QUIT
	OpCommit = "commit" // Committer.Commit at QUIT
)

// OpeningMaildrop is called by a Backend that checks a password before
// it opens a maildrop (backends/accounts), during Login, once the check
// has passed: id names the maildrop, and the login's BackendCall is timed
// from here. It does nothing when the server has no BackendObserver.
func OpeningMaildrop(ctx context.Context, id string) {
	if l, ok := ctx.Value(loginCallKey{}).(*loginCall); ok {
		l.start, l.account = time.Now(), id
	}
}

// loginCall is where OpeningMaildrop leaves its mark for the session.
type loginCall struct {
	start   time.Time
	account string
}

type loginCallKey struct{}

// backendCall reports a call of op on the session's maildrop that
// started at start and returned err.
func (c *conn) backendCall(op string, start time.Time, err error) {
	if o, ok := c.srv.Observer.(BackendObserver); ok {
		o.BackendCall(BackendCall{Op: op, Account: c.lockKey, Duration: time.Since(start), Err: err})
	}
}
