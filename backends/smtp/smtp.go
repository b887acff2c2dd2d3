// Package smtp sends an account's mail through an upstream submission
// server (RFC 6409 STARTTLS or RFC 8314 implicit TLS) with a password,
// XOAUTH2 or OAUTHBEARER: the backends.Sender of the SMTP submission
// listener (internal/submission). It is built on
// github.com/emersion/go-smtp's client and works around its traps (see
// docs/smtp.md): the XOAUTH2 error challenge is answered with an empty
// response, a failed AUTH closes the connection, and a message whose
// client side fails is aborted by closing the connection, never
// committed truncated.
package smtp

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// Options configures a Sender.
type Options struct {
	// Addr is the upstream's host:port.
	Addr string
	// TLS is modes.TLSStartTLS (port 587, the default) or
	// modes.TLSImplicit (port 465). There is no plaintext mode.
	TLS modes.TLS
	// ServerName is the name the certificate must have; default the
	// host of Addr.
	ServerName string
	// CAFile is a PEM file of the certificate authorities to trust
	// instead of the system's; RootCAs, if set, wins.
	CAFile  string
	RootCAs *x509.CertPool
	// Auth is modes.AuthPassword (AUTH PLAIN, or LOGIN when the server
	// offers no PLAIN; the default), modes.AuthXOAUTH2 or
	// modes.AuthOAuthBearer (a token from TokenSource).
	Auth modes.Auth
	// Username is the upstream login (for OAuth2, the mailbox address).
	Username string
	// Password for modes.AuthPassword.
	Password string
	// TokenSource gives access tokens for XOAUTH2 and OAUTHBEARER. If it
	// is an oauth.Rejecter, a refused token is invalidated and the login
	// retried once on a new connection.
	TokenSource oauth2.TokenSource
	// From lists the envelope senders the account may use
	// (case-insensitive); empty means Username only.
	From []string
	// HelloName is the EHLO name; default "localhost".
	HelloName string
	// DialTimeout bounds connecting and the TLS handshake (default
	// 30 s); CommandTimeout each command's reply (default 5 min), and
	// the idle time while writing the message.
	DialTimeout, CommandTimeout time.Duration
	// KeepIdle is how long a connection stays open and logged in after
	// a transaction that succeeded, for the next one; default 30 s,
	// negative: close at once. At most MaxIdle connections (default 4)
	// are kept, or, if more transactions ran at once within the last
	// KeepIdle, that many: clients sending at the same time then reuse
	// their connections instead of logging in anew for each message,
	// and popbridge never holds more upstream connections than its
	// clients recently used at once.
	KeepIdle time.Duration
	MaxIdle  int
	// Logger, at trace level, gets the upstream conversation (secrets
	// redacted, the message as its size); nil: none.
	Logger *zerolog.Logger
}

// Sender is a backends.Sender for one upstream account. It is safe for
// concurrent use: each transaction has its own connection.
type Sender struct {
	opts Options
	tls  *tls.Config
	host string
	port string

	mu   sync.Mutex
	idle []*idleConn // logged-in connections between transactions
	busy int         // connections in a transaction
	// peak is the most busy connections at once since peakAt, a
	// moment less than KeepIdle ago.
	peak   int
	peakAt time.Time
}

// idleConn is a connection kept for the next transaction; timer closes
// it after KeepIdle.
type idleConn struct {
	c     *conn
	timer *time.Timer
}

var _ backends.Sender = (*Sender)(nil)

// New checks opts and returns a Sender; it does not connect.
func New(opts Options) (*Sender, error) {
	host, port, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("smtp: address %q must be host:port (e.g. smtp.gmail.com:587): %w", opts.Addr, err)
	}
	opts.TLS = modes.SMTPTLSModes.Or(opts.TLS)
	if !modes.SMTPTLSModes.Has(opts.TLS) {
		return nil, fmt.Errorf("smtp: tls %q: use %s (%s: port 587, %s: port 465)", opts.TLS, modes.SMTPTLSModes, modes.TLSStartTLS, modes.TLSImplicit)
	}
	opts.Auth = modes.SMTPAuth.Or(opts.Auth)
	switch opts.Auth {
	case modes.AuthPassword:
		if opts.Username == "" || opts.Password == "" {
			return nil, errors.New("smtp: password login needs a username and a password")
		}
	case modes.AuthXOAUTH2, modes.AuthOAuthBearer:
		if opts.Username == "" || opts.TokenSource == nil {
			return nil, fmt.Errorf("smtp: %s needs a username and an OAuth2 grant (run popbridge auth)", opts.Auth)
		}
	default:
		return nil, fmt.Errorf("smtp: auth %q: use %s", opts.Auth, modes.SMTPAuth)
	}
	if opts.ServerName == "" {
		opts.ServerName = host
	}
	if opts.KeepIdle == 0 {
		opts.KeepIdle = 30 * time.Second
	}
	if opts.MaxIdle <= 0 {
		opts.MaxIdle = 4
	}
	if opts.HelloName == "" {
		opts.HelloName = "localhost"
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = modes.DefaultSMTPDialTimeout
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = modes.DefaultSMTPCommandTimeout
	}
	roots := opts.RootCAs
	if roots == nil && opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("smtp: CA file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("smtp: CA file %s holds no PEM certificate", opts.CAFile)
		}
	}
	return &Sender{
		opts: opts,
		tls:  &tls.Config{ServerName: opts.ServerName, RootCAs: roots, MinVersion: tls.VersionTLS12},
		host: host,
		port: port,
	}, nil
}

// MaySend reports whether from is one of the account's addresses.
func (s *Sender) MaySend(from string) bool {
	allowed := s.opts.From
	if len(allowed) == 0 {
		allowed = []string{s.opts.Username}
	}
	return slices.ContainsFunc(allowed, func(a string) bool { return strings.EqualFold(a, from) })
}

// MaxMessageSize connects and returns the upstream's SIZE limit (0 when
// it announces none), so that the listener can advertise no more.
func (s *Sender) MaxMessageSize(ctx context.Context) (int64, error) {
	c, err := s.connect(ctx)
	if err != nil {
		return 0, err
	}
	n := c.cl.maxMessageSize()
	c.quit()
	return n, nil
}

// conn is one upstream connection.
type conn struct {
	s    *Sender
	raw  net.Conn
	cl   *client
	stop func() bool // stops the context watch
}

func (c *conn) close() {
	if c.stop != nil {
		c.stop()
	}
	c.cl.conn.Close()
}

// quit says QUIT, waiting a few seconds at most, and closes.
func (c *conn) quit() {
	c.cl.timeout = 5 * time.Second
	c.cl.cmd(221, "QUIT")
	c.close()
}

// connect dials, secures, greets and logs in, retrying once with a new
// token on a new connection when an OAuth2 token is refused.
func (s *Sender) connect(ctx context.Context) (*conn, error) {
	rej, _ := s.opts.TokenSource.(oauth.Rejecter)
	for try := 1; ; try++ {
		c, err := s.dial(ctx)
		if err != nil {
			return nil, err
		}
		tok, err := c.login()
		if err == nil {
			return c, nil
		}
		// A failed AUTH ends the connection (Postfix hangs up anyway).
		c.close()
		if !refused(err) {
			return nil, err
		}
		// The upstream's 535 is no reply for the client (whose own
		// login was fine): keep it as text only.
		if tok == "" || rej == nil {
			return nil, fmt.Errorf("%w: %v", backends.ErrUpstreamLogin, err)
		}
		if try == 2 {
			return nil, fmt.Errorf("%w: %w (%v)", backends.ErrUpstreamLogin, rej.Refused(tok), err)
		}
		rej.Invalidate(tok)
	}
}

// refused reports whether the upstream rejected the credentials.
func refused(err error) bool {
	var se *gosmtp.SMTPError
	return errors.As(err, &se) && (se.Code == 535 || se.Code == 534 || (se.Code == 530 && se.EnhancedCode == gosmtp.EnhancedCode{5, 7, 8}))
}

func (s *Sender) dial(ctx context.Context) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(dctx, "tcp", s.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("smtp: connect to %s: %w", s.opts.Addr, err)
	}
	c := &conn{s: s, raw: raw}
	// A cancelled context (the client went away) ends the connection.
	c.stop = context.AfterFunc(ctx, func() { raw.Close() })
	fail := func(what string, err error) (*conn, error) {
		c.stop()
		raw.Close()
		return nil, fmt.Errorf("smtp: %s %s: %w", what, s.opts.Addr, err)
	}
	var trace *zerolog.Logger
	if l := s.opts.Logger; l != nil && proxy.TraceEnabled(*l) {
		trace = l
	}
	// The greeting and the TLS handshake count against DialTimeout.
	timeout := min(s.opts.DialTimeout, s.opts.CommandTimeout)
	co := newCoalescer(raw)
	if s.opts.TLS == modes.TLSImplicit {
		raw.SetDeadline(time.Now().Add(s.opts.DialTimeout))
		tc := tls.Client(co, s.tls)
		if err := tc.HandshakeContext(dctx); err != nil {
			return fail("TLS handshake with", err)
		}
		c.cl = newClient(raw, tc, timeout, trace)
		if err := c.cl.greet(s.opts.HelloName); err != nil {
			return fail("EHLO to", err)
		}
	} else {
		c.cl = newClient(raw, co, timeout, trace)
		if err := c.cl.greet(s.opts.HelloName); err != nil {
			return fail("EHLO to", err)
		}
		if _, err := c.cl.startTLS(dctx, func(n net.Conn) *tls.Conn { return tls.Client(n, s.tls) }, s.opts.HelloName); err != nil {
			return fail("STARTTLS with", err)
		}
	}
	c.cl.timeout = s.opts.CommandTimeout
	raw.SetDeadline(time.Time{})
	return c, nil
}

// login authenticates; for OAuth2 it returns the access token it used.
func (c *conn) login() (token string, err error) {
	o := c.s.opts
	var cl sasl.Client
	switch o.Auth {
	case modes.AuthPassword:
		switch {
		case c.cl.supportsAuth(sasl.Plain):
			cl = sasl.NewPlainClient("", o.Username, o.Password)
		case c.cl.supportsAuth(sasl.Login):
			cl = &login{user: o.Username, pass: o.Password}
		default:
			return "", fmt.Errorf("smtp: %s offers neither AUTH PLAIN nor LOGIN", o.Addr)
		}
	case modes.AuthXOAUTH2, modes.AuthOAuthBearer:
		mech := "XOAUTH2"
		if o.Auth == modes.AuthOAuthBearer {
			mech = sasl.OAuthBearer
		}
		if !c.cl.supportsAuth(mech) {
			return "", fmt.Errorf("smtp: %s does not offer AUTH %s", o.Addr, mech)
		}
		tok, err := o.TokenSource.Token()
		if err != nil {
			return "", fmt.Errorf("smtp: get an OAuth2 token for %s: %w", o.Username, err)
		}
		token = tok.AccessToken
		if mech == "XOAUTH2" {
			cl = &xoauth2{user: o.Username, token: token}
		} else {
			cl = sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: o.Username, Token: token, Host: c.s.host, Port: atoi(c.s.port)})
		}
	}
	if err := c.cl.authenticate(cl); err != nil {
		return token, fmt.Errorf("smtp: log in as %q to %s: %w", o.Username, o.Addr, err)
	}
	return token, nil
}

func atoi(s string) int {
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0
		}
		n = n*10 + int(r-'0')
	}
	return n
}

// xoauth2 is the XOAUTH2 client go-sasl lacks.
type xoauth2 struct{ user, token string }

func (x *xoauth2) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}

// Next answers the error challenge (JSON) with an empty response, after
// which the server sends its failure reply (RFC 7628 3.2.3).
func (x *xoauth2) Next([]byte) ([]byte, error) { return []byte{}, nil }

// login is AUTH LOGIN without an initial response, answering the
// server's "Username:" and "Password:" challenges: go-sasl's sends the
// user name at once and accepts only "Password:", which servers that
// want the two steps refuse.
type login struct {
	user, pass string
	step       int
}

func (l *login) Start() (string, []byte, error) { return sasl.Login, nil, nil }

func (l *login) Next(challenge []byte) ([]byte, error) {
	l.step++
	ch := strings.ToLower(string(challenge))
	switch {
	case strings.HasPrefix(ch, "user") || (l.step == 1 && !strings.HasPrefix(ch, "pass")):
		return []byte(l.user), nil
	case strings.HasPrefix(ch, "pass") || l.step == 2:
		return []byte(l.pass), nil
	}
	return nil, fmt.Errorf("smtp: AUTH LOGIN: unexpected challenge %q", cut(string(challenge)))
}

// takeIdle returns a kept connection, now watching ctx, or nil.
func (s *Sender) takeIdle(ctx context.Context) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.idle) > 0 {
		ic := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if !ic.timer.Stop() {
			continue // expired: its timer closes it
		}
		c := ic.c
		c.raw.SetDeadline(time.Time{})
		c.stop = context.AfterFunc(ctx, func() { c.raw.Close() })
		return c
	}
	return nil
}

// putIdle keeps c, after a transaction that succeeded, for the next
// one; false if there is no room (the caller closes it). There is room
// for MaxIdle, or for as many as were busy at once lately (see
// Options.KeepIdle).
func (s *Sender) putIdle(c *conn) bool {
	if s.opts.KeepIdle < 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.idle) >= max(s.opts.MaxIdle, s.recentPeak(time.Now())) {
		return false
	}
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
	ic := &idleConn{c: c}
	ic.timer = time.AfterFunc(s.opts.KeepIdle, func() {
		s.mu.Lock()
		if i := slices.Index(s.idle, ic); i >= 0 {
			s.idle = slices.Delete(s.idle, i, i+1)
		}
		s.mu.Unlock()
		c.quit()
	})
	s.idle = append(s.idle, ic)
	return true
}

// Begin logs in (or takes a connection kept logged in since a previous
// transaction) and sends MAIL FROM. When the upstream offers PIPELINING
// (RFC 2920), MAIL FROM goes out with the first RCPT and both replies
// are read together: one upstream round trip fewer per message. A kept connection
// the upstream has closed in the meantime is replaced by a new one:
// nothing was sent on it.
func (s *Sender) Begin(ctx context.Context, from string, opts backends.MailOptions) (backends.Transaction, error) {
	if c := s.takeIdle(ctx); c != nil {
		t, err := s.begin(c, from, opts, true)
		if err == nil {
			return s.count(t), nil
		}
		c.close()
		var se *gosmtp.SMTPError
		if errors.As(err, &se) && se.Code != 421 {
			return nil, fmt.Errorf("smtp: MAIL FROM at %s: %w", s.opts.Addr, err)
		}
	}
	c, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.begin(c, from, opts, false)
	if err != nil {
		c.close()
		return nil, fmt.Errorf("smtp: MAIL FROM at %s: %w", s.opts.Addr, err)
	}
	return s.count(t), nil
}

// begin sends MAIL FROM on c; see Begin.
func (s *Sender) begin(c *conn, from string, opts backends.MailOptions, reused bool) (*tx, error) {
	line, err := c.cl.mailLine(from, opts)
	if err != nil {
		return nil, err
	}
	c.cl.send(line)
	t := &tx{c: c, from: from, opts: opts, reused: reused}
	if c.cl.has("PIPELINING") {
		// MAIL FROM waits in the buffer for the first RCPT: both go in
		// one TLS record. Sent alone, Postfix answers it alone and then
		// holds the RCPT's reply until that is acknowledged (Nagle
		// against delayed ACK: 40 ms a message).
		t.mailPending = true
		return t, nil
	}
	if _, _, err := c.cl.reply(250, c.cl.timeout); err != nil {
		return nil, err
	}
	return t, nil
}

// count counts t's connection as busy until the transaction's Close.
func (s *Sender) count(t *tx) *tx {
	s.mu.Lock()
	s.busy++
	now := time.Now()
	if s.busy >= s.recentPeak(now) {
		s.peak, s.peakAt = s.busy, now
	}
	s.mu.Unlock()
	return t
}

// recentPeak is the most connections busy at once within the last
// KeepIdle, as far as count recorded them; s.mu is held.
func (s *Sender) recentPeak(now time.Time) int {
	if now.Sub(s.peakAt) > s.opts.KeepIdle {
		return s.busy
	}
	return s.peak
}

type tx struct {
	c    *conn
	from string
	opts backends.MailOptions
	// reused: c was kept from an earlier transaction, so a MAIL FROM
	// that fails for the connection's sake is sent again on a new one.
	reused bool
	// mailPending: MAIL FROM's reply is read with the first RCPT's.
	mailPending bool
	mailErr     error // the upstream refused MAIL FROM
	done        bool
	ok          bool // the upstream accepted the message
	closed      bool
}

func (t *tx) Rcpt(ctx context.Context, to string) error {
	if t.mailErr != nil {
		return t.mailErr
	}
	if strings.ContainsAny(to, "\r\n") {
		return errors.New("smtp: a recipient must not contain CR or LF")
	}
	cl := t.c.cl
	cl.send("RCPT TO:<" + to + ">")
	if t.mailPending {
		t.mailPending = false
		if _, _, err := cl.reply(250, cl.timeout); err != nil {
			return t.mailRefused(ctx, to, err)
		}
	}
	if _, _, err := cl.reply(25, cl.timeout); err != nil {
		return fmt.Errorf("smtp: RCPT TO at %s: %w", t.c.s.opts.Addr, err)
	}
	return nil
}

// mailRefused handles a pipelined MAIL FROM's failure, read with the
// first RCPT's reply: on a kept connection that the upstream closed
// meanwhile, MAIL and RCPT are sent again on a new one; otherwise the
// transaction is over, and every later call returns the refusal, which
// wraps backends.ErrSenderRefused.
func (t *tx) mailRefused(ctx context.Context, to string, err error) error {
	s := t.c.s
	var se *gosmtp.SMTPError
	isReply := errors.As(err, &se)
	t.c.close()
	if t.reused && (!isReply || se.Code == 421) {
		c, cerr := s.connect(ctx)
		if cerr != nil {
			t.mailErr = cerr
			return cerr
		}
		nt, berr := s.begin(c, t.from, t.opts, false)
		if berr != nil {
			c.close()
			t.mailErr = fmt.Errorf("smtp: MAIL FROM at %s: %w: %w", s.opts.Addr, backends.ErrSenderRefused, berr)
			return t.mailErr
		}
		t.c, t.reused, t.mailPending = c, false, nt.mailPending
		return t.Rcpt(ctx, to)
	}
	t.mailErr = fmt.Errorf("smtp: MAIL FROM at %s: %w: %w", s.opts.Addr, backends.ErrSenderRefused, err)
	return t.mailErr
}

// Data sends the message from r without Bcc/Resent-Bcc header fields:
// when the upstream offers CHUNKING and the message is at most bdatMax,
// as "BDAT n LAST" (RFC 3030), which needs no round trip for DATA's 354;
// otherwise into DATA, streamed. A read error from r, or a cancelled
// ctx, closes the connection before the message is complete (no BDAT,
// no final dot): the upstream drops it.
func (t *tx) Data(ctx context.Context, r io.Reader) (string, error) {
	t.done = true
	if t.mailErr != nil {
		return "", t.mailErr
	}
	var rerr error
	bcc := newBccFilter(&errReader{r: r, err: &rerr})
	defer bcc.release()
	var src io.Reader = bcc
	abort := func(err error) (string, error) {
		t.c.close()
		if rerr != nil {
			return "", fmt.Errorf("smtp: message from the client: %w", rerr)
		}
		if err == nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("smtp: sending the message to %s: %w", t.c.s.opts.Addr, err)
	}
	if t.c.cl.has("CHUNKING") {
		buf := bdatPool.Get().(*[]byte)
		defer bdatPool.Put(buf)
		n, err := io.ReadFull(src, *buf)
		switch {
		case rerr != nil || ctx.Err() != nil:
			return abort(err)
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return t.bdat((*buf)[:n])
		case err != nil:
			return abort(err)
		}
		src = io.MultiReader(bytes.NewReader((*buf)[:n]), src)
	}
	return t.data(ctx, src, abort)
}

// bdat sends msg, the whole message, as one BDAT LAST chunk.
func (t *tx) bdat(msg []byte) (string, error) {
	cl := t.c.cl
	cl.send("BDAT " + strconv.FormatInt(crlfLen(msg), 10) + " LAST")
	lw := newLineWriter(cl.w, false)
	t.c.raw.SetWriteDeadline(time.Now().Add(cl.timeout))
	lw.Write(msg)
	lw.finish()
	cl.traceOut("<message " + strconv.Itoa(len(msg)) + " octets>")
	return t.final()
}

// data streams src into DATA with its dot lines stuffed.
func (t *tx) data(ctx context.Context, src io.Reader, abort func(error) (string, error)) (string, error) {
	cl := t.c.cl
	if _, _, err := cl.cmd(354, "DATA"); err != nil {
		t.c.close()
		return "", fmt.Errorf("smtp: DATA at %s: %w", t.c.s.opts.Addr, err)
	}
	lw := newLineWriter(&deadlineWriter{w: cl.w, conn: t.c.raw, idle: cl.timeout}, true)
	_, err := io.Copy(lw, src)
	if err == nil {
		err = lw.finish()
	}
	if err != nil || ctx.Err() != nil {
		return abort(err)
	}
	cl.traceOut("<message " + strconv.FormatInt(lw.n, 10) + " octets>")
	cl.send(".")
	return t.final()
}

// final reads the upstream's reply to the whole message.
func (t *tx) final() (string, error) {
	_, reply, err := t.c.cl.reply(250, finalReplyTimeout)
	if err != nil {
		t.c.close()
		return "", fmt.Errorf("smtp: message at %s: %w", t.c.s.opts.Addr, err)
	}
	t.ok = true
	return reply, nil
}

// Close keeps the connection for the next transaction after one that
// succeeded, or quits politely; after anything else it just closes the
// connection, which also aborts an open transaction.
func (t *tx) Close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	s := t.c.s
	s.mu.Lock()
	s.busy--
	s.mu.Unlock()
	switch {
	case !t.ok:
		t.c.close()
	case !s.putIdle(t.c):
		t.c.quit()
	}
	return nil
}

// errReader remembers the error of the client-side reader, to tell it
// from upstream write errors.
type errReader struct {
	r   io.Reader
	err *error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		*e.err = err
	}
	return n, err
}

// deadlineWriter bounds each write to the upstream (go-smtp sets no
// deadline while the message is written).
type deadlineWriter struct {
	w    io.Writer
	conn net.Conn
	idle time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.conn.SetWriteDeadline(time.Now().Add(d.idle))
	return d.w.Write(p)
}
