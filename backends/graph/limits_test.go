package graph_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/graph"
	"github.com/popbridge/popbridge/backends/graph/graphtest"
	"github.com/popbridge/popbridge/backends/oauth"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/proxy"
)

func TestConcurrencyBound(t *testing.T) {
	fake := graphtest.Start(t) // rejects a fifth concurrent request with 429
	for i := range 40 {
		fake.Add("inbox", msg(i))
	}
	fake.SetLatency(10 * time.Millisecond)
	f := newFixture(t, fake, func(o *graph.Options) { o.OnDelete = graph.Delete })
	c := f.login()
	l := list(t, c)
	if len(l.uids) != 40 {
		t.Fatalf("%d messages", len(l.uids))
	}
	for i := range 40 {
		c.Cmd(fmt.Sprintf("DELE %d", i+1))
	}
	if r := quit(t, c); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("QUIT: %s", r)
	}
	if p := fake.MaxInFlight(); p > 4 || p < 2 {
		t.Errorf("peak %d requests in flight, want 2 to 4", p)
	}
	if s := f.b.Stats(); s.Backoffs != 0 {
		t.Errorf("%d backoffs: the fake's concurrency limit was hit", s.Backoffs)
	}
	if n := len(fake.IDs("inbox")); n != 0 {
		t.Errorf("%d messages left", n)
	}
	t.Logf("graph: 40 messages sized and purged (two $batch requests counted as 4 slots each) with at most %d requests in flight, no 429", fake.MaxInFlight())
}

func TestBackoff(t *testing.T) {
	fake := graphtest.Start(t)
	fake.Add("inbox", msg(1))
	f := newFixture(t, fake, nil)

	fake.FailNext(graphtest.Failure{N: 1, Status: 429, RetryAfter: "1.25"})
	fake.FailNext(graphtest.Failure{N: 1, Status: 429, Code: "TooManyRequests"}) // no Retry-After
	fake.FailNext(graphtest.Failure{N: 1, Status: 503, RetryAfter: "0.1"})
	start := time.Now()
	c := f.login()
	if l := list(t, c); len(l.uids) != 1 {
		t.Fatalf("listing after retries: %v", l.uids)
	}
	quit(t, c)
	if took := time.Since(start); took < 1250*time.Millisecond {
		t.Errorf("Retry-After: 1.25 not honoured: the session took %v", took)
	}
	if s := f.b.Stats(); s.Backoffs != 3 {
		t.Errorf("%d backoffs, want 3", s.Backoffs)
	}

	// A failing API gives a clear temporary error in time, not a hang.
	f.srv.BackendTimeout = 2 * time.Second
	fake.FailNext(graphtest.Failure{N: 1000, Status: 503})
	fake.Add("inbox", msg(2))
	start = time.Now()
	reply := pass(t, f)
	if !strings.HasPrefix(reply, "-ERR [SYS/TEMP]") || time.Since(start) > 5*time.Second {
		t.Errorf("PASS against a failing API: %q after %v", reply, time.Since(start))
	}
	t.Logf("graph: backoff on 429 (fractional Retry-After honoured, and without one) and 503; a failing API gave -ERR [SYS/TEMP] in %v", time.Since(start).Round(time.Millisecond))
}

// pass logs in and returns the reply to PASS.
func pass(t *testing.T, f *fixture) string {
	t.Helper()
	c, err := pop3test.Dial(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Cmd("USER alice")
	reply, err := c.Cmd("PASS pw")
	var re *pop3test.ResponseError
	if errors.As(err, &re) {
		return re.Line
	}
	return reply
}

func TestSlowAPI(t *testing.T) {
	fake := graphtest.Start(t)
	fake.Add("inbox", msg(1))
	f := newFixture(t, fake, func(o *graph.Options) { o.CallTimeout = 500 * time.Millisecond; o.MaxAttempts = 2 })
	c := f.login()
	list(t, c)
	f.bodies.Forget("alice")

	// The API stalls: RETR answers -ERR [SYS/TEMP] within the attempts'
	// timeouts, not never.
	fake.SetLatency(time.Hour)
	start := time.Now()
	_, err := c.Cmd("RETR 1")
	if err == nil || !strings.Contains(err.Error(), "[SYS/TEMP]") || time.Since(start) > 5*time.Second {
		t.Fatalf("RETR from a stalled API: %v after %v", err, time.Since(start))
	}
	took := time.Since(start)
	if r := quit(t, c); !strings.HasPrefix(r, "+OK") { // nothing to send: no request
		t.Fatalf("QUIT: %s", r)
	}
	f.srv.BackendTimeout = 2 * time.Second
	start = time.Now()
	if r := pass(t, f); !strings.HasPrefix(r, "-ERR [SYS/TEMP]") || time.Since(start) > 5*time.Second {
		t.Errorf("login against a stalled API: %q after %v", r, time.Since(start))
	}
	fake.SetLatency(0)
	t.Logf("graph: a stalled API gave RETR -ERR [SYS/TEMP] in %v and a login -ERR [SYS/TEMP] in %v", took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

func TestTokenRotationAndRejection(t *testing.T) {
	fake := graphtest.Start(t)
	fake.Add("inbox", msg(1))
	second := fake.Add("inbox", msg(2))
	cfg, err := oauth.Config{Provider: modes.ProviderCustom, ClientID: graphtest.ClientID, AuthURL: fake.URL + "/consumers/oauth2/v2.0/authorize",
		TokenURL: fake.TokenURL("consumers"), Scopes: []string{"offline_access", "Mail.ReadWrite"}}.OAuth2("graph")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	store := &oauth.Store{Dir: t.TempDir()}
	if err := store.Save("alice", &oauth2.Token{RefreshToken: fake.Grant()}); err != nil {
		t.Fatal(err)
	}
	src := oauth.NewSource(context.Background(), "alice", cfg, store, nil)
	f := newFixture(t, fake, func(o *graph.Options) { o.TokenSource = src })
	c := f.login()
	list(t, c)
	rt1, _ := store.Load("alice")
	// The access token expires mid-session: QUIT's $batch is sent again
	// with a refreshed one, and the rotated refresh token is kept.
	fake.ExpireAccessTokens()
	n := fake.Calls()[graphtest.EToken]
	c.Cmd("DELE 2")
	if r := quit(t, c); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("QUIT after the access token expired: %q", r)
	}
	if state(fake, second) != "deleteditems" {
		t.Errorf("message 2: %s", state(fake, second))
	}
	if got := fake.Calls()[graphtest.EToken] - n; got != 1 {
		t.Errorf("%d token requests for the QUIT, want 1", got)
	}
	if rt2, _ := store.Load("alice"); rt2 == nil || rt2.RefreshToken == rt1.RefreshToken {
		t.Errorf("rotated refresh token not saved")
	}

	// A revoked grant: -ERR [SYS/PERM] saying what to do, no secret.
	fake.Revoke()
	reply := pass(t, f)
	if !strings.HasPrefix(reply, "-ERR [SYS/PERM]") || strings.Contains(reply, "M.C5_") || strings.Contains(reply, "EwBIA") {
		t.Errorf("PASS with a revoked grant: %q", reply)
	}
	t.Logf("graph: a 401 mid-session refreshed the token once and QUIT's $batch went through; the rotated refresh token was saved; a revoked grant gave %q", reply)
}

func TestTokenRejectedStatic(t *testing.T) {
	fake := graphtest.Start(t)
	fake.Grant() // only issued tokens are valid now
	fake.Add("inbox", msg(1))
	f := newFixture(t, fake, nil)
	reply := pass(t, f)
	if !strings.HasPrefix(reply, "-ERR [SYS/PERM]") || !strings.Contains(reply, "popbridge auth") || strings.Contains(reply, "test-token") {
		t.Errorf("PASS with a rejected token: %q", reply)
	}
}

// syncBuf is a log sink for concurrent writers.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestTraceRedacted(t *testing.T) {
	fake := graphtest.Start(t)
	for i := range 5 {
		fake.Add("inbox", msg(i))
	}
	var buf syncBuf
	log := zerolog.New(&buf).Level(zerolog.TraceLevel)
	f := newFixture(t, fake, func(o *graph.Options) { o.Logger = &log; o.PageSize = 2 })
	c := f.login()
	list(t, c)
	quit(t, c)
	c = f.login()
	list(t, c)
	quit(t, c)
	out := buf.String()
	if !strings.Contains(out, `"graph: request"`) || !strings.Contains(out, `"call":"delta"`) || !strings.Contains(out, "deltatoken="+proxy.Redacted) {
		t.Fatalf("no trace lines: %s", out)
	}
	for _, secret := range []string{"test-token", "Bearer", "deltatoken=ey", "skiptoken=ey"} {
		if strings.Contains(out, secret) {
			t.Errorf("trace shows %q", secret)
		}
	}
	t.Logf("graph: trace lines for every request (call, status, request-id) with tokens and delta/skip tokens redacted")
}

func TestSharedMailboxFolderPathAndCheck(t *testing.T) {
	fake := graphtest.Start(t, graphtest.WithUser("shared@contoso.com"))
	lists := fake.AddFolder("inbox", "Lists")
	goID := fake.AddFolder(lists, "Go's")
	fake.Add("inbox", msg(0))
	want := []string{fake.Add(goID, msg(1)), fake.Add(goID, msg(2))}
	f := newFixture(t, fake, func(o *graph.Options) { o.Mailbox = "shared@contoso.com"; o.Folder = "Inbox/Lists/Go's" })
	if err := f.b.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := f.login()
	if l := list(t, c); !slices.Equal(l.uids, uidls(want)) {
		t.Errorf("folder by path: %v", l.uids)
	}
	quit(t, c)

	g := newFixture(t, fake, func(o *graph.Options) { o.Mailbox = "nobody@contoso.com" })
	if r := pass(t, g); !strings.HasPrefix(r, "-ERR [SYS/PERM]") {
		t.Errorf("unknown mailbox: %q", r)
	}
	h := newFixture(t, fake, func(o *graph.Options) { o.Folder = "Inbox/Nope" })
	if err := h.b.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "folder") {
		t.Errorf("Check of a missing folder: %v", err)
	}
	t.Logf("graph: a shared mailbox (/users/{address}) and a folder path with a quote resolved through childFolders; Check reads the folder")
}

func TestEstimateSizes(t *testing.T) {
	fake := graphtest.Start(t)
	id := fake.Add("inbox", msg(1))
	f := newFixture(t, fake, func(o *graph.Options) { o.EstimateSizes = true })
	c := f.login()
	l := list(t, c)
	if fake.Calls()[graphtest.EValue] != 0 || l.sizes[0] != int64(graphtest.EstimatedSize(msg(1))) {
		t.Fatalf("estimate: %v, calls %v", l.sizes, fake.Calls())
	}
	if _, body, err := c.CmdMulti("RETR 1"); err != nil || !bytes.Equal(body, crlf(msg(1))) {
		t.Fatalf("RETR: %v", err)
	}
	quit(t, c)
	c = f.login()
	if l := list(t, c); l.sizes[0] != int64(len(crlf(msg(1)))) {
		t.Errorf("after RETR the size is %d, want the exact %d", l.sizes[0], len(crlf(msg(1))))
	}
	quit(t, c)
	_ = id
}

func TestLargeFirstLogin(t *testing.T) {
	fake := graphtest.Start(t)
	var ids []string
	for i := range 400 {
		ids = append(ids, fake.Add("inbox", msg(i)))
	}
	fake.SetLatency(20 * time.Millisecond)
	var buf syncBuf
	log := zerolog.New(&buf)
	f := newFixture(t, fake, func(o *graph.Options) { o.LoginWait = 500 * time.Millisecond; o.Logger = &log })
	start := time.Now()
	c := f.login()
	l := list(t, c)
	first := time.Since(start)
	quit(t, c)
	if len(l.uids) == 0 || len(l.uids) == len(ids) {
		t.Fatalf("first login offered %d of %d messages; log:\n%s", len(l.uids), len(ids), buf.String())
	}
	if !slices.Equal(l.uids, uidls(ids[:len(l.uids)])) {
		t.Errorf("first login did not offer the oldest messages")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	c = f.login()
	if l2 := list(t, c); !slices.Equal(l2.uids, uidls(ids)) {
		t.Errorf("after the sizing: %d messages", len(l2.uids))
	}
	quit(t, c)
	if n := fake.Calls()[graphtest.EValue]; n != len(ids) {
		t.Errorf("%d $value for %d messages", n, len(ids))
	}
	t.Logf("graph: %d-message folder at 20 ms a request: first login answered in %v with the oldest %d messages; the rest sized in the background, each $value fetched once",
		len(ids), first.Round(time.Millisecond), len(l.uids))
}

func TestUnfetchableMessage(t *testing.T) {
	fake := graphtest.Start(t)
	var ids []string
	for i := range 6 {
		ids = append(ids, fake.Add("inbox", msg(i)))
	}
	fake.FailNext(graphtest.Failure{N: 1, Endpoint: graphtest.EValue, Status: 400, Code: "ErrorInvalidIdMalformed"})
	f := newFixture(t, fake, nil)
	c := f.login()
	l := list(t, c)
	quit(t, c)
	if len(l.uids) != 5 {
		t.Fatalf("first login offered %d messages, want 5 (one $value refused)", len(l.uids))
	}
	c = f.login()
	if l := list(t, c); !slices.Equal(l.uids, uidls(ids)) {
		t.Errorf("second login: %d messages", len(l.uids))
	}
	quit(t, c)
	t.Logf("graph: a message whose $value was refused (400) was left out without holding back the others, and offered once readable")
}

func TestAppLimit(t *testing.T) {
	fake := graphtest.Start(t)
	for i := range 20 {
		fake.Add("inbox", msg(i))
		fake.Add("archive", msg(100+i))
	}
	fake.SetLatency(10 * time.Millisecond)
	app := graph.NewLimit(2)
	f := newFixture(t, fake, func(o *graph.Options) { o.AppLimit = app })
	g := newFixture(t, fake, func(o *graph.Options) { o.AppLimit = app; o.Folder = "archive"; o.Account = "bob" })
	var wg sync.WaitGroup
	for _, x := range []*fixture{f, g} {
		wg.Go(func() {
			c := x.login()
			if l := list(t, c); len(l.uids) != 20 {
				t.Errorf("%d messages", len(l.uids))
			}
			quit(t, c)
		})
	}
	wg.Wait()
	if p := fake.MaxInFlight(); p > 2 {
		t.Errorf("two mailboxes sharing an app limit of 2 had %d requests in flight", p)
	}
	t.Logf("graph: two mailboxes sharing an app-wide limit of 2 kept at most %d requests in flight", fake.MaxInFlight())
}
