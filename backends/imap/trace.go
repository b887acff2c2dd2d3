package imap

import (
	"bytes"
	"net"
	"strconv"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/proxy"
)

// At log level trace, an IMAP connection logs the commands it sends and
// the server's responses, one line each, as {"dir":"out"|"in","line":...,
// "message":"imap"}. LOGIN arguments, the AUTHENTICATE initial response
// and every SASL response are replaced by proxy.Redacted; literals (message
// bodies) are never logged, nor are untagged FETCH responses; a line is
// cut at traceMax octets.

const traceMax = 200

// traceConn is a connection that traces what goes through it.
type traceConn struct {
	net.Conn
	in, out *imapTracer
}

// newTraceConn returns c traced to log, or c itself when log does not
// log at trace level.
func newTraceConn(c net.Conn, log zerolog.Logger) net.Conn {
	if !proxy.TraceEnabled(log) {
		return c
	}
	auth := new(atomic.Bool)
	return &traceConn{Conn: c,
		in:  &imapTracer{log: log, dir: "in", auth: auth},
		out: &imapTracer{log: log, dir: "out", auth: auth}}
}

func (t *traceConn) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	t.in.feed(p[:n])
	return n, err
}

func (t *traceConn) Write(p []byte) (int, error) {
	n, err := t.Conn.Write(p)
	t.out.feed(p[:n])
	return n, err
}

// imapTracer splits one direction of an IMAP stream into lines, skipping
// literals, and logs them. It only observes: bytes it cannot parse are
// logged as they come, never acted on.
type imapTracer struct {
	log  zerolog.Logger
	dir  string       // out: commands; in: responses
	auth *atomic.Bool // an AUTHENTICATE exchange is under way
	line []byte       // the current line, literals left out, at most traceMax
	cut  bool         // line was cut
	tail []byte       // the last octets of the current line, for a literal's {n}
	skip int64        // literal octets still to skip
}

func (t *imapTracer) feed(p []byte) {
	for len(p) > 0 {
		if t.skip > 0 {
			n := int(min(t.skip, int64(len(p))))
			t.skip -= int64(n)
			p = p[n:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.add(p)
			return
		}
		t.add(p[:i])
		p = p[i+1:]
		t.endLine()
	}
}

func (t *imapTracer) add(b []byte) {
	room := max(traceMax-len(t.line), 0)
	if len(b) > room {
		t.cut = true
	}
	t.line = append(t.line, b[:min(room, len(b))]...)
	t.tail = append(t.tail, b...)
	if len(t.tail) > 32 {
		t.tail = append(t.tail[:0], t.tail[len(t.tail)-32:]...)
	}
}

// endLine ends a line at LF: a line that announces a literal goes on
// after it; any other is logged.
func (t *imapTracer) endLine() {
	t.line = bytes.TrimSuffix(t.line, []byte("\r"))
	t.tail = bytes.TrimSuffix(t.tail, []byte("\r"))
	if n, ok := literalSize(t.tail); ok {
		t.skip = n
		t.tail = t.tail[:0]
		return
	}
	t.emit()
	t.line, t.tail, t.cut = t.line[:0], t.tail[:0], false
}

// literalSize parses the {n}, {n+} or ~{n} that ends a line.
func literalSize(tail []byte) (int64, bool) {
	if !bytes.HasSuffix(tail, []byte("}")) {
		return 0, false
	}
	i := bytes.LastIndexByte(tail, '{')
	if i < 0 {
		return 0, false
	}
	digits := bytes.TrimSuffix(tail[i+1:len(tail)-1], []byte("+"))
	n, err := strconv.ParseInt(string(digits), 10, 64)
	return n, err == nil && n >= 0
}

func (t *imapTracer) emit() {
	line := string(t.line)
	if t.cut {
		line += "..."
	}
	fields := bytes.Fields(t.line)
	word := func(i int) string {
		if i < len(fields) {
			return string(bytes.ToUpper(fields[i]))
		}
		return ""
	}
	if t.dir == "out" {
		switch word(1) {
		case "LOGIN":
			line = string(fields[0]) + " LOGIN " + proxy.Redacted
		case "AUTHENTICATE":
			t.auth.Store(true)
			line = string(fields[0]) + " AUTHENTICATE " + word(2)
			if len(fields) > 3 {
				line += " " + proxy.Redacted
			}
		default:
			if t.auth.Load() {
				line = proxy.Redacted // a SASL response
			}
		}
	} else {
		switch {
		case word(0) == "*" && word(2) == "FETCH":
			return
		case word(0) != "*" && word(0) != "+":
			t.auth.Store(false) // a tagged response ends AUTHENTICATE
		}
	}
	t.log.Trace().Str("dir", t.dir).Str("line", line).Msg("imap")
}
