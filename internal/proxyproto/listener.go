package proxyproto

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// DefaultTimeout bounds the wait for a trusted peer's header.
const DefaultTimeout = 5 * time.Second

// Listener wraps a net.Listener. Connections from Trusted networks must
// start with a PROXY protocol header, and their RemoteAddr is the client
// address it carries; other connections are passed on unchanged and any
// header they send is left for the protocol to reject. Headers are read
// in a goroutine per connection, so a slow peer does not hold up Accept.
type Listener struct {
	net.Listener // the wrapped listener
	Trusted      []netip.Prefix
	// Timeout bounds reading the header; DefaultTimeout when zero.
	Timeout time.Duration
	// OnError, if set, is told of each connection closed for a bad or
	// missing header.
	OnError func(remote net.Addr, err error)

	start sync.Once
	stop  sync.Once
	conns chan net.Conn
	errs  chan error
	done  chan struct{}
}

// New wraps l, trusting the given networks. Set Timeout and OnError
// before the first Accept.
func New(l net.Listener, trusted []netip.Prefix) *Listener {
	return &Listener{Listener: l, Trusted: trusted,
		conns: make(chan net.Conn), errs: make(chan error), done: make(chan struct{})}
}

// Accept returns the next connection whose header, if one is due, was
// read.
func (l *Listener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.loop() })
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close closes the underlying listener; connections still sending their
// header are closed.
func (l *Listener) Close() error {
	l.stop.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *Listener) loop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !l.trusts(c.RemoteAddr()) {
			l.deliver(c)
			continue
		}
		go l.handshake(c)
	}
}

func (l *Listener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *Listener) handshake(c net.Conn) {
	t := l.Timeout
	if t <= 0 {
		t = DefaultTimeout
	}
	c.SetReadDeadline(time.Now().Add(t))
	src, err := ReadHeader(c)
	if err == nil {
		err = c.SetReadDeadline(time.Time{})
	}
	if err != nil {
		if l.OnError != nil {
			l.OnError(c.RemoteAddr(), err)
		}
		c.Close()
		return
	}
	if src == nil {
		l.deliver(c)
		return
	}
	l.deliver(&conn{Conn: c, remote: src})
}

func (l *Listener) trusts(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip := ta.AddrPort().Addr().Unmap()
	for _, p := range l.Trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// conn is a connection whose client address came from a PROXY header.
type conn struct {
	net.Conn
	remote net.Addr
}

func (c *conn) RemoteAddr() net.Addr { return c.remote }
