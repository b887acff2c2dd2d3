package proxy

import "strings"

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
