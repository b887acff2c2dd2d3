package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/internal/testpeer"
)

// TestProxyProtocolHAProxy: a real haproxy (Debian package) in front of
// popbridge with send-proxy-v2. Clients connect to haproxy from
// 127.0.0.2 and 127.0.0.3, haproxy to popbridge from 127.0.0.1 (the only
// trusted address): the failed-login log and the per-address limit name
// the clients, and a header sent directly from an untrusted address is
// answered as a bad command.
func TestProxyProtocolHAProxy(t *testing.T) {
	bin := testpeer.LookPath(t, "haproxy", "haproxy")
	path := writeConfig(t, "limits: {max_connections_per_ip: 1, auth_failure_delay: 10ms}\n")
	src := strings.Replace(string(must(os.ReadFile(path))), "  pop3: 127.0.0.1:0\n", "  pop3: 127.0.0.1:0\n  proxy_protocol: [127.0.0.1]\n", 1)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := must(config.Load(path))
	logs := &syncBuffer{}
	log := zerolog.New(logs)
	a, err := Build(cfg, &log, Options{ConfigPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	var open []io.Closer // closed before the shutdown, which waits for them
	defer func() {
		for _, c := range open {
			c.Close()
		}
		cancel()
		<-done
	}()

	// haproxy on a free port, in the foreground, killed at the end.
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front := fl.Addr().String()
	fl.Close()
	dir := t.TempDir()
	hcfg := fmt.Sprintf(`global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend pop3
    bind %s
    default_backend popbridge
backend popbridge
    server p1 %s send-proxy-v2 source 127.0.0.1
`, front, a.Addr("pop3"))
	if err := os.WriteFile(filepath.Join(dir, "haproxy.cfg"), []byte(hcfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var hout bytes.Buffer
	cmd := exec.Command(bin, "-db", "-f", filepath.Join(dir, "haproxy.cfg"))
	cmd.Stdout, cmd.Stderr = &hout, &hout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy output:\n%s", hout.String())
		}
	}()

	// dial connects from the loopback address from to addr and returns
	// the server's first line ("" if the connection failed).
	dial := func(from, addr, header string) (*textproto.Conn, string) {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			return nil, ""
		}
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		c := textproto.NewConn(nc)
		open = append(open, c)
		io.WriteString(nc, header)
		l, _ := c.ReadLine()
		return c, l
	}
	var c *textproto.Conn
	waitFor(t, "haproxy to forward a connection", func() string {
		var g string
		if c, g = dial("127.0.0.2", front, ""); strings.HasPrefix(g, "+OK") {
			return g
		}
		if c != nil {
			c.Close()
		}
		return ""
	})
	c.PrintfLine("USER alice")
	c.ReadLine()
	c.PrintfLine("PASS wrong")
	if l, _ := c.ReadLine(); !strings.HasPrefix(l, "-ERR") {
		t.Fatalf("wrong password: %q", l)
	}
	if ev := eventsWith(logs.String(), "authentication failed"); len(ev) != 1 || ev[0]["client"] != "127.0.0.2" {
		t.Errorf("authentication failed events %v, want client 127.0.0.2", ev)
	}
	if _, g := dial("127.0.0.2", front, ""); !strings.Contains(g, "Too many connections from your address") {
		t.Errorf("second connection of 127.0.0.2: %q", g)
	}
	if _, g := dial("127.0.0.3", front, ""); !strings.HasPrefix(g, "+OK") {
		t.Errorf("connection of 127.0.0.3: %q", g)
	}
	// Not trusted: the header is a bad command, the address stays.
	c, g := dial("127.0.0.4", a.Addr("pop3").String(), "PROXY TCP4 192.0.2.1 127.0.0.1 1 110\r\n")
	if !strings.HasPrefix(g, "+OK") {
		t.Fatalf("direct connection: %q", g)
	}
	if l, _ := c.ReadLine(); !strings.HasPrefix(l, "-ERR") {
		t.Errorf("PROXY from an untrusted address: %q", l)
	}
	if l := logs.String(); strings.Contains(l, `"remote":"192.0.2.1`) || !strings.Contains(l, `"remote":"127.0.0.4:`) {
		t.Errorf("the untrusted header's address was used:\n%s", l)
	}
}
