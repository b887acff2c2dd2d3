package smtp

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// At log level trace, an upstream connection logs the lines it sends
// (dir "out") and the replies it reads (dir "in") as
// {"dir":...,"line":...,"message":"smtp upstream"}, from the EHLO over
// TLS on. AUTH responses are replaced by <redacted>; the message itself
// is logged only as its size. Lines are cut at traceMax octets.

const (
	traceMax = 200
	redacted = "<redacted>"
)

// tracer is go-smtp's Client.DebugWriter: it gets the client's writes
// and reads without their direction, which it follows from the
// protocol (the client waits for each reply; after 354 it writes the
// message up to the "." line).
type tracer struct {
	log       zerolog.Logger
	waitReply bool // bytes are the server's
	auth      bool // an AUTH exchange is under way
	data      bool // bytes are the message
	octets    int64
	line      []byte
	lineLen   int
}

func (t *tracer) Write(p []byte) (int, error) {
	for _, b := range p {
		t.lineLen++
		if len(t.line) < traceMax+2 {
			t.line = append(t.line, b)
		}
		if b != '\n' {
			continue
		}
		line := string(bytes.TrimRight(t.line, "\r\n"))
		n := t.lineLen
		t.line, t.lineLen = t.line[:0], 0
		t.end(line, n)
	}
	return len(p), nil
}

// end handles a complete line of n octets.
func (t *tracer) end(line string, n int) {
	if len(line) > traceMax {
		line = line[:traceMax]
	}
	switch {
	case t.data:
		if n == 3 && line == "." {
			t.out("<message " + strconv.FormatInt(t.octets, 10) + " octets>")
			t.out(".")
			t.data, t.waitReply = false, true
			return
		}
		t.octets += int64(n)
	case t.waitReply:
		t.log.Trace().Str("dir", "in").Str("line", line).Msg("smtp upstream")
		if len(line) >= 4 && line[3] == '-' {
			return // more lines follow
		}
		t.waitReply = false
		code := line
		if len(code) > 3 {
			code = code[:3]
		}
		t.data = code == "354"
		t.octets = 0
		t.auth = t.auth && code == "334"
	default:
		verb, arg, ok := strings.Cut(line, " ")
		switch {
		case t.auth:
			if line != "*" {
				line = redacted
			}
		case strings.EqualFold(verb, "AUTH"):
			t.auth = true
			if mech, _, ir := strings.Cut(arg, " "); ok && ir {
				line = verb + " " + mech + " " + redacted
			}
		}
		t.out(line)
		t.waitReply = true
	}
}

func (t *tracer) out(line string) {
	t.log.Trace().Str("dir", "out").Str("line", line).Msg("smtp upstream")
}
