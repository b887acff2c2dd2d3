package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

const (
	// maxCommandLine is the longest command line, CRLF included (RFC 2449 §4).
	maxCommandLine = 255
	// maxSASLLine is the longest SASL response line (RFC 5034 §4 allows
	// lines longer than 255 octets there).
	maxSASLLine = 2048
	// readBufSize must exceed both limits.
	readBufSize = 4096
	// maxJunk bounds an over-long line: once this many octets arrived
	// without a line end, the client gets -ERR and is disconnected.
	maxJunk = 64 << 10
	// smallWriteBuf serves replies; RETR and TOP borrow a larger one.
	smallWriteBuf = 2048
	bigWriteBuf   = 64 << 10
)

type state int

const (
	stateAuth state = iota
	stateTransaction
)

// message is one entry of the session snapshot.
type message struct {
	MessageInfo
	deleted   bool
	retrieved bool // sent whole by RETR in this session
}

// conn is one client connection and its POP3 session.
type conn struct {
	srv    *Server
	rwc    net.Conn // the TCP connection
	nc     net.Conn // rwc, or the TLS connection over it
	addr   netip.Addr
	tlsCfg *tls.Config
	// implicitTLS: the connection starts with a TLS handshake.
	implicitTLS bool
	isTLS       bool

	br *bufio.Reader
	bw *bufio.Writer
	dw *deadlineWriter // under bw and the RETR writer

	ctx    context.Context
	cancel context.CancelFunc
	log    zerolog.Logger
	trace  bool // log commands and status lines (trace.go)

	interrupted atomic.Bool
	lockLost    atomic.Bool // the maildrop lock was lost (Lock.Lost)

	state    state
	user     string // from USER, waiting for PASS
	bad      int
	mbox     Mailbox
	lockKey  string
	lock     Lock
	lockStop chan struct{} // ends watchLock
	msgs     []message
	loggedIn string // the authenticated user name

	authFailures int  // rejected logins, for the session's outcome
	cmdErr       bool // the current command sent a -ERR line

	stats struct {
		retrieved, topped, deleted int
		bytes                      int64
	}
}

var bigWriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bigWriteBuf) }}

func newConn(s *Server, rwc net.Conn, addr netip.Addr, tlsCfg *tls.Config, implicitTLS bool) *conn {
	c := &conn{srv: s, rwc: rwc, nc: rwc, addr: addr, tlsCfg: tlsCfg, implicitTLS: implicitTLS}
	id := fmt.Sprintf("%x", s.nextID.Add(1))
	c.ctx, c.cancel = context.WithCancel(context.WithValue(s.baseCtx, sessionKey{}, id))
	c.log = s.logger().With().Str("session", id).Str("remote", rwc.RemoteAddr().String()).Logger()
	c.trace = TraceEnabled(c.log)
	return c
}

// deadlineWriter sets the write deadline before every write, so that a
// client that stops reading fails the write after the timeout.
type deadlineWriter struct {
	c net.Conn
	d time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if w.d > 0 {
		w.c.SetWriteDeadline(time.Now().Add(w.d))
	}
	return w.c.Write(p)
}

func (c *conn) setIO() {
	c.br = bufio.NewReaderSize(c.nc, readBufSize)
	c.dw = &deadlineWriter{c.nc, c.srv.writeTimeout()}
	c.bw = bufio.NewWriterSize(c.dw, smallWriteBuf)
}

// interrupt makes a session blocked in reading a command return, for
// Shutdown.
func (c *conn) interrupt() {
	c.interrupted.Store(true)
	c.rwc.SetReadDeadline(time.Now())
}

// Errors that end the session.
var (
	errQuit        = errors.New("quit")
	errTooManyBad  = errors.New("too many invalid commands")
	errLineTooLong = errors.New("line too long")
	// errJunk: maxJunk octets without a line end.
	errJunk = fmt.Errorf("line too long: no line end within %d KiB", maxJunk>>10)
)

func (c *conn) serve() {
	start := time.Now()
	reason := "disconnected"
	obs := c.srv.Observer
	if obs != nil {
		obs.SessionStart()
	}
	defer func() {
		if p := recover(); p != nil {
			c.log.Error().Interface("panic", p).Bytes("stack", debug.Stack()).Msg("session panicked")
			reason = "panic"
		}
		// Before finish, so that a client that sees the connection close
		// also sees the session counted.
		if obs != nil {
			obs.SessionEnd(SessionSummary{
				Outcome: c.outcome(reason), LoggedIn: c.loggedIn != "",
				Retrieved: c.stats.retrieved, Topped: c.stats.topped, Deleted: c.stats.deleted, Bytes: c.stats.bytes,
			})
		}
		c.finish(reason, time.Since(start))
	}()

	if c.implicitTLS {
		if err := c.handshake(); err != nil {
			reason = "tls handshake failed"
			return
		}
	}
	c.setIO()
	c.log.Debug().Bool("tls", c.isTLS).Msg("connected")
	c.reply("+OK " + c.srv.greeting())

	for {
		line, err := c.readCommand()
		if err == errLineTooLong {
			c.traceIn("<line too long>")
			err = c.badCommand("Line too long.")
			if err == nil {
				continue
			}
		}
		if err == errJunk {
			c.traceIn("<line too long, no line end>")
			reason = err.Error()
			c.replyNow("-ERR Line too long; closing the connection.")
			c.lingerClose()
			return
		}
		if err == nil && c.lockLost.Load() {
			err = errLockLost
		}
		if err != nil {
			reason = c.readErrReason(err)
			if reason == "lock lost" {
				c.replyNow(lockLostReply)
			} else if c.interrupted.Load() {
				c.replyNow("-ERR [SYS/TEMP] Server shutting down.")
			} else if reason == "idle timeout" && c.state == stateTransaction {
				c.replyNow("-ERR Disconnected for inactivity.")
			}
			return
		}
		if c.trace {
			c.traceIn(redactCommand(line))
		}
		c.cmdErr = false
		sent := c.stats.bytes
		err = c.dispatch(line)
		if obs != nil {
			obs.Command(commandName(line), !c.cmdErr && (err == nil || errors.Is(err, errQuit)))
			if n := c.stats.bytes - sent; n > 0 {
				obs.BytesSent(n)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, errQuit):
			reason = "quit"
			c.flush()
			return
		case errors.Is(err, errTooManyBad):
			reason = "too many invalid commands"
			c.flush()
			return
		default:
			reason = err.Error()
			c.flush()
			return
		}
		if c.interrupted.Load() {
			reason = "shutdown"
			c.replyNow("-ERR [SYS/TEMP] Server shutting down.")
			return
		}
	}
}

func (c *conn) readErrReason(err error) string {
	var ne net.Error
	switch {
	case c.lockLost.Load():
		return "lock lost"
	case c.interrupted.Load():
		return "shutdown"
	case errors.As(err, &ne) && ne.Timeout():
		return "idle timeout"
	case errors.Is(err, io.EOF):
		return "disconnected"
	default:
		return "read error"
	}
}

// finish releases everything the session holds. It never enters the
// UPDATE state: only QUIT does that.
func (c *conn) finish(reason string, d time.Duration) {
	c.releaseMailbox()
	c.cancel()
	if tc, ok := c.nc.(*tls.Conn); ok && reason == "quit" {
		tc.SetWriteDeadline(time.Now().Add(time.Second))
		tc.CloseWrite() // close_notify (RFC 8314 §3.4)
	}
	c.rwc.Close()
	ev := c.log.Info().Str("reason", reason).Int64("duration_ms", d.Milliseconds()).Bool("tls", c.isTLS)
	if c.loggedIn != "" {
		ev = ev.Int("listed", len(c.msgs)).Int("retrieved", c.stats.retrieved).
			Int("top", c.stats.topped).Int("deleted", c.stats.deleted).Int64("bytes", c.stats.bytes)
	}
	ev.Msg("session closed")
	c.srv.forgetConn(c)
}

func (c *conn) releaseMailbox() {
	if c.mbox == nil {
		return
	}
	if err := c.mbox.Close(); err != nil {
		c.log.Warn().Err(err).Msg("closing mailbox failed")
	}
	c.mbox = nil
	if c.lockStop != nil {
		close(c.lockStop)
		c.lockStop = nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), releaseTimeout)
	defer cancel()
	if err := c.lock.Release(ctx); err != nil {
		c.log.Warn().Err(err).Msg("releasing the maildrop lock failed; it frees itself when it expires")
	}
	c.lock = nil
}

// releaseTimeout bounds Lock.Release.
const releaseTimeout = 10 * time.Second

// errLockLost ends a session whose maildrop lock was lost.
var errLockLost = errors.New("maildrop lock lost")

// lockLostReply ends a session whose maildrop lock was lost.
const lockLostReply = "-ERR [SYS/TEMP] Lost the lock on the mailbox; no messages were deleted. Log in again."

// watchLock ends the session when its lock is lost: the flag makes the
// next command fail, and the read deadline ends a read in progress.
func (c *conn) watchLock(lost, stop <-chan struct{}) {
	select {
	case <-lost:
		c.lockLost.Store(true)
		c.rwc.SetReadDeadline(time.Now())
	case <-stop:
	}
}

// handshake runs the server side of a TLS handshake; a failure is logged
// at info with its reason in plain words.
func (c *conn) handshake() error {
	hc := &helloConn{Conn: c.rwc}
	tc := tls.Server(hc, c.tlsCfg)
	ctx, cancel := context.WithTimeout(c.ctx, c.srv.authIdleTimeout())
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		reason := handshakeFailure(err, hc.hello, c.tlsCfg.MinVersion)
		ev := c.log.Info().Str("reason", reason)
		if hc.hello != nil {
			ev = ev.Strs("client_versions", versionNames(hc.hello.versions))
			if strings.HasPrefix(reason, "no cipher suite") {
				ev = ev.Strs("client_ciphers", cipherNames(hc.hello.ciphers))
			}
		}
		ev.AnErr("error", err).Msg("tls handshake failed")
		return err
	}
	c.nc, c.isTLS = tc, true
	return nil
}

// readCommand reads one command line, flushing pending replies first
// unless the client has already pipelined more commands.
func (c *conn) readCommand() (string, error) {
	if c.br.Buffered() == 0 {
		if err := c.bw.Flush(); err != nil {
			return "", err
		}
	}
	timeout := c.srv.authIdleTimeout()
	if c.state == stateTransaction {
		timeout = c.srv.idleTimeout()
	}
	return c.readLine(maxCommandLine, timeout)
}

// readLine reads a line of at most max octets including its line end.
// Longer lines are consumed and discarded without buffering them, and
// reported as errLineTooLong; past maxJunk octets without a line end,
// reading stops with errJunk. The whole line must arrive within timeout.
func (c *conn) readLine(max int, timeout time.Duration) (string, error) {
	if timeout > 0 {
		c.rwc.SetReadDeadline(time.Now().Add(timeout))
	}
	if c.interrupted.Load() || c.lockLost.Load() {
		return "", errors.New("interrupted")
	}
	line, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		n := len(line)
		for err == bufio.ErrBufferFull {
			if n >= maxJunk {
				return "", errJunk
			}
			line, err = c.br.ReadSlice('\n')
			n += len(line)
		}
		if err != nil {
			return "", err
		}
		return "", errLineTooLong
	}
	if err != nil {
		return "", err
	}
	if len(line) > max {
		return "", errLineTooLong
	}
	n := len(line) - 1
	if n > 0 && line[n-1] == '\r' {
		n--
	}
	return string(line[:n]), nil
}

func (c *conn) reply(s string) {
	if len(s) > 0 && s[0] == '-' {
		c.cmdErr = true
	}
	if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
		c.traceOut(s) // status lines only: never listings or content
	}
	c.bw.WriteString(s)
	c.bw.WriteString("\r\n")
}

// replyNow writes a final reply, ignoring errors: the session is ending,
// so a client that does not read gets one second, not WriteTimeout.
func (c *conn) replyNow(s string) {
	c.dw.d = time.Second
	c.reply(s)
	c.bw.Flush()
}

func (c *conn) flush() { c.bw.Flush() }

// lingerClose half-closes the connection and reads what the client is
// still sending, briefly and boundedly, so that the reply already sent is
// not lost to a TCP reset.
func (c *conn) lingerClose() {
	if tc, ok := c.rwc.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	c.rwc.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c.rwc, 1<<20))
}

// badCommand answers a bad command and counts it; past the limit it ends
// the session with errTooManyBad.
func (c *conn) badCommand(text string) error {
	c.bad++
	max := c.srv.maxBadAuth()
	if c.state == stateTransaction {
		max = c.srv.maxBad()
	}
	if max > 0 && c.bad >= max {
		c.reply("-ERR Too many invalid commands.")
		return errTooManyBad
	}
	c.reply("-ERR " + text)
	return nil
}

// cleartextOK reports whether this connection may log in with a password.
func (c *conn) cleartextOK() bool {
	return c.isTLS || c.srv.CleartextPolicy().Allows(c.addr)
}

func (c *conn) cleartextRefusal() string {
	if c.tlsCfg != nil && !c.isTLS {
		return "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS first."
	}
	return "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; connect with TLS."
}

// parseMsgNum parses a message-number argument: decimal digits only, no
// sign, no zero, not past the snapshot (RFC 1939 §3).
func (c *conn) parseMsgNum(arg string) (*message, int, string) {
	if arg == "" {
		return nil, 0, "Message number missing."
	}
	for i := 0; i < len(arg); i++ {
		if arg[i] < '0' || arg[i] > '9' {
			if i > 0 && arg[i] == ' ' {
				return nil, 0, "Noise after message number."
			}
			return nil, 0, "Invalid message number."
		}
	}
	n, err := strconv.ParseUint(arg, 10, 31)
	if err != nil || n > uint64(len(c.msgs)) {
		return nil, 0, "No such message."
	}
	if n == 0 {
		return nil, 0, "Invalid message number."
	}
	m := &c.msgs[n-1]
	if m.deleted {
		return nil, 0, "Message is deleted."
	}
	return m, int(n), ""
}
