package tlsconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/popbridge/popbridge/config"
)

// Check loads the server certificate without creating one: a
// self-signed certificate not created yet is reported as such.
func Check(cfg *config.Config) (detail string, err error) {
	certFile, keyFile := cfg.TLSFiles()
	if cfg.TLS.SelfSigned {
		_, certErr := os.Stat(certFile)
		_, keyErr := os.Stat(keyFile)
		if errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist) {
			return fmt.Sprintf("%s (self-signed certificate created at the first start)", certFile), nil
		}
	}
	cert, err := LoadCert(certFile, keyFile)
	if err != nil {
		return certFile, err
	}
	leaf := cert.Leaf
	names := strings.Join(leaf.DNSNames, " ")
	if names == "" {
		names = leaf.Subject.CommonName
	}
	detail = fmt.Sprintf("%s, certificate for %s, expires %s", certFile, names, leaf.NotAfter.Format(time.DateOnly))
	if cfg.TLS.SelfSigned {
		detail += ", SHA-256 " + Fingerprint(leaf)
	}
	if time.Now().After(leaf.NotAfter) {
		return detail, fmt.Errorf("certificate expired on %s", leaf.NotAfter.Format(time.DateOnly))
	}
	return detail, nil
}
