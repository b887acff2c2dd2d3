//go:build !linux

package smtp

import "net"

// quickAck is Linux's TCP_QUICKACK; elsewhere the kernel's delayed ACK
// stays.
func quickAck(net.Conn) {}
