package app

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/proxy"
)

func TestCacheBodies(t *testing.T) {
	b, err := Bodies(config.Cache{})
	if err != nil || b == nil || b.MaxBytes != 0 || b.MaxItem != 0 {
		t.Errorf("default Bodies = %+v, %v; want the cache package's defaults", b, err)
	}
	if want, _ := config.ByteSize(config.DefaultBodyBytes).Value(); want != cache.DefaultBodyBytes {
		t.Errorf("DefaultBodyBytes %s is not cache.DefaultBodyBytes %d", config.DefaultBodyBytes, cache.DefaultBodyBytes)
	}
	b, err = Bodies(config.Cache{BodyBytes: "16MiB", MaxMessageBytes: "256KiB"})
	if err != nil || b.MaxBytes != 16<<20 || b.MaxItem != 256<<10 {
		t.Errorf("Bodies = %+v, %v", b, err)
	}
	if b.Put("a", "k", make([]byte, 300<<10)) || !b.Put("a", "k", make([]byte, 200<<10)) {
		t.Error("the body cache does not follow max_message_bytes")
	}
	if b, err := Bodies(config.Cache{BodyBytes: "0"}); err != nil || b != nil {
		t.Errorf("body_bytes 0: %+v, %v; want nil (off)", b, err)
	}
	if _, err := Bodies(config.Cache{BodyBytes: "lots"}); err == nil || !strings.HasPrefix(err.Error(), "cache.body_bytes:") {
		t.Errorf("bad body_bytes: %v", err)
	}
}

func TestPolicy(t *testing.T) {
	tests := []struct {
		in   config.CleartextAuth
		want proxy.CleartextPolicy
	}{
		{config.CleartextAuth{}, proxy.CleartextPolicy{Mode: proxy.CleartextLoopback}},
		{config.CleartextAuth{Mode: "loopback"}, proxy.CleartextPolicy{Mode: proxy.CleartextLoopback}},
		{config.CleartextAuth{Mode: "never"}, proxy.CleartextPolicy{Mode: proxy.CleartextNever}},
		{config.CleartextAuth{Mode: "always"}, proxy.CleartextPolicy{Mode: proxy.CleartextAlways}},
		{config.CleartextAuth{Networks: []string{"10.1.2.3/8", "192.0.2.7", "2001:db8::/32", "::ffff:192.0.2.8"}},
			proxy.CleartextPolicy{Mode: proxy.CleartextNetworks, Networks: []netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/8"),
				netip.MustParsePrefix("192.0.2.7/32"),
				netip.MustParsePrefix("2001:db8::/32"),
				netip.MustParsePrefix("192.0.2.8/32"),
			}}},
	}
	for _, tt := range tests {
		got, err := CleartextPolicy(tt.in)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("CleartextPolicy(%+v) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	if _, err := CleartextPolicy(config.CleartextAuth{Mode: "sometimes"}); err == nil {
		t.Error("Policy of an unknown mode: no error")
	}
	if _, err := CleartextPolicy(config.CleartextAuth{Networks: []string{"x"}}); err == nil {
		t.Error("Policy of a bad network: no error")
	}
}

func TestLimitsApply(t *testing.T) {
	var srv proxy.Server
	l := config.Limits{
		MaxConnections: 10, MaxConnectionsPerIP: -1,
		IdleTimeout: "15m", AuthIdleTimeout: "20s", WriteTimeout: "-1s", BackendTimeout: "1m30s",
		AuthFailureDelay: "500ms", MaxAuthFailureDelay: "4s",
		TrustedNetworks: []string{"10.0.0.0/8"},
	}
	if err := ApplyLimits(l, &srv); err != nil {
		t.Fatal(err)
	}
	got := []any{srv.MaxConnections, srv.MaxConnectionsPerIP, srv.IdleTimeout, srv.AuthIdleTimeout,
		srv.WriteTimeout, srv.BackendTimeout, srv.AuthFailureDelay, srv.MaxAuthFailureDelay, srv.TrustedNetworks}
	want := []any{10, -1, 15 * time.Minute, 20 * time.Second, -time.Second, 90 * time.Second,
		500 * time.Millisecond, 4 * time.Second, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after Apply: %v, want %v", got, want)
	}

	var zero proxy.Server
	if err := ApplyLimits(config.Limits{}, &zero); err != nil {
		t.Fatal(err)
	}
	if zero.IdleTimeout != 0 || zero.MaxConnections != 0 || len(zero.TrustedNetworks) != 0 {
		t.Errorf("empty limits changed defaults: idle %v, max conns %d, trusted %v", zero.IdleTimeout, zero.MaxConnections, zero.TrustedNetworks)
	}
	if err := ApplyLimits(config.Limits{IdleTimeout: "x"}, &zero); err == nil || !strings.HasPrefix(err.Error(), "limits.idle_timeout:") {
		t.Errorf("Apply of a bad duration: %v", err)
	}
}
