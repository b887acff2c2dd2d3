package pop3wire

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

// benchWire is a 40 KB message in wire form, lines of mail length, every
// 23rd stuffed, and its terminating line.
var benchWire = func() string {
	var b strings.Builder
	words := "the quick brown fox jumps over a lazy dog while we wait for the notes "
	for k := 0; b.Len() < 40000; k++ {
		if k%23 == 0 {
			b.WriteString("..")
		}
		b.WriteString(words[:20+(k*37)%50])
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.String()
}()

// repeatReader yields s over and over, in reads of up to 16 KiB that
// end anywhere, as from a socket.
type repeatReader struct {
	s   string
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	p = p[:min(len(p), 16<<10)]
	n := 0
	for n < len(p) {
		k := copy(p[n:], r.s[r.off:])
		r.off = (r.off + k) % len(r.s)
		n += k
	}
	return n, nil
}

type discardEnd struct{}

func (discardEnd) Write(b []byte) (int, error) { return len(b), nil }
func (discardEnd) WriteEnd([]byte) error       { return nil }

// BenchmarkBodyWireTo is the verified pass-through of one message per op
// from a 64 KiB buffer, as the relay reads it.
func BenchmarkBodyWireTo(b *testing.B) {
	br := bufio.NewReaderSize(&repeatReader{s: benchWire}, 64<<10)
	var d Body
	b.SetBytes(int64(len(benchWire)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		d.Reset(br)
		if _, eof, err := d.WriteWireTo(discardEnd{}); !eof || err != nil {
			b.Fatal(eof, err)
		}
	}
}

// BenchmarkBodyRead unstuffs one message per op.
func BenchmarkBodyRead(b *testing.B) {
	br := bufio.NewReaderSize(&repeatReader{s: benchWire}, 64<<10)
	var d Body
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(benchWire)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		d.Reset(br)
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{&d}, buf); err != nil {
			b.Fatal(err)
		}
	}
}
