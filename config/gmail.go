package config

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/popbridge/popbridge/internal/modes"
)

// TypeGmail serves a Gmail mailbox through the Gmail REST API
// (backends/gmail).
const TypeGmail = "gmail"

// GmailBackend serves the messages of a Gmail mailbox that carry every
// label in Labels and match Query, through the Gmail API.
type GmailBackend struct {
	// OAuth2 is the OAuth2 client (provider google, or custom with its
	// token_url for a private or fake endpoint); required. Its default
	// scope is gmail.modify, which allows every on_delete but delete.
	OAuth2 *OAuth2 `yaml:"oauth2"`
	// Labels are label ids a message must all carry. Empty means [INBOX].
	Labels []string `yaml:"labels"`
	// Query is a Gmail search string the messages must also match, e.g.
	// "-category:promotions". Empty means none.
	Query string `yaml:"query"`
	// Window limits what a session offers; the zero value offers all.
	Window GmailWindow `yaml:"window"`
	// OnDelete is what DELE does at QUIT: archive (remove the labels
	// served; the default), trash, delete (permanent; needs the scope
	// https://mail.google.com/), mark-read (remove UNREAD and hide from
	// POP) or keep (hide from POP only).
	OnDelete modes.OnDelete `yaml:"on_delete"`
	// DownloadOnce hides the messages a session retrieved with RETR once
	// it ends with QUIT, as Gmail's own POP does.
	DownloadOnce bool `yaml:"download_once"`
	// ExactSizes fetches every message once (format=raw) before offering
	// it, so that LIST is exact. False answers from Gmail's sizeEstimate
	// until a RETR learns the exact size. Nil means true.
	ExactSizes *bool `yaml:"exact_sizes"`
	// APIEndpoint is the API's base URL. Empty means
	// https://gmail.googleapis.com/.
	APIEndpoint string `yaml:"api_endpoint"`
	// MaxConcurrent bounds the API requests in flight (default 5);
	// QuotaPerMinute the quota units spent per minute (default 6000, the
	// per-user limit).
	MaxConcurrent  int `yaml:"max_concurrent"`
	QuotaPerMinute int `yaml:"quota_per_minute"`
	// CallTimeout bounds one API request (default 30s).
	CallTimeout Duration `yaml:"call_timeout"`
	// LoginWait bounds the time a login waits for the sizes of new
	// messages (default 8s); the rest are sized in the background and
	// offered by later logins.
	LoginWait Duration `yaml:"login_wait"`
}

// GmailWindow limits the messages a session offers: all of them (the
// zero value, written "all"), those received since a time ({since: 30d}
// or {since: 2026-01-31}), or the oldest Batch not yet downloaded
// ({batch: 250}), so that a large mailbox drains over several sessions.
type GmailWindow struct {
	// Since is a number of days ("30d") or a date (YYYY-MM-DD, UTC).
	Since string `yaml:"since"`
	// Batch is the number of messages per session; 0 means no limit.
	Batch int `yaml:"batch"`
}

// windowForms lists the forms of a window for messages.
const windowForms = "all, {since: 30d}, {since: YYYY-MM-DD} or {batch: N}"

// UnmarshalYAML accepts the scalar "all" or a mapping with since or
// batch.
func (w *GmailWindow) UnmarshalYAML(n *yaml.Node) error {
	*w = GmailWindow{}
	if n.Kind == yaml.ScalarNode {
		if n.Value == "all" || n.Value == "" {
			return nil
		}
		return typeErrorf("line %d: window must be %s", n.Line, windowForms)
	}
	if n.Kind != yaml.MappingNode {
		return typeErrorf("line %d: window must be all or a mapping", n.Line)
	}
	known := yamlKeys(reflect.TypeFor[GmailWindow]())
	for _, kv := range pairs(n) {
		if !known[kv[0].Value] {
			return typeErrorf("line %d: unknown key %q in window (want since or batch)", kv[0].Line, kv[0].Value)
		}
	}
	type plain GmailWindow
	return n.Decode((*plain)(w))
}

// Cutoff returns the earliest time the window admits relative to now, or
// the zero time for no limit.
func (w GmailWindow) Cutoff(now time.Time) (time.Time, error) {
	days, date, err := w.SinceDays()
	switch {
	case err != nil || days == 0 && date.IsZero():
		return time.Time{}, err
	case days > 0:
		return now.AddDate(0, 0, -days), nil
	}
	return date, nil
}

// SinceDays returns the window's start as a number of days before now
// (since: 30d), or as a fixed date (since: 2026-01-31); both zero for no
// time limit.
func (w GmailWindow) SinceDays() (days int, date time.Time, err error) {
	if w.Since == "" {
		return 0, time.Time{}, nil
	}
	if d, ok := strings.CutSuffix(w.Since, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 || n > 100000 {
			return 0, time.Time{}, fmt.Errorf("since %q: want a positive number of days, e.g. 30d", w.Since)
		}
		return n, time.Time{}, nil
	}
	t, err := time.Parse(time.DateOnly, w.Since)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("since %q: want a number of days (30d) or a date (YYYY-MM-DD)", w.Since)
	}
	return 0, t, nil
}

// Exact reports the value of ExactSizes, true when unset.
func (b *GmailBackend) Exact() bool { return b.ExactSizes == nil || *b.ExactSizes }

func (b *GmailBackend) resolve(r *resolver, key string) {
	if b.OAuth2 != nil {
		b.OAuth2.resolve(r, key+".oauth2")
	}
}

func (b *GmailBackend) validate(p *problems, key string) {
	if b.OAuth2 == nil {
		p.add(key+".oauth2", "must be set (the Gmail API needs an OAuth2 client)")
	} else {
		b.OAuth2.validate(p, key+".oauth2", "")
		if b.OAuth2.Provider == modes.ProviderMicrosoft {
			p.add(key+".oauth2.provider", "microsoft cannot grant Gmail API access (want google or custom)")
		}
	}
	for _, l := range b.Labels {
		if l == "" || strings.ContainsAny(l, " \t,") {
			p.add(key+".labels", "label id %q must be one non-empty word (e.g. INBOX, Label_12)", l)
		}
	}
	if err := b.Window.check(); err != nil {
		p.add(key+".window", "%v", err)
	}
	switch {
	case b.OnDelete == modes.Delete:
		if b.OAuth2 != nil && !slices.ContainsFunc(b.OAuth2.Scopes, func(s string) bool { return slices.Contains(modes.GmailDeleteScopes, s) }) {
			p.add(key+".on_delete", "delete needs oauth2.scopes to include %s (gmail.modify cannot delete); or use trash or archive",
				modes.GmailDeleteScopes[0])
		}
	case b.OnDelete != "" && !modes.GmailOnDelete.Has(b.OnDelete):
		p.add(key+".on_delete", "unknown policy %q (want %s)", b.OnDelete, modes.GmailOnDelete)
	}
	if b.APIEndpoint != "" {
		u, err := url.Parse(b.APIEndpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			p.add(key+".api_endpoint", "must be an http(s) base URL, e.g. %s", modes.DefaultGmailEndpoint)
		}
	}
	if b.MaxConcurrent < 0 || b.MaxConcurrent > 100 {
		p.add(key+".max_concurrent", "must be between 1 and 100 (0 means %d)", modes.DefaultGmailMaxConcurrent)
	}
	if b.QuotaPerMinute < 0 {
		p.add(key+".quota_per_minute", "must not be negative (0 means %d)", modes.DefaultGmailQuotaPerMinute)
	} else if b.QuotaPerMinute > 0 && b.QuotaPerMinute < 10 {
		p.add(key+".quota_per_minute", "must be at least 10 units (a messages.list costs 5)")
	}
	if v, err := b.CallTimeout.Value(); err != nil {
		p.add(key+".call_timeout", "%v", err)
	} else if v < 0 {
		p.add(key+".call_timeout", "must not be negative")
	}
	if v, err := b.LoginWait.Value(); err != nil {
		p.add(key+".login_wait", "%v", err)
	} else if v < 0 {
		p.add(key+".login_wait", "must not be negative (0 means %v)", modes.DefaultGmailLoginWait)
	}
}

func (w GmailWindow) check() error {
	if w.Since != "" && w.Batch != 0 {
		return fmt.Errorf("set since or batch, not both")
	}
	if w.Batch < 0 {
		return fmt.Errorf("batch must be positive")
	}
	_, err := w.Cutoff(time.Now())
	return err
}
