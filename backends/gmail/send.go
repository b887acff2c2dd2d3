package gmail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	gmailapi "google.golang.org/api/gmail/v1"
	"google.golang.org/api/googleapi"

	"github.com/popbridge/popbridge/backends"
)

// SendMaxSize is the largest message users.messages.send takes (35 MiB).
const SendMaxSize = 36700160

// sendMaxRecipients is Gmail's limit per message.
const sendMaxRecipients = 100

// sendUnits is the quota cost of users.messages.send.
const sendUnits = 100

// SendOptions configures a Backend's Sender.
type SendOptions struct {
	// From lists the envelope senders the account may use
	// (case-insensitive). Required.
	From []string
	// SpoolDir holds each message while it is sent, in a 0600 file
	// removed afterwards; empty means the system's temporary directory.
	SpoolDir string
	// Timeout bounds one send, the upload included. Default 10 min.
	Timeout time.Duration
}

// Sender sends an account's mail with users.messages.send: the
// backends.Sender of SMTP submission for a gmail account. Gmail takes
// the recipients from the To, Cc and Bcc headers, not from an envelope;
// so the Sender adds the envelope recipients that no header names as a
// Bcc header (Gmail delivers to them and removes the header), and
// refuses a message whose headers name a recipient the envelope lacks
// (Gmail would send to it).
type Sender struct {
	b    *Backend
	opts SendOptions
}

var _ backends.Sender = (*Sender)(nil)

// Sender returns the account's sender; it shares the Backend's quota
// bucket, concurrency bound and token.
func (b *Backend) Sender(opts SendOptions) *Sender {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Minute
	}
	return &Sender{b: b, opts: opts}
}

// MaySend reports whether from is one of the account's addresses.
func (s *Sender) MaySend(from string) bool {
	return slices.ContainsFunc(s.opts.From, func(a string) bool { return strings.EqualFold(a, from) })
}

func smtpErr(code int, ec gosmtp.EnhancedCode, text string) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}
}

// Begin starts a transaction; nothing is sent before Data.
func (s *Sender) Begin(_ context.Context, from string, opts backends.MailOptions) (backends.Transaction, error) {
	if opts.Size > SendMaxSize {
		return nil, smtpErr(552, gosmtp.EnhancedCode{5, 3, 4}, "Message size exceeds Gmail's limit")
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

// Data spools the message, reconciles its headers with the envelope and
// sends it in one request.
func (t *sendTx) Data(ctx context.Context, r io.Reader) (string, error) {
	s := t.s
	f, err := os.CreateTemp(s.opts.SpoolDir, "send-*.eml") // 0600
	if err != nil {
		return "", fmt.Errorf("gmail: spool the message: %w", err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	n, err := io.Copy(f, io.LimitReader(r, SendMaxSize+1))
	if err != nil {
		return "", err // the client's side failed: nothing was sent
	}
	if n > SendMaxSize {
		return "", smtpErr(552, gosmtp.EnhancedCode{5, 3, 4}, "Message size exceeds Gmail's limit")
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("gmail: spool: %w", err)
	}
	bcc, err := backends.EnvelopeBcc(f, t.rcpts)
	if err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("gmail: spool: %w", err)
	}
	var body io.Reader = f
	if len(bcc) > 0 {
		body = io.MultiReader(strings.NewReader("Bcc: "+strings.Join(bcc, ", ")+"\r\n"), f)
	}
	id, err := s.send(ctx, body)
	if err != nil {
		return "", err
	}
	return "OK id=" + id, nil
}

// send makes the one messages.send request: never retried, so that one
// transaction never sends twice.
func (s *Sender) send(ctx context.Context, body io.Reader) (string, error) {
	b := s.b
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	if err := b.quota.WaitN(ctx, sendUnits); err != nil {
		return "", fmt.Errorf("gmail: waiting for quota: %w", err)
	}
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("gmail: waiting for a request slot: %w", ctx.Err())
	}
	// ChunkSize(0): one multipart request of any size; the resumable
	// protocol the client would switch to above 16 MiB is not needed.
	m, err := b.svc.Users.Messages.Send(b.opts.UserID, &gmailapi.Message{}).
		Media(body, googleapi.ContentType("message/rfc822"), googleapi.ChunkSize(0)).Context(ctx).Do()
	<-b.sem
	b.calls.Add(1)
	b.units.Add(sendUnits)
	if b.opts.OnCall != nil {
		b.opts.OnCall("messages.send", sendUnits)
	}
	if err != nil {
		return "", sendError(err)
	}
	return m.Id, nil
}

// sendError maps an API error to the upstream's SMTP reply (GMAIL.md,
// SMTP.md §6); other errors (network) stay as they are.
func sendError(err error) error {
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		return fmt.Errorf("gmail: messages.send: %w", err)
	}
	rate := hasReason(ge, "rateLimitExceeded") || hasReason(ge, "userRateLimitExceeded") || hasReason(ge, "dailyLimitExceeded")
	switch {
	case ge.Code == 429 || ge.Code == 403 && rate:
		return smtpErr(451, gosmtp.EnhancedCode{4, 7, 0}, "Gmail's sending rate limit is reached, try again later")
	case ge.Code == 401 || ge.Code == 403:
		return fmt.Errorf("gmail: messages.send: %w: %w", backends.ErrUpstreamLogin, err)
	case ge.Code == 413:
		return smtpErr(552, gosmtp.EnhancedCode{5, 3, 4}, "Message size exceeds Gmail's limit")
	case ge.Code == 400:
		return smtpErr(554, gosmtp.EnhancedCode{5, 6, 0}, "Gmail refused the message")
	case ge.Code >= 500:
		return smtpErr(451, gosmtp.EnhancedCode{4, 3, 0}, "Gmail is unavailable, try again later")
	}
	return smtpErr(554, gosmtp.EnhancedCode{5, 0, 0}, "Gmail refused the message")
}
