package app

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/proxy"
)

type plainBox struct{ committed, topped int }

func (b *plainBox) List(context.Context) ([]proxy.MessageInfo, error) { return nil, nil }
func (b *plainBox) Open(context.Context, string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("x")), nil
}
func (b *plainBox) Delete(context.Context, []string) error { return nil }
func (b *plainBox) Close() error                           { return nil }

// fullBox has every optional interface.
type fullBox struct{ plainBox }

func (b *fullBox) OpenTop(ctx context.Context, uid string, lines int) (io.ReadCloser, error) {
	b.topped++
	return b.Open(ctx, uid)
}
func (b *fullBox) Commit(context.Context, []string, []string) error { b.committed++; return nil }
func (b *fullBox) MaildropID() string                               { return "box-id" }

type boxBackend struct{ mb proxy.Mailbox }

func (b boxBackend) Login(context.Context, string, string) (proxy.Mailbox, error) { return b.mb, nil }

// TestRecordingMailbox checks that the recording wrapper has TopOpener
// and Committer exactly when the wrapped Mailbox has them, times them,
// and unwraps to it.
func TestRecordingMailbox(t *testing.T) {
	m := newMetrics(&config.Config{}, nil)
	acct := config.Account{User: "ann", Backend: config.Backend{Type: "gmail"}}
	ctx := context.Background()

	full := &fullBox{}
	mb, err := m.wrap(acct, boxBackend{full}).Login(ctx, "ann", "pw")
	if err != nil {
		t.Fatal(err)
	}
	top, ok1 := mb.(proxy.TopOpener)
	com, ok2 := mb.(proxy.Committer)
	if !ok1 || !ok2 || mb.(proxy.Unwrapper).Unwrap() != full {
		t.Fatalf("wrapper of a full Mailbox: TopOpener %v, Committer %v", ok1, ok2)
	}
	top.OpenTop(ctx, "1", 0)
	com.Commit(ctx, nil, []string{"1"})
	if full.topped != 1 || full.committed != 1 {
		t.Fatalf("calls not forwarded: top %d commit %d", full.topped, full.committed)
	}
	m.GmailUnits("ann", 5)
	m.GmailUnits("ann", 2)
	m.GmailBackoff("ann")
	m.GmailUnits("mallory", 3) // not configured: never a label
	m.GmailBackoff("mallory")
	var off *metrics // no listen.http
	off.GmailUnits("ann", 1)
	off.GmailBackoff("ann")

	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for op, want := range map[string]float64{"login": 1, "top": 1, "commit": 1, "open": -1} {
		series := `popbridge_backend_call_duration_seconds_count{backend="gmail",op="` + op + `"}`
		got, ok := metricValue(rec.Body.String(), series)
		if want < 0 && ok {
			t.Errorf("%s present before its first use", series)
		}
		if want >= 0 && (!ok || got != want) {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}

	if got, _ := metricValue(rec.Body.String(), `popbridge_gmail_quota_units_total{account="ann"}`); got != 7 {
		t.Errorf("gmail units %v, want 7", got)
	}
	if got, _ := metricValue(rec.Body.String(), `popbridge_gmail_backoffs_total{account="ann"}`); got != 1 {
		t.Errorf("gmail backoffs %v, want 1", got)
	}
	if strings.Contains(rec.Body.String(), "mallory") {
		t.Error("an account that is not configured became a label")
	}

	plain := &plainBox{}
	mb, _ = m.wrap(acct, boxBackend{plain}).Login(ctx, "ann", "pw")
	if _, ok := mb.(proxy.TopOpener); ok {
		t.Error("wrapper of a plain Mailbox has TopOpener")
	}
	if _, ok := mb.(proxy.Committer); ok {
		t.Error("wrapper of a plain Mailbox has Committer")
	}
	if _, ok := mb.(proxy.MaildropIDer); ok {
		t.Error("wrapper has MaildropIDer of its own; the proxy should find the backend's through Unwrap")
	}
}

// TestObserverAllocs checks that the per-command hooks do not allocate.
func TestObserverAllocs(t *testing.T) {
	m := newMetrics(&config.Config{}, nil)
	n := testing.AllocsPerRun(100, func() {
		m.Command("RETR", true)
		m.Command("other", false)
		m.BytesSent(1234)
		m.SessionStart()
		m.SessionEnd(proxy.SessionSummary{Outcome: proxy.OutcomeQuit})
	})
	if n != 0 {
		t.Errorf("observer hooks allocate %v times per run", n)
	}
}
