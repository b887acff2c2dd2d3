package app

import (
	"context"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/accounts"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/proxy"
)

type plainBox struct{ committed, topped int }

func (b *plainBox) List(context.Context) ([]proxy.MessageInfo, error) {
	return []proxy.MessageInfo{{UID: "1", Size: 3}}, nil
}
func (b *plainBox) Open(context.Context, string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("x\r\n")), nil
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

func (b boxBackend) OpenMaildrop(context.Context, backends.Login) (proxy.Mailbox, error) {
	return b.mb, nil
}

// serveBox serves mb as account acct through an accounts router and a
// proxy.Server observed by m, and returns the server's address.
func serveBox(t *testing.T, m *metrics, acct config.Account, mb proxy.Mailbox) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	m.register(acct)
	r, err := accounts.New([]accounts.Account{{User: acct.User, PasswordHash: string(hash), Backend: boxBackend{mb}}}, accounts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := &proxy.Server{Backend: r, AuthFailureDelay: -1}
	m.setServer(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestBackendCallMetrics checks that the server's calls to an account's
// backend are timed by op, TopOpener and Committer included, under the
// account's name (not the backend's own MaildropID), and that a wrong
// password is not one of them.
func TestBackendCallMetrics(t *testing.T) {
	m := newMetrics(&config.Config{}, nil)
	acct := config.Account{User: "ann", Backend: config.Backend{Type: "gmail"}}
	m.setAccounts([]string{"ann"})

	full := &fullBox{}
	addr := serveBox(t, m, acct, full)
	p := dialPOP3(t, addr)
	p.cmd("USER ann")
	if s := p.cmd("PASS wrong"); !strings.HasPrefix(s, "-ERR [AUTH]") {
		t.Fatalf("PASS wrong: %q", s)
	}
	p.cmd("USER ann")
	if s := p.cmd("PASS pw"); !strings.HasPrefix(s, "+OK") {
		t.Fatalf("PASS: %q", s)
	}
	p.multi("TOP 1 0")
	p.cmd("QUIT")
	if full.topped != 1 || full.committed != 1 {
		t.Fatalf("calls not made: top %d commit %d", full.topped, full.committed)
	}
	if s := m.snapshot(); len(s) != 1 || s[0].LastLogin == nil || s[0].LastSync == nil {
		t.Errorf("/status after a login: %+v", s)
	}
	m.GmailUnits("ann", 5)
	m.GmailUnits("ann", 2)
	m.GmailBackoff("ann")
	m.GmailUnits("mallory", 3) // not configured: never a label
	m.GmailBackoff("mallory")
	m.BackendCall(proxy.BackendCall{Op: proxy.OpLogin, Account: "mallory", Err: proxy.ErrAuthFailed})
	var off *metrics // no listen.http
	off.GmailUnits("ann", 1)
	off.GmailBackoff("ann")
	off.BackendCall(proxy.BackendCall{Op: proxy.OpLogin, Account: "ann"})

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
	if strings.Contains(rec.Body.String(), "mallory") || strings.Contains(rec.Body.String(), "box-id") {
		t.Error("a name that is not a configured account became a label")
	}
	if strings.Contains(rec.Body.String(), "popbridge_account_errors_total{") {
		t.Errorf("a wrong password counted as an account error:\n%s", rec.Body.String())
	}

	// Without TopOpener and Committer, TOP is an open and QUIT a delete.
	m = newMetrics(&config.Config{}, nil)
	plain := &plainBox{}
	p = dialPOP3(t, serveBox(t, m, acct, plain))
	p.cmd("USER ann")
	p.cmd("PASS pw")
	p.multi("TOP 1 0")
	p.cmd("DELE 1")
	p.cmd("QUIT")
	rec = httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for op, want := range map[string]float64{"login": 1, "list": 1, "open": 1, "delete": 1, "top": -1, "commit": -1} {
		series := `popbridge_backend_call_duration_seconds_count{backend="gmail",op="` + op + `"}`
		got, ok := metricValue(rec.Body.String(), series)
		if want < 0 && ok {
			t.Errorf("plain: %s present", series)
		}
		if want >= 0 && (!ok || got != want) {
			t.Errorf("plain: %s = %v (present %v), want %v", series, got, ok, want)
		}
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
