package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// normalizeCRLF is the reference for line ends: CRLF, bare LF and bare CR
// each become CRLF. added reports that a CRLF was appended because the
// non-empty input did not end with a line end.
func normalizeCRLF(in []byte) (out []byte, added bool) {
	out = make([]byte, 0, len(in)+len(in)/8+2)
	for i := 0; i < len(in); i++ {
		switch in[i] {
		case '\r':
			if i+1 < len(in) && in[i+1] == '\n' {
				i++
			}
			out = append(out, '\r', '\n')
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, in[i])
		}
	}
	if n := len(in); n > 0 && in[n-1] != '\r' && in[n-1] != '\n' {
		out = append(out, '\r', '\n')
		added = true
	}
	return out, added
}

// stuffChunks writes chunks through a dotWriter with the given TOP limit
// (negative for RETR), stopping at errTopDone, and returns the wire bytes.
// It also checks the writer's count of message octets sent. The small
// buffer makes the bufio.Writer flush often.
func stuffChunks(chunks [][]byte, limit int) ([]byte, error) {
	var buf bytes.Buffer
	bw := bufio.NewWriterSize(&buf, 16)
	d := newDotWriter(bw, limit)
	stopped := false
	for _, c := range chunks {
		n, err := d.Write(c)
		if errors.Is(err, errTopDone) {
			stopped = true
			if limit < 0 {
				return nil, errors.New("errTopDone without a TOP limit")
			}
			if n > len(c) {
				return nil, fmt.Errorf("Write returned n=%d > len %d", n, len(c))
			}
			if n2, err2 := d.Write([]byte("more\r\n")); n2 != 0 || !errors.Is(err2, errTopDone) {
				return nil, fmt.Errorf("Write after TOP limit = %d, %v; want 0, errTopDone", n2, err2)
			}
			break
		}
		if err != nil {
			return nil, err
		}
		if n != len(c) {
			return nil, fmt.Errorf("Write returned n=%d, want %d", n, len(c))
		}
	}
	if err := d.Close(); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	// Sent octets: what the client gets without stuffing and terminator;
	// for a whole message, its CRLFSize (the LIST size).
	var want int64
	if stopped {
		content, err := unstuff(buf.Bytes())
		if err != nil {
			return nil, err
		}
		want = int64(len(content))
	} else {
		want, _ = CRLFSize(bytes.NewReader(bytes.Join(chunks, nil)))
	}
	if d.n != want {
		return nil, fmt.Errorf("dotWriter.n = %d, want %d", d.n, want)
	}
	return buf.Bytes(), nil
}

// unstuff checks that wire is a well-formed multi-line response body and
// returns its content with the stuffing dots and the terminator removed.
func unstuff(wire []byte) ([]byte, error) {
	if !bytes.HasSuffix(wire, []byte(".\r\n")) {
		return nil, fmt.Errorf("no terminating .CRLF: %q", tail(wire))
	}
	lines := bytes.Split(wire, []byte("\r\n"))
	// wire ends with CRLF: the last element is empty, the one before ".".
	if len(lines) < 2 || len(lines[len(lines)-1]) != 0 || !bytes.Equal(lines[len(lines)-2], []byte(".")) {
		return nil, fmt.Errorf("terminator not on a line of its own: %q", tail(wire))
	}
	var out []byte
	for i, l := range lines[:len(lines)-2] {
		if bytes.IndexByte(l, '\r') >= 0 || bytes.IndexByte(l, '\n') >= 0 {
			return nil, fmt.Errorf("line %d has a bare CR or LF: %q", i+1, l)
		}
		if bytes.Equal(l, []byte(".")) {
			return nil, fmt.Errorf("line %d is a lone \".\" before the end", i+1)
		}
		if len(l) > 0 && l[0] == '.' {
			l = l[1:]
		}
		out = append(out, l...)
		out = append(out, '\r', '\n')
	}
	return out, nil
}

func tail(b []byte) []byte {
	if len(b) > 40 {
		return b[len(b)-40:]
	}
	return b
}

// splits returns the ways to write in that the tests try: whole, every
// 2-piece split, one byte at a time, and with empty writes mixed in.
func splits(in []byte) [][][]byte {
	out := [][][]byte{{in}}
	for i := 0; i <= len(in); i++ {
		out = append(out, [][]byte{in[:i], in[i:]})
	}
	var ones, withEmpty [][]byte
	for i := range in {
		ones = append(ones, in[i:i+1])
		withEmpty = append(withEmpty, nil, in[i:i+1])
	}
	out = append(out, ones, append(withEmpty, nil))
	if len(in) <= 24 { // every 3-piece split of short inputs
		for i := 0; i <= len(in); i++ {
			for j := i; j <= len(in); j++ {
				out = append(out, [][]byte{in[:i], in[i:j], in[j:]})
			}
		}
	}
	return out
}

// wireSize is what CRLFSize must report for a RETR wire form: the wire
// octets minus the stuffing dots, the terminator and an added CRLF.
func wireSize(wire []byte, added bool) int64 {
	n := int64(len(wire)) - 3
	for _, l := range bytes.Split(wire[:len(wire)-3], []byte("\r\n")) {
		if len(l) > 0 && l[0] == '.' {
			n--
		}
	}
	if added {
		n -= 2
	}
	return n
}

var retrTests = []struct {
	name, in, want string
}{
	{"empty", "", ".\r\n"},
	{"lf", "a\nb\n", "a\r\nb\r\n.\r\n"},
	{"crlf", "a\r\nb\r\n", "a\r\nb\r\n.\r\n"},
	{"bare cr", "a\rb\r", "a\r\nb\r\n.\r\n"},
	{"mixed", "a\nb\r\nc\rd\n", "a\r\nb\r\nc\r\nd\r\n.\r\n"},
	{"lf then cr is two line ends", "a\n\rb\n", "a\r\n\r\nb\r\n.\r\n"},
	{"cr cr lf", "a\r\r\nb\n", "a\r\n\r\nb\r\n.\r\n"},
	{"bare cr amid crlf", "a\r\nb\rc\r\nd\r\n", "a\r\nb\r\nc\r\nd\r\n.\r\n"},
	{"bare lf amid crlf", "a\r\nb\nc\r\n\nd\r\n", "a\r\nb\r\nc\r\n\r\nd\r\n.\r\n"},
	{"dot lines amid crlf", "a\r\n.b\r\nc\r\n.\r\n", "a\r\n..b\r\nc\r\n..\r\n.\r\n"},
	{"only lf", "\n", "\r\n.\r\n"},
	{"only cr", "\r", "\r\n.\r\n"},
	{"blank lines", "\n\r\n\r", "\r\n\r\n\r\n.\r\n"},
	{"leading dot", ".a\n", "..a\r\n.\r\n"},
	{"leading dots", "..a\n...\n", "...a\r\n....\r\n.\r\n"},
	{"lone dot", "a\n.\nb\n", "a\r\n..\r\nb\r\n.\r\n"},
	{"lone dot crlf", "a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
	{"lone dot bare cr", "a\r.\rb\r", "a\r\n..\r\nb\r\n.\r\n"},
	{"dot after bare cr", "a\r.b", "a\r\n..b\r\n.\r\n"},
	{"dot not at line start", "a.b\n a.\n", "a.b\r\n a.\r\n.\r\n"},
	{"only dot", ".", "..\r\n.\r\n"},
	{"dot then cr", ".\r", "..\r\n.\r\n"},
	{"dot then crlf", ".\r\n", "..\r\n.\r\n"},
	{"no final newline", "a\nb", "a\r\nb\r\n.\r\n"},
	{"no final newline dot", "a\n.", "a\r\n..\r\n.\r\n"},
	{"single char", "x", "x\r\n.\r\n"},
	{"cr at end", "a\nb\r", "a\r\nb\r\n.\r\n"},
	{"binary", "\x00\xff\t \x7f\n", "\x00\xff\t \x7f\r\n.\r\n"},
	{"long line", strings.Repeat("x", 1500) + "\n", strings.Repeat("x", 1500) + "\r\n.\r\n"},
	{"message", "From: a@b\nSubject: s\n\nbody\n.\n..x\nend", "From: a@b\r\nSubject: s\r\n\r\nbody\r\n..\r\n...x\r\nend\r\n.\r\n"},
}

func TestDotStuffRETR(t *testing.T) {
	for _, tt := range retrTests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			norm, added := normalizeCRLF(in)
			for _, chunks := range splits(in) {
				got, err := stuffChunks(chunks, -1)
				if err != nil {
					t.Fatalf("chunks %q: %v", chunks, err)
				}
				if string(got) != tt.want {
					t.Fatalf("chunks %q:\n got %q\nwant %q", chunks, got, tt.want)
				}
			}
			got, _ := stuffChunks([][]byte{in}, -1)
			content, err := unstuff(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(content, norm) {
				t.Errorf("unstuffed %q, want %q", content, norm)
			}
			size, err := CRLFSize(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if want := wireSize(got, added); size != want {
				t.Errorf("CRLFSize = %d, want %d", size, want)
			}
			if want := int64(len(norm)); added {
				if size != want-2 {
					t.Errorf("CRLFSize = %d, want %d", size, want-2)
				}
			} else if size != want {
				t.Errorf("CRLFSize = %d, want %d", size, want)
			}
		})
	}
}

func TestSizeCounterChunks(t *testing.T) {
	for _, tt := range retrTests {
		in := []byte(tt.in)
		want, _ := CRLFSize(bytes.NewReader(in))
		for _, chunks := range splits(in) {
			var c SizeCounter
			for _, p := range chunks {
				if n, err := c.Write(p); n != len(p) || err != nil {
					t.Fatalf("%s: Write = %d, %v", tt.name, n, err)
				}
			}
			if c.Size() != want {
				t.Fatalf("%s: chunks %q: Size = %d, want %d", tt.name, chunks, c.Size(), want)
			}
		}
		got, err := CRLFSize(iotest.OneByteReader(bytes.NewReader(in)))
		if err != nil || got != want {
			t.Fatalf("%s: CRLFSize one byte at a time = %d, %v; want %d", tt.name, got, err, want)
		}
	}
}

func TestCRLFSizeValues(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
	}{
		{"", 0},
		{"a", 1},
		{"\n", 2},
		{"\r", 2},
		{"\r\n", 2},
		{"\n\r", 4},
		{"\r\r", 4},
		{"\r\r\n", 4},
		{"a\nb", 4},
		{".\n", 3},
	} {
		got, err := CRLFSize(strings.NewReader(tt.in))
		if err != nil || got != tt.want {
			t.Errorf("CRLFSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestCRLFSizeReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("ab\n"), iotest.ErrReader(boom))
	n, err := CRLFSize(r)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if n != 4 {
		t.Errorf("size before the error = %d, want 4", n)
	}
}

const topMsg = "From: a\nSubject: .b\n\nl1\n.l2\n\nl4"

var topTests = []struct {
	name string
	in   string
	k    int
	want string
}{
	{"k=0", topMsg, 0, "From: a\r\nSubject: .b\r\n\r\n.\r\n"},
	{"k=1", topMsg, 1, "From: a\r\nSubject: .b\r\n\r\nl1\r\n.\r\n"},
	{"k=2", topMsg, 2, "From: a\r\nSubject: .b\r\n\r\nl1\r\n..l2\r\n.\r\n"},
	{"k=3 blank body line", topMsg, 3, "From: a\r\nSubject: .b\r\n\r\nl1\r\n..l2\r\n\r\n.\r\n"},
	{"k=4 whole", topMsg, 4, "From: a\r\nSubject: .b\r\n\r\nl1\r\n..l2\r\n\r\nl4\r\n.\r\n"},
	{"k beyond body", topMsg, 1000, "From: a\r\nSubject: .b\r\n\r\nl1\r\n..l2\r\n\r\nl4\r\n.\r\n"},
	{"crlf k=1", "A: 1\r\n\r\nx\r\ny\r\n", 1, "A: 1\r\n\r\nx\r\n.\r\n"},
	{"crlf one-octet lines", "A\r\nB\r\n\r\nx\r\ny\r\n", 0, "A\r\nB\r\n\r\n.\r\n"},
	{"lf one-octet lines", "A\nB\n\nx\ny\n", 1, "A\r\nB\r\n\r\nx\r\n.\r\n"},
	{"bare cr k=1", "A: 1\r\rx\ry\r", 1, "A: 1\r\n\r\nx\r\n.\r\n"},
	{"cr before limit at end", "A: 1\n\nx\r", 1, "A: 1\r\n\r\nx\r\n.\r\n"},
	{"headers only k=0", "A: 1\nB: 2\n", 0, "A: 1\r\nB: 2\r\n.\r\n"},
	{"headers only k=5", "A: 1\nB: 2\n", 5, "A: 1\r\nB: 2\r\n.\r\n"},
	{"headers only no newline", "A: 1\nB: 2", 0, "A: 1\r\nB: 2\r\n.\r\n"},
	{"empty body k=0", "A: 1\n\n", 0, "A: 1\r\n\r\n.\r\n"},
	{"empty body k=3", "A: 1\n\n", 3, "A: 1\r\n\r\n.\r\n"},
	{"blank body lines k=1", "A: 1\n\n\n\n", 1, "A: 1\r\n\r\n\r\n.\r\n"},
	{"no headers k=0", "\nbody\n", 0, "\r\n.\r\n"},
	{"no headers k=1", "\nbody\nmore\n", 1, "\r\nbody\r\n.\r\n"},
	{"empty message k=0", "", 0, ".\r\n"},
	{"empty message k=9", "", 9, ".\r\n"},
	{"dot lines", ".H: 1\n\n.\n.\n", 1, "..H: 1\r\n\r\n..\r\n.\r\n"},
}

func TestDotStuffTOP(t *testing.T) {
	for _, tt := range topTests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			for _, chunks := range splits(in) {
				got, err := stuffChunks(chunks, tt.k)
				if err != nil {
					t.Fatalf("chunks %q: %v", chunks, err)
				}
				if string(got) != tt.want {
					t.Fatalf("chunks %q:\n got %q\nwant %q", chunks, got, tt.want)
				}
			}
			retr, _ := stuffChunks([][]byte{in}, -1)
			if body := tt.want[:len(tt.want)-3]; !bytes.HasPrefix(retr, []byte(body)) {
				t.Errorf("TOP %q is not a prefix of RETR %q", body, retr)
			}
		})
	}
}

// TestDotStuffTOPCopy checks the stop through io.Copy, as RETR/TOP use it.
func TestDotStuffTOPCopy(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	d := newDotWriter(bw, 1)
	r := iotest.OneByteReader(strings.NewReader(topMsg))
	if _, err := io.Copy(d, r); !errors.Is(err, errTopDone) {
		t.Fatalf("io.Copy err = %v, want errTopDone", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	if want := "From: a\r\nSubject: .b\r\n\r\nl1\r\n.\r\n"; buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}

	// Without a limit the copy runs to the end.
	buf.Reset()
	d = newDotWriter(bw, -1)
	if _, err := io.Copy(d, iotest.HalfReader(strings.NewReader(topMsg))); err != nil {
		t.Fatalf("io.Copy err = %v", err)
	}
	d.Close()
	bw.Flush()
	if want := "From: a\r\nSubject: .b\r\n\r\nl1\r\n..l2\r\n\r\nl4\r\n.\r\n"; buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
}

// TestDotStuffLinear guards against rescanning the rest of a Write for
// every line: 8 MB in one Write takes milliseconds when each octet is
// scanned a bounded number of times, and about a minute when not.
func TestDotStuffLinear(t *testing.T) {
	// Time grows with the input, not its square: eight times the input
	// must cost well under 64 times the time. A ratio, not a time limit,
	// so that a slow or loaded machine does not fail it; the best of
	// three runs of each size takes the noise out. The race detector
	// slows this code tenfold, and the run without it covers the same.
	if raceEnabled || testing.Short() {
		t.Skip("timing ratio: not under -race or -short")
	}
	best := func(msg []byte) time.Duration {
		var min time.Duration
		for i := 0; i < 3; i++ {
			t0 := time.Now()
			d := newDotWriter(bufio.NewWriter(io.Discard), -1)
			if _, err := d.Write(msg); err != nil {
				t.Fatal(err)
			}
			d.Close()
			if el := time.Since(t0); i == 0 || el < min {
				min = el
			}
		}
		return min
	}
	for _, line := range []string{"text\r", "text\n", "text\r\n", ".x\r\n", "a\rb\r\n", "\n\r"} {
		small := best(bytes.Repeat([]byte(line), 1<<20/len(line)))
		large := best(bytes.Repeat([]byte(line), 8<<20/len(line)))
		// Under a few milliseconds the clock and the scheduler are too
		// coarse to compare.
		if small < 5*time.Millisecond {
			small = 5 * time.Millisecond
		}
		if ratio := float64(large) / float64(small); ratio > 24 {
			t.Errorf("%q lines: 8 MiB took %s, 1 MiB %s: %.0f times as long for 8 times the input", line, large, small, ratio)
		}
	}
}

type failWriter struct{ err error }

func (f failWriter) Write(p []byte) (int, error) { return 0, f.err }

func TestDotStuffWriteError(t *testing.T) {
	boom := errors.New("boom")
	d := newDotWriter(bufio.NewWriterSize(failWriter{boom}, 16), -1)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = d.Write([]byte(".line\r\n"))
	}
	if !errors.Is(err, boom) {
		t.Fatalf("Write err = %v, want %v", err, boom)
	}
}

// benchMessage returns about size octets of mail-like text: headers, prose
// with some lines starting with ".", and a base64 attachment, with LF or
// CRLF line ends.
func benchMessage(size int, crlf bool) []byte {
	var b bytes.Buffer
	b.WriteString("Return-Path: <alice@example.org>\nReceived: from mx.example.org by mail.example.net; Mon, 1 Jan 2024 00:00:00 +0000\nFrom: Alice <alice@example.org>\nTo: Bob <bob@example.net>\nSubject: Quarterly report\nMessage-ID: <1234@example.org>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain; charset=utf-8\n\n")
	words := strings.Fields("the quick brown fox jumps over a lazy dog and then some more words follow in this line of text .dot Grüße naïve")
	for i := 0; b.Len() < size/4; i++ {
		line := ""
		for j := 0; len(line) < 20+(i*7)%55; j++ {
			line += words[(i+j)%len(words)] + " "
		}
		if i%50 == 0 {
			line = "." + line
		}
		if i%9 == 0 {
			b.WriteString("\n")
		}
		b.WriteString(line + "\n")
	}
	b.WriteString("--b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n")
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; b.Len() < size; i++ {
		var line [76]byte
		for j := range line {
			line[j] = b64[(i*31+j*7)%64]
		}
		b.Write(line[:])
		b.WriteByte('\n')
	}
	b.WriteString("--b1--\n")
	if crlf {
		return bytes.ReplaceAll(b.Bytes(), []byte("\n"), []byte("\r\n"))
	}
	return b.Bytes()
}

func BenchmarkDotStuff(b *testing.B) {
	lf := benchMessage(1<<20, false)
	for _, bm := range []struct {
		name string
		msg  []byte
	}{
		{"LF", lf},
		{"CRLF", bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))},
		{"CR", bytes.ReplaceAll(lf, []byte("\n"), []byte("\r"))},
	} {
		msg := bm.msg
		b.Run(bm.name, func(b *testing.B) {
			bw := bufio.NewWriterSize(io.Discard, 32<<10)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				d := newDotWriter(bw, -1)
				// Feed it as io.Copy would, in 32 KiB reads.
				for p := msg; len(p) > 0; {
					n := min(len(p), 32<<10)
					if _, err := d.Write(p[:n]); err != nil {
						b.Fatal(err)
					}
					p = p[n:]
				}
				if err := d.Close(); err != nil {
					b.Fatal(err)
				}
				bw.Flush()
			}
		})
	}
}

func BenchmarkCRLFSize(b *testing.B) {
	for _, crlf := range []bool{false, true} {
		name := "LF"
		if crlf {
			name = "CRLF"
		}
		msg := benchMessage(1<<20, crlf)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := CRLFSize(bytes.NewReader(msg)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
