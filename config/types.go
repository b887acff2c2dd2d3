package config

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a duration written the Go way ("90s", "10m", "1h30m").
// It is kept as written so that Validate can report a bad value with its
// key; empty means zero.
type Duration string

// Value parses d.
func (d Duration) Value() (time.Duration, error) {
	if d == "" {
		return 0, nil
	}
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 90s, 10m, 1h)", string(d))
	}
	return v, nil
}

// ByteSize is an amount of memory: a number of bytes, optionally with a
// unit, "512KiB", "64MiB", "1GiB" (powers of 1024) or "500KB", "64MB",
// "1GB" (powers of 1000); units ignore case. It is kept as written, like
// Duration; empty means the key's default.
type ByteSize string

var byteUnits = map[string]int64{
	"": 1, "b": 1,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
	"kb": 1e3, "mb": 1e6, "gb": 1e9,
}

// Value parses s; empty is zero.
func (s ByteSize) Value() (int64, error) {
	if s == "" {
		return 0, nil
	}
	str := strings.TrimSpace(string(s))
	i := 0
	for i < len(str) && str[i] >= '0' && str[i] <= '9' {
		i++
	}
	unit, ok := byteUnits[strings.ToLower(strings.TrimSpace(str[i:]))]
	n, err := strconv.ParseInt(str[:i], 10, 64)
	if i == 0 || !ok || err != nil || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("invalid size %q (want e.g. 64MiB, 512KiB or a number of bytes)", string(s))
	}
	return n * unit, nil
}

// Cleartext modes accepted by cleartext_auth.
const (
	CleartextNever    = "never"
	CleartextLoopback = "loopback"
	CleartextAlways   = "always"
)

// CleartextAuth is cleartext_auth: either a mode (never, loopback,
// always) or a list of networks (CIDRs or single addresses) from which
// logins without TLS are allowed. The zero value means loopback.
type CleartextAuth struct {
	Mode     string
	Networks []string
}

// UnmarshalYAML accepts a string or a list of strings.
func (c *CleartextAuth) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		c.Mode, c.Networks = n.Value, nil
		return nil
	case yaml.SequenceNode:
		c.Mode, c.Networks = "", []string{}
		return n.Decode(&c.Networks)
	}
	return typeErrorf("line %d: cleartext_auth must be never, loopback, always or a list of networks", n.Line)
}

// parsePrefix parses a CIDR ("10.0.0.0/8") or a single address
// ("192.0.2.7", which means /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid network %q (want a CIDR such as 10.0.0.0/8)", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid network %q (want a CIDR such as 10.0.0.0/8)", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParsePrefixes parses every entry of list, or returns the first error.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
