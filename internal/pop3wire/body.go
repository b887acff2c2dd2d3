package pop3wire

import (
	"bufio"
	"bytes"
	"io"
)

// Body streams the body of a multi-line reply (a RETR or TOP message)
// after its status line, without the dot stuffing and the terminating
// line, line ends as sent. It never holds more than the bufio.Reader's
// buffer, whatever the line lengths. Read returns io.EOF only after the
// terminating line; the end of the input before it gives
// io.ErrUnexpectedEOF. A read error is sticky (Err).
type Body struct {
	r    *bufio.Reader
	bol  bool  // at the beginning of a line
	done bool  // the terminating line was read
	err  error // sticky read error
	size int64 // the expected size (SetSize); 0 if unknown
}

// NewBody returns the Body that starts at r's position.
func NewBody(r *bufio.Reader) *Body {
	return &Body{r: r, bol: true}
}

// Reset makes d the Body that starts at r's position, so that a Body
// can be part of another value.
func (d *Body) Reset(r *bufio.Reader) {
	*d = Body{r: r, bol: true}
}

// SetSize tells the Body the message's expected size, such as its LIST
// size: WriteWireTo then tops its buffer up only for a message that
// fits it, and streams a larger one as it comes (see WriteWireTo).
func (d *Body) SetSize(n int64) { d.size = n }

// Done reports whether the terminating line was read.
func (d *Body) Done() bool { return d.done }

// Err returns the read error that ended the stream, or nil.
func (d *Body) Err() error { return d.err }

func (d *Body) fail(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	d.err = err
	return err
}

var dotLine = []byte("\n.")

// Read returns message octets; io.EOF only after the terminating line.
func (d *Body) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.done {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	r := d.r
	if d.bol {
		b, err := r.Peek(1)
		if err != nil {
			return 0, d.fail(err)
		}
		if b[0] == '.' {
			if b, err = r.Peek(2); err != nil {
				return 0, d.fail(err)
			}
			end := 0
			if b[1] == '\n' {
				end = 2 // ".\n": tolerated from sloppy servers
			} else if b[1] == '\r' {
				if b, err = r.Peek(3); err != nil {
					return 0, d.fail(err)
				}
				if b[2] == '\n' {
					end = 3
				}
			}
			if end > 0 {
				r.Discard(end)
				d.done = true
				return 0, io.EOF
			}
			r.Discard(1) // the stuffed dot
		}
		d.bol = false
	}
	if r.Buffered() == 0 {
		if _, err := r.Peek(1); err != nil {
			return 0, d.fail(err)
		}
	}
	n := min(r.Buffered(), len(p))
	b, _ := r.Peek(n)
	// Copy up to the next line that starts with "." (stuffed, or the
	// terminator), which the next Read handles at the beginning of a
	// line; a line whose successor is not buffered yet is copied whole.
	// One search for "\n." instead of one per line: mail lines are short.
	end := len(b)
	if i := bytes.Index(b, dotLine); i >= 0 {
		end = i + 1
	}
	d.bol = b[end-1] == '\n'
	copy(p, b[:end])
	r.Discard(end)
	return end, nil
}

// EndWriter is a writer that also writes the terminating line after a
// message's last lines, so both can go out in one write (the proxy's
// pass-through writer; see WriteWireTo).
type EndWriter interface {
	WriteEnd(b []byte) error
}

// WriteWireTo writes the reply's complete lines to w as they came, still
// dot-stuffed, as long as each ends in CRLF and has no other CR or LF; it
// stops at the terminating line (eof, the line consumed but not written)
// or before the first other line, where Read goes on. msg counts the
// message octets written: without the stuffed dots. The client of the
// proxy thus receives the same octets that unstuffing and stuffing again
// would give. When w is an EndWriter, the last lines go to its WriteEnd,
// which writes the terminating line too. It does something only at the
// beginning of a line. A read error is returned and kept (Err); a write
// error is returned only.
//
// When the buffer holds the start of the message already (the rest of a
// read that ended the previous one), it reads on until the buffer holds
// the end or is nearly full before it writes, so that a small message
// goes out in one write instead of two or three; a pipelining client has
// the rest on its way. With SetSize, only a message that fits the buffer
// waits so. The lines are checked once, as they come.
func (d *Body) WriteWireTo(w io.Writer) (msg int64, eof bool, err error) {
	if d.err != nil {
		return 0, false, d.err
	}
	if d.done {
		return 0, true, nil
	}
	if !d.bol {
		return 0, false, nil
	}
	r := d.r
	// more: read before looking at the buffer. topUp: no write yet, the
	// buffer started with the message's start.
	more := r.Buffered() == 0
	room := r.Size() - 8<<10
	topUp := !more && d.size <= int64(room)
	// b[:n] are checked lines, dots of them stuffed.
	n, dots := 0, 0
	for {
		if more {
			want := r.Buffered() + 1
			if want > r.Size() {
				return msg, false, nil // a line longer than the buffer: Read copes
			}
			if _, err := r.Peek(want); err != nil {
				return msg, false, d.fail(err)
			}
		}
		// Check what came since the last look.
		b, _ := r.Peek(r.Buffered())
		k, kd, term := wireLines(b[n:])
		n, dots = n+k, dots+kd
		if ew, ok := w.(EndWriter); ok && term {
			// The last lines and the end together.
			err := ew.WriteEnd(b[:n])
			r.Discard(n + 3)
			d.done = true
			return msg + int64(n-dots), true, err
		}
		bad := !term && n < len(b) && bytes.IndexByte(b[n:], '\n') >= 0 // a complete line that needs a change
		if topUp && !term && !bad && len(b) <= room {
			more = true // the end is still to come: read on first
			continue
		}
		topUp = false
		if n > 0 {
			if _, err := w.Write(b[:n]); err != nil {
				return msg, false, err
			}
			r.Discard(n)
			msg += int64(n - dots)
			n, dots = 0, 0
		}
		if term {
			r.Discard(3)
			d.done = true
			return msg, true, nil
		}
		if bad {
			return msg, false, nil
		}
		// Only an incomplete line, or nothing, is left: read more.
		more = true
	}
}

var crlf = []byte("\r\n")

// wireLines returns the length of the complete lines at the start of b
// that may be sent as they are (CRLF-terminated, no other CR or LF), and
// how many of them start with a stuffed dot; it stops before the
// terminating line ".\r\n" (term).
func wireLines(b []byte) (n, dots int, term bool) {
	lines := 0
	for n < len(b) {
		nl := bytes.IndexByte(b[n:], '\n')
		if nl < 1 || b[n+nl-1] != '\r' {
			break // incomplete, or a bare LF
		}
		if b[n] == '.' {
			if nl == 2 {
				term = true
				break
			}
			dots++
		}
		n += nl + 1
		lines++
	}
	if bytes.Count(b[:n], crlf[:1]) == lines {
		return n, dots, term
	}
	// A bare CR in one of the lines: keep the lines before it.
	n, dots, term = 0, 0, false
	for {
		nl := bytes.IndexByte(b[n:], '\n')
		if bytes.IndexByte(b[n:n+nl-1], '\r') >= 0 {
			return n, dots, false
		}
		if b[n] == '.' {
			dots++
		}
		n += nl + 1
	}
}
