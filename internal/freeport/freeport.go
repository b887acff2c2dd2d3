// Package freeport picks TCP ports on 127.0.0.1 for servers that tests
// must tell a port before they listen (Dovecot, Postfix, PostgreSQL, a
// popbridge process). A port the kernel hands out for a listener on port
// 0 comes from its ephemeral range, where any outgoing connection may
// take it as its local port before the server binds it: a rare failure
// under load. These ports come from below that range
// (/proc/sys/net/ipv4/ip_local_port_range), where only a listener can
// take them; each is checked free and handed out once per process,
// starting at an offset of the process ID so that test processes
// running side by side take different ones.
package freeport

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// lowest is the first port used; below the ephemeral range's start.
const lowest = 15000

var (
	mu   sync.Mutex
	next int // the next port to try; 0 before the first call
	span int // ports between lowest and the ephemeral range
)

// Ports returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago and that no outgoing connection can take meanwhile.
func Ports(n int) ([]int, error) {
	mu.Lock()
	defer mu.Unlock()
	if next == 0 {
		span = ephemeralStart() - lowest
		if span < 1000 { // no room below the ephemeral range
			span = 0
		} else {
			next = lowest + (os.Getpid()*7919)%span
		}
	}
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if span == 0 || tries > span {
			p, err := kernelPort()
			if err != nil {
				return nil, err
			}
			ports = append(ports, p)
			continue
		}
		p := next
		if next++; next >= lowest+span {
			next = lowest
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue // taken
		}
		ln.Close()
		ports = append(ports, p)
	}
	return ports, nil
}

// Port is Ports(1) for a test; it fails the test on error.
func Port(t testing.TB) int {
	t.Helper()
	ps, err := Ports(1)
	if err != nil {
		t.Fatal(err)
	}
	return ps[0]
}

// kernelPort is a port from listening on port 0: the fallback.
func kernelPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("freeport: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralStart is the first port of the kernel's ephemeral range
// (Linux's default when it cannot be read).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
		}
	}
	return 32768
}
