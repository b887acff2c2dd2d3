package smtp

import (
	"bufio"
	"net"
)

// coalescer is the upstream connection under TLS and the client: it
// holds what is written until the next Read, which is when the client
// waits for a reply, or until 64 KiB are waiting. A command goes out in
// one write, and a message's TLS records, which the client writes 4 KiB
// at a time, go out together: one system call for an ordinary message
// instead of one per 4 KiB. Whatever was written and not flushed is
// dropped by Close, so an aborted message is never committed by a late
// flush. After each flush it asks for quick ACKs (Linux).
type coalescer struct {
	net.Conn
	w *bufio.Writer
}

func newCoalescer(c net.Conn) *coalescer {
	return &coalescer{Conn: c, w: bufio.NewWriterSize(c, 64<<10)}
}

func (c *coalescer) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *coalescer) Read(p []byte) (int, error) {
	if c.w.Buffered() > 0 {
		if err := c.w.Flush(); err != nil {
			return 0, err
		}
		// The replies to what was just sent are acknowledged at once:
		// a server without TCP_NODELAY (Postfix) otherwise holds its
		// second reply in a row until its first is acknowledged, and a
		// delayed ACK is 40 ms (a new connection to Postfix took 48 ms
		// to log in and send, 5 ms with this).
		quickAck(c.Conn)
	}
	return c.Conn.Read(p)
}
