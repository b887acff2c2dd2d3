package pop3wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func reader(s string, size int) *bufio.Reader {
	// OneByteReader: every line arrives in pieces, as from a slow server.
	return bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(s)), size)
}

func TestReadLine(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, tc := range []struct {
		in   string
		max  int
		want []string // lines; then the error
		err  error
	}{
		{in: "+OK a\r\n-ERR b\nc\r\r\n", want: []string{"+OK a", "-ERR b", "c\r"}, err: io.EOF},
		{in: long + "\r\n" + long + "\r\n", max: 102, want: []string{long, long}, err: io.EOF},
		{in: long + "\r\n", max: 101, err: ErrLineTooLong},
		{in: "+OK\r\npartial", want: []string{"+OK"}, err: io.EOF},
		{in: "", err: io.EOF},
	} {
		// A buffer smaller than the lines too: they are gathered.
		for _, size := range []int{16, 4096} {
			r := NewReader(reader(tc.in, size), tc.max)
			var got []string
			var err error
			for {
				var l []byte
				if l, err = r.ReadLine(); err != nil {
					break
				}
				got = append(got, string(l))
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") || !errors.Is(err, tc.err) {
				t.Errorf("%q (max %d, buffer %d): %q, %v; want %q, %v", clip(tc.in), tc.max, size, got, err, tc.want, tc.err)
			}
		}
	}
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

func TestReadLineEnd(t *testing.T) {
	r := NewReader(reader("a\r\nb\nc", 16), 0)
	for _, want := range []string{"a\r\n", "b\n"} {
		if l, err := r.ReadLineEnd(); err != nil || string(l) != want {
			t.Fatalf("%q, %v; want %q", l, err, want)
		}
	}
	if _, err := r.ReadLineEnd(); err != io.EOF {
		t.Fatalf("line without its end: %v", err)
	}
}

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Status
		err  error
	}{
		{"+OK", Status{OK: true}, nil},
		{"+OK 2 320", Status{OK: true, Text: "2 320"}, nil},
		{"+OK  two spaces", Status{OK: true, Text: " two spaces"}, nil},
		{"-ERR", Status{}, nil},
		{"-ERR no such message", Status{Text: "no such message"}, nil},
		{"-ERR [IN-USE] Mailbox is locked.", Status{Code: "IN-USE", Text: "Mailbox is locked."}, nil},
		{"-ERR [sys/temp]  later ", Status{Code: "SYS/TEMP", Text: "later"}, nil},
		{"-ERR [unclosed", Status{Text: "[unclosed"}, nil},
		{"-ERR [] x", Status{Text: "x"}, nil}, // an empty code
		{"+OKAY", Status{}, ErrNotStatus},
		{"-ERRor", Status{}, ErrNotStatus},
		{"+ challenge", Status{}, ErrNotStatus},
		{"", Status{}, ErrNotStatus},
	} {
		got, err := ParseStatus([]byte(tc.line))
		if got != tc.want || err != tc.err {
			t.Errorf("%q: %+v, %v; want %+v, %v", tc.line, got, err, tc.want, tc.err)
		}
	}
	// Lenient -ERR for servers that omit the space.
	if got := ParseERR([]byte("-ERR[AUTH]bad")); got != (Status{Code: "AUTH", Text: "bad"}) {
		t.Errorf("ParseERR: %+v", got)
	}
	r := NewReader(reader("-ERR [AUTH] no\r\n* junk\r\n", 64), 0)
	if st, l, err := r.ReadStatus(); err != nil || st.OK || st.Code != "AUTH" || string(l) != "-ERR [AUTH] no" {
		t.Errorf("ReadStatus: %+v %q %v", st, l, err)
	}
	if _, l, err := r.ReadStatus(); err != ErrNotStatus || string(l) != "* junk" {
		t.Errorf("ReadStatus of junk: %q %v", l, err)
	}
}

func TestReadLines(t *testing.T) {
	r := NewReader(reader("1 a\r\n..x\r\n.\r\n\r\n.\r\n+OK next\r\n", 16), 0)
	var got []string
	if err := r.ReadLines(func(l []byte) error { got = append(got, string(l)); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != "1 a|.x" {
		t.Fatalf("lines %q", got)
	}
	// The next reply starts where the terminating line ended: an empty
	// line, then ".".
	got = nil
	r.ReadLines(func(l []byte) error { got = append(got, string(l)); return nil })
	if len(got) != 1 || got[0] != "" {
		t.Fatalf("second reply %q", got)
	}
	if l, _ := r.ReadLine(); string(l) != "+OK next" {
		t.Fatalf("after: %q", l)
	}
	stop := errors.New("stop")
	r = NewReader(reader("a\r\nb\r\n.\r\n", 16), 0)
	if err := r.ReadLines(func([]byte) error { return stop }); err != stop {
		t.Fatalf("fn's error: %v", err)
	}
	r = NewReader(reader("a\r\nb", 16), 0)
	if err := r.ReadLines(func([]byte) error { return nil }); err != io.EOF {
		t.Fatalf("cut: %v", err)
	}
}

func TestUnstuff(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		last    bool
	}{
		{"abc\r\n", "abc\r\n", false},
		{"..\r\n", ".\r\n", false},
		{".x", "x", false},
		{".\r\n", "", true},
		{".\n", "", true},
		{".", "", true},
		{"", "", false},
	} {
		out, last := Unstuff([]byte(tc.in))
		if string(out) != tc.out || last != tc.last {
			t.Errorf("%q: %q %v", tc.in, out, last)
		}
	}
}

// unstuffRef is the reference unstuffer: the body up to the first
// terminating line, lines split after LF, a leading dot removed; ok is
// false when there is no terminating line.
func unstuffRef(wire string) (body string, rest string, ok bool) {
	var sb strings.Builder
	for len(wire) > 0 {
		i := strings.IndexByte(wire, '\n')
		if i < 0 {
			return "", "", false
		}
		l := wire[:i+1]
		wire = wire[i+1:]
		if l == ".\r\n" || l == ".\n" {
			return sb.String(), wire, true
		}
		sb.WriteString(strings.TrimPrefix(l, "."))
	}
	return "", "", false
}

// endRecorder is an EndWriter that records its calls.
type endRecorder struct {
	bytes.Buffer
	writes, ends int
}

func (e *endRecorder) Write(b []byte) (int, error) { e.writes++; return e.Buffer.Write(b) }
func (e *endRecorder) WriteEnd(b []byte) error {
	e.ends++
	e.Buffer.Write(b)
	e.Buffer.WriteString(".\r\n")
	return nil
}

// readBody reads a body from wire, with WriteWireTo first when pass, and
// returns the unstuffed octets, the message count, what follows, and the
// error.
func readBody(t *testing.T, wire string, size int, pass bool) (got string, msg int64, rest string, err error) {
	t.Helper()
	br := reader(wire, size)
	d := NewBody(br)
	if pass {
		var w endRecorder
		var eof bool
		msg, eof, err = d.WriteWireTo(&w)
		if err != nil {
			return "", 0, "", err
		}
		out := w.String()
		if eof {
			if !strings.HasSuffix(out, ".\r\n") || w.ends != 1 {
				t.Fatalf("%q: eof without the end written: %q", clip(wire), clip(out))
			}
			out = strings.TrimSuffix(out, ".\r\n")
		}
		// What went out as it is is wire form: CRLF lines only.
		un, _, ok := unstuffRef(out + ".\r\n")
		if !ok || int64(len(un)) != msg || strings.Count(out, "\r") != strings.Count(out, "\n") || strings.Count(out, "\r\n") != strings.Count(out, "\n") {
			t.Fatalf("%q: pass-through wrote %q (msg %d)", clip(wire), clip(out), msg)
		}
		got = un
	}
	b, err := io.ReadAll(d)
	if err != nil {
		return "", 0, "", err
	}
	got += string(b)
	r, _ := io.ReadAll(br)
	return got, msg, string(r), nil
}

func TestBody(t *testing.T) {
	long := strings.Repeat("y", 300)
	for _, wire := range []string{
		".\r\n",
		"a\r\n.\r\n",
		"..\r\n...x\r\n.b\r\n\r\n.\r\n",
		"a\r\nb\nc\r\n..d\r\n.\r\n",
		"a\r\nb\rc\r\nd\r\n.\r\n",
		"a\r\n" + long + "\r\n" + long + long + "\r\n.\r\n",
		"a\r\nb\r\n.\n",
		".x\r\n.\r",
		"a\r\n.\r\n+OK next\r\n",
	} {
		want, wantRest, ok := unstuffRef(wire)
		for _, size := range []int{16, 64, 4096} {
			for _, pass := range []bool{false, true} {
				got, _, rest, err := readBody(t, wire, size, pass)
				if !ok {
					if err != io.ErrUnexpectedEOF {
						t.Errorf("%q (buffer %d, pass %v): err %v, want io.ErrUnexpectedEOF", clip(wire), size, pass, err)
					}
					continue
				}
				if err != nil || got != want || rest != wantRest {
					t.Errorf("%q (buffer %d, pass %v): %q, rest %q, %v; want %q, %q", clip(wire), size, pass, clip(got), rest, err, clip(want), wantRest)
				}
			}
		}
	}
}

// FuzzBody: for any input, Read and WriteWireTo followed by Read give
// what the reference unstuffer gives, the pass-through writes only CRLF
// lines and counts them unstuffed, the reader stops right after the
// terminating line, and the bounded line reader never returns more than
// its bound.
func FuzzBody(f *testing.F) {
	for _, s := range []string{
		"a\r\n.\r\n", "..\r\n.\r\n", ".\n", "a\nb\r\n.\r\nrest", "x\ry\r\n.\r\n", "\r\n\r\n.\r\n",
		"+OK 1 2\r\n-ERR [IN-USE] x\r\n", ".\r", "a\r\n..", "Subject: x\r\n\r\n.dot\r\n.\r\n",
	} {
		f.Add(s, uint8(16))
	}
	f.Fuzz(func(t *testing.T, wire string, size uint8) {
		if len(wire) > 4096 {
			return
		}
		bs := 16 + int(size) // bufio's minimum is 16
		want, wantRest, ok := unstuffRef(wire)
		for _, pass := range []bool{false, true} {
			got, _, rest, err := readBody(t, wire, bs, pass)
			if !ok {
				if err == nil {
					t.Fatalf("no terminating line, yet no error (pass %v)", pass)
				}
				continue
			}
			if err != nil || got != want || rest != wantRest {
				t.Fatalf("pass %v: %q, rest %q, %v; want %q, %q", pass, got, rest, err, want, wantRest)
			}
		}
		r := NewReader(reader(wire, bs), 64)
		for {
			l, err := r.ReadLineEnd()
			if err != nil {
				break
			}
			if len(l) > 64 || l[len(l)-1] != '\n' {
				t.Fatalf("line %q", l)
			}
			if st, err := ParseStatus(TrimLineEnd(l)); err == nil && st.OK != bytes.HasPrefix(l, plusOK) {
				t.Fatalf("status %q: %+v", l, st)
			}
		}
	})
}

// notifyWriter reports its first Write.
type notifyWriter struct {
	bytes.Buffer
	first chan struct{}
}

func (w *notifyWriter) Write(b []byte) (int, error) {
	select {
	case w.first <- struct{}{}:
	default:
	}
	return w.Buffer.Write(b)
}

// TestWriteWireToLargeStreams: the start of a message buffered with its
// status line is held back until the rest comes when the message's size
// is unknown or fits the buffer, so that it goes out in one write; a
// message larger than the buffer (SetSize) streams at once instead of
// waiting for a buffer's worth.
func TestWriteWireToLargeStreams(t *testing.T) {
	start := strings.Repeat("a line\r\n", 100)
	for _, tc := range []struct {
		size   int64
		stream bool
	}{{0, false}, {2000, false}, {1 << 20, true}} {
		pr, pw := io.Pipe()
		br := bufio.NewReaderSize(pr, 64<<10)
		go pw.Write([]byte("+OK\r\n" + start))
		if l, err := NewReader(br, 0).ReadLine(); err != nil || string(l) != "+OK" {
			t.Fatalf("status %q, %v", l, err)
		}
		d := NewBody(br)
		d.SetSize(tc.size)
		w := &notifyWriter{first: make(chan struct{}, 1)}
		done := make(chan error, 1)
		go func() {
			_, eof, err := d.WriteWireTo(w)
			if err == nil && !eof {
				err = errors.New("no end")
			}
			done <- err
		}()
		wait := 200 * time.Millisecond // for a write that should not come
		if tc.stream {
			wait = 5 * time.Second
		}
		streamed := false
		select {
		case <-w.first:
			streamed = true
		case <-time.After(wait):
		}
		pw.Write([]byte("the end\r\n.\r\n"))
		if err := <-done; err != nil {
			t.Fatalf("size %d: %v", tc.size, err)
		}
		if streamed != tc.stream {
			t.Errorf("size %d: the start written before the rest came: %v, want %v", tc.size, streamed, tc.stream)
		}
		if got := w.String(); got != start+"the end\r\n" {
			t.Errorf("size %d: wrote %q", tc.size, clip(got))
		}
	}
}
