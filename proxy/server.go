package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
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
	// TLS 1.2 is the minimum whatever it says.
	TLSConfig *tls.Config

	// Cleartext says where logins without TLS are allowed.
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

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
	perIP     map[netip.Addr]int
	locks     map[string]struct{}
	penalty   *penaltyBox
	inShutdown atomic.Bool
	connWG    sync.WaitGroup
	nextID    atomic.Uint64
	onceInit  sync.Once
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

// keep the compiler quiet until the session code lands
var _ = context.Background
