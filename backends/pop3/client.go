package pop3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3wire"
	"github.com/popbridge/popbridge/proxy"
)

// Defaults for ClientOptions fields left zero.
const (
	DefaultDialTimeout    = 15 * time.Second
	DefaultCommandTimeout = 60 * time.Second
)

// maxLine bounds a response line that is not part of a message: status
// lines (RFC 2449 §4 allows 512 octets), CAPA, LIST and UIDL lines. It is
// generous for servers that exceed the RFC, and keeps memory bounded.
const maxLine = pop3wire.MaxLine

// ClientOptions configures Dial.
type ClientOptions struct {
	// Addr is the server's host:port.
	Addr string
	// TLS is the TLS mode: modes.TLSImplicit (before the greeting, RFC
	// 8314 §3, port 995), modes.TLSStartTLS (STLS, RFC 2595 §4) or
	// modes.TLSNone (passwords in clear text: loopback tests only). Empty
	// means modes.TLSImplicit.
	TLS modes.TLS
	// TLSConfig is used for implicit TLS and STLS. Nil means the system
	// roots; an empty ServerName is taken from Addr's host.
	TLSConfig *tls.Config
	// DialTimeout bounds the TCP connect, the TLS handshakes, the greeting
	// and CAPA. Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// CommandTimeout bounds each command's reply, and each read of a
	// message stream. Zero means DefaultCommandTimeout.
	CommandTimeout time.Duration
	// Logger, when it logs at trace level, gets every command sent and
	// every status line read, as {"dir":"out"|"in","line":...,"message":
	// "pop3 upstream"}: PASS, the AUTH initial response and SASL responses
	// proxy.Redacted, listings and message content never.
	Logger *zerolog.Logger
}

// ResponseError is a -ERR reply (RFC 1939 §3) with its response code
// (RFC 2449 §8, RFC 3206), e.g. "IN-USE", "AUTH" or "SYS/TEMP".
type ResponseError struct {
	Command string // the command keyword, e.g. "PASS"
	Code    string // the response code without brackets; "" if none
	Text    string // the rest of the line
}

func (e *ResponseError) Error() string {
	s := "pop3: " + e.Command + ": -ERR"
	if e.Code != "" {
		s += " [" + e.Code + "]"
	}
	if e.Text != "" {
		s += " " + e.Text
	}
	return s
}

// ErrNoUIDL is returned by UIDL when the server does not implement it.
var ErrNoUIDL = errors.New("pop3: server does not support UIDL")

// Client is one POP3 client connection (RFC 1939). It is not safe for
// concurrent use: one command at a time, and a message stream from Retr or
// Top must be closed before the next command. After an I/O or protocol
// error the Client is broken and every later command fails.
type Client struct {
	conn    net.Conn
	r       *bufio.Reader
	wr      *pop3wire.Reader // reads replies from r
	w       *bufio.Writer
	timeout time.Duration
	isTLS   bool
	caps    map[string]string // capability name (upper case) -> arguments
	capaOK  bool              // CAPA answered +OK
	err     error             // sticky: the connection is unusable
	stream  *dotReader        // the open message stream, if any
	trace   *zerolog.Logger   // nil: no tracing
	// ahead holds the command lines sent ahead (sendAhead) whose
	// replies are not read yet, oldest first.
	ahead []string
}

// Dial connects to the server, secures the connection as opts.TLS says,
// reads the greeting and the capabilities (again after STLS). A -ERR
// greeting is returned as a *ResponseError with Command "greeting".
func Dial(ctx context.Context, opts ClientOptions) (*Client, error) {
	dialTimeout := opts.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	mode := opts.TLS
	if mode == "" {
		mode = modes.TLSImplicit
	}
	var conf *tls.Config
	if mode != modes.TLSNone {
		conf = tlsConfig(opts.TLSConfig, opts.Addr)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("pop3: dial %s: %w", opts.Addr, err)
	}
	c := &Client{timeout: opts.CommandTimeout}
	if l := opts.Logger; l != nil && l.GetLevel() <= zerolog.TraceLevel && zerolog.GlobalLevel() <= zerolog.TraceLevel {
		c.trace = l
	}
	if c.timeout <= 0 {
		c.timeout = DefaultCommandTimeout
	}
	fail := func(err error) (*Client, error) {
		conn.Close()
		return nil, err
	}
	switch mode {
	case modes.TLSImplicit:
		tc := tls.Client(conn, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(fmt.Errorf("pop3: TLS handshake with %s: %w", opts.Addr, err))
		}
		conn, c.isTLS = tc, true
	case modes.TLSStartTLS, modes.TLSNone:
	default:
		return fail(fmt.Errorf("pop3: unknown TLS mode %q", mode))
	}
	c.setConn(conn)
	if _, err := c.cmd(ctx, "greeting", ""); err != nil {
		return fail(err)
	}
	if err := c.capa(ctx); err != nil {
		return fail(err)
	}
	if mode == modes.TLSStartTLS {
		if err := c.startTLS(ctx, conf); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

// tlsConfig returns a copy of conf with ServerName set from addr.
func tlsConfig(conf *tls.Config, addr string) *tls.Config {
	if conf == nil {
		conf = &tls.Config{}
	}
	conf = conf.Clone()
	if conf.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			conf.ServerName = host
		}
	}
	if conf.MinVersion < tls.VersionTLS12 {
		conf.MinVersion = tls.VersionTLS12 // RFC 8314 §4.1
	}
	return conf
}

func (c *Client) setConn(conn net.Conn) {
	c.conn = conn
	c.r = bufio.NewReaderSize(streamConn{c}, 64<<10)
	c.wr = pop3wire.NewReader(c.r, maxLine)
	c.w = bufio.NewWriterSize(conn, 4<<10)
}

// streamConn reads from the connection; while a message stream is open,
// each read gets the command timeout as its deadline, however long the
// message.
type streamConn struct{ c *Client }

func (s streamConn) Read(p []byte) (int, error) {
	c := s.c
	if c.stream != nil {
		c.conn.SetReadDeadline(time.Now().Add(c.timeout))
	}
	return c.conn.Read(p)
}

// startTLS sends STLS and performs the handshake; capabilities learnt
// before TLS are discarded and asked again (RFC 2595 §4).
func (c *Client) startTLS(ctx context.Context, conf *tls.Config) error {
	if c.capaOK && !c.HasCapability("STLS") {
		return errors.New("pop3: server does not offer STLS")
	}
	if _, err := c.cmd(ctx, "STLS", "STLS"); err != nil {
		return err
	}
	if c.r.Buffered() > 0 {
		// Octets after +OK and before the handshake: an injection attempt
		// (CVE-2011-0411 style). Never read them as TLS-protected.
		return c.broken(errors.New("pop3: plaintext data after STLS reply"))
	}
	tc := tls.Client(c.conn, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return c.broken(fmt.Errorf("pop3: STLS handshake: %w", err))
	}
	c.setConn(tc)
	c.isTLS = true
	return c.capa(ctx)
}

// capa asks for the capabilities (RFC 2449 §5). A -ERR leaves them unknown.
func (c *Client) capa(ctx context.Context) error {
	c.caps, c.capaOK = map[string]string{}, false
	lines, err := c.multiCmd(ctx, "CAPA", "CAPA")
	var re *ResponseError
	if errors.As(err, &re) {
		return nil
	}
	if err != nil {
		return err
	}
	c.capaOK = true
	for _, l := range lines {
		name, args, _ := strings.Cut(l, " ")
		c.caps[strings.ToUpper(name)] = args
	}
	return nil
}

// Capabilities reports whether CAPA succeeded, and the capabilities
// (names in upper case, mapped to their arguments).
func (c *Client) Capabilities() (map[string]string, bool) {
	return c.caps, c.capaOK
}

// HasCapability reports whether CAPA listed name.
func (c *Client) HasCapability(name string) bool {
	_, ok := c.caps[strings.ToUpper(name)]
	return ok
}

// HasSASL reports whether CAPA listed the SASL mechanism mech.
func (c *Client) HasSASL(mech string) bool {
	for _, m := range strings.Fields(c.caps["SASL"]) {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// Pipelining reports whether CAPA listed PIPELINING (RFC 2449 §6.6): the
// server takes commands sent before the replies to earlier ones.
func (c *Client) Pipelining() bool { return c.HasCapability("PIPELINING") }

// TLS reports whether the connection is encrypted.
func (c *Client) TLS() bool { return c.isTLS }

// Login authenticates with USER and PASS (RFC 1939 §7).
func (c *Client) Login(ctx context.Context, user, pass string) error {
	if err := checkArg(user); err != nil {
		return err
	}
	if err := checkArg(pass); err != nil {
		return err
	}
	// Not pipelined: Dovecot then answers PASS tens of milliseconds late.
	if _, err := c.cmd(ctx, "USER", "USER "+user); err != nil {
		return err
	}
	_, err := c.cmd(ctx, "PASS", "PASS "+pass)
	return err
}

// traceLine logs a line sent (out) or a status line read (in).
func (c *Client) traceLine(dir, line string) {
	if c.trace != nil {
		c.trace.Trace().Str("dir", dir).Str("line", line).Msg("pop3 upstream")
	}
}

// AuthPlain authenticates with SASL PLAIN (RFC 5034, RFC 4616), sending
// the initial response inline when the line fits in 255 octets.
func (c *Client) AuthPlain(ctx context.Context, user, pass string) error {
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	return c.auth(ctx, "PLAIN", ir, len("AUTH PLAIN ")+len(ir)+2 <= 255)
}

// AuthXOAUTH2 authenticates with Google's and Microsoft's XOAUTH2. With
// oneLine the response goes on the AUTH line (Gmail's form); otherwise
// AUTH XOAUTH2 waits for "+ " and the response follows on its own line
// (Outlook's form). A rejected token's error challenge is answered with
// an empty line, so the session stays in step, and the -ERR that follows
// is returned.
func (c *Client) AuthXOAUTH2(ctx context.Context, user, token string, oneLine bool) error {
	ir := base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
	return c.auth(ctx, "XOAUTH2", ir, oneLine)
}

// auth runs one SASL exchange whose only client message is ir.
func (c *Client) auth(ctx context.Context, mech, ir string, inline bool) error {
	if err := checkArg(ir); err != nil {
		return err
	}
	line := "AUTH " + mech
	if inline {
		line += " " + ir
	}
	defer c.begin(ctx)()
	shown := "AUTH " + mech
	if inline {
		shown += " " + proxy.Redacted
	}
	if err := c.sendSecret(line, shown); err != nil {
		return err
	}
	sent := inline
	for {
		l, err := c.readLine()
		if err != nil {
			return err
		}
		c.traceLine("in", string(l))
		switch {
		case bytes.HasPrefix(l, []byte("+OK")):
			return nil
		case bytes.HasPrefix(l, []byte("-ERR")):
			return parseErr("AUTH", l)
		case len(l) > 0 && l[0] == '+' && (len(l) == 1 || l[1] == ' '):
			// A challenge: the empty one asks for the response; once it is
			// sent, a challenge is an error report (XOAUTH2's base64 JSON),
			// answered with an empty line (RFC 4954 style) to get the -ERR.
			if !sent {
				sent = true
				err = c.sendSecret(ir, proxy.Redacted)
			} else {
				err = c.sendSecret("", proxy.Redacted)
			}
			if err != nil {
				return err
			}
		default:
			return c.broken(fmt.Errorf("pop3: AUTH: unexpected reply %q", clip(l)))
		}
	}
}

// checkArg refuses arguments that would break the command line.
func checkArg(s string) error {
	if strings.ContainsAny(s, "\r\n\x00") {
		return errors.New("pop3: argument contains CR, LF or NUL")
	}
	return nil
}

// Stat returns the message count and the maildrop size (RFC 1939 §5).
func (c *Client) Stat(ctx context.Context) (count int, size int64, err error) {
	l, err := c.cmd(ctx, "STAT", "STAT")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(l)
	if len(f) < 2 {
		return 0, 0, c.broken(fmt.Errorf("pop3: STAT: bad reply %q", l))
	}
	if count, err = strconv.Atoi(f[0]); err == nil {
		size, err = strconv.ParseInt(f[1], 10, 64)
	}
	if err != nil || count < 0 || size < 0 {
		return 0, 0, c.broken(fmt.Errorf("pop3: STAT: bad reply %q", l))
	}
	return count, size, nil
}

// UIDLEntry is one line of a UIDL listing.
type UIDLEntry struct {
	N   int
	UID string
}

// UIDL returns the unique-id listing (RFC 1939 §7). A -ERR reply gives an
// error wrapping ErrNoUIDL as well as the *ResponseError.
func (c *Client) UIDL(ctx context.Context) ([]UIDLEntry, error) {
	lines, err := c.multiCmd(ctx, "UIDL", "UIDL")
	if err != nil {
		var re *ResponseError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("%w: %w", ErrNoUIDL, err)
		}
		return nil, err
	}
	out := make([]UIDLEntry, 0, len(lines))
	for _, l := range lines {
		ns, uid, ok := strings.Cut(l, " ")
		n, err := strconv.Atoi(ns)
		uid = strings.TrimRight(uid, " ")
		if !ok || err != nil || n < 1 || uid == "" {
			return nil, c.broken(fmt.Errorf("pop3: UIDL: bad line %q", clip([]byte(l))))
		}
		out = append(out, UIDLEntry{n, uid})
	}
	return out, nil
}

// ListEntry is one line of a LIST listing.
type ListEntry struct {
	N    int
	Size int64
}

// List returns the scan listing (RFC 1939 §5).
func (c *Client) List(ctx context.Context) ([]ListEntry, error) {
	lines, err := c.multiCmd(ctx, "LIST", "LIST")
	if err != nil {
		return nil, err
	}
	out := make([]ListEntry, 0, len(lines))
	for _, l := range lines {
		f := strings.Fields(l)
		var n int
		var size int64
		if len(f) >= 2 {
			if n, err = strconv.Atoi(f[0]); err == nil {
				size, err = strconv.ParseInt(f[1], 10, 64)
			}
		}
		if len(f) < 2 || err != nil || n < 1 || size < 0 {
			return nil, c.broken(fmt.Errorf("pop3: LIST: bad line %q", clip([]byte(l))))
		}
		out = append(out, ListEntry{n, size})
	}
	return out, nil
}

// Retr starts RETR n and returns the message as a stream with the dot
// stuffing removed and the terminating line left out (RFC 1939 §3, §7).
// The stream returns io.EOF only after the terminating "."; a connection
// that fails first gives another error. Close reads what is left, so that
// the next command stays in step.
func (c *Client) Retr(ctx context.Context, n int) (io.ReadCloser, error) {
	return c.message(ctx, "RETR", "RETR "+strconv.Itoa(n))
}

// RetrAhead sends RETR n1, n2... at once without waiting for any reply,
// while a message stream may still be open, when the server offers
// PIPELINING (RFC 2449 §6.6): the Retr of each then finds its message on
// the way. It reports whether they were sent.
func (c *Client) RetrAhead(ns ...int) bool {
	if c.err != nil || !c.Pipelining() || len(ns) == 0 {
		return false
	}
	lines := make([]string, len(ns))
	for i, n := range ns {
		lines[i] = "RETR " + strconv.Itoa(n)
	}
	return c.sendAhead(lines...) == nil
}

// pipeline sends lines at once when the server offers PIPELINING, and
// the commands that follow with the same lines, in the same order, read
// their replies. Without PIPELINING it does nothing and each command is
// sent as usual.
func (c *Client) pipeline(ctx context.Context, lines ...string) error {
	if !c.Pipelining() {
		return nil
	}
	if err := c.ready(); err != nil {
		return err
	}
	if err := c.dropAhead(ctx); err != nil {
		return err
	}
	return c.sendAhead(lines...)
}

// sendAhead writes lines in one go and queues them as sent ahead: a
// command with the same line reads its reply instead of sending it
// again (cmd), any other command first reads and drops the replies
// (dropAhead).
func (c *Client) sendAhead(lines ...string) error {
	c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	for _, l := range lines {
		c.traceLine("out", shownLine(l))
		c.w.WriteString(l)
		c.w.WriteString("\r\n")
	}
	if err := c.w.Flush(); err != nil {
		return c.broken(fmt.Errorf("pop3: write: %w", err))
	}
	c.ahead = append(c.ahead, lines...)
	return nil
}

// dropAhead reads and drops the replies to the commands sent ahead, so
// that the next command's reply comes next.
func (c *Client) dropAhead(ctx context.Context) error {
	for len(c.ahead) > 0 {
		line := c.ahead[0]
		kw, arg, _ := strings.Cut(line, " ")
		kw = strings.ToUpper(kw)
		var err error
		switch {
		case kw == "RETR" || kw == "TOP":
			var rc io.ReadCloser
			if rc, err = c.message(ctx, kw, line); err == nil {
				err = rc.Close()
			}
		case (kw == "UIDL" || kw == "LIST") && arg == "" || kw == "CAPA":
			_, err = c.multiCmd(ctx, kw, line)
		default:
			_, err = c.cmd(ctx, kw, line)
		}
		var re *ResponseError
		if err != nil && !errors.As(err, &re) {
			return fmt.Errorf("pop3: reply to %s sent ahead: %w", shownLine(line), err)
		}
	}
	return nil
}

// Top starts TOP n lines (RFC 1939 §7), streamed as by Retr.
func (c *Client) Top(ctx context.Context, n, lines int) (io.ReadCloser, error) {
	return c.message(ctx, "TOP", "TOP "+strconv.Itoa(n)+" "+strconv.Itoa(lines))
}

func (c *Client) message(ctx context.Context, kw, line string) (io.ReadCloser, error) {
	if _, err := c.cmd(ctx, kw, line); err != nil {
		return nil, err
	}
	d := &dotReader{c: c}
	d.body.Reset(c.r)
	d.stop = context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	c.stream = d
	return d, nil
}

// Dele marks message n as deleted (RFC 1939 §5).
func (c *Client) Dele(ctx context.Context, n int) error {
	_, err := c.cmd(ctx, "DELE", "DELE "+strconv.Itoa(n))
	return err
}

// Rset unmarks every deleted message (RFC 1939 §5).
func (c *Client) Rset(ctx context.Context) error {
	_, err := c.cmd(ctx, "RSET", "RSET")
	return err
}

// Noop does nothing but check the connection (RFC 1939 §5).
func (c *Client) Noop(ctx context.Context) error {
	_, err := c.cmd(ctx, "NOOP", "NOOP")
	return err
}

// Quit sends QUIT, which commits the deletions (RFC 1939 §6), and closes
// the connection. A nil error means the server answered +OK.
func (c *Client) Quit(ctx context.Context) error {
	_, err := c.cmd(ctx, "QUIT", "QUIT")
	c.Close()
	return err
}

// Close closes the connection without sending anything, so the server
// does not enter the UPDATE state.
func (c *Client) Close() error {
	if c.err == nil {
		c.err = net.ErrClosed
	}
	return c.conn.Close()
}

// Err returns the error that broke the Client, or nil while it is usable.
func (c *Client) Err() error { return c.err }

// broken makes err sticky and closes the connection.
func (c *Client) broken(err error) error {
	if c.err == nil {
		c.err = err
		c.conn.Close()
	}
	return err
}

// begin sets the deadline for one command and makes ctx's end interrupt
// it; the returned func undoes that.
func (c *Client) begin(ctx context.Context) func() {
	dl := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	return func() { stop() }
}

// ready checks that a command may be sent.
func (c *Client) ready() error {
	if c.err != nil {
		return c.err
	}
	if c.stream != nil && !c.stream.finished() {
		return errors.New("pop3: a message stream is still open")
	}
	c.stream = nil
	return nil
}

// send sends a command line; PASS is traced without its argument.
func (c *Client) send(line string) error {
	return c.sendSecret(line, shownLine(line))
}

// shownLine returns line as traced: PASS without its argument.
func shownLine(line string) string {
	if len(line) > 5 && strings.EqualFold(line[:5], "PASS ") {
		return line[:5] + proxy.Redacted
	}
	return line
}

// sendSecret sends line, traced as shown.
func (c *Client) sendSecret(line, shown string) error {
	c.traceLine("out", shown)
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		return c.broken(fmt.Errorf("pop3: write: %w", err))
	}
	return nil
}

// readLine reads one response line of at most maxLine octets, without
// its line end. The result is valid until the next read.
func (c *Client) readLine() ([]byte, error) {
	l, err := c.wr.ReadLine()
	if err != nil {
		return nil, c.readErr(err)
	}
	return l, nil
}

// readErr breaks the Client with a read error of the codec.
func (c *Client) readErr(err error) error {
	if err == pop3wire.ErrLineTooLong {
		return c.broken(errors.New("pop3: response line too long"))
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return c.broken(fmt.Errorf("pop3: read: %w", err))
}

// cmd sends line (nothing when line is empty: the greeting) and reads a
// single-line reply. It returns the text after "+OK ", or a
// *ResponseError for -ERR. A line that is the first sent ahead is not
// sent again; before any other, the replies sent ahead are dropped.
func (c *Client) cmd(ctx context.Context, kw, line string) (string, error) {
	if err := c.ready(); err != nil {
		return "", err
	}
	if len(c.ahead) > 0 && line != "" {
		if c.ahead[0] == line {
			c.ahead = c.ahead[1:]
			line = ""
		} else if err := c.dropAhead(ctx); err != nil {
			return "", err
		}
	}
	defer c.begin(ctx)()
	if line != "" {
		if err := c.send(line); err != nil {
			return "", err
		}
	}
	l, err := c.readLine()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return "", err
	}
	c.traceLine("in", string(clip(l)))
	st, err := pop3wire.ParseStatus(l)
	switch {
	case err == nil && st.OK:
		return st.Text, nil
	case bytes.HasPrefix(l, []byte("-ERR")): // "-ERR" and text without a space too
		return "", parseErr(kw, l)
	}
	return "", c.broken(fmt.Errorf("pop3: %s: unexpected reply %q", kw, clip(l)))
}

// multiCmd sends a command with a multi-line reply (CAPA, LIST, UIDL)
// and returns its lines, unstuffed.
func (c *Client) multiCmd(ctx context.Context, kw, line string) ([]string, error) {
	if _, err := c.cmd(ctx, kw, line); err != nil {
		return nil, err
	}
	defer c.begin(ctx)()
	var out []string
	if err := c.wr.ReadLines(func(l []byte) error {
		out = append(out, string(l))
		return nil
	}); err != nil {
		return nil, c.readErr(err)
	}
	return out, nil
}

// parseErr turns a -ERR line into a *ResponseError.
func parseErr(kw string, l []byte) *ResponseError {
	st := pop3wire.ParseERR(l)
	return &ResponseError{Command: kw, Code: st.Code, Text: st.Text}
}

func clip(b []byte) []byte {
	if len(b) > 80 {
		return append(b[:77:77], "..."...)
	}
	return b
}

// dotReader streams the body of a multi-line reply without the dot
// stuffing, line ends as sent (pop3wire.Body). A read error breaks the
// Client.
type dotReader struct {
	c    *Client
	body pop3wire.Body
	err  error // sticky: the read error, as returned
	stop func() bool
}

var _ proxy.WireWriterTo = (*dotReader)(nil)

func (d *dotReader) finished() bool { return d.body.Done() || d.err != nil }

func (d *dotReader) fail(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	d.err = d.c.broken(fmt.Errorf("pop3: message stream: %w", err))
	d.stop()
	return d.err
}

// Read returns message octets; io.EOF only after the terminating line.
func (d *dotReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.body.Read(p)
	if err == io.EOF {
		d.stop()
	} else if err != nil {
		return n, d.fail(err)
	}
	return n, err
}

// WriteWireTo is the proxy's verified pass-through (proxy.WireWriterTo):
// pop3wire.Body.WriteWireTo, with a read error breaking the Client.
func (d *dotReader) WriteWireTo(w io.Writer) (msg int64, eof bool, err error) {
	if d.err != nil {
		return 0, false, d.err
	}
	msg, eof, err = d.body.WriteWireTo(w)
	if eof {
		d.stop()
	}
	if rerr := d.body.Err(); err != nil && rerr != nil {
		return msg, false, d.fail(rerr)
	}
	return msg, eof, err
}

// Close reads the rest of the reply, so the connection stays in step; if
// that fails the Client is broken.
func (d *dotReader) Close() error {
	if d.finished() {
		return nil
	}
	_, err := io.Copy(io.Discard, d)
	return err
}
