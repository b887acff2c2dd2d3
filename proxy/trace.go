package proxy

import (
	"context"
	"strings"

	"github.com/rs/zerolog"
)

// At log level trace, each session logs every command it reads and the
// status line of every reply it sends ("+OK ...", "-ERR ...", "+ "), as
// {"dir":"in"|"out","line":...,"message":"pop3"}. Passwords and SASL
// responses are replaced by Redacted; listings and message content are
// never logged.

// Redacted stands for a secret in a logged line: the one marker of
// every trace, here and in the backends.
const Redacted = "<redacted>"

type sessionKey struct{}

// SessionID returns the id of the POP3 session that made ctx (the
// "session" field of its log lines), or "". Backends add it to their own
// log lines, so that an upstream conversation can be matched to its
// client's.
func SessionID(ctx context.Context) string {
	id, _ := ctx.Value(sessionKey{}).(string)
	return id
}

// TraceEnabled reports whether l logs at trace level, both by its own
// level and by zerolog's global one. Backends use it to decide whether to
// trace their upstream conversation.
func TraceEnabled(l zerolog.Logger) bool {
	return l.GetLevel() <= zerolog.TraceLevel && zerolog.GlobalLevel() <= zerolog.TraceLevel
}

// traceIn logs a line received from the client, already redacted.
func (c *conn) traceIn(line string) {
	if c.trace {
		c.log.Trace().Str("dir", "in").Str("line", line).Msg("pop3")
	}
}

// traceOut logs a status line sent to the client.
func (c *conn) traceOut(line string) {
	if c.trace {
		c.log.Trace().Str("dir", "out").Str("line", line).Msg("pop3")
	}
}

// redactCommand hides the password of PASS and the initial response of
// AUTH; other commands carry no secret.
func redactCommand(line string) string {
	verb, arg, ok := strings.Cut(line, " ")
	switch {
	case !ok:
		return line
	case strings.EqualFold(verb, "PASS"):
		return verb + " " + Redacted
	case strings.EqualFold(verb, "AUTH"):
		if mech, _, ir := strings.Cut(arg, " "); ir {
			return verb + " " + mech + " " + Redacted
		}
	}
	return line
}

// redactSASL hides a SASL response line, except the cancel "*".
func redactSASL(line string) string {
	if line == "*" {
		return line
	}
	return Redacted
}
