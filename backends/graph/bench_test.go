package graph_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/popbridge/popbridge/backends/graph/graphtest"
)

// TestScale is opt-in: GRAPH_SCALE=N serves an N-message folder from the
// fake at 50 ms a request and reports the cold login (time to +OK,
// messages offered, requests), the background sizing, and a warm login.
func TestScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("GRAPH_SCALE"))
	if n <= 0 {
		t.Skip("set GRAPH_SCALE=N (e.g. 10000) to run")
	}
	fake := graphtest.Start(t)
	for i := range n {
		fake.Add("inbox", msg(i))
	}
	fake.SetLatency(50 * time.Millisecond)
	f := newFixture(t, fake, nil)

	start := time.Now()
	c := f.login()
	l := list(t, c)
	cold := time.Since(start)
	quit(t, c)
	coldCalls := fake.Calls()

	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	start = time.Now()
	if err := f.b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	sizing := time.Since(start)
	values, peak := fake.Calls()[graphtest.EValue], fake.MaxInFlight()

	fake.ResetStats()
	start = time.Now()
	c = f.login()
	l2 := list(t, c)
	warm := time.Since(start)
	quit(t, c)
	if len(l2.uids) != n {
		t.Fatalf("warm login offered %d of %d", len(l2.uids), n)
	}
	t.Logf("graph: %d messages at 50 ms a request: cold login +OK and LIST in %v offering %d (delta %d requests); "+
		"background sizing of the rest %v (%d $value in all, peak %d in flight); warm login %v with %v",
		n, cold.Round(time.Millisecond), len(l.uids), coldCalls[graphtest.EDelta], sizing.Round(time.Millisecond),
		values, peak, warm.Round(time.Millisecond), fake.Calls())
}
