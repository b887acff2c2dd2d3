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
	c.n += int64(len(p))
	for _, b := range p {
		switch b {
		case '\r':
			if c.cr { // the previous CR was bare
				c.n++
			}
			c.cr = true
		case '\n':
			if !c.cr { // bare LF
				c.n++
			}
			c.cr = false
		default:
			if c.cr { // bare CR
				c.n++
			}
			c.cr = false
		}
	}
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

	bol       bool // at the beginning of an output line
	cr        bool // the last input byte was a CR not yet written
	lineEmpty bool // the current line has no octets yet
	inBody    bool // the blank line after the header has been written
	limit     int  // body lines still to send; negative: no limit
	done      bool
	n         int64 // octets of the message sent, without stuffing
}

// newDotWriter returns a writer for RETR (bodyLines < 0) or for TOP with
// bodyLines lines of body.
func newDotWriter(w *bufio.Writer, bodyLines int) *dotWriter {
	return &dotWriter{w: w, bol: true, lineEmpty: true, limit: bodyLines}
}

// Write stuffs p. It returns errTopDone when the TOP limit is reached.
func (d *dotWriter) Write(p []byte) (int, error) {
	if d.done {
		return 0, errTopDone
	}
	i := 0
	for i < len(p) {
		if d.cr {
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
		switch p[i] {
		case '\r':
			d.cr = true
			i++
			continue
		case '\n':
			i++
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
		// Copy the run up to the next line end in one write.
		j := bytes.IndexAny(p[i:], "\r\n")
		if j < 0 {
			j = len(p)
		} else {
			j += i
		}
		if _, err := d.w.Write(p[i:j]); err != nil {
			return i, err
		}
		d.n += int64(j - i)
		d.bol, d.lineEmpty = false, false
		i = j
	}
	return len(p), nil
}

func (d *dotWriter) endLine() error {
	if _, err := d.w.WriteString("\r\n"); err != nil {
		return err
	}
	d.n += 2
	if !d.inBody {
		if d.lineEmpty {
			d.inBody = true
		}
	} else if d.limit > 0 {
		d.limit--
	}
	if d.inBody && d.limit == 0 {
		d.done = true
	}
	d.bol, d.lineEmpty = true, true
	return nil
}

// Close ends the last line if needed and writes the terminating ".".
// It does not flush the underlying writer.
func (d *dotWriter) Close() error {
	if !d.done {
		if d.cr || !d.bol {
			d.cr = false
			if _, err := d.w.WriteString("\r\n"); err != nil {
				return err
			}
		}
	}
	_, err := d.w.WriteString(".\r\n")
	return err
}
