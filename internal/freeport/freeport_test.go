package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestPorts: distinct ports below the ephemeral range, each one free
// (a listener can take it), never one a listener holds.
func TestPorts(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	ps, err := Ports(200)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	limit := ephemeralStart()
	for _, p := range ps {
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if span > 0 && (p < lowest || p >= limit) {
			t.Fatalf("port %d outside [%d, %d)", p, lowest, limit)
		}
		if p == held.Addr().(*net.TCPAddr).Port {
			t.Fatalf("port %d is held by a listener", p)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d: %v", p, err)
		}
		ln.Close()
	}
	// A port taken by a listener is skipped.
	next0 := next
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(next0))
	if err != nil {
		t.Skipf("port %d already taken: %v", next0, err)
	}
	defer ln.Close()
	if p := Port(t); p == next0 {
		t.Fatalf("Port returned %d, which a listener holds", p)
	}
}
