package smtp

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestBccFilter(t *testing.T) {
	long := strings.Repeat("y", 70<<10)
	for _, c := range []struct{ in, want string }{
		{"Bcc: a@b\r\nTo: c@d\r\n\r\nBcc: body\r\n", "To: c@d\r\n\r\nBcc: body\r\n"},
		{"To: c@d\nbcc : a@b,\n\tx@y\nRESENT-BCC: z\nSubject: s\n\nb", "To: c@d\nSubject: s\n\nb"},
		{"Bcc: only", ""},
		{"Bccx: kept\r\n\r\n", "Bccx: kept\r\n\r\n"},
		{"To: x\r\nnot a header\r\nBcc: after a non-header line stays\r\n", "To: x\r\nnot a header\r\nBcc: after a non-header line stays\r\n"},
		{"X: " + long + "\r\nBcc: after an over-long line stays\r\n", "X: " + long + "\r\nBcc: after an over-long line stays\r\n"},
		{"", ""},
	} {
		for _, half := range []bool{false, true} {
			var r io.Reader = strings.NewReader(c.in)
			if half {
				r = iotest.HalfReader(r)
			}
			got, err := io.ReadAll(iotest.OneByteReader(newBccFilter(r)))
			if err != nil || string(got) != c.want {
				t.Errorf("%.40q: got %.60q, %v; want %.60q", c.in, got, err, c.want)
			}
		}
	}
}
