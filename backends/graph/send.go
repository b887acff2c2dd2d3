package graph

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/proxy"
)

// SendMaxRequest is the largest sendMail request taken: Graph refuses a
// request above about 4 MB with 413 (GRAPH.md §10).
const SendMaxRequest = 4_000_000

// SendMaxSize is the largest message the Sender takes: its base64 form
// (4/3 of its size) with an added Bcc header fits SendMaxRequest.
const SendMaxSize = 2_900_000

// sendMaxRecipients bounds the recipients of one message (Exchange
// Online's default is 500).
const sendMaxRecipients = 500

// SendOptions configures a Backend's Sender.
type SendOptions struct {
	// From lists the envelope senders the account may use
	// (case-insensitive). Required.
	From []string
	// Timeout bounds one send, the upload included. Default 2 min.
	Timeout time.Duration
}

// Sender sends an account's mail with sendMail in MIME mode (POST
// {mailbox}/sendMail, the message base64-encoded as text/plain): the
// backends.Sender of SMTP submission for a graph account. Graph keeps
// the MIME as given, saves a copy to Sent Items, and takes the
// recipients from the To, Cc and Bcc headers, not from an envelope; so
// the Sender adds the envelope recipients that no header names as a Bcc
// header (delivered to, not shown to the other recipients), and refuses
// a message whose headers name a recipient the envelope lacks (Graph
// would send to it). A message above SendMaxSize gets 552 5.3.4: Graph's
// request limit is about 4 MB.
type Sender struct {
	b    *Backend
	opts SendOptions
}

var _ backends.Sender = (*Sender)(nil)

// Sender returns the account's sender; it shares the Backend's request
// gate and token.
func (b *Backend) Sender(opts SendOptions) *Sender {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Minute
	}
	return &Sender{b: b, opts: opts}
}

// MaySend reports whether from is one of the account's addresses.
func (s *Sender) MaySend(from string) bool {
	return slices.ContainsFunc(s.opts.From, func(a string) bool { return strings.EqualFold(a, from) })
}

// MaxMessageSize returns SendMaxSize, the largest message sendMail
// takes, so that the listener can advertise no more.
func (s *Sender) MaxMessageSize(context.Context) (int64, error) { return SendMaxSize, nil }

func smtpErr(code int, ec gosmtp.EnhancedCode, text string) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}
}

var errTooBig = smtpErr(552, gosmtp.EnhancedCode{5, 3, 4}, fmt.Sprintf("Message size exceeds Microsoft Graph's limit of %d bytes", SendMaxSize))

// Begin starts a transaction; nothing is sent before Data.
func (s *Sender) Begin(_ context.Context, _ string, opts backends.MailOptions) (backends.Transaction, error) {
	if opts.Size > SendMaxSize {
		return nil, errTooBig
	}
	return &sendTx{s: s}, nil
}

type sendTx struct {
	s     *Sender
	rcpts []string
}

func (t *sendTx) Rcpt(_ context.Context, to string) error {
	if len(t.rcpts) >= sendMaxRecipients {
		return smtpErr(452, gosmtp.EnhancedCode{4, 5, 3}, "Too many recipients")
	}
	if !slices.ContainsFunc(t.rcpts, func(r string) bool { return strings.EqualFold(r, to) }) {
		t.rcpts = append(t.rcpts, to)
	}
	return nil
}

func (t *sendTx) Close() error { return nil }

// Data reads the message (at most SendMaxSize+1 bytes, in memory: one
// request is at most 4 MB), reconciles its headers with the envelope
// and sends it in one request.
func (t *sendTx) Data(ctx context.Context, r io.Reader) (string, error) {
	msg, err := io.ReadAll(io.LimitReader(r, SendMaxSize+1))
	if err != nil {
		return "", err // the client's side failed: nothing was sent
	}
	if len(msg) > SendMaxSize {
		return "", errTooBig
	}
	bcc, err := backends.EnvelopeBcc(bytes.NewReader(msg), t.rcpts)
	if err != nil {
		return "", err
	}
	if len(bcc) > 0 {
		msg = append([]byte("Bcc: "+strings.Join(bcc, ", ")+"\r\n"), msg...)
	}
	body := make([]byte, base64.StdEncoding.EncodedLen(len(msg)))
	base64.StdEncoding.Encode(body, msg)
	if len(body) > SendMaxRequest {
		return "", errTooBig
	}
	if err := t.s.send(ctx, body); err != nil {
		return "", err
	}
	return "OK accepted by Microsoft Graph, copy in Sent Items", nil
}

// send makes the one sendMail request: never retried (not even on 429),
// so that one transaction never sends twice.
func (s *Sender) send(ctx context.Context, body []byte) error {
	b := s.b
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	u, err := b.abs(b.mbPath + "/sendMail")
	if err != nil {
		return err
	}
	resp, err := b.attempt(ctx, ctx, "sendMail", http.MethodPost, u, body, "text/plain", "", 1)
	if err != nil {
		return sendError(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		// Graph answers 202; a 200 was seen refusing big MIME (GRAPH.md §10).
		return smtpErr(451, gosmtp.EnhancedCode{4, 3, 0}, fmt.Sprintf("Microsoft Graph answered %d instead of 202 Accepted; the message may not have been sent", resp.StatusCode))
	}
	return nil
}

// sendError maps a sendMail failure to the upstream's SMTP reply
// (SMTP.md §6); network errors stay as they are (temporary).
func sendError(err error) error {
	var pe *proxy.Error
	if errors.As(err, &pe) && pe.Code == proxy.CodeSysPerm {
		// The token source failed: the grant is missing or revoked.
		return fmt.Errorf("graph: sendMail: %w: %w", backends.ErrUpstreamLogin, err)
	}
	var ae *apiError
	if !errors.As(err, &ae) {
		return fmt.Errorf("graph: sendMail: %w", err)
	}
	switch {
	case ae.Status == http.StatusTooManyRequests:
		return smtpErr(451, gosmtp.EnhancedCode{4, 7, 0}, "Microsoft Graph's rate limit is reached, try again later")
	case ae.Status == http.StatusServiceUnavailable:
		return smtpErr(451, gosmtp.EnhancedCode{4, 3, 0}, "Microsoft Graph is busy, try again later")
	case strings.EqualFold(ae.Code, "ErrorSendAsDenied"):
		return smtpErr(554, gosmtp.EnhancedCode{5, 7, 60}, "Microsoft Graph refused to send as this address (SendAsDenied)")
	case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden:
		return fmt.Errorf("graph: sendMail (grant Mail.Send and run popbridge auth): %w: %w", backends.ErrUpstreamLogin, err)
	case ae.Status == http.StatusRequestEntityTooLarge || strings.EqualFold(ae.Code, "ErrorMessageSizeExceeded"):
		return errTooBig
	case ae.Status == http.StatusBadRequest:
		return smtpErr(554, gosmtp.EnhancedCode{5, 6, 0}, "Microsoft Graph refused the message: "+ae.Code)
	case ae.Status >= 500:
		return smtpErr(451, gosmtp.EnhancedCode{4, 3, 0}, "Microsoft Graph is unavailable, try again later")
	}
	return smtpErr(554, gosmtp.EnhancedCode{5, 0, 0}, "Microsoft Graph refused the message: "+ae.Code)
}
