// Package tlsconf makes the TLS configuration of popbridge's listeners: the
// certificate files read again when they change, and a self-signed
// certificate created in the state directory when asked for.
package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/cache"
	"github.com/popbridge/popbridge/config"
)

// selfSignedValidity is how long a generated certificate is valid.
const selfSignedValidity = 10 * 365 * 24 * time.Hour

// CheckInterval is how often, at most, a TLS handshake looks at the
// certificate files for a change. Tests shorten it.
var CheckInterval = time.Second

// Server returns the server's TLS configuration for cfg, or nil
// without a tls section. For self_signed, it first creates the
// certificate in the state directory unless it exists. The certificate
// is read again when its files change; see certReloader.
func Server(cfg *config.Config, log *zerolog.Logger) (*tls.Config, error) {
	if cfg.TLS == nil {
		return nil, nil
	}
	certFile, keyFile := cfg.TLSFiles()
	if cfg.TLS.SelfSigned {
		created, err := ensureSelfSigned(certFile, keyFile, cfg.TLS.Names)
		if err != nil {
			return nil, fmt.Errorf("tls.self_signed: %w", err)
		}
		if created {
			log.Info().Str("cert", certFile).Msg("created a self-signed TLS certificate")
		}
	}
	r, err := newCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	leaf := r.cert.Leaf
	ev := log.Info().Str("cert", certFile).Strs("names", CertNames(leaf)).
		Str("expires", leaf.NotAfter.Format(time.DateOnly)).Str("sha256", Fingerprint(leaf))
	if cfg.TLS.SelfSigned {
		ev.Msg("self-signed TLS certificate; mail clients show this SHA-256 fingerprint")
		if missing := missingNames(leaf, cfg.TLS.Names); len(missing) > 0 {
			log.Warn().Strs("names", missing).Str("dir", filepath.Dir(certFile)).
				Msg("tls.names not in the self-signed certificate; it is never replaced: delete its directory while popbridge is stopped to create a new one")
		}
	} else {
		ev.Msg("TLS certificate")
	}
	tc := &tls.Config{
		GetCertificate: r.GetCertificate,
		MinVersion:     cfg.TLS.MinTLSVersion(),
	}
	if tc.MinVersion < tls.VersionTLS12 {
		tc.CipherSuites = legacyCipherSuites()
		log.Warn().Str("min_version", tls.VersionName(tc.MinVersion)).
			Msg("tls.min_version below 1.2: TLS 1.0/1.1 and older cipher suites (AES-CBC, RSA key exchange without forward secrecy, 3DES) are enabled for old clients; they are weaker: set 1.2 again once no client needs them")
	}
	return tc, nil
}

// legacyCipherSuites returns Go's secure cipher suites for TLS 1.0-1.2
// and the ones old clients (Windows XP to 7, old phones and scanners)
// need: AES-CBC and 3DES with RSA key exchange. crypto/tls leaves the
// RSA key exchange and 3DES out of its defaults (GODEBUG tlsrsakex,
// tls3des) but uses them when listed; its own preference order still
// picks ECDHE and AES-GCM first for any client that offers them.
func legacyCipherSuites() []uint16 {
	var ids []uint16
	for _, s := range tls.CipherSuites() {
		if slices.Contains(s.SupportedVersions, tls.VersionTLS12) {
			ids = append(ids, s.ID)
		}
	}
	return append(ids,
		tls.TLS_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA,
		tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA,
	)
}

// certReloader serves a certificate read from two PEM files, and reads
// them again when their modification time or size changes, looking at
// most once per CheckInterval, during a handshake. A change that does not
// load (a half-written renewal, a key that does not match) keeps the
// previous certificate and is logged once.
type certReloader struct {
	certFile, keyFile string
	log               *zerolog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate // with Leaf set
	stamp   string           // the files' stamp when cert was read
	failed  string           // the stamp whose load failed and was logged
	checked time.Time
}

// newCertReloader reads the certificate; failing is an error.
func newCertReloader(certFile, keyFile string, log *zerolog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	r.stamp = r.filesStamp()
	cert, err := LoadCert(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert, r.checked = cert, time.Now()
	return r, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= CheckInterval || now.Before(r.checked) {
		r.checked = now
		r.reloadIfChanged()
	}
	return r.cert, nil
}

// reloadIfChanged reads the files again if their stamp changed.
func (r *certReloader) reloadIfChanged() {
	stamp := r.filesStamp()
	if stamp == r.stamp || stamp == r.failed {
		return
	}
	cert, err := LoadCert(r.certFile, r.keyFile)
	if err != nil {
		r.failed = stamp
		r.log.Error().Err(err).Str("cert", r.certFile).
			Msg("TLS certificate changed but does not load; still serving the previous one")
		return
	}
	r.cert, r.stamp, r.failed = cert, stamp, ""
	r.log.Info().Str("cert", r.certFile).Strs("names", CertNames(cert.Leaf)).
		Str("expires", cert.Leaf.NotAfter.Format(time.DateOnly)).Str("sha256", Fingerprint(cert.Leaf)).
		Msg("TLS certificate reloaded")
}

// filesStamp describes both files by modification time and size (of
// what a symbolic link points to, as certbot's live/ directory holds);
// a file that cannot be read is described by the error.
func (r *certReloader) filesStamp() string {
	var b strings.Builder
	for _, name := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			fmt.Fprintf(&b, "%v;", err)
			continue
		}
		fmt.Fprintf(&b, "%d %d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return b.String()
}

// LoadCert reads a key pair and parses its leaf.
func LoadCert(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil { // set by LoadX509KeyPair since Go 1.23
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", certFile, err)
		}
	}
	return &cert, nil
}

// Fingerprint is the SHA-256 of the certificate as mail clients show it:
// upper-case hex bytes separated by colons.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	parts := make([]string, 0, len(sum))
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// CertNames lists the certificate's DNS names and IP addresses, or its
// common name if it has neither.
func CertNames(c *x509.Certificate) []string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	return names
}

// missingNames returns the names the certificate is not valid for.
func missingNames(c *x509.Certificate, names []string) []string {
	var missing []string
	for _, n := range names {
		if c.VerifyHostname(n) != nil {
			missing = append(missing, n)
		}
	}
	return missing
}

// ensureSelfSigned creates a self-signed certificate and its key in
// certFile and keyFile unless they exist. Existing files are never
// replaced: if they do not load, or only one exists, that is an error
// for a person to resolve. The directory is created with mode 0700, the
// key written with mode 0600; each file appears whole or not at all.
func ensureSelfSigned(certFile, keyFile string, names []string) (created bool, err error) {
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	switch {
	case certErr == nil && keyErr == nil:
		if _, err := LoadCert(certFile, keyFile); err != nil {
			return false, fmt.Errorf("%w (popbridge does not replace it: fix or delete both files)", err)
		}
		return false, nil
	case certErr == nil || keyErr == nil:
		present, absent := certFile, keyFile
		if certErr != nil {
			present, absent = keyFile, certFile
		}
		return false, fmt.Errorf("%s exists but %s does not (delete %s to create a new certificate)", present, absent, present)
	case !errors.Is(certErr, fs.ErrNotExist):
		return false, certErr
	case !errors.Is(keyErr, fs.ErrNotExist):
		return false, keyErr
	}

	certPEM, keyPEM, err := selfSigned(hostNames(names), time.Now())
	if err != nil {
		return false, err
	}
	for _, dir := range []string{filepath.Dir(certFile), filepath.Dir(keyFile)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, err
		}
	}
	// The key first: a certificate without its key would not load.
	if err := cache.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return false, err
	}
	if err := cache.WriteFile(certFile, certPEM, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

// hostNames returns the names for a self-signed certificate: the host
// name, localhost, 127.0.0.1, ::1 and extra, without duplicates.
func hostNames(extra []string) []string {
	host, _ := os.Hostname()
	var names []string
	for _, n := range append([]string{host, "localhost", "127.0.0.1", "::1"}, extra...) {
		if n = strings.ToLower(n); n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// selfSigned returns a new ECDSA P-256 key and a self-signed server
// certificate for names (DNS names or IP addresses), valid from an hour
// before now for selfSignedValidity, both PEM-encoded.
func selfSigned(names []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"popbridge self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}
