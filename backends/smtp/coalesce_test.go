package smtp

import (
	"bytes"
	"net"
	"testing"
)

// recConn records the writes that reach the network.
type recConn struct {
	net.Conn
	writes [][]byte
	closed bool
}

func (r *recConn) Write(p []byte) (int, error) {
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}
func (r *recConn) Read(p []byte) (int, error) { return copy(p, "250 ok\r\n"), nil }
func (r *recConn) Close() error               { r.closed = true; return nil }

// TestCoalescer: writes wait for the next read (one network write for a
// message's records and its dot), a full buffer goes out at once, and
// Close drops what was not flushed, so an abort never sends a partial
// message's end.
func TestCoalescer(t *testing.T) {
	rc := &recConn{}
	c := newCoalescer(rc)
	for range 3 {
		c.Write(bytes.Repeat([]byte("x"), 4096))
	}
	c.Write([]byte("\r\n.\r\n"))
	if len(rc.writes) != 0 {
		t.Fatalf("%d writes before the read, want 0", len(rc.writes))
	}
	buf := make([]byte, 64)
	if n, _ := c.Read(buf); string(buf[:n]) != "250 ok\r\n" {
		t.Fatalf("read %q", buf[:n])
	}
	if len(rc.writes) != 1 || len(rc.writes[0]) != 3*4096+5 {
		t.Fatalf("writes %d (first %d octets), want 1 of %d", len(rc.writes), len(rc.writes[0]), 3*4096+5)
	}
	c.Read(buf) // nothing buffered: no empty write
	if len(rc.writes) != 1 {
		t.Fatalf("%d writes after an empty flush, want 1", len(rc.writes))
	}
	c.Write(bytes.Repeat([]byte("y"), 100<<10)) // larger than the buffer
	if got := len(bytes.Join(rc.writes[1:], nil)); got < 64<<10 {
		t.Fatalf("%d octets written of a 100 KiB write before a read, want at least 64 KiB", got)
	}
	rc.writes = nil
	c.Write([]byte("partial"))
	c.Close()
	if len(rc.writes) != 0 || !rc.closed {
		t.Fatalf("close: writes %q, closed %v; want nothing written, closed", rc.writes, rc.closed)
	}
}
