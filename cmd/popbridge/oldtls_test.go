package main

import (
	"bufio"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/pop3wire"
	"github.com/popbridge/popbridge/internal/testcert"
	"github.com/popbridge/popbridge/internal/testpeer"
)

// tls10 is a client that speaks TLS 1.0 only, as old mail clients do.
var tls10 = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}

// popOverTLS connects to a pop3s address, or with STLS to a pop3
// address, with cc, and logs in as alice; it returns the TLS version.
func popOverTLS(addr string, stls bool, cc *tls.Config) (uint16, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if stls {
		r := pop3wire.NewReader(bufio.NewReader(nc), 0)
		r.ReadLine()
		nc.Write([]byte("STLS\r\n"))
		if st, _, err := r.ReadStatus(); err != nil || !st.OK {
			return 0, &net.OpError{Op: "STLS", Err: os.ErrInvalid}
		}
	}
	tc := tls.Client(nc, cc)
	if err := tc.Handshake(); err != nil {
		return 0, err
	}
	r := pop3wire.NewReader(bufio.NewReader(tc), 0)
	if !stls {
		r.ReadLine() // greeting
	}
	for _, cmd := range []string{"USER alice", "PASS s3cret", "QUIT"} {
		tc.Write([]byte(cmd + "\r\n"))
		if st, _, err := r.ReadStatus(); err != nil || !st.OK {
			return 0, &net.OpError{Op: cmd, Err: os.ErrInvalid}
		}
	}
	return tc.ConnectionState().Version, nil
}

// TestTLSMinVersion: by default a TLS 1.0 client is refused, over pop3s
// and STLS, and the log says why at info with the client's address; with
// tls.min_version: 1.0 it logs in, a warning is logged at start, and
// modern clients still get TLS 1.3.
func TestTLSMinVersion(t *testing.T) {
	path := tlsConfigFile(t, "tls: {self_signed: true}\n")
	_, stderr, stop := startRun(t, "serve", "-config", path)
	pop3s, pop3 := listenerAddr(t, stderr, "pop3s"), listenerAddr(t, stderr, "pop3")
	for _, stls := range []bool{false, true} {
		addr := map[bool]string{false: pop3s, true: pop3}[stls]
		if v, err := popOverTLS(addr, stls, tls10); err == nil {
			t.Errorf("stls %v: a TLS 1.0 client logged in with %s at the default min_version", stls, tls.VersionName(v))
		}
	}
	stop()
	failed := eventsWith(stderr.String(), "tls handshake failed")
	if len(failed) != 2 {
		t.Fatalf("%d tls handshake failed events, want 2; log:\n%s", len(failed), stderr)
	}
	for _, e := range failed {
		if e["level"] != "info" || !strings.HasPrefix(e["remote"].(string), "127.0.0.1:") ||
			e["reason"] != "the client offers only TLS 1.0, the minimum is TLS 1.2; an old client may need tls.min_version: 1.0" {
			t.Errorf("event %v", e)
		}
	}
	if w := eventsWith(stderr.String(), "tls.min_version below 1.2"); len(w) != 0 {
		t.Errorf("warning at the default min_version: %v", w)
	}

	path = tlsConfigFile(t, "tls: {self_signed: true, min_version: 1.0}\n")
	_, stderr, _ = startRun(t, "serve", "-config", path)
	pop3s, pop3 = listenerAddr(t, stderr, "pop3s"), listenerAddr(t, stderr, "pop3")
	for _, stls := range []bool{false, true} {
		addr := map[bool]string{false: pop3s, true: pop3}[stls]
		if v, err := popOverTLS(addr, stls, tls10); err != nil || v != tls.VersionTLS10 {
			t.Errorf("stls %v: TLS 1.0 client with min_version 1.0: %s, %v", stls, tls.VersionName(v), err)
		}
		if v, err := popOverTLS(addr, stls, &tls.Config{InsecureSkipVerify: true}); err != nil || v != tls.VersionTLS13 {
			t.Errorf("stls %v: modern client with min_version 1.0: %s, %v", stls, tls.VersionName(v), err)
		}
	}
	w := eventsWith(stderr.String(), "tls.min_version below 1.2")
	if len(w) != 1 || w[0]["level"] != "warn" || w[0]["min_version"] != "TLS 1.0" {
		t.Errorf("start warning: %v", w)
	}
}

// TestTLSLegacyCipherSuites: a client that offers only the RSA key
// exchange with AES-CBC or 3DES (Windows XP, old phones) logs in with
// min_version 1.0 and an RSA certificate, and is refused by default with
// "no cipher suite in common" in the log.
func TestTLSLegacyCipherSuites(t *testing.T) {
	for _, minVersion := range []string{"", "1.0"} {
		path := tlsConfigFile(t, "")
		// An RSA certificate: old clients know no ECDSA.
		dir := filepath.Dir(path)
		testcert.NewRSA(t).WriteFiles(t, filepath.Join(dir, "rsa-cert.pem"), filepath.Join(dir, "rsa-key.pem"))
		section := "tls: {cert_file: rsa-cert.pem, key_file: rsa-key.pem}\n"
		if minVersion != "" {
			section = "tls: {cert_file: rsa-cert.pem, key_file: rsa-key.pem, min_version: " + minVersion + "}\n"
		}
		if err := os.WriteFile(path, append(must(os.ReadFile(path)), section...), 0o600); err != nil {
			t.Fatal(err)
		}
		_, stderr, stop := startRun(t, "serve", "-config", path)
		pop3s := listenerAddr(t, stderr, "pop3s")
		for _, suite := range []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA} {
			cc := tls10.Clone()
			cc.MaxVersion = tls.VersionTLS12
			cc.CipherSuites = []uint16{suite}
			_, err := popOverTLS(pop3s, false, cc)
			if minVersion == "1.0" && err != nil {
				t.Errorf("min_version 1.0: client with %s only: %v", tls.CipherSuiteName(suite), err)
			}
			if minVersion == "" && err == nil {
				t.Errorf("default min_version: client with %s only logged in", tls.CipherSuiteName(suite))
			}
		}
		stop()
		if minVersion == "" {
			failed := eventsWith(stderr.String(), "tls handshake failed")
			if len(failed) != 3 || !strings.HasPrefix(failed[0]["reason"].(string), "no cipher suite in common") || failed[0]["client_ciphers"] == nil {
				t.Errorf("default min_version: events %v", failed)
			}
		}
	}
}

// TestTLSOpenSSLClient runs openssl s_client restricted to TLS 1.0 (with
// its security level lowered so that it accepts TLS 1.0 at all) against
// pop3s and STLS with min_version 1.0, and at the default, where it fails.
func TestTLSOpenSSLClient(t *testing.T) {
	openssl := testpeer.LookPath(t, "openssl", "openssl")
	sClient := func(addr string, stls bool) (string, error) {
		args := []string{"s_client", "-connect", addr, "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0", "-quiet"}
		if stls {
			args = append(args, "-starttls", "pop3")
		}
		cmd := exec.Command(openssl, args...)
		cmd.Stdin = strings.NewReader("USER alice\r\nPASS s3cret\r\nQUIT\r\n")
		cmd.WaitDelay = 10 * time.Second
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, section := range []string{"tls: {self_signed: true, min_version: 1.0}\n", "tls: {self_signed: true}\n"} {
		legacy := strings.Contains(section, "1.0")
		path := tlsConfigFile(t, section)
		_, stderr, stop := startRun(t, "serve", "-config", path)
		for _, stls := range []bool{false, true} {
			addr := listenerAddr(t, stderr, map[bool]string{false: "pop3s", true: "pop3"}[stls])
			out, err := sClient(addr, stls)
			loggedIn := strings.Contains(out, "+OK Logged in.")
			if legacy && (err != nil || !loggedIn) {
				t.Errorf("min_version 1.0, stls %v: openssl -tls1: %v\n%s", stls, err, out)
			}
			if !legacy && (err == nil || loggedIn) {
				t.Errorf("default min_version, stls %v: openssl -tls1 succeeded:\n%s", stls, out)
			}
		}
		stop()
		if !legacy && len(eventsWith(stderr.String(), "tls handshake failed")) != 2 {
			t.Errorf("default min_version: want 2 tls handshake failed events; log:\n%s", stderr)
		}
	}
}
