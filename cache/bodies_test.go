package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

func body(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }

func wantBodies(t *testing.T, b *Bodies, account string, present, absent []string) {
	t.Helper()
	for _, k := range present {
		if _, ok := b.Get(account, k); !ok {
			t.Errorf("%s/%s evicted, want kept", account, k)
		}
	}
	for _, k := range absent {
		if _, ok := b.Get(account, k); ok {
			t.Errorf("%s/%s kept, want evicted", account, k)
		}
	}
}

func TestBodiesEvictByBytes(t *testing.T) {
	b := &Bodies{MaxBytes: 100, MaxItem: 60}
	for i, k := range []string{"a", "b", "c"} {
		if !b.Put("acct", k, body(30, byte('a'+i))) {
			t.Fatalf("Put %s refused", k)
		}
	}
	if n, total := b.Len(); n != 3 || total != 90 {
		t.Fatalf("Len = %d, %d; want 3, 90", n, total)
	}
	b.Get("acct", "a") // a becomes the most recent: b is the oldest
	b.Put("acct", "d", body(30, 'd'))
	wantBodies(t, b, "acct", []string{"a", "c", "d"}, []string{"b"})
	// Now a is the least recently used, then c: 60 bytes evict both.
	b.Get("acct", "c")
	b.Get("acct", "d")
	b.Put("acct", "e", body(60, 'e'))
	wantBodies(t, b, "acct", []string{"d", "e"}, []string{"a", "b", "c"})
	if n, total := b.Len(); n != 2 || total != 90 {
		t.Errorf("Len = %d, %d; want 2, 90", n, total)
	}
	got, _ := b.Get("acct", "e")
	if !bytes.Equal(got, body(60, 'e')) {
		t.Error("Get returned the wrong body")
	}

	// Replacing a key counts its new length only.
	b.Put("acct", "d", body(10, 'D'))
	if n, total := b.Len(); n != 2 || total != 70 {
		t.Errorf("after replace Len = %d, %d; want 2, 70", n, total)
	}
}

func TestBodiesThresholds(t *testing.T) {
	// Larger than MaxItem: refused, and an older body of the key dropped.
	b2 := &Bodies{MaxBytes: 1000, MaxItem: 20}
	b2.Put("acct", "k", body(20, 'k'))
	if b2.Put("acct", "k", body(21, 'k')) {
		t.Error("kept a body above MaxItem")
	}
	wantBodies(t, b2, "acct", nil, []string{"k"})

	b := &Bodies{MaxBytes: 100, MaxItem: 200}
	b.Put("acct", "small", body(50, 's'))

	// Larger than the whole cache: refused without flushing the others.
	if b.Put("acct", "huge", body(101, 'h')) {
		t.Error("kept a body larger than the whole cache")
	}
	wantBodies(t, b, "acct", []string{"small"}, []string{"huge"})
	if n, total := b.Len(); n != 1 || total != 50 {
		t.Errorf("Len = %d, %d; want 1, 50", n, total)
	}
	// Exactly the cache size fits, evicting everything else.
	if !b.Put("acct", "full", body(100, 'f')) {
		t.Error("refused a body of exactly MaxBytes")
	}
	wantBodies(t, b, "acct", []string{"full"}, []string{"small"})
}

func TestBodiesDefaults(t *testing.T) {
	var b Bodies
	if !b.Put("a", "max", body(DefaultBodyItem, 'x')) {
		t.Error("zero Bodies refused a body of DefaultBodyItem")
	}
	if b.Put("a", "over", body(DefaultBodyItem+1, 'x')) {
		t.Error("zero Bodies kept a body above DefaultBodyItem")
	}
	for i := range DefaultBodyBytes / DefaultBodyItem {
		b.Put("a", fmt.Sprint(i), body(DefaultBodyItem, 'y'))
	}
	if n, total := b.Len(); total != DefaultBodyBytes || n != DefaultBodyBytes/DefaultBodyItem {
		t.Errorf("Len = %d, %d; want %d, %d", n, total, DefaultBodyBytes/DefaultBodyItem, DefaultBodyBytes)
	}
	wantBodies(t, &b, "a", nil, []string{"max"})

	var nilB *Bodies
	if nilB.Put("a", "k", []byte("x")) {
		t.Error("nil Bodies kept a body")
	}
	if _, ok := nilB.Get("a", "k"); ok {
		t.Error("nil Bodies returned a body")
	}
	nilB.Remove("a", "k")
	nilB.Forget("a")
	r := io.NopCloser(strings.NewReader("x"))
	if nilB.Tee("a", "k", 1, r) != r {
		t.Error("nil Bodies wrapped the stream")
	}
}

func TestBodiesRemoveAndForget(t *testing.T) {
	b := &Bodies{MaxBytes: 1000}
	for _, a := range []string{"alice", "bob"} {
		for _, k := range []string{"1", "2"} {
			b.Put(a, k, []byte(a+k))
		}
	}
	b.Remove("alice", "1")
	b.Forget("bob")
	wantBodies(t, b, "alice", []string{"2"}, []string{"1"})
	wantBodies(t, b, "bob", nil, []string{"1", "2"})
	if n, total := b.Len(); n != 1 || total != 6 {
		t.Errorf("Len = %d, %d; want 1, 6", n, total)
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestBodiesTee(t *testing.T) {
	const msg = "Subject: hi\r\n\r\nbody\r\n"
	tests := []struct {
		name string
		size int64
		r    func() io.Reader
		read func(io.Reader) // how the client consumes the stream
		keep bool
	}{
		{"complete", int64(len(msg)), func() io.Reader { return strings.NewReader(msg) }, readAll, true},
		{"small reads", int64(len(msg)), func() io.Reader { return iotest.OneByteReader(strings.NewReader(msg)) }, readAll, true},
		{"data with EOF", int64(len(msg)), func() io.Reader { return iotest.DataErrReader(strings.NewReader(msg)) }, readAll, true},
		{"unknown size", -1, func() io.Reader { return strings.NewReader(msg) }, readAll, true},
		{"closed early (TOP)", int64(len(msg)), func() io.Reader { return strings.NewReader(msg) }, readSome, false},
		{"upstream error", int64(len(msg)), func() io.Reader {
			return io.MultiReader(strings.NewReader(msg[:5]), iotest.ErrReader(errors.New("reset")))
		}, readAll, false},
		{"shorter than size", int64(len(msg)) + 1, func() io.Reader { return strings.NewReader(msg) }, readAll, false},
		{"longer than size", int64(len(msg)) - 1, func() io.Reader { return strings.NewReader(msg) }, readAll, false},
		{"unknown size above MaxItem", -1, func() io.Reader { return strings.NewReader(msg + strings.Repeat("x", 100)) }, readAll, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &Bodies{MaxBytes: 1000, MaxItem: 100}
			src := &closeRecorder{Reader: tc.r()}
			r := b.Tee("acct", "k", tc.size, src)
			tc.read(r)
			if err := r.Close(); err != nil || !src.closed {
				t.Errorf("Close = %v, upstream closed %v", err, src.closed)
			}
			got, ok := b.Get("acct", "k")
			if ok != tc.keep {
				t.Fatalf("kept = %v, want %v", ok, tc.keep)
			}
			if ok && string(got) != msg {
				t.Errorf("kept %q, want %q", got, msg)
			}
		})
	}

	// Above MaxItem the stream passes through untouched.
	b := &Bodies{MaxBytes: 1000, MaxItem: 10}
	src := io.NopCloser(strings.NewReader(msg))
	if b.Tee("acct", "k", int64(len(msg)), src) != src {
		t.Error("Tee wrapped a stream above MaxItem")
	}
}

func readAll(r io.Reader) { io.Copy(io.Discard, r) }

func readSome(r io.Reader) { r.Read(make([]byte, 4)) }

// TestBodiesOpen is TOP then RETR: TOP reads the rest before Close, so
// RETR is served from memory without a second upstream fetch.
func TestBodiesOpen(t *testing.T) {
	const msg = "Subject: x\r\n\r\nline 1\r\nline 2\r\n"
	b := &Bodies{}
	fetches := 0
	open := func() (io.ReadCloser, error) {
		fetches++
		return io.NopCloser(strings.NewReader(msg)), nil
	}
	top, err := b.Open("acct", "k", int64(len(msg)), open)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 12)
	io.ReadFull(top, head)
	io.Copy(io.Discard, top) // drain, as a backend does when upstream sends it all anyway
	top.Close()
	for range 2 {
		r, err := b.Open("acct", "k", int64(len(msg)), open)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(r)
		r.Close()
		if string(got) != msg {
			t.Errorf("RETR from memory = %q", got)
		}
	}
	if fetches != 1 {
		t.Errorf("%d upstream fetches, want 1", fetches)
	}
	want := errors.New("upstream down")
	if _, err := b.Open("acct", "other", 5, func() (io.ReadCloser, error) { return nil, want }); err != want {
		t.Errorf("Open error = %v, want %v", err, want)
	}
}

func TestBodiesConcurrent(t *testing.T) {
	b := &Bodies{MaxBytes: 5000, MaxItem: 500}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				k := fmt.Sprint(i % 40)
				want := body(i%40*10+1, byte(i%40))
				switch i % 4 {
				case 0:
					b.Put("a", k, want)
				case 1:
					r := b.Tee("a", k, int64(len(want)), io.NopCloser(bytes.NewReader(want)))
					io.Copy(io.Discard, r)
					r.Close()
				case 2:
					if got, ok := b.Get("a", k); ok && !bytes.Equal(got, want) {
						t.Errorf("body %s corrupted", k)
					}
				case 3:
					if w == 0 && i%40 == 3 {
						b.Forget("a")
					} else {
						b.Remove("a", fmt.Sprint((i+7)%40))
					}
				}
				if _, total := b.Len(); total > 5000 {
					t.Errorf("total %d above MaxBytes", total)
				}
			}
		}()
	}
	wg.Wait()
}

func TestBodiesPurge(t *testing.T) {
	b := &Bodies{MaxBytes: 1 << 20}
	b.Put("a", "1", []byte("one"))
	b.Put("b", "2", []byte("two"))
	b.Purge()
	if n, total := b.Len(); n != 0 || total != 0 {
		t.Errorf("after Purge: %d bodies, %d bytes", n, total)
	}
	if _, ok := b.Get("a", "1"); ok {
		t.Error("a body survived Purge")
	}
	if !b.Put("a", "1", []byte("one")) {
		t.Error("Put after Purge refused")
	}
	var nilBodies *Bodies
	nilBodies.Purge() // no bodies kept: nothing to do
}
