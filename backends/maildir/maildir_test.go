package maildir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// newMaildir makes an empty Maildir and returns its path.
func newMaildir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "Maildir")
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newStore opens a cache store in a temporary directory.
func newStore(t testing.TB) *cache.Store {
	t.Helper()
	st, err := cache.Open(filepath.Join(t.TempDir(), "state", "cache.db"), &cache.Options{BatchDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// reopenStore closes st and opens its file again, as a restart does.
func reopenStore(t testing.TB, s cache.StateStore) *cache.Store {
	t.Helper()
	st := s.(*cache.Store)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	n, err := cache.Open(st.Path(), &cache.Options{BatchDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func newBackend(t *testing.T, opts Options) *Backend {
	t.Helper()
	b, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func login(t *testing.T, b *Backend) proxy.Mailbox {
	t.Helper()
	mb, err := b.OpenMaildrop(context.Background(), backends.Login{User: "user", Password: "pass"})
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	t.Cleanup(func() { mb.Close() })
	return mb
}

func list(t *testing.T, mb proxy.Mailbox) []proxy.MessageInfo {
	t.Helper()
	msgs, err := mb.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return msgs
}

func uids(msgs []proxy.MessageInfo) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.UID)
	}
	return out
}

func readMsg(t *testing.T, mb proxy.Mailbox, uid string) string {
	t.Helper()
	rc, err := mb.Open(context.Background(), uid)
	if err != nil {
		t.Fatalf("Open(%q): %v", uid, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", uid, err)
	}
	return string(b)
}

func TestSizes(t *testing.T) {
	tests := []struct {
		name, content string
		want          int64
	}{
		{"lf", "Subject: a\n\nbody\n", 20},
		{"crlf", "Subject: a\r\n\r\nbody\r\n", 20},
		{"bare-cr", "Subject: a\r\rbody\r", 20},
		{"mixed", "Subject: a\r\n\nbody\r", 20},
		{"no-final-newline", "Subject: a\n\nbody", 18},
		{"crlf-no-final-newline", "Subject: a\r\n\r\nbody", 18},
		{"cr-then-crlf", "a\r\r\nb", 6}, // bare CR, then CRLF: two line ends
		{"empty", "", 0},
		{"only-newlines", "\n\n\n", 6},
	}
	dir := newMaildir(t)
	want := map[string]int64{}
	for i, tc := range tests {
		name := fmt.Sprintf("%d.M1P1.test", 1700000000+i)
		writeFile(t, filepath.Join(dir, "cur", name+":2,S"), tc.content)
		want[name] = tc.want
		// Cross-check against the proxy's own rule.
		n, _ := proxy.CRLFSize(strings.NewReader(tc.content))
		if n != tc.want {
			t.Errorf("%s: proxy.CRLFSize = %d, table says %d", tc.name, n, tc.want)
		}
	}
	b := newBackend(t, Options{Path: dir})
	msgs := list(t, login(t, b))
	if len(msgs) != len(tests) {
		t.Fatalf("List returned %d messages, want %d", len(msgs), len(tests))
	}
	for _, m := range msgs {
		if m.Size != want[m.UID] {
			t.Errorf("%s: size %d, want %d", m.UID, m.Size, want[m.UID])
		}
	}
}

func TestSizeCache(t *testing.T) {
	for _, withStore := range []bool{false, true} {
		t.Run(fmt.Sprintf("store=%v", withStore), func(t *testing.T) {
			dir := newMaildir(t)
			path := filepath.Join(dir, "cur", "1700000000.M1P1.test:2,")
			writeFile(t, path, "ab\n\n") // 6 octets on the wire
			mtime := time.Unix(1700000000, 0)
			if err := os.Chtimes(path, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			opts := Options{Path: dir}
			if withStore {
				opts.Store = newStore(t)
			}
			b := newBackend(t, opts)
			if got := list(t, login(t, b))[0].Size; got != 6 {
				t.Fatalf("cold size %d, want 6", got)
			}
			// Same length and mtime, different content: a warm List must
			// not read the file again. (Maildir files never change in
			// place; this only proves the cache is used.)
			writeFile(t, path, "a\r\nb") // 4 octets on the wire
			if err := os.Chtimes(path, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			if got := list(t, login(t, b))[0].Size; got != 6 {
				t.Fatalf("warm size %d, want the cached 6", got)
			}
			if n := b.reads.Load(); n != 1 {
				t.Errorf("%d file reads for two Lists, want 1", n)
			}
			// A new mtime is a new stamp.
			later := mtime.Add(time.Second)
			if err := os.Chtimes(path, later, later); err != nil {
				t.Fatal(err)
			}
			if got := list(t, login(t, b))[0].Size; got != 4 {
				t.Fatalf("size after mtime change %d, want 4", got)
			}
			recs := recordsOf(t, b)
			if r := recs["1700000000.M1P1.test"]; len(recs) != 1 || r.Size != 4 || r.UIDL != "1700000000.M1P1.test" ||
				r.Stamp != fmt.Sprintf("4:%d", later.UnixNano()) {
				t.Errorf("records %+v, want one of size 4 with the new stamp", recs)
			}
			// A removed message leaves the cache at the next List.
			os.Remove(path)
			list(t, login(t, b))
			if recs := recordsOf(t, b); len(recs) != 0 {
				t.Errorf("records %+v after the message went, want none", recs)
			}
		})
	}
}

// recordsOf returns the Backend's message records by key.
func recordsOf(t *testing.T, b *Backend) map[string]cache.MessageRecord {
	t.Helper()
	v, err := b.view()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]cache.MessageRecord{}
	for r := range v.Messages() {
		out[r.Key] = r
	}
	return out
}

// TestRecordsPersist checks that sizes and UIDLs survive a restart (a new
// Store on the same file and a new Backend), so nothing is read again, and
// that records follow the Maildir: new files added, removed ones dropped,
// at QUIT or when someone else removed them.
func TestRecordsPersist(t *testing.T) {
	dir := newMaildir(t)
	names := []string{"1700000000.M1P1.a", "1700000001.M1P1.b", "1700000002.M1P1.c", "1700000003.M1P1.with space"}
	for i, n := range names {
		writeFile(t, filepath.Join(dir, "new", n), strings.Repeat("line\n", i+1))
	}
	st := newStore(t)
	opts := Options{Path: dir, Store: st, Account: "alice"}
	b := newBackend(t, opts)
	first := list(t, login(t, b))
	if len(first) != 4 || b.reads.Load() != 4 {
		t.Fatalf("cold List: %v with %d reads, want 4 messages read once each", first, b.reads.Load())
	}
	stats, err := st.Stats()
	if err != nil || len(stats) != 1 || stats[0].Account != "alice" || stats[0].Messages != 4 || stats[0].Bytes != 6*(1+2+3+4) {
		t.Fatalf("Stats after the first List: %+v, %v", stats, err)
	}
	recs := recordsOf(t, b)
	for _, n := range names {
		if r, ok := recs[n]; !ok || r.UIDL != UID(n) || r.Stamp == "" {
			t.Errorf("record of %q: %+v %v, want UIDL %q and a stamp", n, r, ok, UID(n))
		}
	}

	// Restart; the files move to cur/ and gain flags, which keeps their
	// stamps: nothing is read.
	for _, n := range names {
		mustRename(t, filepath.Join(dir, "new", n), filepath.Join(dir, "cur", n+":2,S"))
	}
	opts.Store = reopenStore(t, st)
	b = newBackend(t, opts)
	mb := login(t, b)
	if again := list(t, mb); !slices.Equal(again, first) {
		t.Errorf("after restart: %v, want %v", again, first)
	}
	if n := b.reads.Load(); n != 0 {
		t.Errorf("warm List after restart read %d files, want 0", n)
	}

	// DELE+QUIT removes a's file and record; someone else removes b; a
	// new message d arrives: one List reads d only.
	if err := mb.Delete(context.Background(), []string{names[0]}); err != nil {
		t.Fatal(err)
	}
	if _, ok := recordsOf(t, b)[names[0]]; ok {
		t.Errorf("record of %q kept after its file was removed at QUIT", names[0])
	}
	if err := os.Remove(filepath.Join(dir, "cur", names[1]+":2,S")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "new", "1700000004.M1P1.d"), "d\n")
	got := uids(list(t, login(t, b)))
	want := []string{names[2], UID(names[3]), "1700000004.M1P1.d"}
	if !slices.Equal(got, want) {
		t.Errorf("listed %q, want %q", got, want)
	}
	if n := b.reads.Load(); n != 1 {
		t.Errorf("%d files read, want 1 (the new one)", n)
	}
	recs = recordsOf(t, b)
	if len(recs) != 3 || recs["1700000004.M1P1.d"].Size != 3 {
		t.Errorf("records after changes: %+v", recs)
	}
	if stats, _ := opts.Store.Stats(); len(stats) != 1 || stats[0].Messages != 3 {
		t.Errorf("Stats after changes: %+v", stats)
	}
}

// TestWarmList10k lists 10,000 messages cold, then warm after a restart:
// the warm List must read no file. It logs both times.
func TestWarmList10k(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 10,000 files")
	}
	dir := newMaildir(t)
	writeMany(t, dir, 10_000)
	st := newStore(t)
	opts := Options{Path: dir, Store: st, Account: "alice"}
	b := newBackend(t, opts)
	start := time.Now()
	cold := list(t, login(t, b))
	coldTime := time.Since(start)
	if len(cold) != 10_000 || b.reads.Load() != 10_000 {
		t.Fatalf("cold List: %d messages, %d reads", len(cold), b.reads.Load())
	}
	opts.Store = reopenStore(t, st)
	b = newBackend(t, opts)
	start = time.Now()
	warm := list(t, login(t, b))
	warmTime := time.Since(start)
	if !slices.Equal(warm, cold) {
		t.Error("warm List differs from the cold one")
	}
	if n := b.reads.Load(); n != 0 {
		t.Errorf("warm List after a restart read %d files, want 0", n)
	}
	t.Logf("10,000 messages: cold List %v, warm List after restart %v", coldTime, warmTime)
}

// writeMany writes n small messages to dir/cur.
func writeMany(t testing.TB, dir string, n int) {
	t.Helper()
	for i := range n {
		name := fmt.Sprintf("%d.M%dP1.host:2,S", 1700000000+i, i)
		if err := os.WriteFile(filepath.Join(dir, "cur", name), []byte("Subject: x\n\nbody\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkList10k times one session's List of 10,000 messages: cold
// (every file read), warm in one process, and warm from the store's file
// after a restart (its snapshot loaded from bbolt).
func BenchmarkList10k(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "Maildir")
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	writeMany(b, dir, 10_000)
	ctx := context.Background()
	listOnce := func(be *Backend) {
		mb, err := be.OpenMaildrop(ctx, backends.Login{User: "u", Password: "p"})
		if err != nil {
			b.Fatal(err)
		}
		if msgs, err := mb.List(ctx); err != nil || len(msgs) != 10_000 {
			b.Fatalf("List: %d, %v", len(msgs), err)
		}
		mb.Close()
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			be, _ := New(Options{Path: dir})
			listOnce(be)
		}
	})
	b.Run("warm/no-store", func(b *testing.B) {
		be, _ := New(Options{Path: dir})
		listOnce(be)
		for b.Loop() {
			listOnce(be)
		}
	})
	st := newStore(b)
	be, _ := New(Options{Path: dir, Store: st, Account: "a"})
	listOnce(be)
	b.Run("warm/store", func(b *testing.B) {
		for b.Loop() {
			listOnce(be)
		}
	})
	b.Run("warm/store-restarted", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			st = reopenStore(b, st)
			be, _ := New(Options{Path: dir, Store: st, Account: "a"})
			b.StartTimer()
			listOnce(be)
			if be.reads.Load() != 0 {
				b.Fatal("read files after a restart")
			}
		}
	})
}

func TestUIDStableAcrossMoveAndFlags(t *testing.T) {
	dir := newMaildir(t)
	const base = "1700000001.M123P456.host.example"
	writeFile(t, filepath.Join(dir, "new", "1700000000.M1P1.first"), "first\n")
	writeFile(t, filepath.Join(dir, "new", base), "Subject: moving\n\nhello\n")
	writeFile(t, filepath.Join(dir, "new", "1700000002.M1P1.last"), "last\n")

	b := newBackend(t, Options{Path: dir})
	mb := login(t, b)
	before := list(t, mb)
	wantUIDs := []string{"1700000000.M1P1.first", base, "1700000002.M1P1.last"}
	if got := uids(before); !slices.Equal(got, wantUIDs) {
		t.Fatalf("UIDs %q, want %q", got, wantUIDs)
	}

	// new/ -> cur/ while the session is open: Open follows the file.
	mustRename(t, filepath.Join(dir, "new", base), filepath.Join(dir, "cur", base+":2,"))
	if got := readMsg(t, mb, base); got != "Subject: moving\n\nhello\n" {
		t.Fatalf("Open after move read %q", got)
	}
	// Flags change: same again.
	mustRename(t, filepath.Join(dir, "cur", base+":2,"), filepath.Join(dir, "cur", base+":2,RS"))
	if got := readMsg(t, mb, base); got != "Subject: moving\n\nhello\n" {
		t.Fatalf("Open after flag change read %q", got)
	}

	// A new session, and a new Backend (a restart), list the same UIDs in
	// the same order with the same sizes.
	for _, b := range []*Backend{b, newBackend(t, Options{Path: dir})} {
		after := list(t, login(t, b))
		if !slices.Equal(after, before) {
			t.Errorf("after move and flags: %v, want %v", after, before)
		}
	}
}

func TestListFollowsRenameDuringList(t *testing.T) {
	dir := newMaildir(t)
	for i := range 5 {
		writeFile(t, filepath.Join(dir, "new", fmt.Sprintf("170000000%d.M1P1.m", i)), fmt.Sprintf("m%d\n", i))
	}
	b := newBackend(t, Options{Path: dir})
	// Between the scan and the stats, every file moves to cur/ and one
	// is removed.
	testHookAfterScan = func() {
		for i := range 5 {
			from := filepath.Join(dir, "new", fmt.Sprintf("170000000%d.M1P1.m", i))
			if i == 2 {
				os.Remove(from)
				continue
			}
			mustRename(t, from, filepath.Join(dir, "cur", fmt.Sprintf("170000000%d.M1P1.m:2,S", i)))
		}
	}
	defer func() { testHookAfterScan = nil }()
	mb := login(t, b)
	msgs := list(t, mb)
	testHookAfterScan = nil
	want := []string{"1700000000.M1P1.m", "1700000001.M1P1.m", "1700000003.M1P1.m", "1700000004.M1P1.m"}
	if got := uids(msgs); !slices.Equal(got, want) {
		t.Fatalf("listed %q, want %q", got, want)
	}
	for _, m := range msgs {
		if m.Size != 4 {
			t.Errorf("%s: size %d, want 4", m.UID, m.Size)
		}
	}
	if got := readMsg(t, mb, "1700000004.M1P1.m"); got != "m4\n" {
		t.Errorf("read %q", got)
	}
}

func TestInvalidNamesMapped(t *testing.T) {
	dir := newMaildir(t)
	long := "1700000000.M1P1." + strings.Repeat("h", 80) // over 70 chars
	names := []string{
		long,
		"1700000001.M1P1.with space",
		"1700000002.M1P1.h\xc3\xa9te", // 8-bit
		"1700000003.M1P1.ok",
	}
	for i, n := range names {
		writeFile(t, filepath.Join(dir, "cur", n+":2,S"), "msg "+string(rune('a'+i))+"\n")
	}
	msgs := list(t, login(t, newBackend(t, Options{Path: dir})))
	if len(msgs) != len(names) {
		t.Fatalf("listed %d, want %d", len(msgs), len(names))
	}
	seen := map[string]bool{}
	for i, m := range msgs {
		if !proxy.ValidUID(m.UID) {
			t.Errorf("UID %q is not a valid UIDL", m.UID)
		}
		if seen[m.UID] {
			t.Errorf("duplicate UID %q", m.UID)
		}
		seen[m.UID] = true
		if m.UID != UID(names[i]) {
			t.Errorf("message %d: UID %q, want UID(name) = %q", i, m.UID, UID(names[i]))
		}
	}
	for _, n := range names[:3] {
		u := UID(n)
		if !strings.HasPrefix(u, "X:") || len(u) != 42 {
			t.Errorf("UID(%q) = %q, want X: and 40 hex digits", n, u)
		}
	}
	if UID(names[3]) != names[3] {
		t.Errorf("a valid name must be its own UID, got %q", UID(names[3]))
	}
	// Deterministic across restarts.
	again := list(t, login(t, newBackend(t, Options{Path: dir})))
	if !slices.Equal(again, msgs) {
		t.Errorf("second Backend listed %v, want %v", again, msgs)
	}
	// The mapped UID opens the right file.
	mb := login(t, newBackend(t, Options{Path: dir}))
	list(t, mb)
	if got := readMsg(t, mb, UID(names[1])); got != "msg b\n" {
		t.Errorf("Open(mapped UID) read %q", got)
	}
}

func TestIgnoresNonMessages(t *testing.T) {
	dir := newMaildir(t)
	writeFile(t, filepath.Join(dir, "cur", "1700000000.M1P1.a:2,S"), "a\n")
	writeFile(t, filepath.Join(dir, "new", "1700000001.M1P1.b"), "b\n")
	writeFile(t, filepath.Join(dir, "tmp", "1700000002.M1P1.delivering"), "tmp\n")
	writeFile(t, filepath.Join(dir, "dovecot-uidlist"), "3 V1 N1\n")
	writeFile(t, filepath.Join(dir, "dovecot.index.log"), "x")
	writeFile(t, filepath.Join(dir, "cur", ".hidden"), "dotfile\n")
	writeFile(t, filepath.Join(dir, "cur", "subdir", "1700000003.M1P1.x"), "in a subdir\n")
	writeFile(t, filepath.Join(dir, ".Sent", "cur", "1700000004.M1P1.sent:2,S"), "sent\n")
	writeFile(t, filepath.Join(dir, ".Sent", "new", "1700000005.M1P1.sent"), "sent\n")
	if err := os.Symlink("/nonexistent", filepath.Join(dir, "cur", "1700000006.M1P1.dangling")); err != nil {
		t.Fatal(err)
	}

	got := uids(list(t, login(t, newBackend(t, Options{Path: dir}))))
	want := []string{"1700000000.M1P1.a", "1700000001.M1P1.b"}
	if !slices.Equal(got, want) {
		t.Errorf("listed %q, want %q", got, want)
	}
}

func TestDuplicateBaseListedOnce(t *testing.T) {
	dir := newMaildir(t)
	const base = "1700000000.M1P1.dup"
	// A copy caught in new/ and cur/ at once, mid-move.
	writeFile(t, filepath.Join(dir, "new", base), "same\n")
	writeFile(t, filepath.Join(dir, "cur", base+":2,S"), "same\n")
	writeFile(t, filepath.Join(dir, "cur", base+":2,RS"), "same\n")
	mb := login(t, newBackend(t, Options{Path: dir}))
	msgs := list(t, mb)
	if len(msgs) != 1 || msgs[0].UID != base || msgs[0].Size != 6 {
		t.Fatalf("listed %v, want one %s of size 6", msgs, base)
	}
	m := mb.(*mailbox)
	if e, _, _ := m.entry(base); m.b.path(e) != filepath.Join(dir, "cur", base+":2,RS") {
		t.Errorf("picked %s, want the first cur/ name", m.b.path(e))
	}
}

func TestOrder(t *testing.T) {
	dir := newMaildir(t)
	// Written in scrambled order; digits compare as numbers.
	names := []string{
		"1700000000.M10P1.h",
		"999999999.M1P1.h", // 9-digit seconds: earlier
		"1700000000.M9P1.h",
		"1700000001.M1P1.a",
		"1700000000.M9P2.h",
		"nodigits",
	}
	for _, n := range names {
		writeFile(t, filepath.Join(dir, "cur", n+":2,"), n+"\n")
	}
	want := []string{
		"999999999.M1P1.h",
		"1700000000.M9P1.h",
		"1700000000.M9P2.h",
		"1700000000.M10P1.h",
		"1700000001.M1P1.a",
		"nodigits",
	}
	for range 3 {
		got := uids(list(t, login(t, newBackend(t, Options{Path: dir}))))
		if !slices.Equal(got, want) {
			t.Fatalf("order %q, want %q", got, want)
		}
	}
}

func TestOpenStreamsFile(t *testing.T) {
	dir := newMaildir(t)
	writeFile(t, filepath.Join(dir, "cur", "1700000000.M1P1.a:2,"), "Subject: x\n\nbody\n")
	mb := login(t, newBackend(t, Options{Path: dir}))
	list(t, mb)
	rc, err := mb.Open(context.Background(), "1700000000.M1P1.a")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, ok := rc.(*os.File); !ok {
		t.Errorf("Open returned %T, want a streamed *os.File", rc)
	}
}

func TestOpenVanished(t *testing.T) {
	dir := newMaildir(t)
	path := filepath.Join(dir, "new", "1700000000.M1P1.gone")
	writeFile(t, path, "bye\n")
	mb := login(t, newBackend(t, Options{Path: dir}))
	list(t, mb)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	_, err := mb.Open(context.Background(), "1700000000.M1P1.gone")
	if !errors.Is(err, proxy.ErrNoMessage) {
		t.Errorf("Open of a removed message: %v, want ErrNoMessage", err)
	}
	_, err = mb.Open(context.Background(), "never-listed")
	if !errors.Is(err, proxy.ErrNoMessage) {
		t.Errorf("Open of an unknown UID: %v, want ErrNoMessage", err)
	}
}

func TestDeleteRemove(t *testing.T) {
	dir := newMaildir(t)
	a := filepath.Join(dir, "cur", "1700000000.M1P1.a:2,S")
	b := filepath.Join(dir, "new", "1700000001.M1P1.b")
	c := filepath.Join(dir, "new", "1700000002.M1P1.c")
	d := filepath.Join(dir, "cur", "1700000003.M1P1.d:2,")
	for _, p := range []string{a, b, c, d} {
		writeFile(t, p, filepath.Base(p)+"\n")
	}
	be := newBackend(t, Options{Path: dir})
	mb := login(t, be)
	list(t, mb)
	// b moves to cur/ and gains flags, c vanishes, before QUIT.
	mustRename(t, b, filepath.Join(dir, "cur", "1700000001.M1P1.b:2,S"))
	if err := os.Remove(c); err != nil {
		t.Fatal(err)
	}
	err := mb.Delete(context.Background(), []string{"1700000000.M1P1.a", "1700000001.M1P1.b", "1700000002.M1P1.c"})
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	got := uids(list(t, login(t, be)))
	if want := []string{"1700000003.M1P1.d"}; !slices.Equal(got, want) {
		t.Errorf("after delete: %q, want %q", got, want)
	}
	for _, sub := range []string{"cur", "new"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "1700000003.") {
				t.Errorf("%s/%s still exists", sub, e.Name())
			}
		}
	}
}

func TestDeleteRemoveReportsFailure(t *testing.T) {
	dir := newMaildir(t)
	a := filepath.Join(dir, "cur", "1700000000.M1P1.a:2,S")
	b := filepath.Join(dir, "cur", "1700000001.M1P1.b:2,S")
	writeFile(t, a, "a\n")
	writeFile(t, b, "b\n")
	mb := login(t, newBackend(t, Options{Path: dir}))
	list(t, mb)
	// Replace a with a non-empty directory: unlink fails even as root.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(a, "x"), "x")
	err := mb.Delete(context.Background(), []string{"1700000000.M1P1.a", "1700000001.M1P1.b"})
	if err == nil {
		t.Fatal("Delete succeeded although a file could not be removed")
	}
	if !strings.Contains(err.Error(), "1700000000.M1P1.a") {
		t.Errorf("error %q does not name the failed message", err)
	}
	if _, serr := os.Stat(b); !os.IsNotExist(serr) {
		t.Errorf("the removable message was not removed: %v", serr)
	}
	if err := mb.Delete(context.Background(), []string{"not-listed"}); err == nil {
		t.Error("Delete of an unlisted UID succeeded")
	}
}

func TestDeleteWhenMaildirVanished(t *testing.T) {
	dir := newMaildir(t)
	writeFile(t, filepath.Join(dir, "cur", "1700000000.M1P1.a:2,S"), "a\n")
	mb := login(t, newBackend(t, Options{Path: dir}))
	list(t, mb)
	// The whole Maildir goes away (say, unmounted): nothing was deleted,
	// so Delete must not claim success, and Open must not say the message
	// was removed.
	mustRename(t, dir, dir+".away")
	if err := mb.Delete(context.Background(), []string{"1700000000.M1P1.a"}); err == nil {
		t.Error("Delete succeeded on a vanished Maildir")
	}
	if _, err := mb.Open(context.Background(), "1700000000.M1P1.a"); err == nil || errors.Is(err, proxy.ErrNoMessage) {
		t.Errorf("Open on a vanished Maildir: %v, want a temporary error", err)
	}
	if _, err := os.Stat(filepath.Join(dir+".away", "cur", "1700000000.M1P1.a:2,S")); err != nil {
		t.Errorf("message file: %v", err)
	}
}

func TestDeleteKeep(t *testing.T) {
	dir := newMaildir(t)
	st := newStore(t)
	for i, n := range []string{"1700000000.M1P1.a", "1700000001.M1P1.b", "1700000002.M1P1.c"} {
		writeFile(t, filepath.Join(dir, "cur", n+":2,S"), string(rune('a'+i))+"\n")
	}
	opts := Options{Path: dir, OnDelete: modes.Keep, Store: st, Account: "alice"}
	be := newBackend(t, opts)
	mb := login(t, be)
	if n := len(list(t, mb)); n != 3 {
		t.Fatalf("listed %d, want 3", n)
	}
	if err := mb.Delete(context.Background(), []string{"1700000000.M1P1.a", "1700000002.M1P1.c"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	// Files stay.
	for _, n := range []string{"1700000000.M1P1.a", "1700000002.M1P1.c"} {
		if _, err := os.Stat(filepath.Join(dir, "cur", n+":2,S")); err != nil {
			t.Errorf("keep policy removed %s: %v", n, err)
		}
	}
	want := []string{"1700000001.M1P1.b"}
	// Hidden in the same Backend, in a new Backend on a reopened store
	// (restart), and after the hidden file moves or gains flags.
	if got := uids(list(t, login(t, be))); !slices.Equal(got, want) {
		t.Errorf("same backend lists %q, want %q", got, want)
	}
	mustRename(t, filepath.Join(dir, "cur", "1700000000.M1P1.a:2,S"), filepath.Join(dir, "cur", "1700000000.M1P1.a:2,ST"))
	st = reopenStore(t, st)
	opts.Store = st
	if got := uids(list(t, login(t, newBackend(t, opts)))); !slices.Equal(got, want) {
		t.Errorf("new backend lists %q, want %q", got, want)
	}
	// Another account on the same Maildir has its own tombstones.
	other := opts
	other.Account = "bob"
	if n := len(list(t, login(t, newBackend(t, other)))); n != 3 {
		t.Errorf("other account lists %d, want 3", n)
	}

	// The tombstones are the store's, under the unique names.
	tombs := func() []string {
		t.Helper()
		m, err := st.Tombstones("alice")
		if err != nil {
			t.Fatal(err)
		}
		return slices.Sorted(maps.Keys(m))
	}
	if got := tombs(); !slices.Equal(got, []string{"1700000000.M1P1.a", "1700000002.M1P1.c"}) {
		t.Errorf("tombstones %q", got)
	}
	if m, _ := st.Tombstones("bob"); len(m) != 0 {
		t.Errorf("bob has tombstones %v", m)
	}

	// A hidden message removed by someone else loses its tombstone at the
	// next Delete; the one still on disk stays hidden.
	if err := os.Remove(filepath.Join(dir, "cur", "1700000002.M1P1.c:2,S")); err != nil {
		t.Fatal(err)
	}
	mb = login(t, newBackend(t, opts))
	list(t, mb)
	if err := mb.Delete(context.Background(), []string{"1700000001.M1P1.b"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got := tombs(); !slices.Equal(got, []string{"1700000000.M1P1.a", "1700000001.M1P1.b"}) {
		t.Errorf("tombstones after prune %q", got)
	}
	if got := list(t, login(t, newBackend(t, opts))); len(got) != 0 {
		t.Errorf("everything hidden, yet listed %v", got)
	}
}

func TestKeepMappedName(t *testing.T) {
	dir := newMaildir(t)
	const name = "1700000000.M1P1.with space"
	writeFile(t, filepath.Join(dir, "cur", name+":2,S"), "x\n")
	st := newStore(t)
	opts := Options{Path: dir, OnDelete: modes.Keep, Store: st, Account: "alice"}
	mb := login(t, newBackend(t, opts))
	if got := uids(list(t, mb)); !slices.Equal(got, []string{UID(name)}) {
		t.Fatalf("listed %q", got)
	}
	if err := mb.Delete(context.Background(), []string{UID(name)}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := st.IsTombstoned("alice", name); !ok {
		t.Error("no tombstone under the unique name")
	}
	if got := list(t, login(t, newBackend(t, opts))); len(got) != 0 {
		t.Errorf("hidden message listed: %v", got)
	}
}

// TestSessionHoldsAccount checks that an open session keeps its account
// from being forgotten, and that Close lets go.
func TestSessionHoldsAccount(t *testing.T) {
	dir := newMaildir(t)
	writeFile(t, filepath.Join(dir, "cur", "1700000000.M1P1.a:2,S"), "a\n")
	st := newStore(t)
	b := newBackend(t, Options{Path: dir, Store: st, Account: "alice"})
	mb, err := b.OpenMaildrop(context.Background(), backends.Login{User: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	list(t, mb)
	if err := st.Forget("alice"); !errors.Is(err, cache.ErrInUse) {
		t.Fatalf("Forget during a session: %v, want ErrInUse", err)
	}
	mb.Close()
	if err := st.Forget("alice"); err != nil {
		t.Fatalf("Forget after Close: %v", err)
	}
	if n := len(recordsOf(t, b)); n != 0 {
		t.Errorf("%d records after Forget", n)
	}
}

func TestAccountName(t *testing.T) {
	st := newStore(t)
	a := newBackend(t, Options{Path: "/srv/mail/x", Store: st})
	b := newBackend(t, Options{Path: "/srv/mail/x/", Store: st})
	c := newBackend(t, Options{Path: "/srv/mail/y", Store: st})
	if a.account != b.account || a.account == c.account || !regexp.MustCompile(`^path-[0-9a-f]{16}$`).MatchString(a.account) {
		t.Errorf("derived accounts %q, %q, %q", a.account, b.account, c.account)
	}
	if d := newBackend(t, Options{Path: "/srv/mail/x", Store: st, Account: "alice"}); d.account != "alice" {
		t.Errorf("account %q, want alice", d.account)
	}
}

func TestNewValidates(t *testing.T) {
	for _, opts := range []Options{
		{},
		{Path: "/x", OnDelete: "archive"},
		{Path: "/x", OnDelete: modes.Keep},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("New(%+v) succeeded", opts)
		}
	}
	b := newBackend(t, Options{Path: "/x"})
	if b.opts.OnDelete != modes.Remove {
		t.Errorf("default policy %q, want remove", b.opts.OnDelete)
	}
}

func TestLoginAndCheck(t *testing.T) {
	ctx := context.Background()
	missing := newBackend(t, Options{Path: filepath.Join(t.TempDir(), "nope")})
	if _, err := missing.OpenMaildrop(ctx, backends.Login{User: "u", Password: "p"}); err == nil {
		t.Error("Login on a missing Maildir succeeded")
	}
	if err := missing.Check(ctx); err == nil {
		t.Error("Check on a missing Maildir succeeded")
	}
	dir := newMaildir(t)
	if err := os.RemoveAll(filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}
	if err := newBackend(t, Options{Path: dir}).Check(ctx); err == nil {
		t.Error("Check without new/ succeeded")
	}
	dir = newMaildir(t)
	st := newStore(t)
	ok := newBackend(t, Options{Path: dir, OnDelete: modes.Keep, Store: st, Account: "a"})
	if err := ok.Check(ctx); err != nil {
		t.Errorf("Check: %v", err)
	}
	st.Close()
	if err := ok.Check(ctx); err == nil {
		t.Error("Check with a closed store succeeded")
	}
	ok = newBackend(t, Options{Path: dir, OnDelete: modes.Keep, Store: newStore(t), Account: "a"})
	mb := login(t, ok)
	if id := mb.(proxy.MaildropIDer).MaildropID(); id != "maildir:"+dir {
		t.Errorf("MaildropID %q", id)
	}
	if msgs := list(t, mb); len(msgs) != 0 {
		t.Errorf("empty Maildir listed %v", msgs)
	}
	if err := mb.Delete(ctx, nil); err != nil {
		t.Errorf("Delete(nil): %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := ok.OpenMaildrop(cancelled, backends.Login{User: "u", Password: "p"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Login with a cancelled context: %v", err)
	}
}

func mustRename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}
