package proxy

import (
	"net/netip"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// penaltyBox counts recent authentication failures per client address, in
// the manner of Dovecot's auth penalty: the delay before answering a failed
// login doubles with each failure, up to a cap. Entries expire, and the box
// holds a bounded number of addresses whatever clients do.
type penaltyBox struct {
	failures *expirable.LRU[netip.Addr, int]
}

func newPenaltyBox() *penaltyBox {
	return &penaltyBox{failures: expirable.NewLRU[netip.Addr, int](16384, nil, 15*time.Minute)}
}

// fail records a failure from addr and returns how long to wait before
// answering it.
func (p *penaltyBox) fail(addr netip.Addr, base, max time.Duration) time.Duration {
	n, _ := p.failures.Get(addr)
	n++
	p.failures.Add(addr, n)
	if base <= 0 {
		return 0
	}
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// forget clears addr after a successful login.
func (p *penaltyBox) forget(addr netip.Addr) { p.failures.Remove(addr) }
