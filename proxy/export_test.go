package proxy

import (
	"net/netip"
	"time"
)

// Internals for the tests of package proxy_test, which use the
// memback backend (it imports proxy, so in-package tests cannot).

// CommandNameForTest is commandName.
var CommandNameForTest = commandName

// PenaltyFailForTest records an authentication failure from addr in s's
// penalty box and returns the delay it gives, as a failed login does.
func PenaltyFailForTest(s *Server, addr netip.Addr, base, max time.Duration) time.Duration {
	return s.penalty.fail(addr, base, max)
}
