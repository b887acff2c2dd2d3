package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Line ends: the wire form of a message uses CRLF only (RFC 1939 §3). A
// stored message may use CRLF, bare LF or bare CR; each of the three is one
// line end and becomes CRLF. CRLFSize and the dot-stuffer share this rule,
// so the size LIST reports is the number of octets RETR sends.

// CRLFSize returns the size of the message read from r once its line ends
// are converted to CRLF, before dot-stuffing and without the CRLF the
// stuffer adds when the message does not end with a line end.
func CRLFSize(r io.Reader) (int64, error) {
	var c SizeCounter
	_, err := io.Copy(&c, r)
	return c.Size(), err
}

// SizeCounter is an io.Writer that counts what CRLFSize counts, for a
// backend that sees the message in chunks anyway.
type SizeCounter struct {
	n  int64
	cr bool // the previous byte was CR
}

// Write counts p; it never fails.
func (c *SizeCounter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	// Every LF without a CR before it and every CR without an LF after it
	// gains one octet. Counting with bytes.Count is much faster than a
	// byte loop.
	lf := bytes.Count(p, []byte{'\n'})
	cr := bytes.Count(p, []byte{'\r'})
	pairs := 0
	if lf > 0 && cr > 0 {
		pairs = bytes.Count(p, []byte("\r\n"))
	}
	extra := lf + cr - 2*pairs
	if c.cr { // a CR ended the previous chunk
		if p[0] == '\n' {
			extra-- // that LF completes a CRLF
		} else {
			extra++ // that CR was bare
		}
	}
	c.cr = p[len(p)-1] == '\r'
	if c.cr {
		extra-- // the next byte decides; Size counts it meanwhile
	}
	c.n += int64(len(p) + extra)
	return len(p), nil
}

// Size returns the count so far, treating a trailing CR as a line end.
func (c *SizeCounter) Size() int64 {
	if c.cr {
		return c.n + 1
	}
	return c.n
}

// errTopDone is returned by dotWriter.Write once TOP's line limit is
// reached, so the copy stops reading the message.
var errTopDone = errors.New("proxy: top line limit reached")

// dotWriter writes a message as the body of a multi-line response (RFC
// 1939 §3): line ends become CRLF, a line starting with "." gets another
// ".", and Close ends the response with ".\r\n" on a line of its own. For
// TOP it stops after the header, the blank line and a number of body lines.
type dotWriter struct {
	w *bufio.Writer

	bol    bool  // at the beginning of an output line: it has no octets yet
	cr     bool  // the last input byte was a CR not yet written
	inBody bool  // the blank line after the header has been written
	limit  int   // body lines still to send; negative: no limit
	done   bool  // the TOP limit is reached
	n      int64 // octets of the message sent, without stuffing
}

// newDotWriter returns a writer for RETR (bodyLines < 0) or for TOP with
// bodyLines lines of body.
func newDotWriter(w *bufio.Writer, bodyLines int) *dotWriter {
	return &dotWriter{w: w, bol: true, limit: bodyLines}
}

// Write stuffs p. It returns errTopDone when the TOP limit is reached.
func (d *dotWriter) Write(p []byte) (int, error) {
	if d.done {
		return 0, errTopDone
	}
	i := 0
	// Where the next LF and CR are in p: -1 none, -2 not looked for yet.
	// A position is looked for again only once i has passed it, so each
	// octet is scanned once per byte value, whatever the line ends.
	lf, cr := -2, -2
	for i < len(p) {
		if d.cr { // a CR ended the line; an LF right after it is part of it
			d.cr = false
			if p[i] == '\n' {
				i++
			}
			if err := d.endLine(); err != nil {
				return i, err
			}
			if d.done {
				return i, errTopDone
			}
			continue
		}
		if d.bol && p[i] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return i, err
			}
		}
		// The line's octets run to the first CR or LF. IndexByte is
		// vectorised: much faster than IndexAny or a byte loop.
		if lf != -1 && lf < i {
			if lf = bytes.IndexByte(p[i:], '\n'); lf >= 0 {
				lf += i
			}
		}
		if cr != -1 && cr < i {
			if cr = bytes.IndexByte(p[i:], '\r'); cr >= 0 {
				cr += i
			}
		}
		switch {
		case cr >= 0 && cr == lf-1:
			// CRLF: copy the line with its line end and, for RETR,
			// the following lines that need no change, in one write.
			// RETR needs no header or line count, so lineDone below
			// stands for all of them.
			end := lf + 1
			if d.limit < 0 {
				end += cleanLines(p[end:])
			}
			if _, err := d.w.Write(p[i:end]); err != nil {
				return i, err
			}
			d.n += int64(end - i)
			if cr > i {
				d.bol = false
			}
			i = end
			d.lineDone()
			if d.done {
				return i, errTopDone
			}
		case cr >= 0 && (lf < 0 || cr < lf):
			// A CR that is not (yet) known to be followed by LF.
			if err := d.writeText(p[i:cr]); err != nil {
				return i, err
			}
			i = cr + 1
			d.cr = true
		case lf >= 0: // bare LF
			if err := d.writeText(p[i:lf]); err != nil {
				return i, err
			}
			i = lf + 1
			if err := d.endLine(); err != nil {
				return i, err
			}
			if d.done {
				return i, errTopDone
			}
		default: // no line end in p
			if err := d.writeText(p[i:]); err != nil {
				return i, err
			}
			i = len(p)
		}
	}
	return len(p), nil
}

// cleanLines returns the length of the complete CRLF lines at the start of
// b that go out unchanged: none starts with "." or has a bare CR or LF.
func cleanLines(b []byte) int {
	n := 0
	for n < len(b) && b[n] != '.' {
		nl := bytes.IndexByte(b[n:], '\n')
		if nl < 1 || b[n+nl-1] != '\r' || bytes.IndexByte(b[n:n+nl-1], '\r') >= 0 {
			break
		}
		n += nl + 1
	}
	return n
}

// writeText writes octets of the current line, which has no CR or LF.
func (d *dotWriter) writeText(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := d.w.Write(b); err != nil {
		return err
	}
	d.n += int64(len(b))
	d.bol = false
	return nil
}

// endLine writes CRLF for a line end of the message.
func (d *dotWriter) endLine() error {
	if _, err := d.w.WriteString("\r\n"); err != nil {
		return err
	}
	d.n += 2
	d.lineDone()
	return nil
}

// lineDone follows the header and TOP's line count once a line and its
// line end are written.
func (d *dotWriter) lineDone() {
	if !d.inBody {
		d.inBody = d.bol // an empty line ends the header
	} else if d.limit > 0 {
		d.limit--
	}
	if d.inBody && d.limit == 0 {
		d.done = true
	}
	d.bol = true
}

// Close ends the last line if needed and writes the terminating ".".
// It does not flush the underlying writer.
func (d *dotWriter) Close() error {
	if !d.done && (d.cr || !d.bol) {
		if _, err := d.w.WriteString("\r\n"); err != nil {
			return err
		}
		if d.cr { // a trailing CR is a line end of the message, and counts
			d.n += 2
			d.cr = false
		}
		// else: the CRLF added after a last line without one, not counted
	}
	_, err := d.w.WriteString(".\r\n")
	return err
}

// WireWriterTo is implemented by a backend's message stream that holds the
// message in wire form already, dot-stuffed with CRLF line ends: a POP3
// server's RETR reply. The proxy then copies those lines to the client as
// they are, instead of unstuffing and stuffing them again.
//
// WriteWireTo writes to w the complete lines at the stream's position that
// need no change on the wire: each ends in CRLF and has no other CR or LF.
// It stops at the end of the message, without writing the terminating
// line (eof), or before the first line that is not like that, where the
// caller reads on with Read. msg counts the message octets written, the
// stuffed dots left out. It is called at the start of the message only.
// When w has a method WriteEnd(b []byte) error (passWriter does), the
// stream may hand it the last lines and eof together: WriteEnd writes
// them and the terminating line, in one write to the client where they
// fit the buffer, instead of a second write for the "." alone.
type WireWriterTo interface {
	WriteWireTo(w io.Writer) (msg int64, eof bool, err error)
}

// passMin: a pass-through chunk at least this long goes to the connection
// at once, not through the client writer's buffer.
const passMin = 4 << 10

// passWriter forwards the lines of a verified pass-through as they come,
// so the client receives a message while the upstream still sends it, as
// a plain proxy would: a long chunk goes to the connection at once, with
// what the buffer holds (the +OK line, short chunks) sent first and
// nothing left behind; short ones gather in the buffer.
type passWriter struct {
	w    *bufio.Writer
	conn io.Writer // under w
	// ended: WriteEnd wrote the terminating line.
	ended bool
}

// WriteEnd writes b, the message's last lines, and the terminating line:
// through the buffer when they fit, to be sent in one write by the
// caller's Flush, otherwise b as by Write and the "." buffered.
func (p *passWriter) WriteEnd(b []byte) error {
	if len(b)+3 > p.w.Available() {
		if _, err := p.Write(b); err != nil {
			return err
		}
	} else {
		p.w.Write(b)
	}
	p.ended = true
	_, err := p.w.WriteString(".\r\n")
	return err
}

func (p *passWriter) Write(b []byte) (int, error) {
	if len(b) < passMin {
		n, err := p.w.Write(b)
		if err == nil && p.w.Buffered() >= passMin {
			err = p.w.Flush()
		}
		return n, err
	}
	n := 0
	if p.w.Buffered() > 0 {
		// The buffer's octets and as much of b as fits, in one write.
		n, _ = p.w.Write(b[:min(len(b), p.w.Available())])
		if err := p.w.Flush(); err != nil {
			return 0, err
		}
	}
	if n == len(b) {
		return n, nil
	}
	m, err := p.conn.Write(b[n:])
	return n + m, err
}
