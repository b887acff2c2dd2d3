package tlsconf

import (
	"crypto/x509"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestFingerprint(t *testing.T) {
	c := &x509.Certificate{Raw: []byte("abc")}
	// sha256("abc") = ba7816bf...
	want := "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
	if got := Fingerprint(c); got != want {
		t.Errorf("fingerprint = %s, want %s", got, want)
	}
}

func TestHostNames(t *testing.T) {
	host, _ := os.Hostname()
	got := hostNames([]string{"NAS.lan", "localhost", "10.0.0.1"})
	want := []string{"localhost", "127.0.0.1", "::1", "nas.lan", "10.0.0.1"}
	if h := strings.ToLower(host); h != "" && !slices.Contains(want, h) {
		want = append([]string{h}, want...)
	}
	if !slices.Equal(got, want) {
		t.Errorf("hostNames = %q, want %q", got, want)
	}
}
