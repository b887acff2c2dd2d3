package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// logoutTimeout bounds LOGOUT at Close.
const logoutTimeout = 5 * time.Second

// deadlineConn replaces go-imap's fixed deadlines (30 s per response and 5
// minutes per literal, set once, so a big message sent to a slow POP3
// client would fail) with an inactivity timeout: while a command is
// outstanding (busy), every Read and Write must make progress within
// timeout; while idle, reads wait without limit, as go-imap's do. abort
// makes every pending and later Read and Write fail at once; it is how a
// cancelled context stops a command.
type deadlineConn struct {
	net.Conn
	mu      sync.Mutex
	timeout time.Duration
	busy    bool
	aborted bool
}

var errAborted = errors.New("connection aborted")

func (d *deadlineConn) Read(p []byte) (int, error) {
	d.mu.Lock()
	if d.aborted {
		d.mu.Unlock()
		return 0, errAborted
	}
	if d.busy {
		d.Conn.SetReadDeadline(time.Now().Add(d.timeout))
	} else {
		d.Conn.SetReadDeadline(time.Time{})
	}
	d.mu.Unlock()
	n, err := d.Conn.Read(p)
	if err != nil {
		d.fail(err)
	}
	return n, err
}

// fail makes a timeout final: go-imap reads again after an error, and
// each read would wait the whole timeout again.
func (d *deadlineConn) fail(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		d.abort()
	}
}

func (d *deadlineConn) Write(p []byte) (int, error) {
	d.mu.Lock()
	if d.aborted {
		d.mu.Unlock()
		return 0, errAborted
	}
	d.Conn.SetWriteDeadline(time.Now().Add(d.timeout))
	d.mu.Unlock()
	n, err := d.Conn.Write(p)
	if err != nil {
		d.fail(err)
	}
	return n, err
}

// The deadlines of go-imap and crypto/tls are ignored: see deadlineConn.
func (d *deadlineConn) SetDeadline(time.Time) error      { return nil }
func (d *deadlineConn) SetReadDeadline(time.Time) error  { return nil }
func (d *deadlineConn) SetWriteDeadline(time.Time) error { return nil }

// setBusy starts (true) or ends the inactivity timeout, also for a Read
// already waiting.
func (d *deadlineConn) setBusy(busy bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.busy = busy
	if d.aborted {
		return
	}
	if busy {
		d.Conn.SetReadDeadline(time.Now().Add(d.timeout))
	} else {
		d.Conn.SetReadDeadline(time.Time{})
	}
}

func (d *deadlineConn) setTimeout(t time.Duration) {
	d.mu.Lock()
	d.timeout = t
	d.mu.Unlock()
}

func (d *deadlineConn) abort() {
	d.mu.Lock()
	d.aborted = true
	d.Conn.SetDeadline(time.Unix(1, 0))
	d.mu.Unlock()
}

// session is one IMAP connection with its folder selected, dialled again
// when the server dropped it.
type session struct {
	b          *Backend
	user, pass string
	log        zerolog.Logger
	checkOnly  bool // Check: EXAMINE, and no login for passthrough

	c      *imapclient.Client
	dc     *deadlineConn
	caps   imap.CapSet
	sel    *imap.SelectData // from the last SELECT
	broken bool             // c must not be used again

	// validity is the UIDVALIDITY of the session's snapshot, once taken;
	// a reconnection that finds another one fails.
	validity uint32

	// ahead is a FETCH sent before it was asked for (see fetchAhead);
	// every other use of the connection first cancels it.
	ahead *ahead
	// streak counts the messages in a row handed out from FETCHes sent
	// ahead; the next FETCH ahead asks for more messages the longer it is.
	streak int
	// noBatch: the server sent a body section before the UID, so a FETCH
	// ahead asks for one message only (its replies cannot be told apart).
	noBatch bool
}

// ahead is an outstanding UID FETCH (UID BODY.PEEK[]) of one or more
// messages, sent before the client asked for them; its replies are read
// as RETRs ask for the messages, in UID order.
type ahead struct {
	uids []imap.UID // requested and not handed out yet, ascending
	fc   *imapclient.FetchCommand
	end  func(error) error
	// pend is a reply read up to its body section and not used yet.
	pend *aheadReply
}

// aheadReply is one message's reply: its UID and the literal of its body
// section (nil for NIL: expunged meanwhile).
type aheadReply struct {
	uid imap.UID
	lit imap.LiteralReader
}

// cancelAhead reads and drops the replies of a FETCH sent ahead, so that
// the next command's reply can be read.
func (s *session) cancelAhead() {
	if a := s.ahead; a != nil {
		s.ahead = nil
		s.streak = 0
		a.end(a.fc.Close())
	}
}

// tlsConfig returns the client TLS configuration for the server.
func (b *Backend) tlsConfig() *tls.Config {
	var cfg *tls.Config
	if b.opts.TLSConfig != nil {
		cfg = b.opts.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = b.host
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	return cfg
}

// connect dials, starts TLS, authenticates and selects the folder.
func (s *session) connect(ctx context.Context) (err error) {
	b := s.b
	dctx, cancel := context.WithTimeout(ctx, b.opts.DialTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", b.opts.Addr)
	if err != nil {
		return b.errorf(proxy.ErrTemporary, "connect to", err)
	}
	dc := &deadlineConn{Conn: raw, timeout: b.opts.CommandTimeout, busy: true}
	stop := context.AfterFunc(ctx, dc.abort)
	var c *imapclient.Client
	defer func() {
		if !stop() && err == nil {
			err = b.errorf(proxy.ErrTemporary, "connect to", ctx.Err())
		}
		if err != nil {
			if c != nil {
				c.Close()
			} else {
				dc.Close()
			}
		}
	}()

	switch b.opts.TLS {
	case modes.TLSImplicit:
		cfg := b.tlsConfig()
		if cfg.NextProtos == nil {
			cfg.NextProtos = []string{"imap"}
		}
		tc := tls.Client(dc, cfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			return b.tlsError(err)
		}
		c = imapclient.New(newTraceConn(tc, s.log), nil)
	case modes.TLSStartTLS:
		tc, err := s.startTLS(dctx, dc)
		if err != nil {
			return err
		}
		// go-imap reads a greeting first: the one before STARTTLS was
		// read already, so it gets a stand-in, and asks CAPABILITY again.
		tr := newTraceConn(tc, s.log)
		c = imapclient.New(greetingConn{Conn: tr, r: io.MultiReader(strings.NewReader(startTLSGreeting), tr)}, nil)
	default:
		c = imapclient.New(newTraceConn(dc, s.log), nil)
	}
	if err := c.WaitGreeting(); err != nil {
		return b.errorf(proxy.ErrTemporary, "greeting from", err)
	}
	if c.State() != imap.ConnStateAuthenticated {
		if s.checkOnly && b.opts.Auth == modes.AuthPassthrough {
			s.c, s.dc = c, dc
			return nil
		}
		if err := s.authenticate(c); err != nil {
			return err
		}
	}
	caps := c.Caps()
	if caps == nil {
		return b.errorf(proxy.ErrTemporary, "capabilities of", errors.New("no CAPABILITY reply"))
	}
	sel, err := c.Select(b.opts.Folder, &imap.SelectOptions{ReadOnly: b.readOnly() || s.checkOnly}).Wait()
	if err != nil {
		// A refusal is most likely a folder that does not exist (Dovecot
		// sends no NONEXISTENT code) or may not be read: the operator's.
		sentinel := proxy.ErrTemporary
		var ie *imap.Error
		if errors.As(err, &ie) && !temporaryCode(ie.Code) {
			sentinel = proxy.ErrPermanent
		}
		return b.errorf(sentinel, fmt.Sprintf("select %q at", b.opts.Folder), err)
	}
	if s.validity != 0 && sel.UIDValidity != s.validity {
		s.log.Warn().Uint32("uidvalidity", s.validity).Uint32("new_uidvalidity", sel.UIDValidity).
			Msg("UIDVALIDITY changed during the session; the session's message list is void")
		return b.errorf(proxy.ErrTemporary, "reselect at", fmt.Errorf("UIDVALIDITY changed from %d to %d during the session", s.validity, sel.UIDValidity))
	}
	dc.setBusy(false)
	s.c, s.dc, s.caps, s.sel, s.broken = c, dc, caps, sel, false
	s.log.Debug().Str("folder", b.opts.Folder).Uint32("exists", sel.NumMessages).
		Uint32("uidvalidity", sel.UIDValidity).Uint32("uidnext", uint32(sel.UIDNext)).Msg("selected")
	return nil
}

// startTLSGreeting is what go-imap reads as the greeting after STARTTLS.
const startTLSGreeting = "* OK popbridge: TLS started with STARTTLS\r\n"

// greetingConn reads from r, then from the connection.
type greetingConn struct {
	net.Conn
	r io.Reader
}

func (g greetingConn) Read(p []byte) (int, error) { return g.r.Read(p) }

// startTLS reads the greeting, sends STARTTLS (RFC 9051 §6.2.1) and
// starts TLS, before go-imap takes the connection, so that what follows
// can be traced above TLS. The greeting and the reply are read octet by
// octet: whatever the server sends after its OK goes to the TLS
// handshake, never read as plaintext (CVE-2011-0411). PREAUTH is refused
// (RFC 9051 §7.1.4).
func (s *session) startTLS(ctx context.Context, dc *deadlineConn) (*tls.Conn, error) {
	b := s.b
	tr := newTraceConn(dc, s.log)
	g, err := readRawLine(tr)
	if err != nil {
		return nil, b.errorf(proxy.ErrTemporary, "greeting from", err)
	}
	if !hasPrefixFold(g, "* OK") {
		return nil, b.errorf(proxy.ErrTemporary, "greeting from", fmt.Errorf("greeting %q instead of * OK before STARTTLS", clipLine(g)))
	}
	if _, err := io.WriteString(tr, "S0 STARTTLS\r\n"); err != nil {
		return nil, b.errorf(proxy.ErrTemporary, "send STARTTLS to", err)
	}
	for {
		l, err := readRawLine(tr)
		if err != nil {
			return nil, b.errorf(proxy.ErrTemporary, "STARTTLS with", err)
		}
		if strings.HasPrefix(l, "* ") {
			continue
		}
		if hasPrefixFold(l, "S0 OK") {
			break
		}
		return nil, b.errorf(proxy.ErrPermanent, "STARTTLS with", fmt.Errorf("server answered %q: it does not offer STARTTLS (use tls: implicit)", clipLine(l)))
	}
	tc := tls.Client(dc, b.tlsConfig())
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, b.tlsError(err)
	}
	return tc, nil
}

// readRawLine reads one line octet by octet, without its line end.
func readRawLine(r io.Reader) (string, error) {
	var line []byte
	var c [1]byte
	for len(line) < 8192 {
		if _, err := io.ReadFull(r, c[:]); err != nil {
			return "", err
		}
		if c[0] == '\n' {
			return strings.TrimSuffix(string(line), "\r"), nil
		}
		line = append(line, c[0])
	}
	return "", errors.New("line too long")
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func clipLine(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// tlsError reports a certificate the client rejects as permanent (the
// operator must fix the configuration), other TLS failures as temporary.
func (b *Backend) tlsError(err error) error {
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		return b.errorf(proxy.ErrPermanent, "verify the certificate of", err)
	}
	return b.errorf(proxy.ErrTemporary, "start TLS with", err)
}

// authenticate logs in with the configured mechanism.
func (s *session) authenticate(c *imapclient.Client) error {
	b := s.b
	caps := c.Caps()
	var err error
	switch b.opts.Auth {
	case modes.AuthXOAUTH2, modes.AuthOAuthBearer:
		mech := "XOAUTH2"
		if b.opts.Auth == modes.AuthOAuthBearer {
			mech = sasl.OAuthBearer
		}
		if !caps.Has(imap.AuthCap(mech)) {
			return b.errorf(proxy.ErrPermanent, "log in to", fmt.Errorf("server does not offer AUTH=%s", mech))
		}
		// A rejected token is replaced and tried once more, when the
		// source can (oauth.WithToken); the connection stays usable after
		// a NO.
		err = oauth.WithToken(b.opts.TokenSource, func(tok *oauth2.Token) (bool, error) {
			var err error
			if mech == "XOAUTH2" {
				err = c.Authenticate(&xoauth2Client{user: s.user, token: tok.AccessToken})
			} else {
				err = c.Authenticate(oauthBearerClient{sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{
					Username: s.user, Token: tok.AccessToken, Host: b.host, Port: b.port,
				})})
			}
			return credentialsRejected(err), err
		})
		var (
			terr *oauth.TokenError
			rerr *oauth.RefusedError
		)
		switch {
		case errors.As(err, &terr):
			sentinel := proxy.ErrTemporary
			errors.As(terr.Err, &sentinel) // the token source's own reply wins (SYS/PERM: run popbridge auth)
			return b.errorf(sentinel, "get an OAuth2 token for", terr.Err)
		case errors.As(err, &rerr):
			sentinel := proxy.ErrPermanent
			errors.As(rerr.Err, &sentinel)
			return b.errorf(sentinel, fmt.Sprintf("log in as %q to", s.user), fmt.Errorf("%w (%v)", rerr.Err, rerr.Last))
		}
	default:
		switch {
		case caps.Has(imap.AuthCap(sasl.Plain)):
			err = c.Authenticate(sasl.NewPlainClient("", s.user, s.pass))
		case caps.Has(imap.CapLoginDisabled):
			return b.errorf(proxy.ErrPermanent, "log in to", errors.New("server has LOGINDISABLED and no AUTH=PLAIN (use tls)"))
		default:
			err = c.Login(s.user, s.pass).Wait()
		}
	}
	if err == nil {
		return nil
	}
	sentinel := proxy.ErrTemporary
	if credentialsRejected(err) {
		sentinel = proxy.ErrAuthFailed
	}
	return b.errorf(sentinel, fmt.Sprintf("log in as %q to", s.user), err)
}

// credentialsRejected reports whether a login failed on the credentials:
// a tagged NO or BAD, unless its code says the fault is the server's.
func credentialsRejected(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie) && !temporaryCode(ie.Code)
}

// temporaryCode reports whether a NO with this response code (RFC 5530)
// blames a passing condition of the server.
func temporaryCode(code imap.ResponseCode) bool {
	switch code {
	case imap.ResponseCodeUnavailable, imap.ResponseCodeServerBug, imap.ResponseCodeLimit,
		imap.ResponseCodeInUse, imap.ResponseCodeContactAdmin:
		return true
	}
	return false
}

// dead reports whether the connection must be dialled again.
func (s *session) dead() bool {
	if s.c == nil || s.broken {
		return true
	}
	select {
	case <-s.c.Closed():
		return true
	default:
		return false
	}
}

// drop closes the connection without LOGOUT.
func (s *session) drop() {
	if s.c != nil {
		s.c.Close()
		s.c = nil
	}
}

// ensure dials again if the connection is gone.
func (s *session) ensure(ctx context.Context) (fresh bool, err error) {
	s.cancelAhead()
	if !s.dead() {
		return false, nil
	}
	s.drop()
	s.log.Info().Msg("IMAP connection lost; connecting again")
	return true, s.connect(ctx)
}

// begin marks a command outstanding on the connection and makes ctx
// abort it. The caller must call end with the command's result; end
// returns it, or the context's error if ctx aborted the command.
func (s *session) begin(ctx context.Context) (c *imapclient.Client, end func(error) error) {
	dc := s.dc
	dc.setBusy(true)
	stop := context.AfterFunc(ctx, dc.abort)
	return s.c, func(err error) error {
		if !stop() {
			s.broken = true
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", ctx.Err(), err)
			}
		}
		if err != nil && connFailure(err) {
			s.broken = true
		}
		dc.setBusy(false)
		return err
	}
}

// run runs f on a live connection. An idempotent f that fails because a
// reused connection broke is run once more on a new one.
func (s *session) run(ctx context.Context, idempotent bool, f func(*imapclient.Client) error) error {
	fresh, err := s.ensure(ctx)
	if err != nil {
		return err
	}
	c, end := s.begin(ctx)
	err = end(f(c))
	if err != nil && idempotent && !fresh && s.broken && ctx.Err() == nil {
		s.log.Info().Err(err).Msg("IMAP connection failed; retrying once on a new one")
		if _, err := s.ensure(ctx); err != nil {
			return err
		}
		c, end = s.begin(ctx)
		err = end(f(c))
	}
	return err
}

// connFailure reports whether err broke the connection, rather than being
// the server's answer to a command.
func connFailure(err error) bool {
	var ie *imap.Error
	return !errors.As(err, &ie) && !errors.Is(err, proxy.ErrNoMessage)
}

// logout sends LOGOUT, briefly, and closes the connection.
func (s *session) logout() error {
	if s.c == nil {
		return nil
	}
	defer s.drop()
	s.cancelAhead()
	if s.dead() {
		return nil
	}
	s.dc.setTimeout(min(logoutTimeout, s.b.opts.CommandTimeout))
	s.dc.setBusy(true)
	err := s.c.Logout().Wait()
	s.dc.setBusy(false)
	if err != nil {
		return s.b.errorf(proxy.ErrTemporary, "log out of", err)
	}
	return nil
}
