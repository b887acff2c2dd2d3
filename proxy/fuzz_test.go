package proxy

import (
	"bytes"
	"testing"
)

// chunk cuts msg into pieces whose lengths come from cuts, cycled; a zero
// length is an empty Write (at most one in a row, so the number of pieces
// stays bounded by the message size). No cuts means one Write.
func chunk(msg, cuts []byte) [][]byte {
	if len(cuts) == 0 {
		return [][]byte{msg}
	}
	var out [][]byte
	zeros := 0
	for i := 0; len(msg) > 0; i++ {
		n := min(int(cuts[i%len(cuts)])%64, len(msg))
		if n == 0 {
			if zeros++; zeros > len(cuts) { // all cuts are zero
				n = len(msg)
			} else if zeros > 1 {
				continue
			}
		} else {
			zeros = 0
		}
		out = append(out, msg[:n])
		msg = msg[n:]
	}
	return out
}

var fuzzSeeds = []string{
	"",
	".",
	"\r",
	"\n",
	".\r",
	"a\r\n.\r\nb",
	"a\n.\nb\n",
	"a\r.\rb",
	"..\n...\r\n.",
	"From: a\nSubject: b\n\nbody\n.dot\n\nend",
	"From: a\r\n\r\n\r\n.\r\n",
	"H: v\r\rb\r\r\n\n\r",
	"no newline at all",
	"\x00\xff\r\x80.\n",
}

func FuzzDotStuff(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add([]byte(s), []byte{byte(i), 1, 0, 3})
		f.Add([]byte(s), []byte(nil))
	}
	f.Fuzz(func(t *testing.T, msg, cuts []byte) {
		norm, added := normalizeCRLF(msg)
		wire, err := stuffChunks(chunk(msg, cuts), -1)
		if err != nil {
			t.Fatal(err)
		}
		content, err := unstuff(wire)
		if err != nil {
			t.Fatalf("%v\nmsg  %q\nwire %q", err, msg, wire)
		}
		if !bytes.Equal(content, norm) {
			t.Fatalf("round trip:\nmsg  %q\ngot  %q\nwant %q", msg, content, norm)
		}
		// The whole message in one Write gives the same bytes.
		if whole, _ := stuffChunks([][]byte{msg}, -1); !bytes.Equal(whole, wire) {
			t.Fatalf("chunking changed the output:\nwhole %q\ncut   %q", whole, wire)
		}

		wantSize := int64(len(norm))
		if added {
			wantSize -= 2
		}
		var c SizeCounter
		for _, p := range chunk(msg, cuts) {
			c.Write(p)
		}
		if c.Size() != wantSize {
			t.Fatalf("SizeCounter = %d, want %d for %q", c.Size(), wantSize, msg)
		}
		if n, _ := CRLFSize(bytes.NewReader(msg)); n != wantSize {
			t.Fatalf("CRLFSize = %d, want %d for %q", n, wantSize, msg)
		}
	})
}

// refTop is the reference TOP: the CRLF lines of norm up to and including
// the first empty line, then k more lines; all lines if there is no empty
// line.
func refTop(norm []byte, k int) []byte {
	if len(norm) == 0 {
		return nil
	}
	lines := bytes.SplitAfter(norm, []byte("\r\n"))
	lines = lines[:len(lines)-1] // SplitAfter leaves an empty last element
	for i, l := range lines {
		if len(l) == 2 { // the blank line ending the header
			end := min(i+1+k, len(lines))
			return bytes.Join(lines[:end], nil)
		}
	}
	return norm
}

func FuzzDotTop(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add([]byte(s), uint16(i%3), []byte{byte(i), 2})
	}
	f.Add([]byte("A: 1\n\nx\ny\n"), uint16(65535), []byte{1})
	f.Fuzz(func(t *testing.T, msg []byte, k uint16, cuts []byte) {
		norm, _ := normalizeCRLF(msg)
		retr, err := stuffChunks([][]byte{msg}, -1)
		if err != nil {
			t.Fatal(err)
		}
		top, err := stuffChunks(chunk(msg, cuts), int(k))
		if err != nil {
			t.Fatal(err)
		}
		content, err := unstuff(top)
		if err != nil {
			t.Fatalf("%v\nmsg %q k=%d\ntop %q", err, msg, k, top)
		}
		if want := refTop(norm, int(k)); !bytes.Equal(content, want) {
			t.Fatalf("TOP %d of %q:\ngot  %q\nwant %q", k, msg, content, want)
		}
		// By lines, TOP is a prefix of RETR.
		if !bytes.HasPrefix(retr, top[:len(top)-3]) {
			t.Fatalf("TOP %d is not a prefix of RETR:\ntop  %q\nretr %q", k, top, retr)
		}
		// Body lines: k, or all of them when the body is shorter.
		if got, all := bodyLines(content), bodyLines(norm); got >= 0 && got != min(int(k), all) {
			t.Fatalf("TOP %d sent %d body lines of %d", k, got, all)
		}
	})
}

// bodyLines counts the CRLF lines after the first empty one, or returns -1
// when there is no empty line.
func bodyLines(norm []byte) int {
	lines := bytes.SplitAfter(norm, []byte("\r\n"))
	for i, l := range lines {
		if len(l) == 2 {
			return len(lines) - 1 - (i + 1)
		}
	}
	return -1
}
