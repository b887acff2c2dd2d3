package pop3test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/popbridge/popbridge/internal/pop3wire"
)

// Client is a minimal POP3 client for tests: it sends what it is told and
// returns replies exactly, so two servers can be compared byte for byte.
// It is not safe for concurrent use.
type Client struct {
	// Greeting is the server's first line without CRLF.
	Greeting string
	// Timeout bounds each Cmd, ReadLine and MultiLine call. Default 30 s.
	Timeout time.Duration

	conn net.Conn
	r    *pop3wire.Reader // status lines
	mr   *pop3wire.Reader // the lines of multi-line bodies
}

// ResponseError is a -ERR reply.
type ResponseError struct {
	Line string // the whole status line without CRLF
}

func (e *ResponseError) Error() string { return "pop3: " + e.Line }

// maxStatusLine bounds a status line read, and maxBodyLine a line of a
// multi-line body, so a broken server cannot make the test use unbounded
// memory.
const (
	maxStatusLine = 64 << 10
	maxBodyLine   = 64 << 20
)

// Dial connects to a POP3 server and reads its greeting.
func Dial(addr string) (*Client, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("pop3 client: dial %s: %w", addr, err)
	}
	return NewClient(conn)
}

// DialTLS connects with implicit TLS (RFC 8314) and reads the greeting.
func DialTLS(addr string, conf *tls.Config) (*Client, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, conf)
	if err != nil {
		return nil, fmt.Errorf("pop3 client: dial %s: %w", addr, err)
	}
	return NewClient(conn)
}

// NewClient reads the greeting from conn and returns a Client using it.
func NewClient(conn net.Conn) (*Client, error) {
	br := bufio.NewReader(conn)
	c := &Client{conn: conn, r: pop3wire.NewReader(br, maxStatusLine), mr: pop3wire.NewReader(br, maxBodyLine)}
	line, err := c.ReadLine()
	if err != nil {
		conn.Close()
		return nil, err
	}
	c.Greeting = line
	if !strings.HasPrefix(line, "+OK") {
		conn.Close()
		return nil, &ResponseError{Line: line}
	}
	return c, nil
}

// Conn returns the underlying connection.
func (c *Client) Conn() net.Conn { return c.conn }

func (c *Client) deadline() {
	t := c.Timeout
	if t <= 0 {
		t = 30 * time.Second
	}
	c.conn.SetDeadline(time.Now().Add(t))
}

// Send writes line and CRLF without reading a reply (for pipelining).
func (c *Client) Send(line string) error {
	c.deadline()
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		return fmt.Errorf("pop3 client: send: %w", err)
	}
	return nil
}

// ReadLine reads one line, which must end in CRLF, and returns it without
// the CRLF.
func (c *Client) ReadLine() (string, error) {
	c.deadline()
	line, err := c.r.ReadLineEnd()
	if err != nil {
		return "", fmt.Errorf("pop3 client: read: %w", err)
	}
	if !bytes.HasSuffix(line, []byte("\r\n")) {
		return "", fmt.Errorf("pop3 client: line %q does not end in CRLF", clip(line))
	}
	return string(line[:len(line)-2]), nil
}

// Cmd sends line and reads the status line. A -ERR reply is returned too,
// together with a *ResponseError.
func (c *Client) Cmd(line string) (string, error) {
	if err := c.Send(line); err != nil {
		return "", err
	}
	reply, err := c.ReadLine()
	if err != nil {
		return "", err
	}
	if st, err := pop3wire.ParseStatus([]byte(reply)); err == nil {
		if !st.OK {
			return reply, &ResponseError{Line: reply}
		}
		return reply, nil
	}
	return reply, fmt.Errorf("pop3 client: unexpected reply %q", clip([]byte(reply)))
}

// MultiLineRaw reads the body of a multi-line response as sent, with dot
// stuffing, up to but not including the terminating ".\r\n". Every line
// must end in CRLF.
func (c *Client) MultiLineRaw() ([]byte, error) {
	return c.multiLine(false)
}

// MultiLine reads the body of a multi-line response and removes the dot
// stuffing (RFC 1939 §3): the result is the message with CRLF line ends,
// without the terminating line.
func (c *Client) MultiLine() ([]byte, error) {
	return c.multiLine(true)
}

func (c *Client) multiLine(unstuff bool) ([]byte, error) {
	c.deadline()
	var out []byte
	for {
		line, err := c.mr.ReadLineEnd()
		if err != nil {
			return nil, fmt.Errorf("pop3 client: multi-line read: %w", err)
		}
		if !bytes.HasSuffix(line, []byte("\r\n")) {
			return nil, fmt.Errorf("pop3 client: multi-line: line %q does not end in CRLF", clip(line))
		}
		u, last := pop3wire.Unstuff(line)
		if last {
			return out, nil
		}
		if unstuff {
			line = u
		}
		out = append(out, line...)
	}
}

// CmdMulti sends line and, after +OK, reads the multi-line body with the
// stuffing removed.
func (c *Client) CmdMulti(line string) (status string, body []byte, err error) {
	status, err = c.Cmd(line)
	if err != nil {
		return status, nil, err
	}
	body, err = c.MultiLine()
	return status, body, err
}

// Login sends USER and PASS.
func (c *Client) Login(user, pass string) error {
	if _, err := c.Cmd("USER " + user); err != nil {
		return err
	}
	_, err := c.Cmd("PASS " + pass)
	return err
}

// Quit sends QUIT, reads the reply and closes the connection.
func (c *Client) Quit() error {
	_, err := c.Cmd("QUIT")
	if cerr := c.conn.Close(); err == nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	return err
}

// Close closes the connection without QUIT (no UPDATE state).
func (c *Client) Close() error {
	return c.conn.Close()
}

func clip(b []byte) []byte {
	if len(b) > 80 {
		return append(b[:77:77], "..."...)
	}
	return b
}
