package proxy_test

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/popbridge/popbridge/proxy"

	"github.com/rs/zerolog"
)

// panicWatch is a log writer that remembers whether a session panicked.
type panicWatch struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *panicWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.Contains(p, []byte("session panicked")) {
		w.buf.Write(p)
	}
	return len(p), nil
}

func (w *panicWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// FuzzSession feeds arbitrary client input to a session and checks that
// the server neither panics nor hangs, that every reply line is CRLF
// terminated and short, and that nothing is deleted without a QUIT that
// followed DELE.
func FuzzSession(f *testing.F) {
	for _, seed := range []string{
		"CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nRSET\r\nQUIT\r\n",
		"AUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\nLIST 0\r\nLIST -1\r\nDELE 3\r\nQUIT\r\n",
		"AUTH PLAIN *\r\n\x00\r\nUSER \xff\xfe\r\nPASS \r\n",
		"user alice\npass secret\nretr 2\ntop 2 99999999\n",
		"STLS\r\nCAPA\r\n",
		strings.Repeat("A", 300) + "\r\nQUIT\r\n",
	} {
		f.Add([]byte(seed))
	}
	watch := &panicWatch{}
	log := zerolog.New(watch)
	b := newMemBackend()
	seen := 0 // messages deleted by earlier inputs
	srv := &Server{Backend: b, Logger: &log, AuthFailureDelay: -1, MaxConnectionsPerIP: -1,
		AuthIdleTimeout: 2 * time.Second, IdleTimeout: 2 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	f.Fuzz(func(t *testing.T, input []byte) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(input)
			c.(*net.TCPConn).CloseWrite()
		}()
		out, err := io.ReadAll(c)
		if err != nil && !isReset(err) {
			t.Fatalf("reading replies: %v", err)
		}
		if p := watch.String(); p != "" {
			t.Fatalf("session panicked: %s", p)
		}
		if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) && err == nil {
			t.Fatalf("reply does not end in CRLF: %q", out)
		}
		for _, l := range bytes.Split(out, []byte("\r\n")) {
			if len(l) > 510 {
				t.Fatalf("reply line of %d octets", len(l))
			}
			if bytes.IndexByte(l, '\n') >= 0 || bytes.IndexByte(l, '\r') >= 0 {
				t.Fatalf("bare line end in reply %q", l)
			}
		}
		deleted := len(b.deleted()) - seen
		seen += deleted
		b.Set("alice", aliceMessages()...) // the next input starts afresh
		if deleted > 0 && !bytes.Contains(bytes.ToUpper(input), []byte("QUIT")) {
			t.Fatalf("messages deleted without QUIT for input %q", input)
		}
	})
}
