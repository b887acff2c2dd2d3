package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/memback"
	"github.com/popbridge/popbridge/proxy"
)

// TestReadyDuringShutdown checks that /readyz answers 503 as soon as a
// graceful shutdown starts, while a session is still busy.
func TestReadyDuringShutdown(t *testing.T) {
	path := writeConfig(t, "")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.HTTP = "127.0.0.1:0"
	st, err := openState(cfg.StateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.Nop()
	defer st.close(log)
	srv, err := newServer(cfg, &log, st)
	if err != nil {
		t.Fatal(err)
	}
	// Every login blocks in the backend until release is closed.
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	blocking := &memback.Backend{Hook: func(context.Context, memback.Op, string) error {
		once.Do(func() { close(entered) })
		<-release
		return fmt.Errorf("test: %w", proxy.ErrTemporary)
	}}
	srv.Backend = memback.AuthForTest(blocking, map[string]string{"alice": "s3cret"})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := hl.Addr().String()
	hl.Close()
	// Not ready before the listeners are up.
	if st.metrics.ready() {
		t.Fatal("ready before startHTTP")
	}
	stopHTTP, _, err := startHTTP(httpAddr, st.metrics, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stopHTTP()
	base := "http://" + httpAddr

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServer(ctx, srv, []listener{{Listener: l, name: "pop3"}}, log) }()
	if code, _ := httpGet(t, base+"/readyz", ""); code != 200 {
		t.Fatalf("/readyz while serving: %d", code)
	}

	p := dialPOP3(t, l.Addr().String())
	p.c.PrintfLine("USER alice")
	p.line()
	p.c.PrintfLine("PASS s3cret")
	<-entered // the session is busy in the backend
	cancel()
	waitFor(t, "/readyz to answer 503", func() string {
		if code, _ := httpGet(t, base+"/readyz", ""); code == 503 {
			return "yes"
		}
		return ""
	})
	select {
	case err := <-done:
		t.Fatalf("runServer returned (%v) before the busy session ended", err)
	default:
	}
	if code, _ := httpGet(t, base+"/healthz", ""); code != 200 {
		t.Errorf("/healthz while draining: %d", code)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("runServer: %v", err)
	}
	if code, _ := httpGet(t, base+"/readyz", ""); code != 503 {
		t.Errorf("/readyz after shutdown: %d", code)
	}
	_, metrics := httpGet(t, base+"/metrics", "")
	if v, _ := metricValue(metrics, `popbridge_sessions_active`); v != 0 {
		t.Errorf("sessions active after shutdown: %v", v)
	}
}

func TestErrorClass(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("x: %w: %w", oauth.ErrGrant, oauth.ErrGrant), "re-auth needed"},
		{fmt.Errorf("accounts: %w", proxy.ErrAuthFailed), "authentication failed"},
		{fmt.Errorf("imap: connect to h: %w: %w", proxy.ErrTemporary, &net.OpError{Op: "dial", Err: os.ErrNotExist}), "upstream unreachable"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), "upstream timeout"},
		{fmt.Errorf("x: %w", proxy.ErrNoMessage), ""},
		{fmt.Errorf("x: %w", proxy.ErrPermanent), "permanent failure"},
		{fmt.Errorf("secret detail"), "temporary failure"},
	} {
		if got := errorClass(c.err); got != c.want {
			t.Errorf("errorClass(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if !regexp.MustCompile(`^[a-z -]*$`).MatchString(errorClass(fmt.Errorf("%w", proxy.ErrInUse))) {
		t.Error("class not a short generic phrase")
	}
}

// TestReloadStopsSizing: a reload that replaces a gmail account's
// backend stops the old one's background sizing (the new one sizes at
// its first login); a reload that fails keeps it going; shutdown stops
// the new one's.
func TestReloadStopsSizing(t *testing.T) {
	tokens := oauthtest.Start(t)
	tokens.AddRefreshToken("rt-gmail")
	fake := gmailtest.Start(t)
	fake.SetValidToken(tokens.ValidAccess)
	for i := range 100 {
		fake.Add(fmt.Appendf(nil, "Subject: %d\r\n\r\nbody\r\n", i), "INBOX")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "popbridge.yaml")
	write := func(onDelete string) {
		cfg := fmt.Sprintf(`listen: {pop3: 127.0.0.1:0}
state_dir: state
accounts:
  - user: gina
    password_hash: %q
    backend:
      type: gmail
      api_endpoint: %s
      login_wait: 1s
      quota_per_minute: 600
      on_delete: %s
      oauth2: {provider: custom, client_id: %s, auth_url: %s, token_url: %s, scopes: [https://www.googleapis.com/auth/gmail.modify]}
`, testHash(t), fake.Endpoint(), onDelete, tokens.ClientID, tokens.AuthURL, tokens.TokenURL)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("archive")
	store := &oauth.Store{Dir: filepath.Join(dir, "state", TokenDir)}
	if err := store.Save("gina", &oauth2.Token{RefreshToken: "rt-gmail"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := openState(cfg.StateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := zerolog.New(logs)
	st.log = &log
	router, err := newRouter(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	st.commitBackends()
	sw := newSwapBackend(router)
	r := &reloader{path: path, backend: sw, st: st, log: &log, cfg: cfg}
	current := func() *gmail.Backend {
		st.workers.mu.Lock()
		defer st.workers.mu.Unlock()
		return st.workers.current[0].(*gmail.Backend)
	}
	old := current()

	mb, err := sw.Login(t.Context(), "gina", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	list, err := mb.List(t.Context())
	mb.Close()
	if err != nil || len(list) == 0 || len(list) == 100 {
		t.Fatalf("first login: %d messages, %v", len(list), err)
	}
	if !old.SyncProgress().Running {
		t.Fatal("no background sizing after the first login")
	}

	// A failed reload changes nothing: the sizing goes on.
	if err := os.WriteFile(path, []byte("accounts: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r.reload() == nil {
		t.Fatal("reload of a broken file succeeded")
	}
	if current() != old || !old.SyncProgress().Running {
		t.Fatal("a failed reload stopped the sizing")
	}

	write("trash")
	if err := r.reload(); err != nil {
		t.Fatal(err)
	}
	p := old.SyncProgress()
	if p.Running || p.Err == nil || current() == old {
		t.Errorf("after the reload the old backend still sizes: %+v", p)
	}
	calls := sum(fake.Calls())
	time.Sleep(300 * time.Millisecond)
	if n := sum(fake.Calls()); n != calls {
		t.Errorf("%d requests after the reload, before any login", n-calls)
	}

	// The new backend sizes from its first login on; shutdown stops it.
	mb, err = sw.Login(t.Context(), "gina", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mb.List(t.Context()); err != nil {
		t.Fatal(err)
	}
	mb.Close()
	nb := current()
	if !nb.SyncProgress().Running {
		t.Fatal("no background sizing after the login on the new backend")
	}
	st.close(log)
	if nb.SyncProgress().Running {
		t.Error("shutdown left the sizing running")
	}
	t.Logf("gmail: a reload stopped the replaced backend's sizing at %d/%d (a failed one did not); shutdown stopped the new one's", p.Done, p.Total)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestSyncStatusStates: the sync section's state and error class.
func TestSyncStatusStates(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		p            proxy.SyncProgress
		state, class string
	}{
		{proxy.SyncProgress{}, "idle", ""},
		{proxy.SyncProgress{Running: true, Done: 1, Total: 9, Started: at, ETA: 80 * time.Second}, "running", ""},
		{proxy.SyncProgress{Done: 9, Total: 9, Started: at, Ended: at}, "done", ""},
		{proxy.SyncProgress{Done: 3, Total: 9, Started: at, Ended: at,
			Err: fmt.Errorf("gmail: messages.get: %w: Get \"https://gmail.googleapis.com/x\": boom", proxy.ErrTemporary)}, "stopped", "temporary failure"},
	} {
		s := newSyncStatus(tc.p)
		if s.State != tc.state || s.Error != tc.class || s.Done != tc.p.Done || s.Total != tc.p.Total {
			t.Errorf("%+v: %+v", tc.p, s)
		}
		if b, _ := json.Marshal(s); strings.Contains(string(b), "googleapis") {
			t.Errorf("the upstream address shows: %s", b)
		}
	}
}
