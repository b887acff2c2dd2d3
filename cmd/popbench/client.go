package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/popbridge/popbridge/internal/pop3wire"
)

// popError is a -ERR response.
type popError struct {
	cmd, text string
}

func (e *popError) Error() string { return e.cmd + ": -ERR " + e.text }

// sizeError reports a RETR whose octets differ from the LIST size.
type sizeError struct {
	msg         int
	listed, got int64
}

func (e *sizeError) Error() string {
	return fmt.Sprintf("RETR %d: got %d octets, LIST said %d", e.msg, e.got, e.listed)
}

// lineEndError reports a message line that did not end in CRLF or held a
// bare CR.
type lineEndError struct{ msg int }

func (e *lineEndError) Error() string {
	return fmt.Sprintf("RETR %d: bare CR or LF on the wire", e.msg)
}

// maxResponseLine bounds status and listing lines (RFC 1939 allows 512).
const maxResponseLine = 4096

// timeoutConn gives every Read and Write its own deadline, so a session
// never waits longer than the timeout for any single step, however large
// a message is.
type timeoutConn struct {
	net.Conn
	d time.Duration
}

func (c timeoutConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.d))
	return c.Conn.Read(p)
}

func (c timeoutConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.d))
	return c.Conn.Write(p)
}

// client is a minimal POP3 client (RFC 1939, 2595, 8314) that counts what
// it receives instead of keeping it.
type client struct {
	nc net.Conn // the connection, TLS or not
	r  *bufio.Reader
	wr *pop3wire.Reader // reads r's response lines; see lines
	w  *bufio.Writer
}

// tlsMode says how a session gets TLS.
type tlsMode string

const (
	tlsNone     tlsMode = "none"
	tlsImplicit tlsMode = "implicit"
	tlsSTLS     tlsMode = "stls"
)

// dialClient connects to addr, does TLS as asked and reads the greeting.
// bufSize is the read buffer: large for RETR, small for idle sessions.
func dialClient(ctx context.Context, addr string, mode tlsMode, tc *tls.Config, timeout time.Duration, bufSize int) (*client, error) {
	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	var nc net.Conn = timeoutConn{raw, timeout}
	if mode == tlsImplicit {
		tlc := tls.Client(nc, tc)
		if err := tlc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		nc = tlc
	}
	c := newClient(nc, bufSize)
	if _, err := c.status("greeting"); err != nil {
		c.Close()
		return nil, err
	}
	if mode == tlsSTLS {
		if _, err := c.cmd("STLS"); err != nil {
			c.Close()
			return nil, err
		}
		if c.r.Buffered() > 0 {
			c.Close()
			return nil, errors.New("STLS: server sent data after +OK")
		}
		tlc := tls.Client(nc, tc)
		if err := tlc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("STLS handshake: %w", err)
		}
		c = newClient(tlc, bufSize)
	}
	return c, nil
}

// Read buffer sizes; a response line must fit in the smaller one.
const (
	bigReadBuf   = 64 << 10
	smallReadBuf = maxResponseLine
)

func newClient(nc net.Conn, bufSize int) *client {
	return &client{nc: nc, r: bufio.NewReaderSize(nc, bufSize), w: bufio.NewWriterSize(nc, 512)}
}

// Close closes the connection without QUIT.
func (c *client) Close() error { return c.nc.Close() }

// lines returns the reader of response lines on r.
func (c *client) lines() *pop3wire.Reader {
	if c.wr == nil {
		c.wr = pop3wire.NewReader(c.r, maxResponseLine)
	}
	return c.wr
}

// status reads a status line and returns the text after "+OK ".
func (c *client) status(cmd string) (string, error) {
	st, line, err := c.lines().ReadStatus()
	switch {
	case err == nil && st.OK:
		return st.Text, nil
	case err == nil || bytes.HasPrefix(line, []byte("-ERR")):
		return "", &popError{cmd, string(bytes.TrimSpace(line[4:]))}
	case errors.Is(err, pop3wire.ErrNotStatus):
		return "", fmt.Errorf("%s: unexpected response %q", cmd, truncate(line, 60))
	}
	return "", fmt.Errorf("%s: %w", cmd, err)
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// send writes one command line.
func (c *client) send(line string) error {
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	return c.w.Flush()
}

// cmd sends a command and reads its status line. Only the verb names the
// command in errors, so passwords stay out of reports.
func (c *client) cmd(line string) (string, error) {
	verb, _, _ := bytes.Cut([]byte(line), []byte(" "))
	if err := c.send(line); err != nil {
		return "", fmt.Errorf("%s: %w", verb, err)
	}
	return c.status(string(verb))
}

// login authenticates with USER and PASS.
func (c *client) login(user, pass string) error {
	if _, err := c.cmd("USER " + user); err != nil {
		return err
	}
	_, err := c.cmd("PASS " + pass)
	return err
}

// readMulti reads the lines of a multi-line response up to the final "."
// and passes each, unstuffed, to fn.
func (c *client) readMulti(fn func(line []byte) error) error {
	return c.lines().ReadLines(fn)
}

// listEntry is one line of LIST or UIDL: a message number and its size or
// unique id.
type listEntry struct {
	n    int
	size int64
	uid  string
}

// parseEntry parses "n value"; for LIST the value must be a size.
func parseEntry(line []byte, isSize bool) (listEntry, error) {
	num, val, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return listEntry{}, fmt.Errorf("bad listing line %q", truncate(line, 60))
	}
	n, err := strconv.Atoi(string(num))
	if err != nil || n < 1 {
		return listEntry{}, fmt.Errorf("bad message number in %q", truncate(line, 60))
	}
	e := listEntry{n: n}
	if isSize {
		// RFC 1939 §5 allows more after the size; keep the first word.
		val, _, _ = bytes.Cut(val, []byte(" "))
		e.size, err = strconv.ParseInt(string(val), 10, 64)
		if err != nil || e.size < 0 {
			return listEntry{}, fmt.Errorf("bad size in %q", truncate(line, 60))
		}
	} else {
		if len(val) == 0 || len(val) > 70 {
			return listEntry{}, fmt.Errorf("bad unique id in %q", truncate(line, 60))
		}
		e.uid = string(val)
	}
	return e, nil
}

// list sends LIST or UIDL and returns the entries.
func (c *client) list(cmd string) ([]listEntry, error) {
	if _, err := c.cmd(cmd); err != nil {
		return nil, err
	}
	var out []listEntry
	err := c.readMulti(func(line []byte) error {
		e, err := parseEntry(line, cmd == "LIST")
		if err == nil {
			out = append(out, e)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return out, nil
}

// retr retrieves message n and returns its octets: unstuffed, with the
// line ends as received, without the terminating ".". badEnds reports a
// line that did not end in CRLF or held a bare CR.
func (c *client) retr(n int) (octets int64, badEnds bool, err error) {
	if _, err := c.cmd("RETR " + strconv.Itoa(n)); err != nil {
		return 0, false, err
	}
	octets, badEnds, err = c.readMessage()
	if err != nil {
		err = fmt.Errorf("RETR %d: %w", n, err)
	}
	return octets, badEnds, err
}

// readMessage counts a multi-line response without keeping it; lines of
// any length are fine. It works on whole buffers with one IndexByte per
// line and one Count of CRs per buffer, so checking a message costs far
// less than sending it.
func (c *client) readMessage() (octets int64, badEnds bool, err error) {
	bol := true     // the next byte starts a line
	lastCR := false // the last byte taken was a CR
	for {
		b, err := c.r.Peek(max(c.r.Buffered(), 3)) // 3: ".\r\n"
		if len(b) < 3 {                            // only at EOF or on an error
			if bol && string(b) == ".\n" {
				c.r.Discard(2)
				return octets, true, nil
			}
			return octets, badEnds, err
		}
		i := 0      // b[:i] is taken
		dots := 0   // stuffed dots in b[:i]
		goodLF := 0 // LFs in b[:i] with a CR before them
		end := -1   // the octets to discard, once the terminator is seen
		for i < len(b) {
			if bol && b[i] == '.' {
				if len(b)-i < 3 {
					break // refill to see the whole line start
				}
				if b[i+1] == '\r' && b[i+2] == '\n' {
					end = i + 3
					break
				}
				if b[i+1] == '\n' {
					end, badEnds = i+2, true
					break
				}
				i++ // a stuffed dot
				dots++
			}
			bol = false
			j := bytes.IndexByte(b[i:], '\n')
			if j < 0 {
				i = len(b)
				break
			}
			p := i + j
			if p > 0 && b[p-1] == '\r' || p == 0 && lastCR {
				goodLF++
			} else {
				badEnds = true // bare LF
			}
			i, bol = p+1, true
		}
		// Every CR must be the one before a good LF.
		crs := bytes.Count(b[:i], []byte{'\r'})
		if lastCR && i > 0 {
			if b[0] == '\n' {
				crs++ // that LF's CR ended the last buffer
			} else {
				badEnds = true
			}
		}
		if i > 0 {
			lastCR = b[i-1] == '\r'
		}
		if lastCR {
			crs-- // the next buffer decides
		}
		if crs != goodLF {
			badEnds = true
		}
		octets += int64(i - dots)
		if end >= 0 {
			c.r.Discard(end)
			return octets, badEnds, nil
		}
		c.r.Discard(i)
	}
}

// quit sends QUIT and waits for +OK.
func (c *client) quit() error {
	_, err := c.cmd("QUIT")
	c.Close()
	return err
}
