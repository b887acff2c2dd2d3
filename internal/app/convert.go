package app

import (
	"fmt"
	"time"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/proxy"
)

// CleartextPolicy converts c to the proxy's cleartext policy.
func CleartextPolicy(c config.CleartextAuth) (proxy.CleartextPolicy, error) {
	if c.Networks != nil {
		nets, err := config.ParsePrefixes(c.Networks)
		if err != nil {
			return proxy.CleartextPolicy{}, fmt.Errorf("cleartext_auth: %w", err)
		}
		return proxy.CleartextPolicy{Mode: proxy.CleartextNetworks, Networks: nets}, nil
	}
	switch c.Mode {
	case "", config.CleartextLoopback:
		return proxy.CleartextPolicy{Mode: proxy.CleartextLoopback}, nil
	case config.CleartextNever:
		return proxy.CleartextPolicy{Mode: proxy.CleartextNever}, nil
	case config.CleartextAlways:
		return proxy.CleartextPolicy{Mode: proxy.CleartextAlways}, nil
	}
	return proxy.CleartextPolicy{}, fmt.Errorf("cleartext_auth: unknown mode %q", c.Mode)
}

// ApplyLimits copies the limits l into srv's fields. Zero values are copied as
// zero, which keeps the server's defaults.
func ApplyLimits(l config.Limits, srv *proxy.Server) error {
	durations := []struct {
		key string
		val config.Duration
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
	nets, err := config.ParsePrefixes(l.TrustedNetworks)
	if err != nil {
		return fmt.Errorf("limits.trusted_networks: %w", err)
	}
	srv.TrustedNetworks = nets
	srv.MaxConnections = l.MaxConnections
	srv.MaxConnectionsPerIP = l.MaxConnectionsPerIP
	return nil
}

// Bodies returns the body cache c describes, or nil (keep nothing) for
// body_bytes: 0.
func Bodies(c config.Cache) (*cache.Bodies, error) {
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
