package graph_test

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/popbridge/popbridge/backends/graph"
	"github.com/popbridge/popbridge/backends/graph/graphtest"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/memback"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/internal/pop3test"
	"github.com/popbridge/popbridge/internal/testcorpus"
	"github.com/popbridge/popbridge/proxy"
)

// fixture is a fake Graph, a cache store and a POP3 server in front of a
// graph.Backend, which can be rebuilt as after a restart.
type fixture struct {
	t      *testing.T
	fake   *graphtest.Server
	dir    string
	store  *cache.Store
	bodies *cache.Bodies
	opts   graph.Options
	b      *graph.Backend
	srv    *proxy.Server
	addr   string
}

func newFixture(t *testing.T, fake *graphtest.Server, mod func(*graph.Options)) *fixture {
	t.Helper()
	f := &fixture{t: t, fake: fake, dir: t.TempDir()}
	f.opts = graph.Options{
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
	if f.b, err = graph.New(opts); err != nil {
		t.Fatal(err)
	}
	f.srv = &proxy.Server{Backend: memback.AuthForTest(f.b, map[string]string{"alice": "pw"}), AuthFailureDelay: -1, BackendTimeout: 20 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go f.srv.Serve(ln)
	f.addr = ln.Addr().String()
}

func (f *fixture) stop() {
	if f.srv != nil {
		f.srv.Close()
		f.b.Close()
		f.store.Close()
		f.srv = nil
	}
}

func (f *fixture) restart() { f.stop(); f.start() }

// login opens a POP3 session; while a dropped session still holds the
// maildrop ([IN-USE]), it tries again for up to 10 seconds.
func (f *fixture) login() *pop3test.Client {
	f.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := pop3test.Dial(f.addr)
		if err != nil {
			f.t.Fatal(err)
		}
		f.t.Cleanup(func() { c.Close() })
		err = c.Login("alice", "pw")
		if err == nil {
			return c
		}
		c.Close()
		if !strings.Contains(err.Error(), "[IN-USE]") || time.Now().After(deadline) {
			f.t.Fatalf("login: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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

// crlf is what RETR sends for data.
func crlf(data []byte) []byte {
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func uidls(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = graph.UIDL(id)
	}
	return out
}

func msg(n int) []byte {
	return []byte(fmt.Sprintf("From: a@example.com\nSubject: message %d\n\nbody %d\n", n, n))
}

func TestCorpusExactAndStable(t *testing.T) {
	msgs, err := testcorpus.WriteCorpus(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fake := graphtest.Start(t, graphtest.WithLongIDs())
	fake.SetPageSize(3)
	var ids []string
	for _, m := range msgs {
		ids = append(ids, fake.Add("inbox", m.Data))
	}
	if len(ids[0]) <= 70 {
		t.Fatalf("fake ids of %d characters", len(ids[0]))
	}
	f := newFixture(t, fake, func(o *graph.Options) { o.PageSize = 4 })

	c := f.login()
	l := list(t, c)
	if !slices.Equal(l.uids, uidls(ids)) {
		t.Fatalf("UIDLs %v, want the ids' UIDLs in date order", l.uids)
	}
	for _, u := range l.uids {
		if len(u) > 70 || len(u) == 0 {
			t.Fatalf("UIDL %q", u)
		}
	}
	for i, m := range msgs {
		status, body, err := c.CmdMulti(fmt.Sprintf("RETR %d", i+1))
		if err != nil {
			t.Fatalf("RETR %d (%s): %v", i+1, m.Name, err)
		}
		if want := crlf(m.Data); !bytes.Equal(body, want) {
			t.Errorf("RETR %d (%s): %d octets differ from the message's %d", i+1, m.Name, len(body), len(want))
		}
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
	// Sized once each; the RETRs came from the body cache but for the
	// messages too large for it.
	want := len(msgs)
	for _, m := range msgs {
		if len(m.Data) > cache.DefaultBodyItem {
			want++
		}
	}
	if n := fake.Calls()[graphtest.EValue]; n != want || want == len(msgs) {
		t.Errorf("$value fetched %d times for %d messages, want %d", n, len(msgs), want)
	}
	if n := fake.WithoutImmutable(); n != 0 {
		t.Errorf("%d requests without Prefer: IdType=\"ImmutableId\"", n)
	}

	// Warm: same UIDLs and sizes, one delta request.
	fake.ResetStats()
	c = f.login()
	if l2 := list(t, c); !slices.Equal(l2.uids, l.uids) || !slices.Equal(l2.sizes, l.sizes) {
		t.Errorf("second session lists %v, want %v", l2, l)
	}
	quit(t, c)
	warm := fake.Calls()
	if sum(warm) > 2 || warm[graphtest.EDelta] != 1 {
		t.Errorf("warm login with no change made calls %v, want one delta", warm)
	}

	// After a restart (the store reopened), from the store alone.
	f.restart()
	fake.ResetStats()
	c = f.login()
	if l3 := list(t, c); !slices.Equal(l3.uids, l.uids) || !slices.Equal(l3.sizes, l.sizes) {
		t.Errorf("after a restart: %v, want %v", l3, l)
	}
	quit(t, c)
	if calls := fake.Calls(); sum(calls) > 2 {
		t.Errorf("warm login after a restart made calls %v", calls)
	}

	// An expired delta token: a full round, the same UIDLs and sizes, no
	// message fetched again.
	fake.ExpireDelta()
	fake.ResetStats()
	c = f.login()
	if l4 := list(t, c); !slices.Equal(l4.uids, l.uids) || !slices.Equal(l4.sizes, l.sizes) {
		t.Errorf("after a delta resync: %v, want %v", l4, l)
	}
	quit(t, c)
	resync := fake.Calls()
	if resync[graphtest.EValue] != 0 || resync[graphtest.EDelta] < 2 {
		t.Errorf("resync calls %v", resync)
	}
	t.Logf("graph: %d corpus messages byte-identical through RETR with LIST = RETR octets; %d-character ids mapped to 32-character UIDLs "+
		"stable across sessions, a restart and a delta resync (410); warm login = %d request(s) %v", len(msgs), len(ids[0]), sum(warm), warm)
}

func TestChangesByOtherClients(t *testing.T) {
	fake := graphtest.Start(t)
	var ids []string
	for i := range 5 {
		ids = append(ids, fake.Add("inbox", msg(i)))
	}
	f := newFixture(t, fake, nil)
	c := f.login()
	if l := list(t, c); !slices.Equal(l.uids, uidls(ids)) {
		t.Fatalf("first listing %v", l.uids)
	}
	quit(t, c)
	fake.Move(ids[0], "archive")
	fake.Remove(ids[1])
	n := fake.Add("inbox", msg(9))
	fake.SetDuplicates(true)
	c = f.login()
	want := uidls(append(slices.Clone(ids[2:]), n))
	if l := list(t, c); !slices.Equal(l.uids, want) {
		t.Fatalf("after changes: %v, want %v", l.uids, want)
	}
	quit(t, c)
	t.Logf("graph: a move and a deletion by another client (@removed) and new mail (listed twice in a page) followed through delta")
}

func state(fake *graphtest.Server, id string) string {
	m, ok := fake.Message(id)
	switch {
	case !ok:
		return "missing"
	case m.Purged:
		return "purged"
	}
	s := m.Folder
	if m.IsRead {
		s += ",read"
	}
	return s
}

func TestDeletePolicies(t *testing.T) {
	for _, tc := range []struct {
		policy modes.OnDelete
		want   string
		hidden bool
	}{
		{"", "deleteditems", false},
		{graph.DeletedItems, "deleteditems", false},
		{graph.Archive, "archive", false},
		{graph.Delete, "purged", false},
		{graph.MarkRead, "inbox,read", true},
		{graph.Keep, "inbox", true},
		{"move:Inbox/Done", "Done", false},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			fake := graphtest.Start(t)
			fake.AddFolder("inbox", "Done")
			var ids []string
			for i := range 25 { // more than one $batch
				ids = append(ids, fake.Add("inbox", msg(i)))
			}
			fake.FailBatchItems(3, 429, "0.05")
			f := newFixture(t, fake, func(o *graph.Options) { o.OnDelete = tc.policy })

			// A dropped session changes nothing.
			c := f.login()
			list(t, c)
			for i := range ids {
				c.Cmd(fmt.Sprintf("DELE %d", i+1))
			}
			c.Close()
			c = f.login() // once the dropped session has ended
			for _, id := range ids {
				if s := state(fake, id); s != "inbox" {
					t.Fatalf("after a dropped session: %s", s)
				}
			}
			list(t, c)
			for i := range 21 {
				if r, err := c.Cmd(fmt.Sprintf("DELE %d", i+1)); err != nil {
					t.Fatal(r, err)
				}
			}
			if r := quit(t, c); !strings.HasPrefix(r, "+OK") {
				t.Fatalf("QUIT: %s", r)
			}
			for i, id := range ids {
				want := tc.want
				if i >= 21 {
					want = "inbox"
				}
				if s := state(fake, id); s != want {
					t.Errorf("message %d: %s, want %s", i+1, s, want)
				}
			}
			if calls := fake.Calls(); tc.policy != graph.Keep && (calls[graphtest.EBatch] < 3 || calls[graphtest.EBatchItem] != 24) {
				t.Errorf("calls %v, want two $batch requests and a retry of the 3 throttled items", calls)
			}
			c = f.login()
			l := list(t, c)
			quit(t, c)
			if len(l.uids) != 4 {
				t.Errorf("after QUIT the maildrop has %d messages, want 4", len(l.uids))
			}
		})
	}
	t.Logf("graph: on_delete deleteditems (default), archive, delete, mark-read, keep and move:FOLDER checked on the fake's state after QUIT, " +
		"21 messages in two $batch requests with throttled items retried; a dropped session changed nothing")
}

func TestDownloadOnceAndMarkRead(t *testing.T) {
	fake := graphtest.Start(t)
	var ids []string
	for i := range 3 {
		ids = append(ids, fake.Add("inbox", msg(i)))
	}
	f := newFixture(t, fake, func(o *graph.Options) { o.DownloadOnce, o.MarkReadOnRetr, o.OnDelete = true, true, graph.Keep })
	// Dropped: nothing.
	c := f.login()
	list(t, c)
	c.CmdMulti("RETR 1")
	c.Close()
	c = f.login()
	if l := list(t, c); len(l.uids) != 3 {
		t.Fatalf("after a dropped session: %d messages", len(l.uids))
	}
	c.CmdMulti("RETR 1")
	c.CmdMulti("TOP 2 0")
	quit(t, c)
	if state(fake, ids[0]) != "inbox,read" || state(fake, ids[1]) != "inbox" {
		t.Errorf("mark_read_on_retr: %s, %s", state(fake, ids[0]), state(fake, ids[1]))
	}
	c = f.login()
	if l := list(t, c); !slices.Equal(l.uids, uidls(ids[1:])) {
		t.Errorf("download_once: %v", l.uids)
	}
	quit(t, c)
	t.Logf("graph: download_once hides and mark_read_on_retr flags what RETR fetched before a clean QUIT, not after a dropped session or a TOP")
}

func TestBatchWindow(t *testing.T) {
	fake := graphtest.Start(t)
	var ids []string
	for i := range 7 {
		ids = append(ids, fake.Add("inbox", msg(i)))
	}
	f := newFixture(t, fake, func(o *graph.Options) { o.Window.Batch = 3; o.OnDelete = graph.Keep })
	c := f.login()
	if l := list(t, c); !slices.Equal(l.uids, uidls(ids[:3])) {
		t.Fatalf("batch 3: %v", l.uids)
	}
	for i := 1; i <= 3; i++ {
		c.CmdMulti(fmt.Sprintf("RETR %d", i))
	}
	quit(t, c)
	if n := fake.Calls()[graphtest.EValue]; n != 3 {
		t.Errorf("%d $value for a batch of 3", n)
	}
	c = f.login()
	if l := list(t, c); !slices.Equal(l.uids, uidls(ids[3:6])) {
		t.Fatalf("second batch: %v", l.uids)
	}
	quit(t, c)
}

func TestTopThenRetrFetchesOnce(t *testing.T) {
	fake := graphtest.Start(t)
	id := fake.Add("inbox", msg(1))
	f := newFixture(t, fake, nil)
	f.bodies.Forget("alice")
	c := f.login()
	list(t, c)
	f.bodies.Forget("alice") // as if evicted after sizing
	before := fake.Fetches(id)
	if _, _, err := c.CmdMulti("TOP 1 0"); err != nil {
		t.Fatal(err)
	}
	if _, body, err := c.CmdMulti("RETR 1"); err != nil || !bytes.Equal(body, crlf(msg(1))) {
		t.Fatalf("RETR: %q %v", body, err)
	}
	quit(t, c)
	if n := fake.Fetches(id) - before; n != 1 {
		t.Errorf("TOP then RETR fetched $value %d times", n)
	}
}

// TestSizeChanged serves a fake whose $value changes at every fetch: a
// RETR never sends other than the listed octets; it answers
// -ERR [SYS/TEMP] (small message) or drops the stream (large one), and
// the next session lists the new size and serves it.
func TestSizeChanged(t *testing.T) {
	fake := graphtest.Start(t)
	small := fake.Add("inbox", msg(1))
	big := fake.Add("inbox", bytes.Repeat([]byte("0123456789abcdef\n"), 4000))
	f := newFixture(t, fake, func(o *graph.Options) { o.VerifyLimit = 32 << 10 })
	c := f.login()
	l := list(t, c)
	quit(t, c)
	fake.SetRewrite(true)
	f.bodies.Forget("alice")

	c = f.login()
	list(t, c)
	r, err := c.Cmd("RETR 1")
	if err == nil || !strings.Contains(err.Error(), "[SYS/TEMP]") {
		t.Fatalf("RETR of a changed small message: %q %v", r, err)
	}
	// The large one is streamed: the connection closes without the dot.
	if _, body, err := c.CmdMulti("RETR 2"); err == nil {
		t.Fatalf("RETR of a changed large message ended normally (%d octets)", len(body))
	}
	c.Close()
	if state(fake, small) != "inbox" || state(fake, big) != "inbox" {
		t.Fatal("messages changed")
	}

	c = f.login()
	l2 := list(t, c)
	if l2.sizes[0] == l.sizes[0] || l2.sizes[1] == l.sizes[1] {
		t.Errorf("sizes %v, before the change %v", l2.sizes, l.sizes)
	}
	for i := range 2 {
		status, body, err := c.CmdMulti(fmt.Sprintf("RETR %d", i+1))
		if err != nil {
			t.Fatalf("RETR %d after the resize: %v", i+1, err)
		}
		if int64(len(body)) != l2.sizes[i] || !strings.Contains(status, strconv.FormatInt(l2.sizes[i], 10)) {
			t.Errorf("RETR %d: %d octets sent, %s, LIST %d", i+1, len(body), status, l2.sizes[i])
		}
	}
	quit(t, c)
	t.Logf("graph: a $value that changed size was never sent under the old LIST size: -ERR [SYS/TEMP] (small) or a dropped stream (large), "+
		"then listed at its new size (%d -> %d octets) and served from the body that was measured", l.sizes[0], l2.sizes[0])
}
