package config

import (
	"fmt"
	"net/netip"
)

func (c *Config) validateProxyProtocol(p *problems) {
	for i, s := range c.Listen.ProxyProtocol {
		pr, err := parsePrefix(s)
		key := fmt.Sprintf("listen.proxy_protocol[%d]", i)
		switch {
		case err != nil:
			p.add(key, "%v", err)
		case pr.Bits() == 0:
			p.add(key, "%s trusts every address, so any client could claim to be anyone; list only your load balancers' networks", s)
		}
	}
	if c.Listen.ProxyProtocol != nil && len(c.Listen.ProxyProtocol) == 0 {
		p.add("listen.proxy_protocol", "list at least one network, or remove the key to turn it off")
	}
}

// ProxyNetworks returns the parsed listen.proxy_protocol networks (nil
// when off). Call it on a validated Config.
func (l Listen) ProxyNetworks() []netip.Prefix {
	ps, _ := ParsePrefixes(l.ProxyProtocol)
	if len(ps) == 0 {
		return nil
	}
	return ps
}
