package config

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/proxy"
)

// Policy converts c to the proxy's cleartext policy.
func (c CleartextAuth) Policy() (proxy.CleartextPolicy, error) {
	if c.Networks != nil {
		nets, err := parsePrefixes(c.Networks)
		if err != nil {
			return proxy.CleartextPolicy{}, fmt.Errorf("cleartext_auth: %w", err)
		}
		return proxy.CleartextPolicy{Mode: proxy.CleartextNetworks, Networks: nets}, nil
	}
	switch c.Mode {
	case "", CleartextLoopback:
		return proxy.CleartextPolicy{Mode: proxy.CleartextLoopback}, nil
	case CleartextNever:
		return proxy.CleartextPolicy{Mode: proxy.CleartextNever}, nil
	case CleartextAlways:
		return proxy.CleartextPolicy{Mode: proxy.CleartextAlways}, nil
	}
	return proxy.CleartextPolicy{}, fmt.Errorf("cleartext_auth: unknown mode %q", c.Mode)
}

// Apply copies the limits into srv's fields. Zero values are copied as
// zero, which keeps the server's defaults.
func (l Limits) Apply(srv *proxy.Server) error {
	durations := []struct {
		key string
		val Duration
		dst *time.Duration
	}{
		{"idle_timeout", l.IdleTimeout, &srv.IdleTimeout},
		{"auth_idle_timeout", l.AuthIdleTimeout, &srv.AuthIdleTimeout},
		{"write_timeout", l.WriteTimeout, &srv.WriteTimeout},
		{"backend_timeout", l.BackendTimeout, &srv.BackendTimeout},
		{"auth_failure_delay", l.AuthFailureDelay, &srv.AuthFailureDelay},
		{"max_auth_failure_delay", l.MaxAuthFailureDelay, &srv.MaxAuthFailureDelay},
	}
	for _, d := range durations {
		v, err := d.val.Value()
		if err != nil {
			return fmt.Errorf("limits.%s: %w", d.key, err)
		}
		*d.dst = v
	}
	nets, err := parsePrefixes(l.TrustedNetworks)
	if err != nil {
		return fmt.Errorf("limits.trusted_networks: %w", err)
	}
	srv.TrustedNetworks = nets
	srv.MaxConnections = l.MaxConnections
	srv.MaxConnectionsPerIP = l.MaxConnectionsPerIP
	return nil
}

// defaultBodyBytes is cache.DefaultBodyBytes as written in a file.
const defaultBodyBytes = "64MiB"

// Bodies returns the body cache c describes, or nil (keep nothing) for
// body_bytes: 0.
func (c Cache) Bodies() (*cache.Bodies, error) {
	body, err := c.BodyBytes.Value()
	if err != nil {
		return nil, fmt.Errorf("cache.body_bytes: %w", err)
	}
	item, err := c.MaxMessageBytes.Value()
	if err != nil {
		return nil, fmt.Errorf("cache.max_message_bytes: %w", err)
	}
	if c.BodyBytes != "" && body == 0 {
		return nil, nil
	}
	// Zero fields take the cache package's defaults.
	return &cache.Bodies{MaxBytes: body, MaxItem: item}, nil
}

// Load reads cert_file and key_file once and returns a server TLS config
// requiring min_version, TLS 1.2 or later by default (RFC 8314 §4.1).
// popbridge serve instead reads Config.TLSFiles, also for self_signed,
// and again when they change.
func (t *TLS) Load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   t.MinTLSVersion(),
	}, nil
}
