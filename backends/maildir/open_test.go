package maildir

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popbridge/popbridge/backends"
	"github.com/popbridge/popbridge/proxy"
)

// TestKnownMessagesCostNoSyscall checks that once the store knows a
// message whose name states its size (",S="), List makes no system call
// for it, also after a restart; a message without S= costs one stat.
func TestKnownMessagesCostNoSyscall(t *testing.T) {
	dir := newMaildir(t)
	named := []string{
		"1700000000.M1P1.host,S=17,W=20",
		"1700000001.M2P1.host,S=17,W=20",
		"1700000002.M3P1.host,S=17,W=20",
	}
	for _, n := range named {
		writeFile(t, filepath.Join(dir, "cur", n+":2,S"), "Subject: a\n\nbody\n")
	}
	writeFile(t, filepath.Join(dir, "new", "1700000003.M4P1.host"), "Subject: b\n\nbody\n")
	st := newStore(t)
	opts := Options{Path: dir, Store: st, Account: "alice"}
	b := newBackend(t, opts)
	first := list(t, login(t, b))
	if len(first) != 4 || b.reads.Load() != 4 || b.stats.Load() != 4 {
		t.Fatalf("first List: %v, %d reads, %d stats; want 4 messages, each stat'ed and read once", first, b.reads.Load(), b.stats.Load())
	}
	for _, m := range first {
		if m.Size != 20 {
			t.Errorf("%s: size %d, want 20", m.UID, m.Size)
		}
	}
	for _, restart := range []bool{false, true} {
		if restart {
			opts.Store = reopenStore(t, opts.Store)
		}
		b = newBackend(t, opts)
		again := list(t, login(t, b))
		if !slices.Equal(again, first) {
			t.Errorf("restart=%v: listed %v, want %v", restart, again, first)
		}
		if r, s := b.reads.Load(), b.stats.Load(); r != 0 || s != 1 {
			t.Errorf("restart=%v: warm List read %d files and stat'ed %d, want 0 and 1 (the name without S=)", restart, r, s)
		}
	}
}

// TestSizeNotTakenFromName checks that the W= of a name is not taken for
// the size: Dovecot's W= does not count the CR that popbridge adds to a
// bare CR, and a name may lie. The LIST size is what RETR sends.
func TestSizeNotTakenFromName(t *testing.T) {
	dir := newMaildir(t)
	msgs := map[string]string{
		// Named by Dovecot 2.3.19's dovecot-lda for this message: W=21,
		// but popbridge sends the bare CR as CRLF, 22 octets.
		"1796289684.M762409P12129.vm,S=18,W=21": "Subject: a\n\nbo\rdy\n",
		"1796289685.M1P1.vm,S=999,W=999":        "Subject: a\n\nbody\n",
		"1796289686.M1P1.vm,S=16,W=18":          "Subject: a\n\nbody", // no final line end: agrees
	}
	for n, c := range msgs {
		writeFile(t, filepath.Join(dir, "cur", n+":2,"), c)
	}
	for _, restart := range []bool{false, true} {
		b := newBackend(t, Options{Path: dir, Store: newStore(t)})
		if restart {
			list(t, login(t, b))
		}
		mb := login(t, b)
		for _, m := range list(t, mb) {
			want, _ := proxy.CRLFSize(strings.NewReader(msgs[m.UID]))
			if m.Size != want {
				t.Errorf("%s: size %d, want %d", m.UID, m.Size, want)
			}
			rc, err := mb.Open(context.Background(), m.UID)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(rc)
			rc.Close()
			if got, _ := proxy.CRLFSize(strings.NewReader(string(data))); got != m.Size {
				t.Errorf("%s: RETR would send %d octets, LIST says %d", m.UID, got, m.Size)
			}
		}
	}
}

// TestChangedInPlaceMeasuredAgain: a file whose name states its size is
// trusted, so a List after it was rewritten in place (which Maildir
// writers do not do) still gives the old size; opening it notices the new
// stamp and drops the record, and the next List measures it again.
func TestChangedInPlaceMeasuredAgain(t *testing.T) {
	dir := newMaildir(t)
	const base = "1700000000.M1P1.host,S=17,W=20"
	path := filepath.Join(dir, "cur", base+":2,S")
	writeFile(t, path, "Subject: a\n\nbody\n")
	b := newBackend(t, Options{Path: dir, Store: newStore(t)})
	if got := list(t, login(t, b))[0].Size; got != 20 {
		t.Fatalf("size %d, want 20", got)
	}
	writeFile(t, path, "Subject: a\n\nlonger body\n")
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	mb := login(t, b)
	if got := list(t, mb)[0].Size; got != 20 {
		t.Errorf("size %d right after the rewrite, want the trusted 20", got)
	}
	if got := readMsg(t, mb, base); got != "Subject: a\n\nlonger body\n" {
		t.Errorf("read %q", got)
	}
	if got := list(t, login(t, b))[0].Size; got != 27 {
		t.Errorf("size %d after the rewritten file was opened, want 27", got)
	}
}

// TestScanOrderMatchesCompareNames checks the shortcut compareEntries
// takes on leading numbers against compareNames on random names.
func TestScanOrderMatchesCompareNames(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	parts := []string{"0", "00", "7", "17", "1700000000", "999999999", "099", "18446744073709551615", "18446744073709551616",
		"123456789012345678901", ".", "M", "P", "x", ",S=", ""}
	var ents []entry
	var names []string
	seen := map[string]bool{}
	for len(names) < 3000 {
		var sb strings.Builder
		for range 1 + r.IntN(4) {
			sb.WriteString(parts[r.IntN(len(parts))])
		}
		n := sb.String()
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		names = append(names, n)
		ents = append(ents, newEntry(n, n, 0))
	}
	for range 200_000 {
		x, y := names[r.IntN(len(names))], names[r.IntN(len(names))]
		if got, want := sign(compareNames(x, y)), sign(referenceCompareNames(x, y)); got != want {
			t.Fatalf("compareNames(%q, %q) = %d, the rule gives %d", x, y, got, want)
		}
	}
	slices.SortFunc(names, compareNames)
	slices.SortFunc(ents, func(a, b entry) int { return compareEntries(&a, &b) })
	for i := range names {
		if ents[i].base() != names[i] {
			t.Fatalf("position %d: %q, compareNames puts %q", i, ents[i].base(), names[i])
		}
		if j, ok := lookup(ents, names[i]); !ok || j != i {
			t.Fatalf("lookup(%q) = %d, %v; want %d", names[i], j, ok, i)
		}
	}
}

// writeDovecotNamed writes n messages into dir/cur under names like those
// Dovecot gives when it delivers: the unique name carries ,S= (the size on
// disk) and ,W= (the size with CRLF line ends). The files are hard links
// of one file, so that 50,000 take seconds.
func writeDovecotNamed(tb testing.TB, dir string, n int) {
	tb.Helper()
	body := []byte("From: a@example.org\nTo: b@example.org\nSubject: open benchmark\n\nhello\n")
	lines := 0
	for _, c := range body {
		if c == '\n' {
			lines++
		}
	}
	src := filepath.Join(dir, "tmp", "src")
	if err := os.WriteFile(src, body, 0o600); err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("%d.M%dP%d.bench.example,S=%d,W=%d:2,S", 1700000000+i/8, 100000+i, 4000+i%97, len(body), len(body)+lines)
		if err := os.Link(src, filepath.Join(dir, "cur", name)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.Remove(src); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkOpen times what a POP3 login costs the backend on a Maildir
// whose every message is known to the store: Login, List, Close. With
// "unchanged" new/ and cur/ are as at the last scan, which List reuses;
// with "delivery" a new message comes into new/ before each open, so List
// reads new/ and the new file, and commits its record; with "changed" it
// reads both directories.
func BenchmarkOpen(b *testing.B) {
	for _, n := range []int{10_000, 50_000} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
			dir := filepath.Join(b.TempDir(), "Maildir")
			for _, sub := range []string{"cur", "new", "tmp"} {
				if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
					b.Fatal(err)
				}
			}
			writeDovecotNamed(b, dir, n)
			past := time.Now().Add(-time.Hour)
			for _, sub := range []string{"cur", "new"} {
				if err := os.Chtimes(filepath.Join(dir, sub), past, past); err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			be, err := New(Options{Path: dir, Store: newStore(b), Account: "a"})
			if err != nil {
				b.Fatal(err)
			}
			open := func() {
				mb, err := be.OpenMaildrop(ctx, backends.Login{User: "u", Password: "p"})
				if err != nil {
					b.Fatal(err)
				}
				if msgs, err := mb.List(ctx); err != nil || len(msgs) < n {
					b.Fatalf("List: %d, %v", len(msgs), err)
				}
				mb.Close()
			}
			open()
			src := filepath.Join(dir, "tmp", "delivery")
			if err := os.WriteFile(src, []byte("Subject: new\n\nhello\n"), 0o600); err != nil {
				b.Fatal(err)
			}
			delivered := 0 // across runs of the sub-benchmarks
			for _, c := range []string{"unchanged", "delivery", "changed"} {
				b.Run(c, func(b *testing.B) {
					reads := be.dirReads.Load()
					for b.Loop() {
						switch c {
						case "delivery":
							b.StopTimer()
							delivered++
							name := fmt.Sprintf("1800000000.M%dP1.bench.example,S=20,W=23", delivered)
							if err := os.Link(src, filepath.Join(dir, "new", name)); err != nil {
								b.Fatal(err)
							}
							b.StartTimer()
						case "changed":
							be.keep(nil)
						}
						open()
					}
					if got := be.dirReads.Load() - reads; (got == 0) != (c == "unchanged") {
						b.Fatalf("%d directory reads", got)
					}
				})
			}
		})
	}
}

func sign(c int) int { return min(max(c, -1), 1) }

// referenceCompareNames is compareNames without its shortcut: the
// comparison from the first byte.
func referenceCompareNames(a, b string) int { return compareNamesFrom(a, b, 0) }

// TestScanReusedWhileDirsUnchanged checks that a List reads new/ or cur/
// only when it changed since the last scan, or changed too recently then
// to tell by its mtime.
func TestScanReusedWhileDirsUnchanged(t *testing.T) {
	dir := newMaildir(t)
	writeFile(t, filepath.Join(dir, "cur", "1700000000.M1P1.host,S=2,W=3:2,S"), "a\n")
	writeFile(t, filepath.Join(dir, "cur", "1700000001.M2P1.host,S=2,W=3:2,S"), "b\n")
	past := time.Now().Add(-time.Hour)
	settled := func() {
		for _, sub := range []string{"new", "cur"} {
			if err := os.Chtimes(filepath.Join(dir, sub), past, past); err != nil {
				t.Fatal(err)
			}
		}
	}
	b := newBackend(t, Options{Path: dir, Store: newStore(t)})
	step := func(what string, wantReads int64, want ...string) {
		t.Helper()
		before := b.dirReads.Load()
		mb := login(t, b)
		got := uids(list(t, mb))
		if !slices.Equal(got, want) {
			t.Errorf("%s: listed %q, want %q", what, got, want)
		}
		if n := b.dirReads.Load() - before; n != wantReads {
			t.Errorf("%s: %d directories read, want %d", what, n, wantReads)
		}
		for _, u := range got {
			readMsg(t, mb, u) // the listed name opens without a rescan
		}
		if n := b.dirReads.Load() - before; n != wantReads {
			t.Errorf("%s: %d directories read after opening every message, want %d", what, n, wantReads)
		}
	}
	a, c := "1700000000.M1P1.host,S=2,W=3", "1700000001.M2P1.host,S=2,W=3"
	step("just written", 2, a, c)
	step("changed too recently to trust", 2, a, c)
	settled()
	step("settled: read once more", 2, a, c)
	step("unchanged", 0, a, c)
	step("unchanged again", 0, a, c)

	// Delivery, a flag change, a removal: each is seen at the next List.
	writeFile(t, filepath.Join(dir, "new", "1700000002.M3P1.host,S=2,W=3"), "d\n")
	step("delivered (new/ read)", 1, a, c, "1700000002.M3P1.host,S=2,W=3")
	settled()
	step("settled", 1, a, c, "1700000002.M3P1.host,S=2,W=3")
	mustRename(t, filepath.Join(dir, "cur", a+":2,S"), filepath.Join(dir, "cur", a+":2,RS"))
	step("flag change (cur/ read)", 1, a, c, "1700000002.M3P1.host,S=2,W=3")
	settled()
	step("settled", 1, a, c, "1700000002.M3P1.host,S=2,W=3")
	// The same message in both: cur/'s, also when only new/ is read.
	writeFile(t, filepath.Join(dir, "new", c), "b\n")
	step("copy in new/", 1, a, c, "1700000002.M3P1.host,S=2,W=3")
	if err := os.Remove(filepath.Join(dir, "new", c)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "cur", c+":2,S")); err != nil {
		t.Fatal(err)
	}
	step("removed", 2, a, "1700000002.M3P1.host,S=2,W=3")

	// Past the bound on cached entries, nothing is kept.
	settled()
	cachedEntries.Add(maxCachedEntries)
	defer cachedEntries.Add(-maxCachedEntries)
	step("over the bound", 2, a, "1700000002.M3P1.host,S=2,W=3")
	step("over the bound again", 2, a, "1700000002.M3P1.host,S=2,W=3")
}

// TestDroppedBackendGivesBackItsScan checks that the scans of a Backend
// that is no longer used (a configuration reload) stop counting towards
// the bound on cached entries.
func TestDroppedBackendGivesBackItsScan(t *testing.T) {
	dir := newMaildir(t)
	writeMany(t, dir, 100)
	pool := new(atomic.Int64) // not cachedEntries, which other tests' Backends change
	func() {
		b := newBackend(t, Options{Path: dir})
		b.held.pool = pool
		ctx := context.Background()
		mb, err := b.OpenMaildrop(ctx, backends.Login{User: "u", Password: "p"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mb.List(ctx); err != nil {
			t.Fatal(err)
		}
		mb.Close()
		if n := pool.Load(); n != 100 {
			t.Fatalf("a scan of 100 messages counts %d entries", n)
		}
	}()
	for range 100 {
		runtime.GC()
		if pool.Load() == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%d entries still counted after the Backend was dropped", pool.Load())
}
