package pop3

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/popbridge/popbridge/internal/modes"
	"github.com/popbridge/popbridge/proxy"
)

// smallWire returns an ordinary message of about size octets in wire
// form: header lines, text lines of varying length (every 23rd starts
// with a stuffed dot), and above 30 KB base64 lines of an attachment.
func smallWire(seed, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from mx.example.org\r\n\tby mail.example.net; Thu, 3 Dec 2026 09:%02d:00 +0000\r\nFrom: sender%d@example.org\r\nSubject: ordinary message %d\r\n\r\n", seed%60, seed, seed)
	words := strings.Fields("the quick brown fox jumps over a lazy dog while we wait for the meeting notes and the quarterly report")
	text := size
	if size > 30000 {
		text = size * 2 / 3
	}
	for k := seed; b.Len() < text; k++ {
		if k%23 == 0 {
			b.WriteString("..")
		}
		for n, l := 20+(k*37)%58, 0; l < n; {
			w := words[(k+l)%len(words)]
			b.WriteString(w + " ")
			l += len(w) + 1
		}
		b.WriteString("\r\n")
	}
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for k := 0; b.Len() < size; k++ {
		for j := 0; j < 76; j++ {
			b.WriteByte(b64[(k*31+j*7+seed)%64])
		}
		b.WriteString("\r\n")
	}
	return b.String()
}

// BenchmarkRelaySmall measures the relay's own cost per message: a
// client session through proxy.Server and the pop3 backend to an
// in-process upstream with PIPELINING (login, UIDL, LIST, RETR of 40
// messages of 10 to 60 KB, QUIT), one op being one session. The
// upstream and the client do little per message, so the CPU time per
// message (ns/msg) is mostly the relay's; client-writes/msg counts the
// relay's writes to the client.
func BenchmarkRelaySmall(b *testing.B) {
	benchRelay(b, func(i int) int { return (10 + (i*7)%51) * 1000 })
}

// BenchmarkRelayLarge is BenchmarkRelaySmall with 256 KiB messages.
func BenchmarkRelayLarge(b *testing.B) {
	benchRelay(b, func(int) int { return 256 << 10 })
}

// benchRelay runs sessions that retrieve 40 messages of size(i) octets.
func benchRelay(b *testing.B, size func(i int) int) {
	const n = 40
	var msgs []fakeMsg
	total := 0
	for i := 1; i <= n; i++ {
		w := smallWire(i, size(i))
		total += len(w)
		msgs = append(msgs, fakeMsg{uidl: fmt.Sprintf("m%d", i), listSize: int64(len(unstuffWire(w))), wire: w})
	}
	f := newFake(b, &fake{user: "u", secret: "p", msgs: msgs, pipelining: true})
	be, err := New(Options{Addr: f.addr(), TLS: modes.TLSNone, Auth: modes.AuthPassthrough})
	if err != nil {
		b.Fatal(err)
	}
	// The relay's connections to the client, counted.
	srv := &proxy.Server{Backend: unchecked{be}, AuthFailureDelay: -1}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	go srv.Serve(cl)
	defer srv.Close()
	addr := ln.Addr().String()
	session := func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReaderSize(c, 64<<10)
		line := func() string {
			l, err := r.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			return string(l)
		}
		multi := func() int {
			k := 0
			for {
				l, err := r.ReadSlice('\n')
				if err != nil {
					b.Fatal(err)
				}
				if len(l) == 3 && l[0] == '.' {
					return k
				}
				k += len(l)
			}
		}
		line()
		fmt.Fprintf(c, "USER u\r\nPASS p\r\n")
		line()
		if l := line(); !strings.HasPrefix(l, "+OK") {
			b.Fatalf("PASS: %q", l)
		}
		fmt.Fprintf(c, "UIDL\r\n")
		line()
		multi()
		fmt.Fprintf(c, "LIST\r\n")
		line()
		multi()
		got := 0
		for i := 1; i <= n; i++ {
			fmt.Fprintf(c, "RETR %d\r\n", i)
			if l := line(); !strings.HasPrefix(l, "+OK") {
				b.Fatalf("RETR %d: %q", i, l)
			}
			got += multi()
		}
		if got != total {
			b.Fatalf("got %d octets of wire form, want %d", got, total)
		}
		fmt.Fprintf(c, "QUIT\r\n")
		line()
	}
	session() // the relay learns the exact sizes
	b.SetBytes(int64(total))
	b.ReportAllocs()
	cl.writes.Store(0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		session()
	}
	b.StopTimer()
	per := float64(b.N * n)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/per, "ns/msg")
	b.ReportMetric(float64(cl.writes.Load())/per, "client-writes/msg")
}

// countingListener counts the writes to the connections it accepts.
type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, &l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}
