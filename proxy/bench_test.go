package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/internal/memback"
	. "github.com/popbridge/popbridge/proxy"
)

// line is 78 octets plus LF, as stored on disk; on the wire it is 80.
var benchLine = strings.Repeat("abcdefghij", 7) + "klmnopqr\n"

// lineReader yields left octets of CRLF-size content made of benchLine.
type lineReader struct {
	left int64
	off  int
}

func (r *lineReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && r.left > 0 {
		// Each stored LF becomes CRLF on the wire: count it twice.
		c := p[n:]
		seg := benchLine[r.off:]
		k := copy(c, seg)
		cost := int64(k)
		if strings.HasSuffix(seg[:k], "\n") {
			cost++
		}
		if cost > r.left {
			break
		}
		r.left -= cost
		r.off = (r.off + k) % len(benchLine)
		n += k
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

const benchSize = 20 << 20

// BenchmarkRETR20MB retrieves a 20 MB message through the server over
// loopback and reads it with a plain buffered client.
func BenchmarkRETR20MB(b *testing.B) {
	size := int64(benchSize / 80 * 80) // whole lines
	// One message generated on the fly, so the benchmark measures the
	// server, not storage.
	gen := memback.New()
	gen.Put("u", memback.Message{UID: "big", Size: size, Gen: func() io.Reader { return &lineReader{left: size} }})
	srv := &Server{Backend: memback.AuthForTest(gen, map[string]string{"u": "p"}), AuthFailureDelay: -1}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	fmt.Fprintf(c, "USER u\r\nPASS p\r\n")
	for i := 0; i < 3; i++ {
		br.ReadString('\n')
	}
	b.SetBytes(size)
	b.ReportAllocs()
	var peak uint64
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fmt.Fprintf(c, "RETR 1\r\n")
		var got int64
		first := true
		for {
			l, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if first {
				first = false
				continue
			}
			if len(l) == 3 && l[0] == '.' {
				break
			}
			got += int64(len(l))
			if got%(4<<20) < 80 {
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak {
					peak = ms.HeapInuse
				}
			}
		}
		if got != size {
			b.Fatalf("got %d octets, want %d", got, size)
		}
	}
	b.StopTimer()
	if peak > base {
		b.ReportMetric(float64(peak-base), "heap-growth-B")
	} else {
		b.ReportMetric(0, "heap-growth-B")
	}
}
