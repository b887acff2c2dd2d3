// Package submission is popbridge's SMTP submission listener: RFC 6409
// submission with STARTTLS (port 587) and RFC 8314 implicit TLS (port
// 465), for local accounts, relaying each message synchronously to the
// account's backends.Sender (backends/smtp). It is built on
// github.com/emersion/go-smtp's server and works around its traps (see
// docs/smtp.md): MAIL requires AUTH (530), every error is mapped to a
// deliberate reply with a generic text (go-smtp would turn a plain or
// wrapped error from Data into a permanent 554 carrying the error's
// text), the idle timeout is per read (go-smtp's ReadTimeout would
// bound the whole DATA phase), AUTH LOGIN is served (go-sasl has no
// LOGIN server), and failed logins and connections are limited.
//
// internal/app serves it on listen.submission and listen.submissions.
package submission

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/proxy"
)

// Authenticator checks a local login: the accounts' one authenticating
// component (backends/accounts.Router). A wrong user or password is an
// error wrapping proxy.ErrAuthFailed; anything else is temporary.
type Authenticator interface {
	Authenticate(ctx context.Context, user, pass string) (backends.Login, error)
}

// ErrCannotSend, wrapped by an error of Sender.Begin, means the account
// has no way to send configured: the client gets 550 5.7.0 saying so,
// and the log the error's text.
var ErrCannotSend = errors.New("the account is not set up to send mail")

// SenderFunc returns the sender of an authenticated login.
type SenderFunc func(ctx context.Context, login backends.Login) (backends.Sender, error)

// Options configures a Server.
type Options struct {
	// Domain is the name in the greeting; default "popbridge".
	Domain string
	// TLSConfig is the server certificate. Required: STARTTLS is offered
	// on the submission listener, and the submissions listener is TLS.
	TLSConfig *tls.Config
	// Auth checks logins; Senders gives the login's sender. Required.
	Auth    Authenticator
	Senders SenderFunc
	// CleartextAuth reports whether a client at addr may log in without
	// TLS. nil: never (AUTH is then offered only after STARTTLS).
	CleartextAuth func(addr netip.Addr) bool
	// AuthFailed is called after a wrong password from addr and returns
	// how long to wait before the 535 (the auth-failure penalty shared
	// with POP3); AuthSucceeded after a good one. Both may be nil.
	AuthFailed    func(addr netip.Addr) time.Duration
	AuthSucceeded func(addr netip.Addr)
	// MaxAuthFailures per connection; after that the connection is
	// closed (RFC 4954 allows it after 3). Default 3.
	MaxAuthFailures int
	// MaxConnections and MaxConnectionsPerIP limit concurrent
	// connections over all listeners; 0: no limit. A connection over a
	// limit gets 421 and is closed.
	MaxConnections, MaxConnectionsPerIP int
	// MaxMessageBytes is advertised as SIZE and enforced (552 5.3.4);
	// use the upstream's limit. Default 35 MiB (Gmail's).
	MaxMessageBytes int64
	// MaxRecipients per message (452 4.5.3 beyond). Default 100.
	MaxRecipients int
	// MaxLineLength bounds command and message lines, CRLF included.
	// Default 4096 (RFC 5321 asks for 1000; old clients send longer).
	MaxLineLength int
	// IdleTimeout bounds each wait for the client, also inside DATA
	// (421 4.4.2 after it). Default 5 min.
	IdleTimeout time.Duration
	// WriteTimeout bounds each reply. Default 1 min.
	WriteTimeout time.Duration
	// Logger gets one line per transaction and auth failures; nil: none.
	Logger *zerolog.Logger
}

// Server serves submission listeners. Its zero value is not usable: use
// New.
type Server struct {
	opts  Options
	smtp  *smtp.Server
	log   zerolog.Logger
	conns connLimit
}

// New checks opts and returns a Server.
func New(opts Options) (*Server, error) {
	if opts.TLSConfig == nil {
		return nil, errors.New("submission: a TLS certificate is required (tls: section)")
	}
	if opts.Auth == nil || opts.Senders == nil {
		return nil, errors.New("submission: accounts (Auth and Senders) are required")
	}
	if opts.Domain == "" {
		opts.Domain = "popbridge"
	}
	if opts.MaxAuthFailures <= 0 {
		opts.MaxAuthFailures = 3
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 35 << 20
	}
	if opts.MaxRecipients <= 0 {
		opts.MaxRecipients = 100
	}
	if opts.MaxLineLength <= 0 {
		opts.MaxLineLength = 4096
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = time.Minute
	}
	s := &Server{opts: opts, log: zerolog.Nop()}
	if opts.Logger != nil {
		s.log = *opts.Logger
	}
	s.conns.max, s.conns.perIP = opts.MaxConnections, opts.MaxConnectionsPerIP
	s.conns.byIP = map[netip.Addr]int{}

	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = opts.Domain
	srv.TLSConfig = opts.TLSConfig
	// The session decides per client address (AuthMechanisms); go-smtp's
	// switch is for all clients at once.
	srv.AllowInsecureAuth = true
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = opts.MaxRecipients
	srv.MaxLineLength = opts.MaxLineLength
	srv.EnableSMTPUTF8 = true
	// ReadTimeout stays 0: it would bound the whole DATA phase. The
	// listener's connections push an idle deadline before each read.
	srv.ReadTimeout = 0
	srv.WriteTimeout = opts.WriteTimeout
	srv.ErrorLog = errorLog{&s.log}
	s.smtp = srv
	return s, nil
}

// ServeSubmission serves RFC 6409 submission (STARTTLS) on ln until
// Close.
func (s *Server) ServeSubmission(ln net.Listener) error {
	return s.serve(&listener{Listener: ln, s: s})
}

// ServeSubmissions serves RFC 8314 submission over implicit TLS on ln
// until Close.
func (s *Server) ServeSubmissions(ln net.Listener) error {
	return s.serve(tls.NewListener(&listener{Listener: ln, s: s, implicitTLS: true}, s.opts.TLSConfig))
}

func (s *Server) serve(ln net.Listener) error {
	err := s.smtp.Serve(ln)
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Close closes the listeners and every connection.
func (s *Server) Close() error { return s.smtp.Close() }

// Shutdown closes the listeners and waits for the connections to end
// until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error { return s.smtp.Shutdown(ctx) }

type errorLog struct{ log *zerolog.Logger }

func (e errorLog) Printf(format string, v ...any) { e.log.Debug().Msgf("smtp: "+format, v...) }
func (e errorLog) Println(v ...any)               { e.log.Debug().Msg("smtp: " + fmt.Sprint(v...)) }

// --- connections ----------------------------------------------------

// connLimit counts connections, in total and per address.
type connLimit struct {
	mu         sync.Mutex
	max, perIP int
	total      int
	byIP       map[netip.Addr]int
}

func (l *connLimit) acquire(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.max > 0 && l.total >= l.max) || (l.perIP > 0 && l.byIP[ip] >= l.perIP) {
		return false
	}
	l.total++
	l.byIP[ip]++
	return true
}

func (l *connLimit) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

// listener limits connections and wraps each in a conn.
type listener struct {
	net.Listener
	s           *Server
	implicitTLS bool
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrOf(c.RemoteAddr())
		if !l.s.conns.acquire(ip) {
			l.s.log.Warn().Str("client", ip.String()).Msg("submission: too many connections; refused")
			if !l.implicitTLS {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, "421 4.7.0 Too many connections, try again later\r\n")
			}
			c.Close()
			continue
		}
		return &conn{Conn: c, s: l.s, ip: ip}, nil
	}
}

// conn pushes the idle deadline before each read, so that a client
// sending a long message slowly is not cut off, and a silent one is;
// it can be told to close after its next write (the last reply).
type conn struct {
	net.Conn
	s          *Server
	ip         netip.Addr
	closeAfter atomic.Bool
	closed     sync.Once
	// authFailures counts failed logins over the connection's sessions
	// (go-smtp starts a new session after STARTTLS).
	authFailures atomic.Int32
}

func (c *conn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.s.opts.IdleTimeout))
	return c.Conn.Read(p)
}

func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.closeAfter.Load() {
		c.Close()
	}
	return n, err
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() { c.s.conns.release(c.ip) })
	return err
}

func addrOf(a net.Addr) netip.Addr {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// ourConn finds the conn under go-smtp's connection (a *tls.Conn after
// STARTTLS or on the implicit TLS listener).
func ourConn(c net.Conn) *conn {
	for {
		switch v := c.(type) {
		case *conn:
			return v
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

// --- replies --------------------------------------------------------

func reply(code int, ec smtp.EnhancedCode, text string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}
}

var (
	errAuthRequired  = reply(530, smtp.EnhancedCode{5, 7, 0}, "Authentication required")
	errEncryption    = reply(538, smtp.EnhancedCode{5, 7, 11}, "Encryption required for requested authentication mechanism")
	errBadCreds      = reply(535, smtp.EnhancedCode{5, 7, 8}, "Authentication credentials invalid")
	errAuthTemporary = reply(454, smtp.EnhancedCode{4, 7, 0}, "Temporary authentication failure")
	errTooManyAuth   = reply(421, smtp.EnhancedCode{4, 7, 0}, "Too many failed authentications, closing connection")
	errMechanism     = reply(504, smtp.EnhancedCode{5, 5, 4}, "Unrecognized authentication type")
	errSenderDenied  = reply(553, smtp.EnhancedCode{5, 7, 1}, "Sender address not allowed for this account")
	errNoMail        = reply(503, smtp.EnhancedCode{5, 5, 1}, "Send MAIL first")
	errTooBig        = reply(552, smtp.EnhancedCode{5, 3, 4}, "Message size exceeds fixed maximum message size")
	errLineTooLong   = reply(500, smtp.EnhancedCode{5, 5, 6}, "Message line too long")
	errClientData    = reply(451, smtp.EnhancedCode{4, 4, 2}, "Error reading the message, try again")
	errUpstreamDown  = reply(451, smtp.EnhancedCode{4, 4, 1}, "Upstream server unavailable, try again later")
	errUpstreamLogin = reply(451, smtp.EnhancedCode{4, 7, 0}, "Upstream login failed, try again later; the administrator must check the account")
	errUnknownResult = reply(451, smtp.EnhancedCode{4, 4, 2}, "Upstream did not confirm the message, try again later")
	errCannotSend    = reply(550, smtp.EnhancedCode{5, 7, 0}, "This account is not set up to send mail; the administrator must add a send section")
	errSenderUTF8    = reply(550, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII addresses require SMTPUTF8")
	errRcptUTF8      = reply(553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII addresses require SMTPUTF8")
)

// upstreamError maps an error from a Sender to the client's reply: the
// upstream's code and enhanced code with a generic text (never its
// text, which may carry internals), 4xx for anything not an upstream
// reply. Always a fresh *smtp.SMTPError: go-smtp does not unwrap.
func upstreamError(stage string, err error) *smtp.SMTPError {
	if errors.Is(err, ErrCannotSend) {
		return errCannotSend
	}
	if errors.Is(err, backends.ErrUpstreamLogin) || errors.Is(err, oauth.ErrGrant) || errors.Is(err, oauth.ErrNoGrant) {
		return errUpstreamLogin
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return errUpstreamDown
	}
	code, class := se.Code, se.Code/100
	if class != 4 && class != 5 {
		return errUpstreamDown
	}
	ec := se.EnhancedCode
	if ec[0] != class || ec[1] < 0 || ec[2] < 0 {
		ec = smtp.EnhancedCode{class, 0, 0}
	}
	if code == 552 || ec == (smtp.EnhancedCode{5, 3, 4}) {
		return reply(code, ec, "Message size exceeds the upstream server's limit")
	}
	what := map[string]string{"mail": "Sender", "rcpt": "Recipient", "data": "Message"}[stage]
	text := what + " rejected by the upstream server"
	if class == 4 {
		text = what + " temporarily refused by the upstream server, try again later"
	}
	return reply(code, ec, text)
}

// --- sessions -------------------------------------------------------

type session struct {
	s    *Server
	conn *smtp.Conn
	c    *conn
	ip   netip.Addr
	ctx  context.Context
	stop context.CancelFunc

	login  backends.Login
	sender backends.Sender
	authed bool

	mu    sync.Mutex // tx against Reset/Logout during BDAT
	tx    backends.Transaction
	from  string
	utf8  bool
	rcpts int
	// refusedLogged: the upstream's refusal of MAIL FROM, read with a
	// RCPT, was logged as the transaction's outcome.
	refusedLogged bool
	started       time.Time

	traced bool // log level trace: commands and replies are logged
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	ctx, stop := context.WithCancel(context.Background())
	oc := ourConn(c.Conn())
	ses := &session{s: s, conn: c, c: oc, ctx: ctx, stop: stop, traced: proxy.TraceEnabled(s.log)}
	if oc != nil {
		ses.ip = oc.ip
	} else {
		ses.ip = addrOf(c.Conn().RemoteAddr())
	}
	return ses, nil
}

func (ses *session) tlsActive() bool {
	_, ok := ses.conn.TLSConnectionState()
	return ok
}

func (ses *session) authAllowed() bool {
	return ses.tlsActive() || (ses.s.opts.CleartextAuth != nil && ses.s.opts.CleartextAuth(ses.ip))
}

// AuthMechanisms offers PLAIN and LOGIN, only where the cleartext
// policy allows (nothing before STARTTLS otherwise).
func (ses *session) AuthMechanisms() []string {
	if !ses.authAllowed() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth returns the SASL server for mech.
func (ses *session) Auth(mech string) (sasl.Server, error) {
	ses.trace("in", "AUTH "+mech)
	srv, err := ses.auth(mech)
	if err != nil {
		ses.traceReply(err, "")
		return nil, err
	}
	if ses.traced {
		srv = tracedSASL{Server: srv, ses: ses}
	}
	return srv, nil
}

func (ses *session) auth(mech string) (sasl.Server, error) {
	if !ses.authAllowed() {
		return nil, errEncryption
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return ses.authFailed(user, "authorization identity differs from the user")
			}
			return ses.authenticate(user, pass)
		}), nil
	case sasl.Login:
		return &loginServer{auth: ses.authenticate}, nil
	}
	return nil, errMechanism
}

func (ses *session) authenticate(user, pass string) error {
	opts := ses.s.opts
	login, err := opts.Auth.Authenticate(ses.ctx, user, pass)
	if err != nil {
		if errors.Is(err, proxy.ErrAuthFailed) {
			return ses.authFailed(user, "wrong user or password")
		}
		ses.s.log.Error().Err(err).Str("client", ses.ip.String()).Str("user", user).Msg("submission: login failed (temporary)")
		return errAuthTemporary
	}
	sender, err := opts.Senders(ses.ctx, login)
	if err != nil {
		ses.s.log.Error().Err(err).Str("client", ses.ip.String()).Str("user", user).Msg("submission: no sender for the account")
		return errAuthTemporary
	}
	if opts.AuthSucceeded != nil {
		opts.AuthSucceeded(ses.ip)
	}
	ses.login, ses.sender, ses.authed = login, sender, true
	return nil
}

// authFailed applies the penalty and, after MaxAuthFailures on the
// connection, closes it after the reply.
func (ses *session) authFailed(user, why string) error {
	opts := ses.s.opts
	ses.s.log.Warn().Str("client", ses.ip.String()).Str("user", user).Msg("submission: authentication failed: " + why)
	if opts.AuthFailed != nil {
		if d := opts.AuthFailed(ses.ip); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ses.ctx.Done():
				t.Stop()
			}
		}
	}
	if ses.c != nil && int(ses.c.authFailures.Add(1)) >= opts.MaxAuthFailures {
		ses.c.closeAfter.Store(true)
		return errTooManyAuth
	}
	return errBadCreds
}

// Mail starts a transaction: the sender must be the account's, then the
// upstream transaction begins.
func (ses *session) Mail(from string, opts *smtp.MailOptions) (err error) {
	ses.trace("in", "MAIL FROM:<"+from+">")
	defer func() { ses.traceReply(err, "250 2.0.0 Sender OK") }()
	if !ses.authed {
		return errAuthRequired
	}
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	if !opts.UTF8 && !isASCII(from) {
		return errSenderUTF8
	}
	if !ses.sender.MaySend(from) {
		ses.s.log.Warn().Str("account", ses.login.User).Str("from", from).Msg("submission: sender address not allowed")
		return errSenderDenied
	}
	// A second MAIL without RSET (go-smtp allows it) starts over.
	ses.Reset()
	started := time.Now()
	tx, err := ses.sender.Begin(ses.ctx, from, backends.MailOptions{Size: opts.Size, UTF8: opts.UTF8})
	ses.mu.Lock()
	defer ses.mu.Unlock()
	ses.from, ses.utf8, ses.rcpts, ses.started, ses.refusedLogged = from, opts.UTF8, 0, started, false
	if err != nil {
		ses.logTx(0, err)
		return upstreamError("mail", err)
	}
	ses.tx = tx
	return nil
}

func (ses *session) Rcpt(to string, opts *smtp.RcptOptions) (err error) {
	ses.trace("in", "RCPT TO:<"+to+">")
	defer func() { ses.traceReply(err, "250 2.0.0 Recipient OK") }()
	if !ses.authed {
		return errAuthRequired
	}
	ses.mu.Lock()
	defer ses.mu.Unlock()
	if ses.tx == nil {
		return errNoMail
	}
	if !ses.utf8 && !isASCII(to) {
		return errRcptUTF8
	}
	if err := ses.tx.Rcpt(ses.ctx, to); err != nil {
		if errors.Is(err, backends.ErrSenderRefused) {
			if !ses.refusedLogged {
				ses.refusedLogged = true
				ses.logTx(0, err)
			}
			return upstreamError("mail", err)
		}
		return upstreamError("rcpt", err)
	}
	ses.rcpts++
	return nil
}

// Data relays the message; the reply to the client is the upstream's
// outcome, never before it.
func (ses *session) Data(r io.Reader) (err error) {
	ses.trace("in", "DATA")
	var cr *countingReader
	defer func() {
		if cr != nil {
			ses.trace("in", "<message "+strconv.FormatInt(cr.n, 10)+" octets>")
		}
		ses.traceReply(err, "250 2.0.0 OK: sent upstream")
	}()
	if !ses.authed {
		return errAuthRequired
	}
	ses.mu.Lock()
	defer ses.mu.Unlock()
	tx := ses.tx
	if tx == nil {
		return errNoMail
	}
	ses.tx = nil
	defer tx.Close()
	cr = &countingReader{r: r}
	_, err = tx.Data(ses.ctx, cr)
	ses.logTx(cr.n, err)
	switch {
	case err == nil:
		return nil
	case cr.err != nil:
		// The client's side failed; the upstream transaction was aborted.
		if errors.Is(cr.err, smtp.ErrDataTooLarge) {
			return errTooBig
		}
		if errors.Is(cr.err, smtp.ErrTooLongLine) {
			return errLineTooLong
		}
		return errClientData
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) && !errors.Is(err, backends.ErrUpstreamLogin) && cr.eof {
		// The whole message went out but no final reply came (timeout,
		// lost connection): it may have been delivered.
		ses.s.log.Error().Str("account", ses.login.User).Err(err).Msg("submission: the upstream did not confirm the message; it may have been delivered; the client will retry")
		return errUnknownResult
	}
	return upstreamError("data", err)
}

// logTx logs the transaction: no body, no secrets. Called with ses.mu.
func (ses *session) logTx(n int64, err error) {
	ev := ses.s.log.Info()
	result := "sent"
	if err != nil {
		ev, result = ses.s.log.Warn().Err(err), "failed"
	}
	ev.Str("account", ses.login.User).Str("client", ses.ip.String()).Str("from", ses.from).
		Int("recipients", ses.rcpts).Int64("bytes", n).Int64("duration_ms", time.Since(ses.started).Milliseconds()).
		Str("result", result).Msg("submission: transaction")
}

// Reset ends the transaction (RSET, EHLO, after DATA, STARTTLS); an
// open upstream transaction is abandoned.
func (ses *session) Reset() {
	ses.mu.Lock()
	defer ses.mu.Unlock()
	if ses.tx != nil {
		ses.tx.Close()
		ses.tx = nil
	}
}

func (ses *session) Logout() error {
	ses.Reset()
	ses.stop()
	return nil
}

// countingReader counts the message and remembers the client side's
// read error.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
	eof bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	switch {
	case err == io.EOF:
		c.eof = true
	case err != nil:
		c.err = err
	}
	return n, err
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// loginServer is AUTH LOGIN (go-sasl has no server for it): challenges
// "Username:" and "Password:", and takes the user name as an initial
// response too ("AUTH LOGIN dXNlcg==").
type loginServer struct {
	auth  func(user, pass string) error
	user  string
	state int
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.state {
	case 0:
		l.state = 1
		if response == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.user = string(response)
		l.state = 2
		return []byte("Password:"), false, nil
	case 2:
		l.state = 3
		return nil, true, l.auth(l.user, string(response))
	}
	return nil, false, errors.New("unexpected response")
}
