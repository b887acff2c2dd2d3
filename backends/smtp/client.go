package smtp

import (
	"bufio"
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

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends"
)

// client speaks SMTP to the upstream over one connection: greeting,
// EHLO, STARTTLS, AUTH with a go-sasl client, and the mail transaction
// with PIPELINING (RFC 2920) and CHUNKING (RFC 3030) when the upstream
// offers them. go-smtp's client waits for a reply to each command and
// has no BDAT: on every message that costs one upstream round trip for
// MAIL FROM and one for DATA's 354, which is what kept one client
// sending through popbridge below 0.9x of sending directly
// (docs/benchmarks.md). Replies that refuse something are returned as
// go-smtp's *SMTPError, the type the submission listener maps.
type client struct {
	raw     net.Conn // the TCP connection: deadlines
	conn    net.Conn // what is read and written (TLS)
	r       *bufio.Reader
	w       *bufio.Writer
	ext     map[string]string // EHLO keywords (upper case) and parameters
	timeout time.Duration     // for each reply
	trace   *zerolog.Logger   // nil: no trace
	auth    bool              // an AUTH exchange is under way (trace redaction)
}

const (
	// maxReplyLine bounds a reply line: twice RFC 5321's 512, as go-smtp.
	maxReplyLine = 2000
	// finalReplyTimeout is how long the upstream may take to accept a
	// whole message (RFC 5321 4.5.3.2.6: 10 minutes; go-smtp's 12).
	finalReplyTimeout = 12 * time.Minute
)

func newClient(raw, conn net.Conn, timeout time.Duration, trace *zerolog.Logger) *client {
	c := &client{raw: raw, timeout: timeout, trace: trace}
	c.setConn(conn)
	return c
}

func (c *client) setConn(conn net.Conn) {
	c.conn = conn
	c.r = bufio.NewReaderSize(conn, 4096)
	c.w = bufio.NewWriterSize(conn, 4096)
}

// errProtocol wraps replies that are not SMTP.
var errProtocol = errors.New("not an SMTP reply")

// readReply flushes what is waiting to be sent and reads one reply,
// joining the lines of a multi-line reply with "\n" as textproto does.
func (c *client) readReply(timeout time.Duration) (int, string, error) {
	c.raw.SetDeadline(time.Now().Add(timeout))
	if err := c.w.Flush(); err != nil {
		return 0, "", err
	}
	var msg strings.Builder
	code := 0
	for {
		line, err := c.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxReplyLine {
			return 0, "", fmt.Errorf("%w: a reply line longer than %d octets", errProtocol, maxReplyLine)
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, "", err
		}
		s := strings.TrimRight(string(line), "\r\n")
		c.traceLine("in", s)
		if len(s) < 3 || (len(s) > 3 && s[3] != ' ' && s[3] != '-') {
			return 0, "", fmt.Errorf("%w: %q", errProtocol, cut(s))
		}
		n, err := strconv.Atoi(s[:3])
		if err != nil || n < 100 || (code != 0 && n != code) {
			return 0, "", fmt.Errorf("%w: %q", errProtocol, cut(s))
		}
		code = n
		if msg.Len() > 0 {
			msg.WriteByte('\n')
		}
		if len(s) > 4 {
			msg.WriteString(s[4:])
		}
		if len(s) == 3 || s[3] == ' ' {
			return code, msg.String(), nil
		}
	}
}

// reply reads a reply and turns one whose code does not start with want
// (1 to 3 digits) into an *gosmtp.SMTPError.
func (c *client) reply(want int, timeout time.Duration) (int, string, error) {
	code, msg, err := c.readReply(timeout)
	if err != nil {
		return 0, "", err
	}
	if !codeIs(code, want) {
		return code, msg, replyError(code, msg)
	}
	return code, msg, nil
}

// codeIs reports whether code starts with the digits of want (0: any
// code).
func codeIs(code, want int) bool {
	switch {
	case want == 0:
		return true
	case want < 10:
		return code/100 == want
	case want < 100:
		return code/10 == want
	}
	return code == want
}

// replyError is go-smtp's conversion of a reply into *SMTPError, with
// the enhanced code taken from the text when it has one.
func replyError(code int, msg string) *gosmtp.SMTPError {
	se := &gosmtp.SMTPError{Code: code, Message: msg}
	first, rest, ok := strings.Cut(msg, " ")
	if !ok {
		return se
	}
	var ec gosmtp.EnhancedCode
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return se
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return se
		}
		ec[i] = n
	}
	se.EnhancedCode = ec
	se.Message = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	return se
}

// send queues a command line; it goes out with the next readReply or
// flush.
func (c *client) send(line string) {
	c.traceOut(line)
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
}

// cmd sends a command and reads its reply (see reply).
func (c *client) cmd(want int, line string) (int, string, error) {
	c.send(line)
	return c.reply(want, c.timeout)
}

// greet reads the greeting and says EHLO.
func (c *client) greet(name string) error {
	if _, _, err := c.reply(220, c.timeout); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	return c.ehlo(name)
}

func (c *client) ehlo(name string) error {
	_, msg, err := c.cmd(250, "EHLO "+name)
	if err != nil {
		return err
	}
	c.ext = map[string]string{}
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		k = strings.ToUpper(k)
		if m, ok := strings.CutPrefix(k, "AUTH="); ok && c.ext["AUTH"] == "" {
			// The pre-RFC form some servers still send.
			k, v = "AUTH", strings.TrimSpace(m+" "+v)
		}
		c.ext[k] = v
	}
	return nil
}

// has reports whether the upstream announced ext in its EHLO reply.
func (c *client) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// startTLS asks for STARTTLS and secures the connection; the caller
// says EHLO again. Anything the server sent after its 220, before the
// handshake, is an injection (the CVE-2011-0411 class): refused.
func (c *client) startTLS(ctx context.Context, tc func(net.Conn) *tls.Conn, name string) (*tls.Conn, error) {
	if !c.has("STARTTLS") {
		return nil, errors.New("the server does not offer STARTTLS (use tls: implicit for port 465)")
	}
	if _, _, err := c.cmd(220, "STARTTLS"); err != nil {
		return nil, err
	}
	if c.r.Buffered() > 0 {
		return nil, fmt.Errorf("%w: the server sent data after its STARTTLS reply, before the TLS handshake", errProtocol)
	}
	t := tc(c.conn)
	if err := t.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	c.setConn(t)
	return t, c.ehlo(name)
}

// supportsAuth reports whether the upstream offers mech.
func (c *client) supportsAuth(mech string) bool {
	for _, m := range strings.Fields(c.ext["AUTH"]) {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// authenticate runs a SASL exchange (RFC 4954), as go-smtp's Client.Auth
// does, except that a failure reply is not followed by a stray "*": the
// exchange is over then. "*" cancels it only when the mechanism cannot
// answer a challenge.
func (c *client) authenticate(a sasl.Client) error {
	enc := base64.StdEncoding
	mech, resp, err := a.Start()
	if err != nil {
		return err
	}
	var ir string
	switch {
	case len(resp) > 0:
		ir = enc.EncodeToString(resp)
	case resp != nil:
		ir = "="
	}
	// 504 = 512 - len("AUTH") - 2*len(" ") - len("\r\n"): a longer
	// initial response goes as the answer to an empty challenge.
	inline := ir != "" && len(mech)+len(ir) <= 504
	line := "AUTH " + mech
	if inline {
		line += " " + ir
	}
	code, msg, err := c.cmd(0, line)
	// From here on every line sent is a SASL response: redacted.
	c.auth = true
	defer func() { c.auth = false }()
	if err == nil && code == 334 && ir != "" && !inline {
		if msg != "" {
			c.cmd(0, "*")
			return errors.New("the server sent a challenge instead of asking for the initial response")
		}
		code, msg, err = c.cmd(0, ir)
	}
	for err == nil {
		switch code {
		case 235:
			return nil
		case 334:
		default:
			return replyError(code, msg)
		}
		challenge, derr := enc.DecodeString(msg)
		if derr == nil {
			resp, derr = a.Next(challenge)
		}
		if derr != nil {
			c.cmd(0, "*")
			return derr
		}
		code, msg, err = c.cmd(0, enc.EncodeToString(resp))
	}
	return err
}

// mailLine is MAIL FROM with the parameters the upstream takes.
func (c *client) mailLine(from string, opts backends.MailOptions) (string, error) {
	if strings.ContainsAny(from, "\r\n") {
		return "", errors.New("a line must not contain CR or LF")
	}
	line := "MAIL FROM:<" + from + ">"
	if c.has("8BITMIME") {
		line += " BODY=8BITMIME"
	}
	if c.has("SIZE") && opts.Size > 0 {
		line += " SIZE=" + strconv.FormatInt(opts.Size, 10)
	}
	if opts.UTF8 {
		if !c.has("SMTPUTF8") {
			return "", replyError(553, "5.6.7 The upstream server does not support SMTPUTF8")
		}
		line += " SMTPUTF8"
	}
	return line, nil
}

// maxMessageSize is the upstream's SIZE (0: none announced).
func (c *client) maxMessageSize() int64 {
	n, err := strconv.ParseInt(c.ext["SIZE"], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func (c *client) traceOut(line string) {
	if c.trace == nil {
		return
	}
	verb, arg, ok := strings.Cut(line, " ")
	switch {
	case c.auth && line != "*":
		line = redacted
	case strings.EqualFold(verb, "AUTH"):
		if mech, _, ir := strings.Cut(arg, " "); ok && ir {
			line = verb + " " + mech + " " + redacted
		}
	}
	c.traceLine("out", line)
}

func (c *client) traceLine(dir, line string) {
	if c.trace != nil {
		c.trace.Trace().Str("dir", dir).Str("line", cut(line)).Msg("smtp upstream")
	}
}

// cut shortens a line for logs and errors.
func cut(s string) string {
	if len(s) > traceMax {
		return s[:traceMax]
	}
	return s
}

// At log level trace, an upstream connection logs the lines it sends
// (dir "out") and the replies it reads (dir "in") as
// {"dir":...,"line":...,"message":"smtp upstream"}. AUTH responses are
// replaced by <redacted>; the message itself is logged only as its
// size. Lines are cut at traceMax octets.
const (
	traceMax = 200
	redacted = "<redacted>"
)
