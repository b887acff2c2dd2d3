package proxyproto

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// serve wraps a loopback listener trusting the given networks.
func serve(t *testing.T, trusted []netip.Prefix, timeout time.Duration) (*Listener, *errLog) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(raw, trusted)
	l.Timeout = timeout
	el := &errLog{}
	l.OnError = el.add
	t.Cleanup(func() { l.Close() })
	return l, el
}

type errLog struct {
	mu   sync.Mutex
	errs []error
}

func (e *errLog) add(_ net.Addr, err error) { e.mu.Lock(); e.errs = append(e.errs, err); e.mu.Unlock() }
func (e *errLog) n() int                    { e.mu.Lock(); defer e.mu.Unlock(); return len(e.errs) }

func dial(t *testing.T, l net.Listener, chunks ...string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for _, ch := range chunks {
		if _, err := io.WriteString(c, ch); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c
}

func accept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := l.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
	return nil
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	s, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTrustedV1(t *testing.T) {
	l, _ := serve(t, loopback, 0)
	dial(t, l, "PROXY TCP4 203.0.113.9 127.0.0.1 40000 110\r\nUSER bob\r\n")
	c := accept(t, l)
	if got := c.RemoteAddr().String(); got != "203.0.113.9:40000" {
		t.Errorf("RemoteAddr %s, want the header's 203.0.113.9:40000", got)
	}
	if got := readLine(t, c); got != "USER bob\r\n" {
		t.Errorf("protocol got %q", got)
	}
}

func TestTrustedV2Fragmented(t *testing.T) {
	l, _ := serve(t, loopback, 0)
	h := string(v2(1, 0x11, inet4("198.51.100.7", "127.0.0.1", 5000, 110)))
	dial(t, l, h[:3], h[3:14], h[14:20], h[20:]+"CAPA\r\n")
	c := accept(t, l)
	if got := c.RemoteAddr().String(); got != "198.51.100.7:5000" {
		t.Errorf("RemoteAddr %s", got)
	}
	if got := readLine(t, c); got != "CAPA\r\n" {
		t.Errorf("protocol got %q", got)
	}
}

func TestTrustedLocalKeepsAddress(t *testing.T) {
	l, _ := serve(t, loopback, 0)
	cl := dial(t, l, string(v2(0, 0, nil)))
	c := accept(t, l)
	if c.RemoteAddr().String() != cl.LocalAddr().String() {
		t.Errorf("RemoteAddr %s, want the real %s", c.RemoteAddr(), cl.LocalAddr())
	}
}

func TestUntrustedNotHonoured(t *testing.T) {
	l, el := serve(t, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, 0)
	cl := dial(t, l, "PROXY TCP4 203.0.113.9 127.0.0.1 40000 110\r\n")
	c := accept(t, l)
	if c.RemoteAddr().String() != cl.LocalAddr().String() {
		t.Errorf("RemoteAddr %s, want the real %s", c.RemoteAddr(), cl.LocalAddr())
	}
	if got := readLine(t, c); got != "PROXY TCP4 203.0.113.9 127.0.0.1 40000 110\r\n" {
		t.Errorf("the header should reach the protocol as is, got %q", got)
	}
	if el.n() != 0 {
		t.Errorf("errors %v", el.errs)
	}
}

// A trusted peer that sends nothing is dropped after the timeout, and
// meanwhile other connections are accepted.
func TestTimeoutDoesNotBlockAccept(t *testing.T) {
	l, el := serve(t, loopback, 300*time.Millisecond)
	silent := dial(t, l)
	dial(t, l, "PROXY TCP4 203.0.113.10 127.0.0.1 1 110\r\n")
	c := accept(t, l)
	if got := c.RemoteAddr().String(); got != "203.0.113.10:1" {
		t.Errorf("RemoteAddr %s", got)
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("silent peer: read %v, want EOF (closed)", err)
	}
	if el.n() != 1 {
		t.Errorf("errors %v, want one timeout", el.errs)
	}
}

func TestMalformedFromTrustedCloses(t *testing.T) {
	l, el := serve(t, loopback, 0)
	bad := dial(t, l, "USER bob\r\n")
	dial(t, l, "PROXY UNKNOWN\r\n")
	accept(t, l) // the good one
	bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := bad.Read(make([]byte, 1)); err == nil {
		t.Error("malformed header: connection still open")
	}
	if el.n() != 1 {
		t.Errorf("errors %v", el.errs)
	}
}

func TestCloseEndsAccept(t *testing.T) {
	l, _ := serve(t, loopback, 0)
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	time.Sleep(20 * time.Millisecond)
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
}
