package smtp

import (
	"bufio"
	"bytes"
	"net/textproto"
	"testing"
)

// dotWriter is what go-smtp's client sends for a message: net/textproto's
// dot writer, the reference for lineWriter.
func dotWriter(msg []byte) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	w := textproto.NewWriter(bw).DotWriter()
	w.Write(msg)
	w.Close()
	return out.Bytes()
}

// lines runs msg through a lineWriter in writes split at the given
// points, and finishes it.
func lines(msg []byte, stuff bool, splits ...int) []byte {
	var out bytes.Buffer
	l := newLineWriter(&out, stuff)
	prev := 0
	for _, s := range splits {
		if s > prev && s < len(msg) {
			l.Write(msg[prev:s])
			prev = s
		}
	}
	l.Write(msg[prev:])
	l.finish()
	return out.Bytes()
}

// FuzzLineWriter: for DATA, lineWriter plus the final dot sends what
// go-smtp's client sent (CRLF line ends, dots stuffed, a last line
// ended), however the message is split into writes; for BDAT the same
// without the stuffing.
func FuzzLineWriter(f *testing.F) {
	for _, s := range []string{"", ".", "a\r\n.b\r\n", "a\n.\n..\nb", ".\r\n", "x\r", "\n\n", "a\r\nb"} {
		f.Add([]byte(s), 1, 3)
	}
	f.Fuzz(func(t *testing.T, msg []byte, s1, s2 int) {
		for i, b := range msg {
			if b == '\r' && (i+1 == len(msg) || msg[i+1] != '\n') {
				return // textproto turns CR CR LF into CR CR CR LF; lineWriter does not
			}
		}
		want := dotWriter(msg)
		got := append(lines(msg, true, s1, s2), ".\r\n"...)
		if !bytes.Equal(got, want) {
			t.Fatalf("DATA %q: got %q, want %q", msg, got, want)
		}
		raw := lines(msg, false, s2, s1)
		if n := crlfLen(msg); n != int64(len(raw)) {
			t.Fatalf("crlfLen %q = %d, sent %d", msg, n, len(raw))
		}
		unstuffed := bytes.ReplaceAll(append([]byte("\r\n"), want[:len(want)-3]...), []byte("\r\n."), []byte("\r\n"))[2:]
		if !bytes.Equal(raw, unstuffed) {
			t.Fatalf("BDAT %q: got %q, want %q", msg, raw, unstuffed)
		}
	})
}

// TestLineWriterRuns: the message is passed on in runs, not byte by
// byte (go-smtp's dot writer makes a call per byte).
func TestLineWriterRuns(t *testing.T) {
	var c callWriter
	l := newLineWriter(&c, true)
	l.Write(bytes.Repeat([]byte("0123456789012345678901234567890123456789\r\n"), 100))
	if c.calls > 100 {
		t.Fatalf("%d writes for 100 lines", c.calls)
	}
}

type callWriter struct{ calls int }

func (c *callWriter) Write(p []byte) (int, error) { c.calls++; return len(p), nil }
