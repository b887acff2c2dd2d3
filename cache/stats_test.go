package cache

import (
	"io"
	"strings"
	"testing"
)

func TestBodiesStats(t *testing.T) {
	var nilBodies *Bodies
	if h, m := nilBodies.Stats(); h != 0 || m != 0 {
		t.Fatalf("nil Bodies stats %d %d", h, m)
	}
	b := &Bodies{}
	b.Get("a", "1") // miss
	b.Put("a", "1", []byte("body"))
	b.Get("a", "1") // hit
	rc, err := b.Open("a", "2", -1, func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("x")), nil })
	if err != nil {
		t.Fatal(err)
	}
	rc.Close() // Open looked up "2": a miss
	if h, m := b.Stats(); h != 1 || m != 2 {
		t.Fatalf("stats hits %d misses %d, want 1 and 2", h, m)
	}
}
