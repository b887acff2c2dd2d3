package smtp

import (
	"bytes"
	"io"
	"sync"
)

// lineWriter writes a message with CRLF line ends: a bare LF becomes
// CRLF, as go-smtp's client (net/textproto's dot writer) does, and a
// message not ending in a line break gets one. With stuff, a line that
// starts with "." gets another (DATA, RFC 5321 4.5.2); BDAT carries the
// message as it is. It writes runs of bytes, not byte by byte.
type lineWriter struct {
	w     io.Writer
	stuff bool
	bol   bool // at the beginning of a line
	cr    bool // the last byte was CR
	n     int64
}

func newLineWriter(w io.Writer, stuff bool) *lineWriter {
	return &lineWriter{w: w, stuff: stuff, bol: true}
}

var (
	crlf = []byte("\r\n")
	dot  = []byte(".")
)

func (l *lineWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	run := 0 // start of what is not written yet
	put := func(end int, extra []byte) error {
		if end > run {
			if _, err := l.w.Write(p[run:end]); err != nil {
				return err
			}
		}
		run = end
		if extra != nil {
			_, err := l.w.Write(extra)
			return err
		}
		return nil
	}
	for i := 0; i < len(p); {
		if l.bol && l.stuff && p[i] == '.' {
			if err := put(i, dot); err != nil {
				return 0, err
			}
		}
		l.bol = false
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			l.cr = p[len(p)-1] == '\r'
			break
		}
		j += i
		if j > i {
			l.cr = p[j-1] == '\r'
		}
		if !l.cr { // a bare LF: CRLF instead
			if err := put(j, crlf); err != nil {
				return 0, err
			}
			run = j + 1
		}
		l.bol, l.cr = true, false
		i = j + 1
	}
	if err := put(len(p), nil); err != nil {
		return 0, err
	}
	l.n += int64(len(p))
	return len(p), nil
}

// finish ends the last line if it is open (an empty message becomes
// one empty line, as with go-smtp).
func (l *lineWriter) finish() error {
	var err error
	switch {
	case l.cr:
		_, err = l.w.Write(crlf[1:])
	case !l.bol || l.n == 0:
		_, err = l.w.Write(crlf)
	}
	l.bol, l.cr = true, false
	return err
}

// bdatMax is the largest message sent with BDAT: one chunk, "BDAT n
// LAST", read whole first (n must be known). Ordinary mail (5 to 100 KB)
// fits; a larger message goes into DATA. Several chunks would each get
// a reply, and Postfix, which does not set TCP_NODELAY, holds the last
// of several replies until the one before is acknowledged: 40 ms of
// delayed ACK on a message of two chunks sent back to back.
const bdatMax = 128 << 10

var bdatPool = sync.Pool{New: func() any { b := make([]byte, bdatMax); return &b }}

// countWriter counts what would be written.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// crlfLen is the size of msg as lineWriter (without stuffing) sends it.
func crlfLen(msg []byte) int64 {
	var c countWriter
	l := newLineWriter(&c, false)
	l.Write(msg)
	l.finish()
	return c.n
}
