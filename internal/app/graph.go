package app

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/popbridge/popbridge/backends/graph"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/modes"
)

// newGraphBackend builds the graph backend of account a, with the
// refreshing token source of its oauth2 section.
func newGraphBackend(a config.Account, st *state) (*graph.Backend, error) {
	c := a.Backend.Graph
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
	opts := graph.Options{
		Account:        a.User,
		Store:          st.store,
		Bodies:         st.bodies,
		TokenSource:    ts,
		Endpoint:       c.APIEndpoint,
		Mailbox:        c.Mailbox,
		Folder:         c.Folder,
		Window:         graph.Window{Batch: c.Window.Batch},
		OnDelete:       c.OnDelete,
		DownloadOnce:   c.DownloadOnce,
		MarkReadOnRetr: c.MarkReadOnRetr,
		EstimateSizes:  !c.Exact(),
		MaxConcurrent:  c.MaxConcurrent,
		CallTimeout:    timeout,
		LoginWait:      wait,
		Logger:         st.log,
		// st.metrics is read at each call: nil (no listen.http) is a no-op.
		OnCall: func(name string) { st.metrics.GraphCall(a.User, name) },
	}
	// A number of days moves with the clock; a date does not.
	days, date, err := c.Window.SinceDays()
	if err != nil {
		return nil, fmt.Errorf("window: %w", err)
	}
	opts.Window.MaxAge, opts.Window.Since = time.Duration(days)*24*time.Hour, date
	b, err := graph.New(opts)
	if err != nil {
		return nil, err
	}
	if st.graph == nil {
		st.graph = map[string]*graph.Backend{}
	}
	st.graph[a.User] = b // for its sender, built next
	st.adopt(b)          // its background sizing stops when it is replaced or at shutdown
	st.metrics.syncSource(a, b)
	return b, nil
}

// describeGraph names a graph backend for people, defaults included.
func describeGraph(c *config.GraphBackend) string {
	endpoint, mailbox, folder := c.APIEndpoint, c.Mailbox, c.Folder
	if endpoint == "" {
		endpoint = modes.DefaultGraphEndpoint
	}
	if mailbox == "" {
		mailbox = "me"
	}
	if folder == "" {
		folder = modes.DefaultGraphFolder
	}
	return fmt.Sprintf("graph %s, mailbox %s, folder %s, on_delete %s, download_once %v", endpoint, mailbox, folder,
		modes.GraphOnDelete.Or(c.OnDelete), c.DownloadOnce)
}

// graphCallsVec returns popbridge_graph_calls_total, made on the first call of a
// configured graph account, so that a server without one has no series.
func (m *metrics) graphCallsVec() *prometheus.CounterVec {
	m.graphOnce.Do(func() {
		m.graphCalls = factory{m.reg}.counterVec("popbridge_graph_calls_total",
			"Microsoft Graph requests sent (a $batch is one), by account and call (delta, value, batch, folder, ...).", "account", "call")
	})
	return m.graphCalls
}

// GraphCall counts one Graph request named name of account (a configured
// account name; others are ignored).
func (m *metrics) GraphCall(account, name string) {
	if m == nil || !m.known(account) {
		return
	}
	m.graphCallsVec().WithLabelValues(account, name).Inc()
}
