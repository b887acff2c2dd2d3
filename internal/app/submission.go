package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/backends/graph"
	"github.com/popbridge/popbridge/backends/oauth"
	smtpb "github.com/popbridge/popbridge/backends/smtp"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/submission"
	"github.com/popbridge/popbridge/proxy"
)

// senderSet is every account's sender, built with the accounts router
// and replaced with it by a reload.
type senderSet struct {
	senders map[string]backends.Sender
	// noHash are the passthrough accounts without password_hash: their
	// password is checked only by their upstream when reading, so they
	// cannot log in to SMTP.
	noHash map[string]bool
}

// sendSwap hands each SMTP login the current senders.
type sendSwap struct {
	cur    atomic.Pointer[senderSet]
	router *swapBackend
}

// Authenticate implements submission.Authenticator with the accounts
// router's one password check.
func (s *sendSwap) Authenticate(ctx context.Context, user, pass string) (backends.Login, error) {
	if s.cur.Load().noHash[user] {
		return backends.Login{}, fmt.Errorf("account %s has no password_hash (auth passthrough), so it cannot log in to SMTP: %w", user, proxy.ErrAuthFailed)
	}
	return s.router.cur.Load().Authenticate(ctx, user, pass)
}

// sender implements submission.SenderFunc.
func (s *sendSwap) sender(_ context.Context, l backends.Login) (backends.Sender, error) {
	if snd := s.cur.Load().senders[l.User]; snd != nil {
		return snd, nil
	}
	return nil, fmt.Errorf("account %s has no sender", l.User)
}

// SpoolDir in the state directory holds the messages being sent with
// the Gmail API, each in a 0600 file removed afterwards.
const SpoolDir = "spool"

// newSenders builds the sender of every account of cfg. An account that
// cannot send gets a sender that refuses, with the reason in the log.
func newSenders(cfg *config.Config, st *state) (*senderSet, error) {
	set := &senderSet{senders: map[string]backends.Sender{}, noHash: map[string]bool{}}
	for i, a := range cfg.Accounts {
		if a.PasswordHash == "" {
			set.noHash[a.User] = true
		}
		s, why := a.DefaultSend()
		var snd backends.Sender
		switch {
		case s == nil:
			snd = refusing{why}
		case s.Type == modes.SendSMTP:
			ss, err := newSMTPSender(a, s, st)
			if err != nil {
				return nil, fmt.Errorf("accounts[%d] (%s): send: %w", i, a.User, err)
			}
			snd = ss
			if s.SentFolder != "" {
				if snd, err = withSentCopy(a, s.SentFolder, ss, st); err != nil {
					return nil, fmt.Errorf("accounts[%d] (%s): send.sent_folder: %w", i, a.User, err)
				}
			}
		case s.Type == modes.SendGmail:
			b := st.gmail[a.User]
			if b == nil {
				return nil, fmt.Errorf("accounts[%d] (%s): send type gmail needs a gmail backend", i, a.User)
			}
			spool := filepath.Join(st.dir, SpoolDir)
			if err := os.MkdirAll(spool, 0o700); err != nil {
				return nil, fmt.Errorf("send: %w", err)
			}
			snd = b.Sender(gmail.SendOptions{From: s.From, SpoolDir: spool})
		case s.Type == modes.SendGraph:
			b := st.graph[a.User]
			if b == nil {
				return nil, fmt.Errorf("accounts[%d] (%s): send type graph needs a graph backend", i, a.User)
			}
			snd = b.Sender(graph.SendOptions{From: s.From})
		default:
			snd = refusing{fmt.Sprintf("send type %s is not available in this build", s.Type)}
		}
		o := &observedSender{Sender: snd, m: st.metrics}
		if s != nil && s.MaxPerMinute > 0 {
			o.limit = rate.NewLimiter(rate.Every(time.Minute/time.Duration(s.MaxPerMinute)), s.MaxPerMinute)
		}
		if st.metrics != nil {
			o.status = st.metrics.account(a)
		}
		set.senders[a.User] = o
	}
	return set, nil
}

// newSMTPSender builds the smtp sender of account a from its send
// settings s (defaults filled in).
func newSMTPSender(a config.Account, s *config.Send, st *state) (*smtpb.Sender, error) {
	dial, err := s.DialTimeout.Value()
	if err != nil {
		return nil, fmt.Errorf("dial_timeout: %w", err)
	}
	command, err := s.CommandTimeout.Value()
	if err != nil {
		return nil, fmt.Errorf("command_timeout: %w", err)
	}
	opts := smtpb.Options{
		Addr: s.Addr, TLS: s.TLS, ServerName: s.ServerName, CAFile: s.CAFile,
		Auth: s.Auth, Username: s.Username, Password: s.Password, From: s.From,
		DialTimeout: dial, CommandTimeout: command, Logger: st.log,
	}
	if s.Auth.Token() {
		if s.TokenFile != "" {
			warnOpen(st, a, s.TokenFile)
			opts.TokenSource = oauth.FileTokenSource(s.TokenFile)
		} else if src, err := oauthSource(a, st); err != nil {
			return nil, err
		} else if src != nil {
			opts.TokenSource = src
		}
	}
	return smtpb.New(opts)
}

// refusing is the sender of an account that cannot send.
type refusing struct{ why string }

func (r refusing) MaySend(string) bool { return true }

func (r refusing) Begin(context.Context, string, backends.MailOptions) (backends.Transaction, error) {
	return nil, fmt.Errorf("%s: %w", r.why, submission.ErrCannotSend)
}

// Results of a submission, the result label of the SMTP metrics.
const (
	sendSent     = "sent"
	sendRefused  = "refused"  // a 5xx: the client gives up
	sendDeferred = "deferred" // a 4xx or a fault: the client retries
)

// sendResult classifies the outcome of a submission.
func sendResult(err error) string {
	var se *gosmtp.SMTPError
	switch {
	case err == nil:
		return sendSent
	case errors.Is(err, submission.ErrCannotSend), errors.As(err, &se) && se.Code/100 == 5:
		return sendRefused
	}
	return sendDeferred
}

// observedSender records an account's submissions for listen.http and
// applies its send.max_per_minute.
type observedSender struct {
	backends.Sender
	status *accountStatus // nil without listen.http
	m      *metrics
	limit  *rate.Limiter // nil: no limit
}

// errRateLimited is the reply over send.max_per_minute.
var errRateLimited = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: "Sending rate limit of this account reached, try again later"}

func (o *observedSender) Begin(ctx context.Context, from string, opts backends.MailOptions) (backends.Transaction, error) {
	if o.limit != nil && !o.limit.Allow() {
		o.record(0, errRateLimited)
		return nil, errRateLimited
	}
	tx, err := o.Sender.Begin(ctx, from, opts)
	if err != nil {
		o.record(0, err)
		return nil, err
	}
	return &observedTx{Transaction: tx, o: o}, nil
}

type observedTx struct {
	backends.Transaction
	o       *observedSender
	refused bool // the upstream's refusal of MAIL FROM was recorded
}

// Rcpt records the upstream's refusal of the sender, which a pipelining
// sender reads with the first RCPT: the transaction ends there.
func (t *observedTx) Rcpt(ctx context.Context, to string) error {
	err := t.Transaction.Rcpt(ctx, to)
	if err != nil && !t.refused && errors.Is(err, backends.ErrSenderRefused) {
		t.refused = true
		t.o.record(0, err)
	}
	return err
}

func (t *observedTx) Data(ctx context.Context, r io.Reader) (string, error) {
	cr := &countReader{r: r}
	reply, err := t.Transaction.Data(ctx, cr)
	if !t.refused {
		t.o.record(cr.n, err)
	}
	return reply, err
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// record counts a submission of n octets that ended with err.
func (o *observedSender) record(n int64, err error) {
	if o.m == nil || o.status == nil {
		return
	}
	result := sendResult(err)
	o.m.smtpMessages.WithLabelValues(o.status.user, result).Inc()
	o.m.smtpBytes.WithLabelValues(o.status.user, result).Add(float64(n))
	now := time.Now()
	s := o.status
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.lastSend = now
		return
	}
	s.sendErrClass, s.sendErrAt = sendErrorClass(err), now
}

// sendErrorClass names the kind of a send error for /status, without
// any detail (the log has it).
func sendErrorClass(err error) string {
	var se *gosmtp.SMTPError
	switch {
	case errors.Is(err, submission.ErrCannotSend):
		return "not_configured"
	case errors.Is(err, backends.ErrUpstreamLogin), errors.Is(err, oauth.ErrGrant), errors.Is(err, oauth.ErrNoGrant):
		return "upstream_login"
	case errors.As(err, &se) && se.Code/100 == 5:
		return "upstream_refused"
	case errors.As(err, &se):
		return "upstream_deferred"
	}
	return "upstream_unreachable"
}

// newSubmission builds the SMTP submission server of cfg, next to the
// POP3 server srv: the same certificate, cleartext policy (reloaded with
// it), limits and accounts.
func newSubmission(cfg *config.Config, log *zerolog.Logger, srv *proxy.Server, sends *sendSwap) (*submission.Server, error) {
	pen, err := newPenalty(cfg.Limits)
	if err != nil {
		return nil, err
	}
	idle, err := cfg.Limits.IdleTimeout.Value()
	if err != nil {
		return nil, fmt.Errorf("limits.idle_timeout: %w", err)
	}
	write, err := cfg.Limits.WriteTimeout.Value()
	if err != nil {
		return nil, fmt.Errorf("limits.write_timeout: %w", err)
	}
	return submission.New(submission.Options{
		TLSConfig:           srv.TLSConfig,
		Auth:                sends,
		Senders:             sends.sender,
		CleartextAuth:       func(addr netip.Addr) bool { return srv.CleartextPolicy().Allows(addr) },
		AuthFailed:          pen.fail,
		AuthSucceeded:       pen.forget,
		MaxConnections:      max(cfg.Limits.MaxConnections, 0),
		MaxConnectionsPerIP: max(cfg.Limits.MaxConnectionsPerIP, 0),
		IdleTimeout:         idle,
		WriteTimeout:        write,
		Logger:              log,
	})
}

// serveSubmission serves the SMTP listeners until ctx ends, then shuts
// s down; a listener that fails calls fail.
func serveSubmission(ctx context.Context, s *submission.Server, ls []listener, log zerolog.Logger, fail func(error)) (wait func()) {
	var wg sync.WaitGroup
	for _, l := range ls {
		log.Info().Str("listener", l.name).Str("addr", l.Addr().String()).Bool("tls", l.tls).Bool("starttls", !l.tls).Msg("listening")
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if l.tls {
				err = s.ServeSubmissions(l)
			} else {
				err = s.ServeSubmission(l)
			}
			if err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("%s on %s: %w", l.name, l.Addr(), err))
			}
		}()
	}
	stopped := make(chan struct{})
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := s.Shutdown(sctx); err != nil {
			s.Close()
		}
		close(stopped)
	}()
	return func() { <-stopped; wg.Wait() }
}

// bindSubmission binds the SMTP listeners of cfg, or takes them from
// given.
func bindSubmission(cfg *config.Config, given map[string]net.Listener) ([]listener, error) {
	var ls []listener
	for _, spec := range []struct {
		name, addr string
		tls        bool
	}{
		{"submission", cfg.Listen.Submission, false},
		{"submissions", cfg.Listen.Submissions, true},
	} {
		l := given[spec.name]
		if l == nil && spec.addr == "" {
			continue
		}
		if l == nil {
			var err error
			if l, err = net.Listen("tcp", spec.addr); err != nil {
				closeListeners(ls)
				return nil, fmt.Errorf("listen.%s: %w", spec.name, err)
			}
		}
		ls = append(ls, listener{Listener: l, name: spec.name, tls: spec.tls})
	}
	return ls, nil
}

func closeListeners(ls []listener) {
	for _, l := range ls {
		l.Close()
	}
}

// penalty delays the answer to failed SMTP logins per client address,
// as the POP3 server does (limits.auth_failure_delay, doubling up to
// max_auth_failure_delay; none for limits.trusted_networks).
type penalty struct {
	base, max time.Duration
	trusted   []netip.Prefix
	mu        sync.Mutex
	failures  map[netip.Addr]penaltyEntry
}

type penaltyEntry struct {
	n    int
	last time.Time
}

// penaltyForget is how long a failure is remembered.
const penaltyForget = 15 * time.Minute

func newPenalty(l config.Limits) (*penalty, error) {
	p := &penalty{base: 2 * time.Second, max: 15 * time.Second, failures: map[netip.Addr]penaltyEntry{}}
	if v, err := l.AuthFailureDelay.Value(); err != nil {
		return nil, fmt.Errorf("limits.auth_failure_delay: %w", err)
	} else if l.AuthFailureDelay != "" {
		p.base = v
	}
	if v, err := l.MaxAuthFailureDelay.Value(); err != nil {
		return nil, fmt.Errorf("limits.max_auth_failure_delay: %w", err)
	} else if l.MaxAuthFailureDelay != "" {
		p.max = v
	}
	nets, err := config.ParsePrefixes(l.TrustedNetworks)
	if err != nil {
		return nil, fmt.Errorf("limits.trusted_networks: %w", err)
	}
	p.trusted = nets
	return p, nil
}

func (p *penalty) fail(addr netip.Addr) time.Duration {
	for _, n := range p.trusted {
		if n.Contains(addr) {
			return 0
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if len(p.failures) >= 16384 { // bounded: drop the old ones, or all
		for a, e := range p.failures {
			if now.Sub(e.last) > penaltyForget {
				delete(p.failures, a)
			}
		}
		if len(p.failures) >= 16384 {
			clear(p.failures)
		}
	}
	e := p.failures[addr]
	if now.Sub(e.last) > penaltyForget {
		e.n = 0
	}
	d := p.base
	for i := 0; i < e.n && d < p.max; i++ {
		d *= 2
	}
	e.n++
	e.last = now
	p.failures[addr] = e
	return min(d, p.max)
}

func (p *penalty) forget(addr netip.Addr) {
	p.mu.Lock()
	delete(p.failures, addr)
	p.mu.Unlock()
}

// DescribeSend says for people how account a sends, defaults included,
// without secrets; or why it cannot.
func DescribeSend(a config.Account) string {
	s, why := a.DefaultSend()
	if s == nil {
		return "cannot send: " + why
	}
	from := strings.Join(s.From, ", ")
	if from == "" {
		from = "nobody (set send.from)"
	}
	if s.Type == modes.SendGmail {
		return fmt.Sprintf("gmail API messages.send, from %s", from)
	}
	if s.Type == modes.SendGraph {
		return fmt.Sprintf("Microsoft Graph sendMail (copy in Sent Items, at most %d bytes), from %s", graph.SendMaxSize, from)
	}
	auth := string(s.Auth)
	if s.Auth.Token() {
		if s.TokenFile != "" {
			auth += " (token_file)"
		} else {
			auth += " (the backend's oauth2 grant)"
		}
	}
	return fmt.Sprintf("smtp %s, tls %s, auth %s, from %s", s.Addr, s.TLS, auth, from)
}
