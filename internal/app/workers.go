package app

import (
	"io"
	"sync"
	"time"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/proxy"
)

// workers tracks the backends that work in the background (the gmail
// backend's sizing), so that those a reload replaced, and all of them at
// shutdown, are stopped before the store closes. The zero value is ready.
type workers struct {
	mu      sync.Mutex
	current []io.Closer // the backends of the router in use
	built   []io.Closer // built since, for a router not in use yet
}

// adopt records a backend just built.
func (st *state) adopt(c io.Closer) {
	st.workers.mu.Lock()
	st.workers.built = append(st.workers.built, c)
	st.workers.mu.Unlock()
}

// commitBackends is called once the router of the backends built since
// the last call took over: the backends it replaced are stopped.
func (st *state) commitBackends() {
	st.workers.mu.Lock()
	old := st.workers.current
	st.workers.current, st.workers.built = st.workers.built, nil
	st.workers.mu.Unlock()
	closeAll(old)
}

// discardBackends stops the backends built since the last commit, whose
// router will not be used.
func (st *state) discardBackends() {
	st.workers.mu.Lock()
	built := st.workers.built
	st.workers.built = nil
	st.workers.mu.Unlock()
	closeAll(built)
}

// closeBackends stops every backend, at shutdown.
func (st *state) closeBackends() {
	st.discardBackends()
	st.commitBackends()
}

func closeAll(cs []io.Closer) {
	for _, c := range cs {
		c.Close()
	}
}

// syncStatus is the sync section of an account in /status: the progress
// of learning a large maildrop (gmail: sizing in the background; imap:
// the last listing that fetched sizes).
type syncStatus struct {
	State      string     `json:"state"` // running, done, stopped, or idle (nothing to learn yet)
	Done       int        `json:"done"`
	Total      int        `json:"total"`
	QuotaUnits int64      `json:"quota_units,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	ETASeconds int64      `json:"eta_seconds,omitempty"`
	Error      string     `json:"error,omitempty"` // a class, as in last_error
}

func newSyncStatus(p proxy.SyncProgress) *syncStatus {
	s := &syncStatus{State: "idle", Done: p.Done, Total: p.Total, QuotaUnits: p.Units,
		StartedAt: timePtr(p.Started), EndedAt: timePtr(p.Ended), ETASeconds: p.ETASeconds()}
	switch {
	case p.Running:
		s.State = "running"
	case p.Err != nil:
		// A class only, as in last_error: the log has the detail.
		s.State, s.Error = "stopped", errorClass(p.Err)
	case !p.Started.IsZero():
		s.State = "done"
	}
	return s
}

// syncSource records account a's progress reporter for /status.
func (m *metrics) syncSource(a config.Account, r proxy.SyncReporter) {
	if m == nil {
		return
	}
	s := m.account(a)
	s.mu.Lock()
	s.sync = r
	s.mu.Unlock()
}
