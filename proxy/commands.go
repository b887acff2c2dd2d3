package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// dispatch runs one command line. It returns nil to go on reading, or an
// error that ends the session (errQuit, errTooManyBad, or a failure after
// which the connection must close, such as a stream that broke after +OK).
func (c *conn) dispatch(line string) error {
	if strings.IndexByte(line, 0) >= 0 {
		return c.badCommand("NUL octet in command.")
	}
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	if verb != "PASS" {
		arg = strings.TrimRight(arg, " \t")
		if verb != "USER" {
			c.user = "" // PASS must follow USER directly (RFC 1939 §7)
		}
	}

	if c.state == stateAuth {
		switch verb {
		case "CAPA":
			return c.cmdCAPA(arg)
		case "USER":
			return c.cmdUSER(arg)
		case "PASS":
			return c.cmdPASS(arg)
		case "AUTH":
			return c.cmdAUTH(arg)
		case "STLS":
			return c.cmdSTLS(arg)
		case "QUIT":
			if arg != "" {
				return c.badCommand("QUIT takes no argument.")
			}
			c.reply("+OK Logging out.")
			return errQuit
		case "APOP":
			return c.badCommand("APOP is not supported.")
		case "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "LAST":
			return c.badCommand("Not logged in.")
		}
		return c.badCommand("Unknown command.")
	}

	switch verb {
	case "STAT":
		return c.noArg(arg, c.cmdSTAT)
	case "LIST":
		return c.cmdLIST(arg)
	case "UIDL":
		return c.cmdUIDL(arg)
	case "RETR":
		return c.cmdRETR(arg)
	case "TOP":
		return c.cmdTOP(arg)
	case "DELE":
		return c.cmdDELE(arg)
	case "RSET":
		return c.noArg(arg, c.cmdRSET)
	case "NOOP":
		return c.noArg(arg, func() error { c.reply("+OK"); return nil })
	case "QUIT":
		return c.noArg(arg, c.cmdQUIT)
	case "CAPA":
		return c.cmdCAPA(arg)
	case "LAST":
		// Obsolete since RFC 1939; fetchmail falls back to UIDL on -ERR.
		c.reply("-ERR LAST is not supported; use UIDL.")
		return nil
	case "USER", "PASS", "AUTH", "APOP", "STLS":
		return c.badCommand("Already logged in.")
	}
	return c.badCommand("Unknown command.")
}

func (c *conn) noArg(arg string, f func() error) error {
	if arg != "" {
		return c.badCommand("Unexpected argument.")
	}
	return f()
}

// cmdCAPA lists the capabilities that work in this state on this
// connection (RFC 2449 §5).
func (c *conn) cmdCAPA(arg string) error {
	if arg != "" {
		return c.badCommand("Unexpected argument.")
	}
	c.reply("+OK Capability list follows")
	c.reply("TOP")
	c.reply("UIDL")
	c.reply("RESP-CODES")
	c.reply("AUTH-RESP-CODE")
	c.reply("PIPELINING")
	if c.state == stateAuth {
		if c.cleartextOK() {
			c.reply("USER")
			c.reply("SASL PLAIN")
		}
		if c.tlsCfg != nil && !c.isTLS {
			c.reply("STLS")
		}
	}
	c.reply(".")
	return nil
}

func (c *conn) cmdUSER(arg string) error {
	if !c.cleartextOK() {
		c.reply(c.cleartextRefusal())
		return nil
	}
	if arg == "" {
		return c.badCommand("USER needs a name.")
	}
	// Answer the same whether or not the user exists (POP3.md B.14).
	c.user = arg
	c.reply("+OK")
	return nil
}

// cmdPASS takes the rest of the line, spaces included, as the password
// (RFC 1939 §7 allows a password with spaces).
func (c *conn) cmdPASS(arg string) error {
	if !c.cleartextOK() {
		c.reply(c.cleartextRefusal())
		return nil
	}
	if c.user == "" {
		return c.badCommand("PASS must follow USER.")
	}
	user := c.user
	c.user = ""
	return c.login(user, arg)
}

// cmdAUTH implements RFC 5034 with the PLAIN mechanism (RFC 4616).
func (c *conn) cmdAUTH(arg string) error {
	if arg == "" {
		// List the mechanisms, as Dovecot does for Outlook.
		c.reply("+OK")
		if c.cleartextOK() {
			c.reply("PLAIN")
		}
		c.reply(".")
		return nil
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	if !strings.EqualFold(mech, "PLAIN") {
		c.reply("-ERR Unsupported authentication mechanism.")
		return nil
	}
	if !c.cleartextOK() {
		c.reply(c.cleartextRefusal())
		return nil
	}
	if hasIR && strings.Contains(ir, " ") {
		return c.badCommand("Too many arguments.")
	}
	if !hasIR {
		c.reply("+ ")
		if err := c.bw.Flush(); err != nil {
			return err
		}
		line, err := c.readLine(maxSASLLine, c.srv.authIdleTimeout())
		switch err {
		case nil:
			c.traceIn(redactSASL(line))
		case errLineTooLong:
			c.traceIn("<line too long>")
			c.reply("-ERR [AUTH] Authentication response too long.")
			return nil
		case errJunk:
			c.traceIn("<line too long, no line end>")
			c.replyNow("-ERR Line too long; closing the connection.")
			c.lingerClose()
			return err
		default:
			return err
		}
		ir = line
	}
	if ir == "*" {
		c.reply("-ERR Authentication cancelled.")
		return nil
	}
	var resp []byte
	if ir != "=" {
		var err error
		if resp, err = base64.StdEncoding.Strict().DecodeString(ir); err != nil {
			return c.badCommand("[AUTH] Invalid base64 data in authentication response.")
		}
	}
	// "=" (empty) and anything but authzid NUL authcid NUL passwd is a
	// rejected response (RFC 4616 §2), with AUTH-RESP-CODE's [AUTH].
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 {
		return c.badCommand("[AUTH] Invalid PLAIN authentication response.")
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if authz != "" && authz != user {
		return c.authFailed(user, errors.New("authorization identity differs from authentication identity"))
	}
	return c.login(user, pass)
}

// cmdSTLS starts TLS (RFC 2595 §4). Whatever the client sent after STLS
// before the handshake is discarded, and the session starts over in the
// AUTHORIZATION state with nothing remembered.
func (c *conn) cmdSTLS(arg string) error {
	if c.isTLS {
		return c.badCommand("Command not permitted when TLS active.")
	}
	if c.tlsCfg == nil {
		return c.badCommand("STLS is not available.")
	}
	if arg != "" {
		return c.badCommand("Unexpected argument.")
	}
	c.reply("+OK Begin TLS negotiation now.")
	if err := c.bw.Flush(); err != nil {
		return err
	}
	if n := c.br.Buffered(); n > 0 {
		c.log.Warn().Int("octets", n).Msg("discarded plaintext sent after STLS")
	}
	c.rwc.SetReadDeadline(time.Time{})
	if err := c.handshake(); err != nil {
		return fmt.Errorf("tls handshake failed: %w", err)
	}
	c.setIO()
	c.user = ""
	c.bad = 0
	return nil
}

// login authenticates, locks the maildrop and takes the snapshot.
func (c *conn) login(user, pass string) error {
	ctx, cancel := context.WithTimeout(c.ctx, c.srv.backendTimeout())
	defer cancel()
	obs, _ := c.srv.Observer.(BackendObserver)
	var call *loginCall
	if obs != nil {
		call = &loginCall{start: time.Now()}
		ctx = context.WithValue(ctx, loginCallKey{}, call)
	}
	mbox, err := c.srv.Backend.Login(ctx, user, pass)
	if err != nil {
		if call != nil && call.account != "" {
			obs.BackendCall(BackendCall{Op: OpLogin, Account: call.account, Duration: time.Since(call.start), Err: err})
		}
		if errors.Is(err, ErrAuthFailed) {
			return c.authFailed(user, err)
		}
		pe := publicError(err)
		c.log.Warn().Str("user", user).Err(err).Msg("login failed")
		c.reply(pe.wire())
		return nil
	}
	key := user
	if m, ok := find[MaildropIDer](mbox); ok {
		key = m.MaildropID()
	}
	if call != nil {
		obs.BackendCall(BackendCall{Op: OpLogin, Account: key, Duration: time.Since(call.start)})
	}
	lock, err := c.srv.locker.Lock(ctx, key)
	if err != nil {
		if err := mbox.Close(); err != nil {
			c.log.Warn().Err(err).Msg("closing mailbox failed")
		}
		if errors.Is(err, ErrInUse) {
			c.log.Info().Str("user", user).Msg("maildrop in use")
			c.reply(ErrInUse.wire())
			return nil
		}
		c.log.Error().Str("user", user).Err(err).Msg("locking maildrop failed")
		c.reply(publicError(err).wire())
		return nil
	}
	c.mbox, c.lockKey, c.lock = mbox, key, lock
	if lost := lock.Lost(); lost != nil {
		c.lockStop = make(chan struct{})
		go c.watchLock(lost, c.lockStop)
	}
	start := time.Now()
	list, err := mbox.List(ctx)
	c.backendCall(OpList, start, err)
	if err == nil {
		err = checkList(list)
	}
	if err != nil {
		c.log.Error().Str("user", user).Err(err).Msg("listing maildrop failed")
		c.releaseMailbox()
		c.reply(publicError(err).wire())
		return nil
	}
	c.msgs = make([]message, len(list))
	for i, m := range list {
		c.msgs[i].MessageInfo = m
	}
	c.state, c.bad, c.loggedIn = stateTransaction, 0, user
	c.srv.penalty.forget(c.addr)
	c.log = c.log.With().Str("user", user).Logger()
	c.log.Info().Int("messages", len(list)).Bool("tls", c.isTLS).Msg("logged in")
	c.reply("+OK Logged in.")
	return nil
}

// checkList rejects a snapshot that would break clients: invalid or
// duplicate UIDs, negative sizes.
func checkList(list []MessageInfo) error {
	seen := make(map[string]struct{}, len(list))
	for i, m := range list {
		if !ValidUID(m.UID) {
			return fmt.Errorf("message %d: invalid uid %q", i+1, m.UID)
		}
		if _, dup := seen[m.UID]; dup {
			return fmt.Errorf("message %d: duplicate uid %q", i+1, m.UID)
		}
		seen[m.UID] = struct{}{}
		if m.Size < 0 {
			return fmt.Errorf("message %d: negative size", i+1)
		}
	}
	return nil
}

// authFailed answers a failed login after the per-address delay. Its log
// line is what fail2ban matches (docs/operations.md): keep its level,
// message and the client and user fields as they are.
func (c *conn) authFailed(user string, err error) error {
	c.log.Warn().Str("client", c.addr.String()).Str("user", user).Err(err).Msg("authentication failed")
	c.authFailures++
	if o := c.srv.Observer; o != nil {
		o.AuthFailure()
	}
	var d time.Duration
	if !inNetworks(c.addr, c.srv.TrustedNetworks) {
		d = c.srv.penalty.fail(c.addr, c.srv.authFailureDelay(), c.srv.maxAuthFailureDelay())
	}
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.srv.shutdownCh:
			t.Stop()
		case <-c.ctx.Done():
			t.Stop()
		}
	}
	c.reply(ErrAuthFailed.wire())
	return nil
}

func (e *Error) wire() string {
	if e.Code == CodeNone {
		return "-ERR " + e.Text
	}
	return "-ERR [" + string(e.Code) + "] " + e.Text
}

func (c *conn) cmdSTAT() error {
	n, size := 0, int64(0)
	for _, m := range c.msgs {
		if !m.deleted {
			n++
			size += m.Size
		}
	}
	c.reply(fmt.Sprintf("+OK %d %d", n, size))
	return nil
}

func (c *conn) cmdLIST(arg string) error {
	return c.listing(arg, "scan listing", func(b []byte, m *message) []byte { return strconv.AppendInt(b, m.Size, 10) })
}

func (c *conn) cmdUIDL(arg string) error {
	return c.listing(arg, "unique-id listing", func(b []byte, m *message) []byte { return append(b, m.UID...) })
}

// listing answers LIST or UIDL (RFC 1939 §5, §7): "n field" for message
// arg, or a multi-line listing of every message not marked deleted.
func (c *conn) listing(arg, what string, field func([]byte, *message) []byte) error {
	if arg != "" {
		m, n, msg := c.parseMsgNum(arg)
		if m == nil {
			return c.msgNumError(msg)
		}
		c.reply("+OK " + strconv.Itoa(n) + " " + string(field(nil, m)))
		return nil
	}
	c.reply("+OK " + what + " follows")
	// One reused buffer for the lines: a listing may have 100,000.
	var line []byte
	for i := range c.msgs {
		if m := &c.msgs[i]; !m.deleted {
			line = strconv.AppendInt(line[:0], int64(i+1), 10)
			line = append(field(append(line, ' '), m), '\r', '\n')
			c.bw.Write(line)
		}
	}
	c.reply(".")
	return nil
}

// msgNumError answers a bad message-number argument. Syntax errors count
// as bad commands; a missing or deleted message does not.
func (c *conn) msgNumError(msg string) error {
	switch msg {
	case "No such message.", "Message is deleted.":
		c.reply("-ERR " + msg)
		return nil
	}
	return c.badCommand(msg)
}

func (c *conn) cmdDELE(arg string) error {
	m, n, msg := c.parseMsgNum(arg)
	if m == nil {
		return c.msgNumError(msg)
	}
	m.deleted = true
	c.reply(fmt.Sprintf("+OK Message %d deleted.", n))
	return nil
}

func (c *conn) cmdRSET() error {
	for i := range c.msgs {
		c.msgs[i].deleted = false
	}
	c.reply(fmt.Sprintf("+OK %d messages.", len(c.msgs)))
	return nil
}

func (c *conn) cmdRETR(arg string) error {
	m, _, msg := c.parseMsgNum(arg)
	if m == nil {
		return c.msgNumError(msg)
	}
	return c.send(m, -1)
}

// cmdTOP sends the header, the blank line and k lines of the body (RFC
// 1939 §7). A k beyond the body sends the whole message.
func (c *conn) cmdTOP(arg string) error {
	num, ks, ok := strings.Cut(arg, " ")
	if !ok || ks == "" {
		return c.badCommand("TOP needs a message number and a line count.")
	}
	m, _, msg := c.parseMsgNum(num)
	if m == nil {
		return c.msgNumError(msg)
	}
	k := 0
	for i := 0; i < len(ks); i++ {
		if ks[i] < '0' || ks[i] > '9' {
			return c.badCommand("Invalid line count.")
		}
		if k < 1<<30 {
			k = k*10 + int(ks[i]-'0')
		}
	}
	return c.send(m, k)
}

// send streams message m as a multi-line reply, all of it (lines < 0) or
// its header and that many body lines. The stream is opened before +OK;
// if it fails after +OK, the connection is closed without the final ".".
func (c *conn) send(m *message, lines int) error {
	var rc io.ReadCloser
	var err error
	start := time.Now()
	if t, ok := find[TopOpener](c.mbox); ok && lines >= 0 {
		rc, err = t.OpenTop(c.ctx, m.UID, lines)
		c.backendCall(OpTop, start, err)
	} else {
		rc, err = c.mbox.Open(c.ctx, m.UID)
		c.backendCall(OpOpen, start, err)
	}
	if err != nil {
		if errors.Is(err, ErrNoMessage) {
			c.log.Info().Str("uid", m.UID).Err(err).Msg("message vanished")
			c.reply("-ERR Message was removed from the mailbox by another client.")
			return nil
		}
		c.log.Error().Str("uid", m.UID).Err(err).Msg("open message failed")
		c.reply(publicError(err).wire())
		return nil
	}
	defer rc.Close()

	// Pending replies go first, then the message through a large buffer.
	if err := c.bw.Flush(); err != nil {
		return err
	}
	w := bigWriterPool.Get().(*bufio.Writer)
	w.Reset(c.dw)
	defer func() { w.Reset(nil); bigWriterPool.Put(w) }()

	status := "+OK"
	if lines < 0 {
		status = "+OK " + strconv.FormatInt(m.Size, 10) + " octets"
	}
	c.traceOut(status)
	w.WriteString(status + "\r\n")
	dw := newDotWriter(w, lines)
	eof := false
	pw := &passWriter{w: w, conn: c.dw}
	if ww, ok := rc.(WireWriterTo); ok && lines < 0 {
		// Verified pass-through: the lines the stream vouches for go out
		// as they are; Read and the dot-stuffer handle the rest.
		var n int64
		n, eof, err = ww.WriteWireTo(pw)
		dw.n += n
	}
	if !eof && err == nil {
		buf := copyBufPool.Get().(*[]byte)
		_, err = io.CopyBuffer(dw, onlyReader{rc}, *buf)
		copyBufPool.Put(buf)
	}
	if err != nil && !errors.Is(err, errTopDone) {
		c.log.Error().Str("uid", m.UID).Err(err).Msg("streaming message failed; closing without final dot")
		return fmt.Errorf("stream failed: %w", err)
	}
	if !pw.ended { // else the pass-through wrote the terminating line
		if err := dw.Close(); err != nil {
			return fmt.Errorf("stream failed: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write failed: %w", err)
	}
	c.stats.bytes += dw.n
	if lines < 0 {
		m.retrieved = true
		c.stats.retrieved++
		if dw.n != m.Size {
			c.log.Error().Str("uid", m.UID).Int64("listed", m.Size).Int64("sent", dw.n).Msg("message size differs from LIST size")
		}
	} else {
		c.stats.topped++
	}
	return nil
}

// onlyReader hides any WriterTo of the backend's stream, so that
// io.CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// cmdQUIT enters the UPDATE state (RFC 1939 §6): the marked messages are
// removed, and +OK is sent only when the backend says they are.
func (c *conn) cmdQUIT() error {
	var uids, retrieved []string
	for _, m := range c.msgs {
		if m.deleted {
			uids = append(uids, m.UID)
		}
		if m.retrieved {
			retrieved = append(retrieved, m.UID)
		}
	}
	committer, commit := find[Committer](c.mbox)
	if len(uids) > 0 || commit {
		ctx, cancel := context.WithTimeout(c.ctx, c.srv.backendTimeout())
		if err := c.checkLock(ctx); err != nil {
			cancel()
			c.log.Error().Err(err).Int("marked", len(uids)).Msg("maildrop lock not confirmed; nothing deleted")
			c.releaseMailbox()
			c.reply("-ERR [SYS/TEMP] Could not confirm the lock on the mailbox; no messages were deleted. Log in again and retry.")
			return errQuit
		}
		var err error
		start := time.Now()
		if commit {
			err = committer.Commit(ctx, uids, retrieved)
			c.backendCall(OpCommit, start, err)
		} else {
			err = c.mbox.Delete(ctx, uids)
			c.backendCall(OpDelete, start, err)
		}
		cancel()
		if err != nil {
			c.log.Error().Err(err).Int("marked", len(uids)).Msg("deleting messages failed")
			c.releaseMailbox()
			c.reply("-ERR [SYS/TEMP] Some deleted messages were not removed.")
			return errQuit
		}
		c.stats.deleted = len(uids)
	}
	// Release the maildrop before the reply, so that a client that logs
	// in again as soon as it reads +OK does not find it locked.
	c.releaseMailbox()
	c.reply(fmt.Sprintf("+OK Logging out, %d messages deleted.", len(uids)))
	return errQuit
}

// checkLock confirms, before the UPDATE state changes anything upstream,
// that the session still holds the maildrop lock until ctx's deadline.
func (c *conn) checkLock(ctx context.Context) error {
	if c.lockLost.Load() {
		return errLockLost
	}
	if err := c.lock.Check(ctx); err != nil {
		return fmt.Errorf("check the maildrop lock: %w", err)
	}
	select {
	case <-c.lock.Lost():
		return errLockLost
	default:
	}
	return nil
}
