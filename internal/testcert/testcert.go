// Package testcert makes self-signed certificates for tests: one helper
// instead of a generator in every test file. The certificates are for the
// DNS name localhost and the IPs 127.0.0.1 and ::1, valid from an hour ago
// for a day, and may sign (so a client can use one as its root). Each call
// makes a fresh key and serial number.
//
// Production code does not use it: the binary's own self-signed
// certificate is made in cmd/popbridge.
package testcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"testing"
	"time"
)

// Cert is a self-signed certificate and its private key.
type Cert struct {
	// CertPEM is the certificate, PEM encoded.
	CertPEM []byte
	// KeyPEM is the private key in PKCS #8, PEM encoded.
	KeyPEM []byte
	// Leaf is the parsed certificate.
	Leaf *x509.Certificate
	// TLS is the certificate and key for a tls.Config.
	TLS tls.Certificate
}

// Options choose the key type. The zero value gives ECDSA P-256.
type Options struct {
	// RSA makes a 2048-bit RSA key, for old clients that know no ECDSA.
	RSA bool
}

// Make returns a fresh certificate, or an error, for callers without a
// testing.TB.
func Make(opts Options) (*Cert, error) {
	var key crypto.Signer
	var err error
	usage := x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign
	if opts.RSA {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
		usage |= x509.KeyUsageKeyEncipherment
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("testcert: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, fmt.Errorf("testcert: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"popbridge tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("testcert: certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testcert: certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("testcert: key: %w", err)
	}
	return &Cert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		Leaf:    leaf,
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
	}, nil
}

// New returns a fresh ECDSA certificate; it fails t on error.
func New(t testing.TB) *Cert {
	t.Helper()
	return newCert(t, Options{})
}

// NewRSA returns a fresh RSA certificate; it fails t on error.
func NewRSA(t testing.TB) *Cert {
	t.Helper()
	return newCert(t, Options{RSA: true})
}

func newCert(t testing.TB, opts Options) *Cert {
	t.Helper()
	c, err := Make(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Pool returns a pool that trusts c.
func (c *Cert) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return pool
}

// ServerConfig returns a server configuration that serves c.
func (c *Cert) ServerConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.TLS}}
}

// ClientConfig returns a client configuration that trusts c, for the
// name localhost.
func (c *Cert) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// WriteFiles writes the certificate to certFile and the key to keyFile,
// both with mode 0600; it fails t on error.
func (c *Cert) WriteFiles(t testing.TB, certFile, keyFile string) {
	t.Helper()
	if err := os.WriteFile(certFile, c.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}
