package smtp

import (
	"bufio"
	"net"
)

// coalescer is the upstream connection under TLS and go-smtp: it holds
// what is written until the next Read, which is when go-smtp waits for
// a reply, or until 64 KiB are waiting. A command goes out in one write
// as before, but a message's TLS records and its final dot, which
// go-smtp writes 4 KiB at a time, go out together: one system call for
// an ordinary message instead of one per 4 KiB. Whatever was written
// and not flushed is dropped by Close, so an aborted message is never
// committed by a late flush.
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
	}
	return c.Conn.Read(p)
}
