package imap_test

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	imapb "github.com/popbridge/popbridge/backends/imap"
	"github.com/popbridge/popbridge/internal/modes"
)

// startSlowLink relays TCP to upstream, passing the server's replies on
// 1 KiB every 10 ms: a slow link to a large folder.
func startSlowLink(t *testing.T, upstream string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(u, c); u.Close() }()
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				for {
					n, err := u.Read(buf)
					if n > 0 {
						time.Sleep(10 * time.Millisecond)
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestFirstLoginProgress: a first login that lists the sizes of a large
// folder reports its progress in the log (done/total, time left) and
// through SyncProgress, for /status.
func TestFirstLoginProgress(t *testing.T) {
	const n = 1500
	ms := startMemServer(t, rev2)
	appendMessages(t, ms.client(t), "INBOX", n, 100)
	var logs logRecorder
	b := newBackend(t, imapb.Options{Addr: startSlowLink(t, ms.addr), TLS: modes.TLSNone, Username: memUser, Password: memPassword,
		Store: openStore(t, t.TempDir()), Account: "alice", Logger: logs.logger(), ProgressEvery: 50 * time.Millisecond})
	if p := b.SyncProgress(); p.Running || p.Total != 0 {
		t.Fatalf("progress before any login: %+v", p)
	}
	start := time.Now()
	c := popLogin(t, serve(t, b), "x", "y")
	took := time.Since(start)
	if got := len(uidlList(t, c)); got != n {
		t.Fatalf("%d messages listed, want %d", got, n)
	}
	quit(t, c)
	lines := logs.find(`imap: listing the sizes of folder "INBOX"`)
	if len(lines) == 0 {
		t.Fatalf("no progress line during a %v listing:\n%s", took, logs.text())
	}
	l := lines[len(lines)-1]
	done, _ := l["done"].(float64)
	if l["level"] != "info" || l["account"] != "alice" || done <= 0 || done > n || l["total"] != float64(n) || l["eta_s"] == nil {
		t.Errorf("progress line: %v", l)
	}
	if p := b.SyncProgress(); p.Running || p.Done != n || p.Total != n || p.Err != nil || p.Ended.IsZero() {
		t.Errorf("progress after the login: %+v", p)
	}
	t.Logf("imap: first login on a %d-message folder over a slow link took %v; %d progress lines, the last %v", n, took.Round(time.Millisecond), len(lines), fmt.Sprint(l))
}
