package smtp

import (
	"net"
	"syscall"
)

// quickAck asks Linux to acknowledge what arrives next at once instead
// of delaying the ACK (TCP_QUICKACK, which the kernel clears again by
// itself).
func quickAck(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}
