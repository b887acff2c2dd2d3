package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestProxyProtocol(t *testing.T) {
	with := func(v string) string {
		return strings.Replace(minimal, "  pop3: 127.0.0.1:1110\n", "  pop3: 127.0.0.1:1110\n  proxy_protocol: "+v+"\n", 1)
	}
	tests := []struct {
		name string
		src  string
		nets []netip.Prefix
		want []string
	}{
		{"off", minimal, nil, nil},
		{"networks", with("[10.0.0.0/8, 192.0.2.7, 'fd00::/8']"), []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("fd00::/8"),
		}, nil},
		{"bad networks", with("[10.0.0.0/33, lb.lan]"), nil, []string{
			`listen.proxy_protocol[0]: invalid network "10.0.0.0/33" (want a CIDR such as 10.0.0.0/8)`,
			`listen.proxy_protocol[1]: invalid network "lb.lan" (want a CIDR such as 10.0.0.0/8)`,
		}},
		{"everyone", with("[0.0.0.0/0, '::/0']"), nil, []string{
			"listen.proxy_protocol[0]: 0.0.0.0/0 trusts every address, so any client could claim to be anyone; list only your load balancers' networks",
			"listen.proxy_protocol[1]: ::/0 trusts every address, so any client could claim to be anyone; list only your load balancers' networks",
		}},
		{"empty list", with("[]"), nil, []string{
			"listen.proxy_protocol: list at least one network, or remove the key to turn it off",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseString(t, tc.src)
			got := errLines(err)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if err == nil {
				if n := c.Listen.ProxyNetworks(); !reflect.DeepEqual(n, tc.nets) {
					t.Errorf("networks %v, want %v", n, tc.nets)
				}
			}
		})
	}
}
