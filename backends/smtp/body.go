package smtp

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
)

// lineWriter writes a message with CRLF line ends: a bare LF becomes
// CRLF, as go-smtp's client (net/textproto's dot writer) does, and a
// message not ending in a line break gets one. With stuff, a line that
// starts with "." gets another (DATA, RFC 5321 4.5.2); BDAT carries the
// message as it is. It writes runs of bytes, not byte by byte.
type lineWriter struct {
	w     io.Writer
	stuff bool
	bol   bool // at the beginning of a line
	cr    bool // the last byte was CR
	n     int64
}

func newLineWriter(w io.Writer, stuff bool) *lineWriter {
	return &lineWriter{w: w, stuff: stuff, bol: true}
}

var (
	crlf = []byte("\r\n")
	dot  = []byte(".")
)

func (l *lineWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	run := 0 // start of what is not written yet
	put := func(end int, extra []byte) error {
		if end > run {
			if _, err := l.w.Write(p[run:end]); err != nil {
				return err
			}
		}
		run = end
		if extra != nil {
			_, err := l.w.Write(extra)
			return err
		}
		return nil
	}
	for i := 0; i < len(p); {
		if l.bol && l.stuff && p[i] == '.' {
			if err := put(i, dot); err != nil {
				return 0, err
			}
		}
		l.bol = false
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			l.cr = p[len(p)-1] == '\r'
			break
		}
		j += i
		if j > i {
			l.cr = p[j-1] == '\r'
		}
		if !l.cr { // a bare LF: CRLF instead
			if err := put(j, crlf); err != nil {
				return 0, err
			}
			run = j + 1
		}
		l.bol, l.cr = true, false
		i = j + 1
	}
	if err := put(len(p), nil); err != nil {
		return 0, err
	}
	l.n += int64(len(p))
	return len(p), nil
}

// finish ends the last line if it is open (an empty message becomes
// one empty line, as with go-smtp).
func (l *lineWriter) finish() error {
	var err error
	switch {
	case l.cr:
		_, err = l.w.Write(crlf[1:])
	case !l.bol || l.n == 0:
		_, err = l.w.Write(crlf)
	}
	l.bol, l.cr = true, false
	return err
}

// chunkSize is the largest BDAT chunk: a message up to this size goes
// as one "BDAT n LAST"; a larger one in chunks of this size, sent
// without waiting for their replies when the upstream pipelines.
const chunkSize = 64 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

// chunker is the message writer of BDAT: it sends full chunks as they
// fill; close sends the last one and reads the replies.
type chunker struct {
	c       *client
	buf     *[]byte
	pending int // chunks sent whose replies are not read
	sent    int64
}

func newChunker(c *client) *chunker {
	return &chunker{c: c, buf: chunkPool.Get().(*[]byte)}
}

func (k *chunker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		b := *k.buf
		m := min(len(p), chunkSize-len(b))
		b = append(b, p[:m]...)
		*k.buf = b
		p = p[m:]
		if len(b) == chunkSize {
			if err := k.chunk(false); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// chunk sends what is buffered as one BDAT chunk (the last one is sent
// by the next readReply). Without PIPELINING it waits for the reply;
// with it, only once more than 8 replies are outstanding (they are some
// 30 octets: the upstream never blocks writing them).
func (k *chunker) chunk(last bool) error {
	b := *k.buf
	line := "BDAT " + strconv.Itoa(len(b))
	if last {
		line += " LAST"
	}
	k.c.send(line)
	k.c.raw.SetWriteDeadline(time.Now().Add(k.c.timeout))
	if _, err := k.c.w.Write(b); err != nil {
		return err
	}
	k.sent += int64(len(b))
	*k.buf = b[:0]
	if last {
		return nil
	}
	if err := k.c.flush(); err != nil {
		return err
	}
	k.pending++
	if k.pending > 8 || !k.c.has("PIPELINING") {
		return k.readChunkReply()
	}
	return nil
}

func (k *chunker) readChunkReply() error {
	k.pending--
	_, _, err := k.c.reply(2, k.c.timeout)
	return err
}

// close sends the last chunk, reads the replies to the earlier ones and
// returns the final reply's text.
func (k *chunker) close() (string, error) {
	defer k.release()
	if err := k.chunk(true); err != nil {
		return "", err
	}
	k.c.traceOut("<message " + strconv.FormatInt(k.sent, 10) + " octets>")
	for k.pending > 0 {
		if err := k.readChunkReply(); err != nil {
			return "", fmt.Errorf("a chunk of the message: %w", err)
		}
	}
	_, msg, err := k.c.reply(250, finalReplyTimeout)
	return msg, err
}

func (k *chunker) release() {
	if k.buf != nil {
		*k.buf = (*k.buf)[:0]
		chunkPool.Put(k.buf)
		k.buf = nil
	}
}
