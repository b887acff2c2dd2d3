package app

import (
	"fmt"
	"time"

	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/config"
)

// newGmailBackend builds the gmail backend of account a, with the
// refreshing token source of its oauth2 section.
func newGmailBackend(a config.Account, st *state) (*gmail.Backend, error) {
	c := a.Backend.Gmail
	timeout, err := c.CallTimeout.Value()
	if err != nil {
		return nil, fmt.Errorf("call_timeout: %w", err)
	}
	wait, err := c.LoginWait.Value()
	if err != nil {
		return nil, fmt.Errorf("login_wait: %w", err)
	}
	ts, err := oauthSource(a, st)
	if err != nil {
		return nil, err
	}
	opts := gmail.Options{
		Account:        a.User,
		Store:          st.store,
		Bodies:         st.bodies,
		TokenSource:    ts,
		Endpoint:       c.APIEndpoint,
		Labels:         c.Labels,
		Query:          c.Query,
		Window:         gmail.Window{Batch: c.Window.Batch},
		OnDelete:       c.OnDelete,
		DownloadOnce:   c.DownloadOnce,
		EstimateSizes:  !c.Exact(),
		MaxConcurrent:  c.MaxConcurrent,
		QuotaPerMinute: c.QuotaPerMinute,
		CallTimeout:    timeout,
		LoginWait:      wait,
		Logger:         st.log,
		// st.metrics is read at each call: nil (no listen.http) is a no-op.
		OnCall:    func(_ string, units int) { st.metrics.GmailUnits(a.User, units) },
		OnBackoff: func(string) { st.metrics.GmailBackoff(a.User) },
	}
	// A number of days moves with the clock; a date does not.
	days, date, err := c.Window.SinceDays()
	if err != nil {
		return nil, fmt.Errorf("window: %w", err)
	}
	opts.Window.MaxAge, opts.Window.Since = time.Duration(days)*24*time.Hour, date
	b, err := gmail.New(opts)
	if err != nil {
		return nil, err
	}
	st.adopt(b) // its background sizing stops when it is replaced or at shutdown
	st.metrics.syncSource(a, b)
	if st.gmail == nil {
		st.gmail = map[string]*gmail.Backend{}
	}
	st.gmail[a.User] = b // for its sender, built next
	return b, nil
}
