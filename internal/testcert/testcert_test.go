package testcert_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"

	"github.com/popbridge/popbridge/internal/testcert"
)

// TestHandshake: a client that trusts the certificate completes a TLS
// handshake with a server using it, by name and by IP, and the PEM files
// load as a key pair.
func TestHandshake(t *testing.T) {
	for _, tt := range []struct {
		name string
		cert *testcert.Cert
		rsa  bool
	}{
		{"ecdsa", testcert.New(t), false},
		{"rsa", testcert.NewRSA(t), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cert
			if _, isRSA := c.TLS.PrivateKey.(*rsa.PrivateKey); isRSA != tt.rsa {
				t.Errorf("key %T", c.TLS.PrivateKey)
			}
			if _, isEC := c.TLS.PrivateKey.(*ecdsa.PrivateKey); isEC == tt.rsa {
				t.Errorf("key %T", c.TLS.PrivateKey)
			}
			for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
				if err := c.Leaf.VerifyHostname(name); err != nil {
					t.Errorf("VerifyHostname(%s): %v", name, err)
				}
				srv, cli := net.Pipe()
				conf := c.ClientConfig()
				conf.ServerName = name
				done := make(chan error, 1)
				go func() {
					s := tls.Server(srv, c.ServerConfig())
					done <- s.Handshake()
					srv.Close()
				}()
				cc := tls.Client(cli, conf)
				if err := cc.Handshake(); err != nil {
					t.Errorf("client handshake for %s: %v", name, err)
				}
				cli.Close()
				if err := <-done; err != nil {
					t.Errorf("server handshake for %s: %v", name, err)
				}
			}
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			c.WriteFiles(t, certFile, keyFile)
			if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
				t.Errorf("files do not load: %v", err)
			}
		})
	}
	a, b := testcert.New(t), testcert.New(t)
	if bytes.Equal(a.CertPEM, b.CertPEM) || a.Leaf.SerialNumber.Cmp(b.Leaf.SerialNumber) == 0 {
		t.Error("two calls made the same certificate")
	}
}
