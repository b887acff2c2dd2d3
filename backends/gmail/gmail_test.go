package gmail_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/backends/gmail"
	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/internal/testcorpus"
	"github.com/popbridge/popbridge/proxy"
)

// fixture is a fake Gmail, a cache store and a POP3 server in front of a
// gmail.Backend, which can be rebuilt as after a restart.
type fixture struct {
	t      *testing.T
	fake   *gmailtest.Server
	dir    string
	store  *cache.Store
	bodies *cache.Bodies
	opts   gmail.Options
	b      *gmail.Backend
	srv    *proxy.Server
	addr   string
}

func newFixture(t *testing.T, fake *gmailtest.Server, mod func(*gmail.Options)) *fixture {
	t.Helper()
	f := &fixture{t: t, fake: fake, dir: t.TempDir()}
	f.opts = gmail.Options{
		Account:     "alice",
		Endpoint:    fake.Endpoint(),
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "test-token"}),
		BackoffBase: 20 * time.Millisecond,
	}
	if mod != nil {
		mod(&f.opts)
	}
	f.start()
	t.Cleanup(f.stop)
	return f
}

// start opens the store and serves a new Backend, as popbridge starting.
func (f *fixture) start() {
	t := f.t
	t.Helper()
	st, err := cache.Open(filepath.Join(f.dir, "cache.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	f.store, f.bodies = st, &cache.Bodies{}
	opts := f.opts
	opts.Store, opts.Bodies = st, f.bodies
	if f.b, err = gmail.New(opts); err != nil {
		t.Fatal(err)
	}
	f.srv = &proxy.Server{Backend: unchecked{f.b}, AuthFailureDelay: -1, BackendTimeout: 20 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go f.srv.Serve(ln)
	f.addr = ln.Addr().String()
}

// unchecked serves an Opener to a proxy.Server in tests, the way the
// accounts router serves a passthrough account without a password hash:
// each login is opened with the client's user name and password.
type unchecked struct{ backends.Opener }

func (u unchecked) Login(ctx context.Context, user, pass string) (proxy.Mailbox, error) {
	return u.OpenMaildrop(ctx, backends.Login{User: user, Password: pass})
}

func (f *fixture) stop() {
	if f.srv != nil {
		f.srv.Close()
		f.b.Close() // stops the background sizing before the store closes
		f.store.Close()
		f.srv = nil
	}
}

func (f *fixture) restart() {
	f.stop()
	f.start()
}

// login opens a POP3 session.
func (f *fixture) login() *pop3test.Client {
	f.t.Helper()
	c, err := pop3test.Dial(f.addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	if err := c.Login("alice", "pw"); err != nil {
		f.t.Fatalf("login: %v", err)
	}
	return c
}

// listing is a session's UIDL and LIST.
type listing struct {
	uids  []string
	sizes []int64
}

func list(t *testing.T, c *pop3test.Client) listing {
	t.Helper()
	var l listing
	_, body, err := c.CmdMulti("UIDL")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\r\n") {
		if f := strings.Fields(line); len(f) == 2 {
			l.uids = append(l.uids, f[1])
		}
	}
	_, body, err = c.CmdMulti("LIST")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\r\n") {
		if f := strings.Fields(line); len(f) == 2 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			l.sizes = append(l.sizes, n)
		}
	}
	if len(l.uids) != len(l.sizes) {
		t.Fatalf("UIDL has %d lines, LIST %d", len(l.uids), len(l.sizes))
	}
	return l
}

func quit(t *testing.T, c *pop3test.Client) string {
	t.Helper()
	reply, err := c.Cmd("QUIT")
	if err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	c.Close()
	return reply
}

// crlf is what RETR sends for data: every line end CRLF, and a final
// one added to a message that lacks it.
func crlf(data []byte) []byte {
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

// corpusFake is a fake Gmail whose INBOX holds the edge-case corpus in
// delivery order, every other message sent unpadded.
func corpusFake(t *testing.T) (*gmailtest.Server, []testcorpus.CorpusMessage, []string) {
	t.Helper()
	msgs, err := testcorpus.WriteCorpus(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fake := gmailtest.Start(t)
	var ids []string
	for i, m := range msgs {
		id := fake.Add(m.Data, "INBOX", "UNREAD")
		fake.SetUnpadded(id, i%2 == 1)
		ids = append(ids, id)
	}
	return fake, msgs, ids
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func TestCorpusExactAndStable(t *testing.T) {
	fake, msgs, ids := corpusFake(t)
	f := newFixture(t, fake, nil)

	c := f.login()
	l := list(t, c)
	if !slices.Equal(l.uids, ids) {
		t.Fatalf("UIDLs %v, want the Gmail ids in date order %v", l.uids, ids)
	}
	for i, m := range msgs {
		status, body, err := c.CmdMulti(fmt.Sprintf("RETR %d", i+1))
		if err != nil {
			t.Fatalf("RETR %d (%s): %v", i+1, m.Name, err)
		}
		want := crlf(m.Data)
		if !bytes.Equal(body, want) {
			t.Errorf("RETR %d (%s): %d octets differ from the message's %d", i+1, m.Name, len(body), len(want))
		}
		// LIST is exact: the octets RETR sends before the final CRLF that
		// a message without a line end gets.
		sent := int64(len(crlf(m.Data)))
		if len(m.Data) > 0 && !bytes.HasSuffix(m.Data, []byte("\n")) {
			sent -= 2
		}
		if l.sizes[i] != sent || !strings.Contains(status, strconv.FormatInt(sent, 10)+" octets") {
			t.Errorf("message %d (%s): LIST %d, RETR %q, sent %d", i+1, m.Name, l.sizes[i], status, sent)
		}
	}
	if r := quit(t, c); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("QUIT: %s", r)
	}
	// The RETRs were served from the bodies fetched to size the messages,
	// but for those too large for the body cache.
	want := len(msgs)
	for _, m := range msgs {
		if len(m.Data) > cache.DefaultBodyItem {
			want++
		}
	}
	if n := fake.Calls()["messages.get"]; n != want || want == len(msgs) {
		t.Errorf("messages.get called %d times for %d messages, want %d", n, len(msgs), want)
	}

	// Warm: same UIDLs and sizes, one API call.
	fake.ResetStats()
	c = f.login()
	if l2 := list(t, c); !slices.Equal(l2.uids, l.uids) || !slices.Equal(l2.sizes, l.sizes) {
		t.Errorf("second session lists %v, want %v", l2, l)
	}
	quit(t, c)
	if calls := fake.Calls(); sum(calls) > 2 || calls["history.list"] != 1 {
		t.Errorf("warm login with no change made calls %v, want history.list only", calls)
	}

	// After a restart, from the store alone; with the body cache empty,
	// every RETR streams Gmail's reply.
	f.restart()
	fake.ResetStats()
	c = f.login()
	if l3 := list(t, c); !slices.Equal(l3.uids, l.uids) || !slices.Equal(l3.sizes, l.sizes) {
		t.Errorf("after a restart: %v, want %v", l3, l)
	}
	if calls := fake.Calls(); sum(calls) > 2 {
		t.Errorf("warm login after restart made calls %v", calls)
	}
	for i, m := range msgs {
		if _, body, err := c.CmdMulti(fmt.Sprintf("RETR %d", i+1)); err != nil || !bytes.Equal(body, crlf(m.Data)) {
			t.Errorf("streamed RETR %d (%s): %d octets, %v", i+1, m.Name, len(body), err)
		}
	}
	quit(t, c)
	if n := fake.Calls()["messages.get"]; n != len(msgs) {
		t.Errorf("%d messages.get for %d streamed RETRs", n, len(msgs))
	}
	t.Logf("gmail: %d corpus messages (padded and unpadded raw) byte-identical through RETR, LIST exact, UIDL = Gmail id "+
		"stable across sessions and a restart; warm login = 1 history.list call", len(msgs))
}

func TestChangesByOtherClients(t *testing.T) {
	fake := gmailtest.Start(t)
	a := fake.Add([]byte("Subject: a\r\n\r\na\r\n"), "INBOX")
	bID := fake.Add([]byte("Subject: b\r\n\r\nb\r\n"), "INBOX")
	cID := fake.Add([]byte("Subject: c\r\n\r\nc\r\n"), "INBOX")
	f := newFixture(t, fake, nil)
	c := f.login()
	if l := list(t, c); !slices.Equal(l.uids, []string{a, bID, cID}) {
		t.Fatalf("first listing %v", l.uids)
	}
	quit(t, c)

	fake.Modify(a, nil, []string{"INBOX"}) // archived elsewhere
	fake.Remove(bID)                       // deleted for good
	d := fake.Add([]byte("Subject: d\r\n\r\nd\r\n"), "INBOX")
	e := fake.Add([]byte("Subject: e\r\n\r\ne\r\n"), "Label_1") // elsewhere
	fake.ResetStats()
	c = f.login()
	if l := list(t, c); !slices.Equal(l.uids, []string{cID, d}) {
		t.Errorf("after changes: %v, want [%s %s]", l.uids, cID, d)
	}
	quit(t, c)
	if calls := fake.Calls(); calls["history.list"] != 1 || calls["messages.get"] != 1 || calls["messages.list"] != 0 {
		t.Errorf("incremental sync calls %v, want one history.list and one get", calls)
	}

	fake.Modify(a, []string{"INBOX"}, nil) // moved back
	fake.Modify(e, []string{"INBOX"}, nil)
	c = f.login()
	if l := list(t, c); !slices.Equal(l.uids, []string{a, cID, d, e}) {
		t.Errorf("after moves into INBOX: %v", l.uids)
	}
	quit(t, c)

	// History too old: a full listing, no message fetched again.
	fake.ExpireHistory()
	fake.Remove(d)
	fake.ResetStats()
	c = f.login()
	if l := list(t, c); !slices.Equal(l.uids, []string{a, cID, e}) {
		t.Errorf("after a history 404: %v", l.uids)
	}
	quit(t, c)
	if calls := fake.Calls(); calls["messages.list"] != 1 || calls["messages.get"] != 0 {
		t.Errorf("resync calls %v, want one messages.list and no get", calls)
	}
	t.Logf("gmail: archive, delete, new mail and moves by another client followed through history.list; history 404 relisted without refetching sizes")
}

// state is a message's labels, or "deleted".
func state(fake *gmailtest.Server, id string) string {
	m, ok := fake.Message(id)
	if !ok || m.Deleted {
		return "deleted"
	}
	return strings.Join(m.Labels, ",")
}

func TestDeletePolicies(t *testing.T) {
	for _, tc := range []struct {
		policy modes.OnDelete
		want   string // the deleted messages' labels after QUIT
		hidden bool   // the kept message 2 is no longer offered either way
	}{
		{modes.Archive, "UNREAD", false},
		{modes.Trash, "TRASH,UNREAD", false},
		{modes.Delete, "deleted", false},
		{modes.MarkRead, "INBOX", true},
		{modes.Keep, "INBOX,UNREAD", true},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			fake := gmailtest.Start(t)
			fake.SetAllowDelete(tc.policy == modes.Delete)
			var ids []string
			for i := range 4 {
				ids = append(ids, fake.Add(fmt.Appendf(nil, "Subject: %d\r\n\r\nbody %d\r\n", i, i), "INBOX", "UNREAD"))
			}
			f := newFixture(t, fake, func(o *gmail.Options) { o.OnDelete = tc.policy })

			// A dropped session changes nothing.
			c := f.login()
			c.Cmd("DELE 1")
			c.Cmd("DELE 2")
			c.Close()
			time.Sleep(50 * time.Millisecond)
			for _, id := range ids {
				if got := state(fake, id); got != "INBOX,UNREAD" {
					t.Fatalf("after a dropped session %s is %s", id, got)
				}
			}

			c = f.login()
			if l := list(t, c); len(l.uids) != 4 {
				t.Fatalf("after the dropped session %d messages offered, want 4", len(l.uids))
			}
			c.Cmd("DELE 1")
			c.Cmd("DELE 3")
			if r := quit(t, c); !strings.HasPrefix(r, "+OK") {
				t.Fatalf("QUIT: %s", r)
			}
			for i, id := range ids {
				want := "INBOX,UNREAD"
				if i == 0 || i == 2 {
					want = tc.want
				}
				if got := state(fake, id); got != want {
					t.Errorf("message %d: %s, want %s", i+1, got, want)
				}
			}
			c = f.login()
			if l := list(t, c); !slices.Equal(l.uids, []string{ids[1], ids[3]}) {
				t.Errorf("next session offers %v, want %v", l.uids, []string{ids[1], ids[3]})
			}
			quit(t, c)
		})
	}
	t.Logf("gmail: delete policies archive, trash, delete, mark-read, keep checked on the fake's state after QUIT; a dropped session changed nothing")
}

func TestDeleteNeedsScope(t *testing.T) {
	fake := gmailtest.Start(t) // without AllowDelete: a gmail.modify token
	id := fake.Add([]byte("Subject: x\r\n\r\nx\r\n"), "INBOX")
	f := newFixture(t, fake, func(o *gmail.Options) { o.OnDelete = modes.Delete })
	c := f.login()
	c.Cmd("DELE 1")
	if r, err := c.Cmd("QUIT"); err == nil || !strings.Contains(err.Error(), "-ERR [SYS/TEMP]") {
		t.Errorf("QUIT with a refused delete: %q %v", r, err)
	}
	c.Close()
	if got := state(fake, id); got != "INBOX" {
		t.Errorf("message is %s", got)
	}
	c = f.login()
	if l := list(t, c); len(l.uids) != 1 {
		t.Errorf("the undeleted message is not offered again: %v", l.uids)
	}
	quit(t, c)
}

func TestDownloadOnce(t *testing.T) {
	fake := gmailtest.Start(t)
	var ids []string
	for i := range 3 {
		ids = append(ids, fake.Add(fmt.Appendf(nil, "Subject: %d\r\n\r\nbody\r\n", i), "INBOX"))
	}
	f := newFixture(t, fake, func(o *gmail.Options) { o.DownloadOnce = true; o.OnDelete = modes.Keep })

	// Retrieved in a dropped session: offered again.
	c := f.login()
	c.CmdMulti("RETR 1")
	c.Close()
	time.Sleep(50 * time.Millisecond)

	c = f.login()
	if l := list(t, c); len(l.uids) != 3 {
		t.Fatalf("after a dropped session: %v", l.uids)
	}
	c.CmdMulti("RETR 1")
	c.CmdMulti("TOP 2 0") // TOP does not count
	quit(t, c)

	c = f.login()
	if l := list(t, c); !slices.Equal(l.uids, []string{ids[1], ids[2]}) {
		t.Errorf("after RETR 1 and QUIT: %v, want %v", l.uids, ids[1:])
	}
	quit(t, c)
	if got := state(fake, ids[0]); got != "INBOX" {
		t.Errorf("download_once changed the message in Gmail: %s", got)
	}
	t.Logf("gmail: download_once hides what RETR fetched before a clean QUIT, not after a dropped session or a TOP")
}

func TestBatchWindow(t *testing.T) {
	fake := gmailtest.Start(t)
	var ids []string
	for i := range 7 {
		ids = append(ids, fake.Add(fmt.Appendf(nil, "Subject: %d\r\n\r\nbody\r\n", i), "INBOX"))
	}
	f := newFixture(t, fake, func(o *gmail.Options) { o.Window.Batch = 3; o.OnDelete = modes.Keep })
	for round, want := range [][]string{ids[0:3], ids[3:6], ids[6:7], nil} {
		fake.ResetStats()
		c := f.login()
		l := list(t, c)
		if !slices.Equal(l.uids, want) {
			t.Fatalf("session %d offers %v, want %v", round+1, l.uids, want)
		}
		if n := fake.Calls()["messages.get"]; n != len(want) {
			t.Errorf("session %d fetched %d messages for %d offered", round+1, n, len(want))
		}
		for i := range l.uids {
			c.CmdMulti(fmt.Sprintf("RETR %d", i+1))
		}
		quit(t, c)
	}
}

func TestSinceWindow(t *testing.T) {
	now := time.Now()
	fake := gmailtest.Start(t, gmailtest.WithClock(now.AddDate(0, 0, -60)))
	fake.AddAt([]byte("Subject: old\r\n\r\nold\r\n"), now.AddDate(0, 0, -60), "INBOX")
	fake.AddAt([]byte("Subject: older\r\n\r\nolder\r\n"), now.AddDate(0, 0, -31), "INBOX")
	recent := fake.AddAt([]byte("Subject: new\r\n\r\nnew\r\n"), now.AddDate(0, 0, -2), "INBOX")
	f := newFixture(t, fake, func(o *gmail.Options) { o.Window.MaxAge = 30 * 24 * time.Hour })
	c := f.login()
	if l := list(t, c); !slices.Equal(l.uids, []string{recent}) {
		t.Errorf("since 30d offers %v, want [%s]", l.uids, recent)
	}
	quit(t, c)
	if n := fake.Calls()["messages.get"]; n != 1 {
		t.Errorf("%d messages fetched, want only the recent one", n)
	}
}

func TestEstimatedSizes(t *testing.T) {
	fake := gmailtest.Start(t)
	body := []byte("Subject: estimate\n\nline one\nline two\n")
	id := fake.Add(body, "INBOX")
	f := newFixture(t, fake, func(o *gmail.Options) { o.EstimateSizes = true })
	m, _ := fake.Message(id)
	exact := int64(len(crlf(body)))

	c := f.login()
	if l := list(t, c); len(l.sizes) != 1 || l.sizes[0] != m.SizeEstimate {
		t.Fatalf("LIST %v, want the estimate %d", l.sizes, m.SizeEstimate)
	}
	if calls := fake.Calls(); calls["messages.get"] != 1 {
		t.Errorf("calls %v", calls)
	}
	if _, got, err := c.CmdMulti("RETR 1"); err != nil || !bytes.Equal(got, crlf(body)) {
		t.Fatalf("RETR: %q %v", got, err)
	}
	quit(t, c)
	c = f.login()
	if l := list(t, c); l.sizes[0] != exact {
		t.Errorf("after a RETR, LIST %d, want the exact %d", l.sizes[0], exact)
	}
	quit(t, c)
}

func TestTopThenRetrFetchesOnce(t *testing.T) {
	fake := gmailtest.Start(t)
	fake.Add([]byte("Subject: t\r\n\r\n1\r\n2\r\n3\r\n"), "INBOX")
	f := newFixture(t, fake, nil)
	c := f.login()
	quit(t, c)
	f.restart() // an empty body cache
	fake.ResetStats()
	c = f.login()
	if _, top, err := c.CmdMulti("TOP 1 1"); err != nil || string(top) != "Subject: t\r\n\r\n1\r\n" {
		t.Fatalf("TOP 1 1: %q %v", top, err)
	}
	if _, all, err := c.CmdMulti("RETR 1"); err != nil || string(all) != "Subject: t\r\n\r\n1\r\n2\r\n3\r\n" {
		t.Fatalf("RETR 1: %q %v", all, err)
	}
	quit(t, c)
	if n := fake.Calls()["messages.get"]; n != 1 {
		t.Errorf("TOP then RETR fetched %d times, want 1", n)
	}
}

func TestBackoff(t *testing.T) {
	fake := gmailtest.Start(t)
	fake.Add([]byte("Subject: x\r\n\r\nx\r\n"), "INBOX")
	f := newFixture(t, fake, nil)

	fake.FailNext(1, 429, "", "1")
	fake.FailNext(1, 403, "userRateLimitExceeded", "")
	fake.FailNext(1, 503, "", "")
	start := time.Now()
	c := f.login()
	if l := list(t, c); len(l.uids) != 1 {
		t.Fatalf("listing after retries: %v", l.uids)
	}
	quit(t, c)
	if took := time.Since(start); took < time.Second {
		t.Errorf("Retry-After: 1 not honoured: the session took %v", took)
	}
	if s := f.b.Stats(); s.Backoffs != 3 {
		t.Errorf("%d backoffs, want 3", s.Backoffs)
	}

	// A failing API gives a clear temporary error in time, not a hang.
	f.srv.BackendTimeout = 2 * time.Second
	fake.FailNext(1000, 503, "", "")
	fake.Add([]byte("Subject: y\r\n\r\ny\r\n"), "INBOX")
	c, err := pop3test.Dial(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Cmd("USER alice")
	start = time.Now()
	reply, _ := c.Cmd("PASS pw")
	if !strings.HasPrefix(reply, "-ERR [SYS/TEMP]") || time.Since(start) > 5*time.Second {
		t.Errorf("PASS against a failing API: %q after %v", reply, time.Since(start))
	}
	t.Logf("gmail: backoff on 429 (Retry-After honoured), 403 userRateLimitExceeded and 503; a failing API gave -ERR [SYS/TEMP] in %v", time.Since(start).Round(time.Millisecond))
}

func TestTokenRejected(t *testing.T) {
	fake := gmailtest.Start(t)
	fake.Add([]byte("Subject: x\r\n\r\nx\r\n"), "INBOX")
	fake.SetValidToken(func(tok string) bool { return tok == "another" })
	f := newFixture(t, fake, nil)
	c, err := pop3test.Dial(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Cmd("USER alice")
	reply, _ := c.Cmd("PASS pw")
	if !strings.HasPrefix(reply, "-ERR [SYS/PERM]") || !strings.Contains(reply, "popbridge auth") || strings.Contains(reply, "test-token") {
		t.Errorf("PASS with a rejected token: %q", reply)
	}
}

func TestConcurrencyBound(t *testing.T) {
	fake := gmailtest.Start(t)
	for i := range 40 {
		fake.Add(fmt.Appendf(nil, "Subject: %d\r\n\r\nbody\r\n", i), "INBOX")
	}
	fake.SetLatency(10 * time.Millisecond)
	fake.SetMaxConcurrent(5)
	f := newFixture(t, fake, nil)
	c := f.login()
	if l := list(t, c); len(l.uids) != 40 {
		t.Fatalf("%d messages", len(l.uids))
	}
	quit(t, c)
	if p := fake.MaxInFlight(); p > 5 || p < 2 {
		t.Errorf("peak %d requests in flight, want 2 to 5", p)
	}
	if s := f.b.Stats(); s.Backoffs != 0 {
		t.Errorf("%d backoffs: the fake's concurrency limit was hit", s.Backoffs)
	}
}

// failingSource is a token source whose grant was revoked.
type failingSource struct{ calls int }

func (s *failingSource) Token() (*oauth2.Token, error) {
	s.calls++
	return nil, fmt.Errorf("oauth: account alice: %w", &proxy.Error{Code: proxy.CodeSysPerm, Text: "OAuth2 grant expired or revoked; the owner must run popbridge auth"})
}

func TestTokenSourceFailureNotRetried(t *testing.T) {
	fake := gmailtest.Start(t)
	fake.Add([]byte("Subject: x\r\n\r\nx\r\n"), "INBOX")
	src := &failingSource{}
	f := newFixture(t, fake, func(o *gmail.Options) { o.TokenSource = src })
	c, err := pop3test.Dial(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Cmd("USER alice")
	reply, _ := c.Cmd("PASS pw")
	if !strings.HasPrefix(reply, "-ERR [SYS/PERM] OAuth2 grant expired") {
		t.Errorf("PASS with a revoked grant: %q", reply)
	}
	if err := f.b.Check(t.Context()); err == nil || !strings.Contains(err.Error(), "popbridge auth") {
		t.Errorf("Check: %v", err)
	}
	if s := f.b.Stats(); s.Backoffs != 0 || src.calls > 3 {
		t.Errorf("a revoked grant was retried: %d backoffs, %d token requests", s.Backoffs, src.calls)
	}
	if n := sum(fake.Calls()); n != 0 {
		t.Errorf("%d requests reached the API without a token", n)
	}
}
