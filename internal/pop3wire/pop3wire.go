// Package pop3wire is the POP3 wire codec (RFC 1939, RFC 2449) shared by
// the relay backend's client, the test clients and popbench: a bounded
// line reader, status lines with their response codes, the lines of a
// multi-line reply, and a message body stream that removes the dot
// stuffing or passes the wire form through verified (Body.WriteWireTo).
//
// It reads from a *bufio.Reader and sets no deadlines: the caller owns
// the connection and its timeouts. The server side's dot-stuffing writer
// is the proxy's own (proxy.dotWriter), which counts octets as it goes.
package pop3wire

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
)

// MaxLine is the default bound of a line that is not part of a message:
// status lines (RFC 2449 §4 allows 512 octets), CAPA, LIST and UIDL
// lines. It is generous for servers that exceed the RFC.
const MaxLine = 8192

// ErrLineTooLong is returned for a line longer than the Reader's bound.
var ErrLineTooLong = errors.New("response line too long")

// ErrNotStatus is returned by ParseStatus for a line that is neither
// "+OK" nor "-ERR".
var ErrNotStatus = errors.New("not a status line")

// Reader reads POP3 replies. It is not safe for concurrent use.
type Reader struct {
	// R is the connection's buffered reader.
	R *bufio.Reader
	// Max bounds a line, its line end included. Zero means MaxLine.
	Max  int
	long []byte // a line longer than R's buffer, gathered
}

// NewReader returns a Reader on r with lines of at most max octets
// (0: MaxLine).
func NewReader(r *bufio.Reader, max int) *Reader {
	return &Reader{R: r, Max: max}
}

func (r *Reader) max() int {
	if r.Max > 0 {
		return r.Max
	}
	return MaxLine
}

// ReadLineEnd reads one line and returns it with its line end as sent:
// CRLF, or a bare LF. It is valid until the next read. A line longer
// than the bound gives ErrLineTooLong; the end of the input before the
// line end gives io.EOF, as bufio does (the octets of a line cut short
// are dropped).
func (r *Reader) ReadLineEnd() ([]byte, error) {
	r.long = r.long[:0]
	for {
		l, err := r.R.ReadSlice('\n')
		if len(r.long)+len(l) > r.max() {
			return nil, ErrLineTooLong
		}
		switch {
		case err == bufio.ErrBufferFull:
			r.long = append(r.long, l...)
			continue
		case err != nil:
			return nil, err
		case len(r.long) > 0:
			r.long = append(r.long, l...)
			return r.long, nil
		}
		return l, nil
	}
}

// ReadLine reads one line as ReadLineEnd does and returns it without its
// line end (CRLF or a bare LF).
func (r *Reader) ReadLine() ([]byte, error) {
	l, err := r.ReadLineEnd()
	if err != nil {
		return nil, err
	}
	return TrimLineEnd(l), nil
}

// TrimLineEnd returns l without a final LF or CRLF.
func TrimLineEnd(l []byte) []byte {
	if n := len(l); n > 0 && l[n-1] == '\n' {
		l = l[:n-1]
		if n > 1 && l[n-2] == '\r' {
			l = l[:n-2]
		}
	}
	return l
}

// Status is a status line (RFC 1939 §3).
type Status struct {
	// OK: "+OK"; otherwise "-ERR".
	OK bool
	// Code is a -ERR's response code (RFC 2449 §8, RFC 3206) without the
	// brackets, in upper case, e.g. "IN-USE", "AUTH", "SYS/TEMP"; "" if
	// none.
	Code string
	// Text is the rest of the line: after "+OK " as sent, or after "-ERR"
	// and the response code with the spaces around it trimmed.
	Text string
}

var (
	plusOK   = []byte("+OK")
	minusERR = []byte("-ERR")
)

// ParseStatus parses a status line without its line end: "+OK" or
// "-ERR", alone or followed by a space and text. Anything else gives
// ErrNotStatus.
func ParseStatus(line []byte) (Status, error) {
	switch {
	case bytes.HasPrefix(line, plusOK) && (len(line) == 3 || line[3] == ' '):
		return Status{OK: true, Text: string(bytes.TrimPrefix(line[3:], []byte(" ")))}, nil
	case bytes.HasPrefix(line, minusERR) && (len(line) == 4 || line[4] == ' '):
		return ParseERR(line), nil
	}
	return Status{}, ErrNotStatus
}

// ParseERR parses a line that starts with "-ERR" as a -ERR status,
// whatever follows the indicator: lenient, for servers that omit the
// space.
func ParseERR(line []byte) Status {
	text := strings.TrimSpace(string(line[len(minusERR):]))
	s := Status{Text: text}
	if strings.HasPrefix(text, "[") {
		if i := strings.IndexByte(text, ']'); i > 0 {
			s.Code = strings.ToUpper(text[1:i])
			s.Text = strings.TrimSpace(text[i+1:])
		}
	}
	return s
}

// ReadStatus reads a line and parses it with ParseStatus. The line is
// returned too (without its line end, valid until the next read), also
// with ErrNotStatus.
func (r *Reader) ReadStatus() (Status, []byte, error) {
	l, err := r.ReadLine()
	if err != nil {
		return Status{}, nil, err
	}
	s, err := ParseStatus(l)
	return s, l, err
}

// Unstuff takes a line of a multi-line reply, with or without its line
// end, and returns it without the stuffed dot (RFC 1939 §3), or last
// when it is the terminating line ".".
func Unstuff(line []byte) (out []byte, last bool) {
	if len(line) == 0 || line[0] != '.' {
		return line, false
	}
	if len(TrimLineEnd(line)) == 1 {
		return nil, true
	}
	return line[1:], false
}

// ReadLines reads the lines of a multi-line reply that is not a message
// (CAPA, LIST, UIDL), each bounded as by ReadLine, up to the terminating
// line, and passes each to fn without its line end and unstuffed. The
// slice is valid during the call. An error from fn stops the reading.
func (r *Reader) ReadLines(fn func(line []byte) error) error {
	for {
		l, err := r.ReadLine()
		if err != nil {
			return err
		}
		l, last := Unstuff(l)
		if last {
			return nil
		}
		if err := fn(l); err != nil {
			return err
		}
	}
}
