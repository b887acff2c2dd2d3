package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/testcert"
)

// serverHandshake runs one handshake between a server with cfg (through
// Server.tlsConfig, as sessions do) and client, which gets the raw
// connection; it returns the server's error and the hello it saw.
func serverHandshake(t *testing.T, cfg *tls.Config, client func(net.Conn)) (*clientHello, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		client(c)
	}()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	hc := &helloConn{Conn: sc}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = tls.Server(hc, (&Server{TLSConfig: cfg}).tlsConfig()).HandshakeContext(ctx)
	sc.Close()
	<-done
	return hc.hello, err
}

// TestHandshakeFailure feeds handshakeFailure the errors of real failed
// handshakes and a timeout, and checks the reason given.
func TestHandshakeFailure(t *testing.T) {
	cert := testcert.New(t)
	cfg, pool := cert.ServerConfig(), cert.Pool()
	tlsClient := func(cc *tls.Config) func(net.Conn) {
		return func(c net.Conn) { tls.Client(c, cc).Handshake() }
	}
	tests := []struct {
		name     string
		client   func(net.Conn)
		want     string
		versions []uint16 // offered, nil if no hello
	}{
		{"TLS 1.0 only", tlsClient(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}),
			"the client offers only TLS 1.0, the minimum is TLS 1.2; an old client may need tls.min_version: 1.0", []uint16{tls.VersionTLS10}},
		{"TLS 1.0 and 1.1", tlsClient(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}),
			"the client offers only TLS 1.1, TLS 1.0, the minimum is TLS 1.2", []uint16{tls.VersionTLS11, tls.VersionTLS10}},
		{"no shared cipher suite", tlsClient(&tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}}),
			"no cipher suite in common with the client (an old client may need tls.min_version: 1.0, or an RSA certificate)", []uint16{tls.VersionTLS12}},
		{"unknown certificate authority", tlsClient(&tls.Config{RootCAs: x509.NewCertPool(), ServerName: "localhost"}),
			"the client rejects the certificate (", []uint16{tls.VersionTLS13, tls.VersionTLS12}},
		{"wrong host name", tlsClient(&tls.Config{RootCAs: pool, ServerName: "mail.example.org"}),
			"the client rejects the certificate (", []uint16{tls.VersionTLS13, tls.VersionTLS12}},
		{"plain POP3", func(c net.Conn) { c.Write([]byte("USER alice\r\n")); bufio.NewReader(c).ReadByte() },
			"the client does not speak TLS (plain POP3 on a TLS port?)", nil},
		{"closed at once", func(c net.Conn) {},
			"the client closed the connection before starting TLS", nil},
		{"closed after its hello", func(c net.Conn) {
			cc := tls.Client(&closeAfterWrite{Conn: c}, &tls.Config{RootCAs: pool, ServerName: "localhost"})
			cc.Handshake()
		}, "the client closed the connection during the handshake (it may not trust the certificate)", []uint16{tls.VersionTLS13, tls.VersionTLS12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hello, err := serverHandshake(t, cfg, tt.client)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			got := handshakeFailure(err, hello, tls.VersionTLS12)
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("handshakeFailure(%v) = %q, want %q", err, got, tt.want)
			}
			var offered []uint16
			if hello != nil {
				offered = hello.versions
			}
			if !slicesEqual(offered, tt.versions) {
				t.Errorf("client versions %v, want %v", versionNames(offered), versionNames(tt.versions))
			}
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if got := handshakeFailure(ctx.Err(), nil, tls.VersionTLS12); got != "no TLS handshake in time" {
		t.Errorf("deadline: %q", got)
	}
	if got := handshakeFailure(errors.New("tls: something new"), nil, tls.VersionTLS12); got != "tls: something new" {
		t.Errorf("unknown error: %q", got)
	}
	if got := handshakeFailure(errors.New("tls: client offered only unsupported versions: [301]"), &clientHello{versions: []uint16{tls.VersionTLS10}}, tls.VersionTLS10); got != "the client offers only TLS 1.0, the minimum is TLS 1.0" {
		t.Errorf("at min_version 1.0: %q", got)
	}
}

func slicesEqual(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// closeAfterWrite closes the connection after the first write (the
// ClientHello), like a client that gives up on the server.
type closeAfterWrite struct{ net.Conn }

func (c *closeAfterWrite) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.Conn.Close()
	return n, err
}
