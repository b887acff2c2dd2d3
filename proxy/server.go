package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// CleartextMode says where USER/PASS and AUTH PLAIN may be used without TLS.
type CleartextMode int

const (
	// CleartextLoopback allows cleartext logins from loopback addresses only.
	CleartextLoopback CleartextMode = iota
	// CleartextNever requires TLS for every login.
	CleartextNever
	// CleartextAlways allows cleartext logins from anywhere.
	CleartextAlways
	// CleartextNetworks allows cleartext logins from the listed networks.
	CleartextNetworks
)

// CleartextPolicy decides whether a connection without TLS may log in
// (RFC 2595 §2.3). The zero value allows loopback only.
type CleartextPolicy struct {
	Mode     CleartextMode
	Networks []netip.Prefix // for CleartextNetworks
}

// Allows reports whether a client at addr may log in without TLS.
func (p CleartextPolicy) Allows(addr netip.Addr) bool {
	switch p.Mode {
	case CleartextAlways:
		return true
	case CleartextNever:
		return false
	case CleartextNetworks:
		return inNetworks(addr, p.Networks)
	default:
		return addr.Unmap().IsLoopback()
	}
}

func inNetworks(addr netip.Addr, nets []netip.Prefix) bool {
	addr = addr.Unmap()
	for _, n := range nets {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// Server is a POP3 server (RFC 1939, 2449, 5034, 2595, 8314). Its fields
// are read when Serve starts and must not change afterwards. The zero value
// of every limit selects the documented default; a negative duration turns
// the limit off.
type Server struct {
	// Backend authenticates users and opens maildrops. Required.
	Backend Backend

	// TLSConfig enables STLS on plain listeners and is used by ServeTLS.
	// A zero MinVersion means TLS 1.2; an older one must be set
	// explicitly (for old clients), with the CipherSuites they need.
	TLSConfig *tls.Config

	// Cleartext says where logins without TLS are allowed. To change it
	// while the server runs, use SetCleartext.
	Cleartext CleartextPolicy

	// Logger receives connection and session logs. Nil logs nothing.
	Logger *zerolog.Logger

	// Greeting is the text after "+OK " in the greeting. It must not
	// contain "<" (no APOP). Default "POP3 server ready."
	Greeting string

	// AuthIdleTimeout bounds the wait for a command before login.
	// Default 60 s.
	AuthIdleTimeout time.Duration
	// IdleTimeout bounds the wait for a command after login (RFC 1939 §3
	// requires at least 10 minutes). Default 10 min.
	IdleTimeout time.Duration
	// WriteTimeout bounds each write to a client, so a client that stops
	// reading cannot pin a session. Default 2 min.
	WriteTimeout time.Duration
	// BackendTimeout bounds Login, List and Delete calls. Default 2 min.
	BackendTimeout time.Duration

	// MaxBadCommandsAuth and MaxBadCommands are the bad commands allowed
	// before and after login before the server disconnects. Defaults 3
	// and 20.
	MaxBadCommandsAuth int
	MaxBadCommands     int

	// AuthFailureDelay is the delay before answering a failed login; it
	// doubles with each further failure from the same address up to
	// MaxAuthFailureDelay. Defaults 2 s and 15 s.
	AuthFailureDelay    time.Duration
	MaxAuthFailureDelay time.Duration
	// TrustedNetworks get no auth failure delay.
	TrustedNetworks []netip.Prefix

	// MaxConnections and MaxConnectionsPerIP bound concurrent connections.
	// Defaults 1000 and 50; negative means no limit.
	MaxConnections      int
	MaxConnectionsPerIP int

	// Observer, if set, is told about sessions and commands, for metrics.
	Observer Observer

	// Locker takes the maildrop locks. Nil means a lock in this
	// process's memory; a Locker shared by several Servers (such as a
	// lease in a database) locks a maildrop across all of them.
	Locker Locker

	initOnce   sync.Once
	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	conns      map[*conn]struct{}
	perIP      map[netip.Addr]int
	locker     Locker
	penalty    *penaltyBox
	inShutdown atomic.Bool
	cleartext  atomic.Pointer[CleartextPolicy] // SetCleartext's, over Cleartext
	shutdownCh chan struct{}                   // closed by Shutdown and Close
	baseCtx    context.Context
	cancelAll  context.CancelFunc // cancels every session's context (Close)
	connWG     sync.WaitGroup
	nextID     atomic.Uint64
}

func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func intOr(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

func (s *Server) authIdleTimeout() time.Duration { return durationOr(s.AuthIdleTimeout, time.Minute) }
func (s *Server) idleTimeout() time.Duration     { return durationOr(s.IdleTimeout, 10*time.Minute) }
func (s *Server) writeTimeout() time.Duration    { return durationOr(s.WriteTimeout, 2*time.Minute) }
func (s *Server) backendTimeout() time.Duration  { return durationOr(s.BackendTimeout, 2*time.Minute) }
func (s *Server) maxBadAuth() int                { return intOr(s.MaxBadCommandsAuth, 3) }
func (s *Server) maxBad() int                    { return intOr(s.MaxBadCommands, 20) }
func (s *Server) authFailureDelay() time.Duration {
	return durationOr(s.AuthFailureDelay, 2*time.Second)
}
func (s *Server) maxAuthFailureDelay() time.Duration {
	return durationOr(s.MaxAuthFailureDelay, 15*time.Second)
}
func (s *Server) maxConns() int      { return intOr(s.MaxConnections, 1000) }
func (s *Server) maxConnsPerIP() int { return intOr(s.MaxConnectionsPerIP, 50) }

func (s *Server) greeting() string {
	if s.Greeting == "" {
		return "POP3 server ready."
	}
	return s.Greeting
}

func (s *Server) logger() *zerolog.Logger {
	if s.Logger == nil {
		l := zerolog.Nop()
		return &l
	}
	return s.Logger
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.listeners = make(map[*net.Listener]struct{})
		s.conns = make(map[*conn]struct{})
		s.perIP = make(map[netip.Addr]int)
		s.locker = s.Locker
		if s.locker == nil {
			s.locker = &localLocker{}
		}
		s.penalty = newPenaltyBox()
		s.shutdownCh = make(chan struct{})
		s.baseCtx, s.cancelAll = context.WithCancel(context.Background())
	})
}

// ListenAndServe listens on the TCP address addr and calls Serve.
func (s *Server) ListenAndServe(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pop3: listen %s: %w", addr, err)
	}
	return s.Serve(l)
}

// ListenAndServeTLS listens on the TCP address addr and calls ServeTLS.
func (s *Server) ListenAndServeTLS(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pop3s: listen %s: %w", addr, err)
	}
	return s.ServeTLS(l)
}

// Serve accepts plain POP3 connections on l, offering STLS when TLSConfig
// is set. It returns ErrServerClosed after Shutdown or Close; l is closed
// on return.
func (s *Server) Serve(l net.Listener) error { return s.serve(l, false) }

// ServeTLS accepts POP3 connections on l that start with a TLS handshake
// (RFC 8314 §3.1). TLSConfig must be set.
func (s *Server) ServeTLS(l net.Listener) error {
	if s.TLSConfig == nil {
		l.Close()
		return errors.New("pop3s: ServeTLS needs TLSConfig")
	}
	return s.serve(l, true)
}

func (s *Server) tlsConfig() *tls.Config {
	cfg := s.TLSConfig.Clone()
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	// Remember each client's hello, to say why a handshake failed.
	next := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if hc, ok := h.Conn.(*helloConn); ok {
			hc.hello = &clientHello{versions: h.SupportedVersions, ciphers: h.CipherSuites}
		}
		if next != nil {
			return next(h)
		}
		return nil, nil
	}
	return cfg
}

func (s *Server) serve(l net.Listener, implicitTLS bool) error {
	if s.Backend == nil {
		l.Close()
		return errors.New("pop3: Server.Backend is nil")
	}
	s.init()
	if !s.trackListener(&l, true) {
		l.Close()
		return ErrServerClosed
	}
	defer s.trackListener(&l, false)
	defer l.Close()

	var tlsCfg *tls.Config
	if s.TLSConfig != nil {
		tlsCfg = s.tlsConfig()
	}
	var backoff time.Duration
	for {
		rw, err := l.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Back off as net/http does, e.g. when out of file descriptors.
				if backoff == 0 {
					backoff = 5 * time.Millisecond
				} else if backoff *= 2; backoff > time.Second {
					backoff = time.Second
				}
				s.logger().Warn().Err(err).Int64("retry_in_ms", backoff.Milliseconds()).Msg("accept failed")
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("pop3: accept: %w", err)
		}
		backoff = 0
		c := s.newConn(rw, tlsCfg, implicitTLS)
		if c == nil {
			continue
		}
		go c.serve()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown.Load() {
			return false
		}
		s.listeners[l] = struct{}{}
	} else {
		delete(s.listeners, l)
	}
	return true
}

// newConn registers a new connection, or refuses it when a connection
// limit is reached or the server is shutting down.
func (s *Server) newConn(rw net.Conn, tlsCfg *tls.Config, implicitTLS bool) *conn {
	addr := remoteAddr(rw)
	s.mu.Lock()
	refuse := ""
	switch {
	case s.inShutdown.Load():
		refuse = "Server shutting down."
	case s.maxConns() > 0 && len(s.conns) >= s.maxConns():
		refuse = "Too many connections."
	case s.maxConnsPerIP() > 0 && s.perIP[addr] >= s.maxConnsPerIP():
		refuse = "Too many connections from your address."
	}
	if refuse != "" {
		s.mu.Unlock()
		s.logger().Warn().Str("remote", rw.RemoteAddr().String()).Str("reason", refuse).Msg("connection refused")
		if !implicitTLS {
			rw.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(rw, "-ERR [SYS/TEMP] "+refuse+"\r\n")
		}
		rw.Close()
		return nil
	}
	c := newConn(s, rw, addr, tlsCfg, implicitTLS)
	s.conns[c] = struct{}{}
	s.perIP[addr]++
	s.connWG.Add(1)
	s.mu.Unlock()
	return c
}

func (s *Server) forgetConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if s.perIP[c.addr]--; s.perIP[c.addr] <= 0 {
		delete(s.perIP, c.addr)
	}
	s.mu.Unlock()
	s.connWG.Done()
}

func remoteAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// Shutdown stops the listeners, then ends every session at its next
// command boundary without entering the UPDATE state, so no message is
// deleted for a session that did not QUIT. A QUIT already being processed
// completes. If ctx ends first, Shutdown closes the remaining connections
// and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.beginShutdown()
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// Close closes the listeners and every connection at once, cancelling
// backend calls in progress. No deletes are applied except those already
// committed.
func (s *Server) Close() error {
	s.init()
	s.beginShutdown()
	s.cancelAll()
	s.mu.Lock()
	for c := range s.conns {
		c.rwc.Close()
	}
	s.mu.Unlock()
	return nil
}

// ShuttingDown reports whether Shutdown or Close has been called.
func (s *Server) ShuttingDown() bool { return s.inShutdown.Load() }

func (s *Server) beginShutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown.Swap(true) {
		return
	}
	close(s.shutdownCh)
	for l := range s.listeners {
		(*l).Close()
	}
	for c := range s.conns {
		c.interrupt()
	}
}

// SetCleartext replaces the Cleartext policy of a running server, for a
// configuration reload: logins from then on follow p. It is safe to call
// concurrently with connections.
func (s *Server) SetCleartext(p CleartextPolicy) {
	p.Networks = slices.Clone(p.Networks)
	s.cleartext.Store(&p)
}

// CleartextPolicy returns the policy in force: the last SetCleartext's,
// else Cleartext.
func (s *Server) CleartextPolicy() CleartextPolicy {
	if p := s.cleartext.Load(); p != nil {
		return *p
	}
	return s.Cleartext
}
