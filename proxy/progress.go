package proxy

import (
	"sync"
	"time"
)

// SyncProgress is what a backend reports about learning a maildrop
// (sizes, UIDLs) that takes longer than a login should, for logs,
// /status and popbridge sync. The zero value means nothing was learnt
// since the start.
type SyncProgress struct {
	// Running is true while the work goes on.
	Running bool
	// Done and Total count the messages of the current (or last) run:
	// learnt so far, and to learn in all.
	Done, Total int
	// Units is the upstream quota spent by the run (Gmail API units);
	// 0 where there is none.
	Units int64
	// Started and Ended bound the run; Ended is zero while it runs.
	Started, Ended time.Time
	// ETA is the estimated time left; 0 when unknown or done.
	ETA time.Duration
	// Err is why the last run stopped early; nil if it finished.
	Err error
}

// ETASeconds is ETA in whole seconds, rounded, for log fields (eta_s)
// and /status (eta_seconds).
func (p SyncProgress) ETASeconds() int64 {
	return int64(p.ETA.Round(time.Second) / time.Second)
}

// SyncReporter is implemented by a Backend that learns a large maildrop
// over time and can say how far it got.
type SyncReporter interface {
	SyncProgress() SyncProgress
}

// Every calls f every interval in a goroutine of its own until stop is
// called; stop returns once that goroutine has ended, so f never runs
// after it.
func Every(interval time.Duration, f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}
