package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/config"
)

// TestProxyProtocol: behind a load balancer on a listen.proxy_protocol
// network (loopback here), the cleartext policy, the failed-login log
// line and the per-address connection limit use the client address of
// the PROXY header.
func TestProxyProtocol(t *testing.T) {
	path := writeConfig(t, "limits: {max_connections_per_ip: 1, auth_failure_delay: 10ms}\ncleartext_auth: [203.0.113.0/24]\n")
	src := strings.Replace(string(must(os.ReadFile(path))), "  pop3: 127.0.0.1:0\n", "  pop3: 127.0.0.1:0\n  proxy_protocol: [127.0.0.0/8]\n", 1)
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

	// dial connects from loopback and sends header; it returns the
	// server's first line.
	dial := func(header string) (*textproto.Conn, string) {
		nc, err := net.DialTimeout("tcp", a.Addr("pop3").String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		c := textproto.NewConn(nc)
		open = append(open, c)
		if _, err := io.WriteString(nc, header); err != nil {
			t.Fatal(err)
		}
		l, err := c.ReadLine()
		if err != nil {
			return c, "error: " + err.Error()
		}
		return c, l
	}

	c, g := dial("PROXY TCP4 203.0.113.9 127.0.0.1 40000 110\r\n")
	if !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting %q", g)
	}
	c.PrintfLine("USER alice")
	c.ReadLine()
	c.PrintfLine("PASS wrong")
	if l, _ := c.ReadLine(); !strings.HasPrefix(l, "-ERR") {
		t.Fatalf("wrong password: %q", l)
	}
	ev := eventsWith(logs.String(), "authentication failed")
	if len(ev) != 1 || !strings.HasPrefix(fmt.Sprint(ev[0]["client"]), "203.0.113.9") {
		t.Errorf("authentication failed events %v, want client 203.0.113.9\n%s", ev, logs)
	}

	// The first connection is still open: 203.0.113.9 is at its limit
	// of one, another client behind the same balancer is not.
	if _, g := dial("PROXY TCP4 203.0.113.9 127.0.0.1 40001 110\r\n"); !strings.Contains(g, "Too many connections from your address") {
		t.Errorf("second connection of 203.0.113.9: %q", g)
	}
	if _, g := dial("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x0a\x7f\x00\x00\x01\x9c\x42\x00\x6e"); !strings.HasPrefix(g, "+OK") {
		t.Errorf("connection of 203.0.113.10 (v2 header): %q", g)
	}
	ev = eventsWith(logs.String(), "connection refused")
	if len(ev) != 1 || !strings.HasPrefix(fmt.Sprint(ev[0]["remote"]), "203.0.113.9:40001") {
		t.Errorf("connection refused events %v", ev)
	}

	// Cleartext logins are allowed from 203.0.113.0/24 only, not from
	// loopback: the header's address counts.
	c, _ = dial("PROXY TCP6 2001:db8::1 ::1 40000 110\r\n")
	c.PrintfLine("USER alice")
	if l, _ := c.ReadLine(); !strings.Contains(l, "Plaintext authentication disallowed") {
		t.Errorf("USER from 2001:db8::1: %q", l)
	}

	// A peer on the trusted network that sends no header is dropped.
	if _, g := dial("USER alice\r\n"); !strings.HasPrefix(g, "error") {
		t.Errorf("no header from a trusted peer: %q", g)
	}
	waitFor(t, "the bad header warning", func() string {
		if ev := eventsWith(logs.String(), "connection closed: no valid PROXY protocol header"); len(ev) == 1 {
			return "yes"
		}
		return ""
	})
}

// TestProxyProtocolSubmission: the SMTP listener's per-address limit
// counts the client address of the PROXY header.
func TestProxyProtocolSubmission(t *testing.T) {
	path := writeConfig(t, "limits: {max_connections_per_ip: 1}\ntls: {self_signed: true}\n")
	src := strings.Replace(string(must(os.ReadFile(path))), "  pop3: 127.0.0.1:0\n",
		"  pop3: 127.0.0.1:0\n  submission: 127.0.0.1:0\n  proxy_protocol: [127.0.0.1]\n", 1)
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

	greet := func(header string) string {
		nc, err := net.DialTimeout("tcp", a.Addr("submission").String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		c := textproto.NewConn(nc)
		open = append(open, c)
		io.WriteString(nc, header)
		l, err := c.ReadLine()
		if err != nil {
			return "error: " + err.Error()
		}
		return l
	}
	if g := greet("PROXY TCP4 203.0.113.9 127.0.0.1 40000 587\r\n"); !strings.HasPrefix(g, "220") {
		t.Fatalf("greeting %q", g)
	}
	if g := greet("PROXY TCP4 203.0.113.9 127.0.0.1 40001 587\r\n"); !strings.HasPrefix(g, "421") {
		t.Errorf("second connection of 203.0.113.9: %q", g)
	}
	if g := greet("PROXY TCP4 203.0.113.10 127.0.0.1 40000 587\r\n"); !strings.HasPrefix(g, "220") {
		t.Errorf("connection of 203.0.113.10: %q", g)
	}
	ev := eventsWith(logs.String(), "submission: too many connections")
	if len(ev) != 1 || ev[0]["client"] != "203.0.113.9" {
		t.Errorf("refusal events %v", ev)
	}
}

// TestProxyProtocolPOP3S: on the implicit-TLS listener the header comes
// before the TLS handshake, and the session sees the header's address.
func TestProxyProtocolPOP3S(t *testing.T) {
	path := writeConfig(t, "limits: {auth_failure_delay: 10ms}\ntls: {self_signed: true}\n")
	src := strings.Replace(string(must(os.ReadFile(path))), "  pop3: 127.0.0.1:0\n",
		"  pop3s: 127.0.0.1:0\n  proxy_protocol: [127.0.0.1]\n", 1)
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

	nc, err := net.DialTimeout("tcp", a.Addr("pop3s").String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	nc.Write([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc6\x33\x64\x05\x7f\x00\x00\x01\x9c\x42\x03\xe3"))
	c := textproto.NewConn(tls.Client(nc, &tls.Config{InsecureSkipVerify: true}))
	if g, err := c.ReadLine(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting %q, %v", g, err)
	}
	c.PrintfLine("USER alice")
	c.ReadLine()
	c.PrintfLine("PASS wrong")
	if l, _ := c.ReadLine(); !strings.HasPrefix(l, "-ERR") {
		t.Fatalf("wrong password: %q", l)
	}
	c.Close()
	cancel()
	<-done
	if ev := eventsWith(logs.String(), "authentication failed"); len(ev) != 1 || ev[0]["client"] != "198.51.100.5" {
		t.Errorf("authentication failed events %v, want client 198.51.100.5", ev)
	}
}
