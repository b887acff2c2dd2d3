package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/proxy"
)

// metrics is what the operations listener (listen.http) reports: the
// Prometheus metrics, in a registry of their own, and each account's
// status. It is the server's proxy.Observer. Its methods do nothing on a
// nil *metrics, which is what a server without listen.http has.
//
// Account labels are only ever configured account names. No series is
// made per account in advance: with a thousand accounts, /metrics at idle
// stays small. Per account there are only what an operator alerts on
// (errors, OAuth2 re-auth, Gmail quota); latencies are by backend type.
type metrics struct {
	reg         *prometheus.Registry
	statusToken string
	srv         atomic.Pointer[proxy.Server] // for readiness
	listening   atomic.Bool                  // every POP3 listener is bound
	// storePing checks the shared state store (PostgreSQL) for
	// readiness; nil under bbolt, which is always there.
	storePing func(context.Context) error

	sessionsActive prometheus.Gauge
	sessions       map[string]prometheus.Counter     // by outcome
	commands       map[string]*[2]prometheus.Counter // by command: err, ok
	bytesSent      prometheus.Counter
	authFailures   prometheus.Counter
	backendSeconds *prometheus.HistogramVec
	accountErrors  *prometheus.CounterVec
	gmailUnits     *prometheus.CounterVec
	gmailBackoffs  *prometheus.CounterVec
	smtpMessages   *prometheus.CounterVec
	smtpBytes      *prometheus.CounterVec
	graphOnce      sync.Once
	sentCopyOnce   sync.Once
	sentCopies     *prometheus.CounterVec // made by sentCopiesVec
	graphCalls     *prometheus.CounterVec // made by graphCallsVec

	mu       sync.Mutex
	accounts map[string]*accountStatus // every account configured since the start
	current  []string                  // the accounts in use, in configuration order
}

var _ proxy.BackendObserver = (*metrics)(nil)

// Backend operations, the op label of popbridge_backend_call_duration_seconds.
const (
	opLogin = iota
	opList
	opOpen
	opTop
	opDelete
	opCommit
	nOps
)

var opNames = [nOps]string{proxy.OpLogin, proxy.OpList, proxy.OpOpen, proxy.OpTop, proxy.OpDelete, proxy.OpCommit}

// newMetrics returns the metrics of a server with configuration cfg, and
// of the body cache bodies (nil for none).
func newMetrics(cfg *config.Config, bodies *cache.Bodies) *metrics {
	m := &metrics{
		reg:         prometheus.NewRegistry(),
		statusToken: cfg.HTTP.StatusToken,
		sessions:    map[string]prometheus.Counter{},
		commands:    map[string]*[2]prometheus.Counter{},
		accounts:    map[string]*accountStatus{},
	}
	f := factory{m.reg}
	m.sessionsActive = f.gauge("popbridge_sessions_active", "POP3 sessions open now.")
	sessions := f.counterVec("popbridge_sessions_total", "POP3 sessions ended, by outcome: quit, auth_failed, timeout, dropped, shutdown, error.", "outcome")
	for _, o := range []string{proxy.OutcomeQuit, proxy.OutcomeAuthFailed, proxy.OutcomeTimeout, proxy.OutcomeDropped, proxy.OutcomeShutdown, proxy.OutcomeError} {
		m.sessions[o] = sessions.WithLabelValues(o)
	}
	commands := f.counterVec("popbridge_commands_total", "POP3 commands answered, by command (other for unknown ones) and result (ok or err).", "command", "result")
	for _, c := range append([]string{proxy.CommandOther}, proxy.CommandNames...) {
		m.commands[c] = &[2]prometheus.Counter{commands.WithLabelValues(c, "err"), commands.WithLabelValues(c, "ok")}
	}
	m.bytesSent = f.counter("popbridge_sent_bytes_total", "Message octets sent by RETR and TOP, before dot-stuffing.")
	m.authFailures = f.counter("popbridge_auth_failures_total", "Rejected POP3 logins.")
	m.backendSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "popbridge_backend_call_duration_seconds",
		Help:    "Duration of backend calls (open and top: until the stream starts), by backend type and op.",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"backend", "op"})
	m.reg.MustRegister(m.backendSeconds)
	m.accountErrors = f.counterVec("popbridge_account_errors_total", "Backend errors by account and class (as in /status last_error), from the first one.", "account", "class")
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "popbridge_body_cache_hits_total", Help: "Body cache lookups that found the message.",
	}, func() float64 { h, _ := bodies.Stats(); return float64(h) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "popbridge_body_cache_misses_total", Help: "Body cache lookups that did not find the message.",
	}, func() float64 { _, mi := bodies.Stats(); return float64(mi) }))
	m.gmailUnits = f.counterVec("popbridge_gmail_quota_units_total", "Gmail API quota units used, by account.", "account")
	m.gmailBackoffs = f.counterVec("popbridge_gmail_backoffs_total", "Gmail API calls backed off after a rate limit or server error, by account.", "account")
	m.smtpMessages = f.counterVec("popbridge_smtp_messages_total", "Messages submitted over SMTP, by account and result: sent, refused (5xx) or deferred (4xx, the client retries).", "account", "result")
	m.smtpBytes = f.counterVec("popbridge_smtp_bytes_total", "Message octets submitted over SMTP, by account and result.", "account", "result")
	m.reg.MustRegister(tokenCollector{m})
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "popbridge_build_info", Help: "Always 1; the version label says which popbridge runs.",
		ConstLabels: prometheus.Labels{"version": Version},
	}, func() float64 { return 1 }))
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// factory makes and registers metrics.
type factory struct{ reg *prometheus.Registry }

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

// SessionStart implements proxy.Observer.
func (m *metrics) SessionStart() { m.sessionsActive.Inc() }

// SessionEnd implements proxy.Observer.
func (m *metrics) SessionEnd(s proxy.SessionSummary) {
	m.sessionsActive.Dec()
	if c := m.sessions[s.Outcome]; c != nil {
		c.Inc()
	}
}

// Command implements proxy.Observer.
func (m *metrics) Command(name string, ok bool) {
	c := m.commands[name]
	if c == nil {
		c = m.commands[proxy.CommandOther]
	}
	if ok {
		c[1].Inc()
	} else {
		c[0].Inc()
	}
}

// AuthFailure implements proxy.Observer.
func (m *metrics) AuthFailure() { m.authFailures.Inc() }

// BytesSent implements proxy.Observer.
func (m *metrics) BytesSent(n int64) { m.bytesSent.Add(float64(n)) }

// BackendCall implements proxy.BackendObserver: it times the call by the
// account's backend type and records its outcome for /status. Calls for
// a maildrop that is not a configured account are ignored.
func (m *metrics) BackendCall(c proxy.BackendCall) {
	op := slices.Index(opNames[:], c.Op)
	if m == nil || op < 0 {
		return
	}
	m.mu.Lock()
	s := m.accounts[c.Account]
	m.mu.Unlock()
	if s != nil {
		s.observe(op, c.Duration, c.Err)
	}
}

// GmailUnits counts units of Gmail API quota used by account (a
// configured account name; others are ignored).
func (m *metrics) GmailUnits(account string, units int) {
	if m == nil || units <= 0 || !m.known(account) {
		return
	}
	m.gmailUnits.WithLabelValues(account).Add(float64(units))
}

// GmailBackoff counts one Gmail API call of account that was backed off
// (rate limited or failed temporarily, to be retried).
func (m *metrics) GmailBackoff(account string) {
	if m == nil || !m.known(account) {
		return
	}
	m.gmailBackoffs.WithLabelValues(account).Inc()
}

// known reports whether account is a configured account.
func (m *metrics) known(account string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.accounts[account] != nil
}

// setServer makes srv the server whose shutdown readiness follows.
func (m *metrics) setServer(srv *proxy.Server) {
	if m == nil {
		return
	}
	m.srv.Store(srv)
	srv.Observer = m
}

// ready reports whether every POP3 listener is up, the server is not
// shutting down and the state store answers.
func (m *metrics) ready() bool {
	srv := m.srv.Load()
	return m.listening.Load() && srv != nil && !srv.ShuttingDown() && m.storeReady()
}

// storePingTimeout bounds the store check of one readiness probe.
const storePingTimeout = 2 * time.Second

// storeReady pings the state store, if it is one that can go away.
func (m *metrics) storeReady() bool {
	if m.storePing == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), storePingTimeout)
	defer cancel()
	return m.storePing(ctx) == nil
}

// accountStatus is what /status says about one account.
type accountStatus struct {
	user string

	mu           sync.Mutex
	backend      string // type
	m            *metrics
	lastLogin    time.Time
	lastSync     time.Time
	errClass     string
	errAt        time.Time
	lastSend     time.Time
	sendErrClass string
	sendErrAt    time.Time
	token        *oauth.Source      // nil: no refreshing token source
	sync         proxy.SyncReporter // nil: the backend reports no sync progress
}

// account returns the status of account a, made or updated for its
// current backend type. It registers a as configured.
func (m *metrics) account(a config.Account) *accountStatus {
	m.mu.Lock()
	s := m.accounts[a.User]
	if s == nil {
		s = &accountStatus{user: a.User, m: m}
		m.accounts[a.User] = s
	}
	m.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.backend = a.Backend.Type
	return s
}

// setAccounts makes users, in this order, the accounts /status lists.
func (m *metrics) setAccounts(users []string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.current = users
	m.mu.Unlock()
}

// tokenSource records account's refreshing OAuth2 token source.
func (m *metrics) tokenSource(a config.Account, src *oauth.Source) {
	if m == nil {
		return
	}
	s := m.account(a)
	s.mu.Lock()
	s.token = src
	s.mu.Unlock()
}

// observe records a backend call of op that took d and ended with err.
func (s *accountStatus) observe(op int, d time.Duration, err error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Series are made at their first use.
	s.m.backendSeconds.WithLabelValues(s.backend, opNames[op]).Observe(d.Seconds())
	if err == nil {
		switch op {
		case opLogin:
			s.lastLogin = now
		case opList:
			s.lastSync = now
		}
		return
	}
	if class := errorClass(err); class != "" {
		s.errClass, s.errAt = class, now
		s.m.accountErrors.WithLabelValues(s.user, class).Inc()
	}
}

// errorClass names the kind of a backend error for /status, without any
// detail from the error (which may hold addresses or server replies; the
// log has it). Empty means the error says nothing about the account: a
// message removed upstream, a client gone.
func errorClass(err error) string {
	var (
		pe   *proxy.Error
		ne   net.Error
		cert *tls.CertificateVerificationError
		ua   x509.UnknownAuthorityError
	)
	switch {
	case errors.Is(err, oauth.ErrGrant), errors.Is(err, oauth.ErrNoGrant):
		return "re-auth needed"
	case errors.Is(err, proxy.ErrAuthFailed):
		return "authentication failed"
	case errors.Is(err, proxy.ErrNoMessage), errors.Is(err, context.Canceled):
		return ""
	case errors.Is(err, proxy.ErrInUse):
		return "maildrop in use"
	case errors.As(err, &cert), errors.As(err, &ua):
		return "upstream certificate rejected"
	case errors.Is(err, context.DeadlineExceeded):
		return "upstream timeout"
	case errors.As(err, &ne):
		if ne.Timeout() {
			return "upstream timeout"
		}
		return "upstream unreachable"
	case errors.As(err, &pe) && pe.Code == proxy.CodeSysPerm:
		return "permanent failure"
	}
	return "temporary failure"
}

// tokenCollector reports each account's OAuth2 access token expiry and
// whether it needs popbridge auth again, at scrape time.
type tokenCollector struct{ m *metrics }

var (
	tokenExpiryDesc = prometheus.NewDesc("popbridge_oauth_token_expiry_timestamp_seconds",
		"Expiry of the account's current OAuth2 access token, in Unix seconds (after its first use).", []string{"account"}, nil)
	reauthDesc = prometheus.NewDesc("popbridge_oauth_reauth_needed",
		"1 when the account's OAuth2 grant is missing, expired or revoked: run popbridge auth.", []string{"account"}, nil)
)

func (c tokenCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- tokenExpiryDesc
	ch <- reauthDesc
}

func (c tokenCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.m.snapshot() {
		if s.Token == nil {
			continue
		}
		if !s.Token.expiry.IsZero() {
			ch <- prometheus.MustNewConstMetric(tokenExpiryDesc, prometheus.GaugeValue, float64(s.Token.expiry.Unix()), s.Account)
		}
		v := 0.0
		if s.Token.State == TokenReauth {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(reauthDesc, prometheus.GaugeValue, v, s.Account)
	}
}

// register makes account a known to the metrics (its backend type, for
// the backend call timings and /status); nothing when m is nil.
func (m *metrics) register(a config.Account) {
	if m != nil {
		m.account(a)
	}
}

// accountUsers returns the user names of cfg's accounts, in order.
func accountUsers(cfg *config.Config) []string {
	users := make([]string, len(cfg.Accounts))
	for i, a := range cfg.Accounts {
		users[i] = a.User
	}
	return users
}
