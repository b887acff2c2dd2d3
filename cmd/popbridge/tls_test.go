package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/popbridge/popbridge/internal/freeport"
	"github.com/popbridge/popbridge/internal/pop3wire"
	"github.com/popbridge/popbridge/internal/tlsconf"
)

// logEvents parses a JSON log, one event a line.
func logEvents(log string) []map[string]any {
	var events []map[string]any
	for _, line := range strings.Split(log, "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil {
			events = append(events, e)
		}
	}
	return events
}

// eventsWith returns the events whose message starts with msg.
func eventsWith(log, msg string) []map[string]any {
	var found []map[string]any
	for _, e := range logEvents(log) {
		if m, _ := e["message"].(string); strings.HasPrefix(m, msg) {
			found = append(found, e)
		}
	}
	return found
}

// tlsConfigFile writes a configuration that serves alice on pop3 (with
// STLS) and pop3s at two free loopback ports, with the given tls
// section, and returns its path.
func tlsConfigFile(t *testing.T, tlsSection string) string {
	t.Helper()
	path := writeConfig(t, tlsSection)
	// Below the ephemeral range: a port just freed there can be taken
	// by any outgoing connection before popbridge binds it.
	var ports []string
	for _, p := range must(freeport.Ports(2)) {
		ports = append(ports, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	}
	cfg := strings.Replace(string(must(os.ReadFile(path))), "  pop3: 127.0.0.1:0\n",
		"  pop3: "+ports[0]+"\n  pop3s: "+ports[1]+"\n", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// peerCert connects to a pop3s address, or with STLS to a pop3 address,
// and returns the server's certificate.
func peerCert(t *testing.T, addr string, stls bool) *x509.Certificate {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if stls {
		r := pop3wire.NewReader(bufio.NewReader(nc), 0)
		if st, g, err := r.ReadStatus(); err != nil || !st.OK {
			t.Fatalf("greeting %q, %v", g, err)
		}
		nc.Write([]byte("STLS\r\n"))
		if st, s, err := r.ReadStatus(); err != nil || !st.OK {
			t.Fatalf("STLS: %q, %v", s, err)
		}
	}
	tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	if !stls {
		if st, g, err := pop3wire.NewReader(bufio.NewReader(tc), 0).ReadStatus(); err != nil || !st.OK {
			t.Fatalf("greeting over TLS %q, %v", g, err)
		}
	}
	return tc.ConnectionState().PeerCertificates[0]
}

// fileFingerprint returns the fingerprint of the PEM certificate in name.
func fileFingerprint(t *testing.T, name string) string {
	t.Helper()
	block, _ := pem.Decode(must(os.ReadFile(name)))
	if block == nil {
		t.Fatalf("%s holds no PEM block", name)
	}
	return tlsconf.Fingerprint(must(x509.ParseCertificate(block.Bytes)))
}

// touch sets a file's modification time, so that a rewrite within the
// file system's timestamp granularity still counts as a change.
func touch(t *testing.T, name string, mtime time.Time) {
	t.Helper()
	if err := os.Chtimes(name, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// TestSelfSigned starts the server twice with self_signed: the first
// start creates the certificate, the second uses the same one; a broken
// certificate stops the start and stays as it is.
func TestSelfSigned(t *testing.T) {
	path := tlsConfigFile(t, "tls: {self_signed: true, names: [nas.lan, 192.168.1.10]}\n")
	dir := filepath.Join(filepath.Dir(path), "state", "tls")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")

	start := func() (created bool, fp string, leaf *x509.Certificate) {
		t.Helper()
		_, stderr, stop := startRun(t, "serve", "-config", path)
		pop3s := listenerAddr(t, stderr, "pop3s")
		pop3 := listenerAddr(t, stderr, "pop3")
		logs := stderr.String()
		ev := eventsWith(logs, "self-signed TLS certificate")
		if len(ev) != 1 {
			t.Fatalf("%d events announcing the self-signed certificate; log:\n%s", len(ev), logs)
		}
		fp, _ = ev[0]["sha256"].(string)
		leaf = peerCert(t, pop3s, false)
		if got := tlsconf.Fingerprint(leaf); got != fp {
			t.Errorf("pop3s serves %s, log says %s", got, fp)
		}
		if got := tlsconf.Fingerprint(peerCert(t, pop3, true)); got != fp {
			t.Errorf("STLS serves %s, log says %s", got, fp)
		}
		if code := stop(); code != 0 {
			t.Errorf("serve exited %d; log:\n%s", code, stderr)
		}
		return len(eventsWith(logs, "created a self-signed TLS certificate")) == 1, fp, leaf
	}

	created, fp1, leaf := start()
	if !created {
		t.Error("first start: no log of the certificate's creation")
	}
	if len(fp1) != 32*3-1 || strings.ToUpper(fp1) != fp1 || strings.Count(fp1, ":") != 31 {
		t.Errorf("fingerprint %q is not 32 colon-separated upper-case hex bytes", fp1)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("tls directory: %v, mode %v; want 0700", err, fi.Mode().Perm())
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	host, _ := os.Hostname()
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "nas.lan", "192.168.1.10", host} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("certificate not valid for %s: %v", name, err)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "nas.lan", Roots: roots}); err != nil {
		t.Errorf("certificate does not verify against itself for nas.lan: %v", err)
	}
	if leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm %v, want ECDSA", leaf.PublicKeyAlgorithm)
	}
	if d := time.Until(leaf.NotAfter); d < 9*365*24*time.Hour || d > 11*365*24*time.Hour {
		t.Errorf("certificate valid until %v, want about 10 years", leaf.NotAfter)
	}
	certPEM, keyPEM := must(os.ReadFile(certFile)), must(os.ReadFile(keyFile))

	created, fp2, _ := start()
	if created {
		t.Error("second start created a certificate again")
	}
	if fp2 != fp1 {
		t.Errorf("second start: fingerprint %s, want the first start's %s", fp2, fp1)
	}
	if !bytes.Equal(must(os.ReadFile(certFile)), certPEM) || !bytes.Equal(must(os.ReadFile(keyFile)), keyPEM) {
		t.Error("second start rewrote the certificate or key")
	}

	// A broken certificate is an error, and is left alone.
	broken := []byte("-----BEGIN CERTIFICATE-----\nbroken\n")
	if err := os.WriteFile(certFile, broken, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, "", "serve", "-config", path)
	if r.code != 1 || !strings.Contains(r.stderr, "popbridge serve: tls.self_signed: "+certFile) ||
		!strings.Contains(r.stderr, "fix or delete both files") {
		t.Errorf("serve with a broken certificate: exit %d, stderr %q", r.code, r.stderr)
	}
	if !bytes.Equal(must(os.ReadFile(certFile)), broken) {
		t.Error("the broken certificate was replaced")
	}
	r = runCmd(t, "", "check", "-config", path)
	if r.code != 1 || !strings.Contains(r.stdout, "FAIL  tls") {
		t.Errorf("check with a broken certificate: exit %d, stdout %q", r.code, r.stdout)
	}

	// A key without its certificate too.
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, "", "serve", "-config", path)
	if r.code != 1 || !strings.Contains(r.stderr, keyFile+" exists but "+certFile+" does not") {
		t.Errorf("serve with the key only: exit %d, stderr %q", r.code, r.stderr)
	}
	if !bytes.Equal(must(os.ReadFile(keyFile)), keyPEM) {
		t.Error("the key was replaced")
	}
}

// TestCertReload replaces the certificate files of a running server: new
// connections, on pop3s and with STLS, get the new certificate; a broken
// replacement keeps the previous one and is logged once.
func TestCertReload(t *testing.T) {
	old := tlsconf.CheckInterval
	tlsconf.CheckInterval = 0
	t.Cleanup(func() { tlsconf.CheckInterval = old })

	path := tlsConfigFile(t, "tls: {cert_file: cert.pem, key_file: key.pem}\n")
	dir := filepath.Dir(path)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeTestCert(t, dir)
	fpA := fileFingerprint(t, certFile)
	mtime := time.Now().Add(-time.Hour)
	touch(t, certFile, mtime)
	touch(t, keyFile, mtime)

	_, stderr, stop := startRun(t, "serve", "-config", path)
	pop3s, pop3 := listenerAddr(t, stderr, "pop3s"), listenerAddr(t, stderr, "pop3")
	if got := tlsconf.Fingerprint(peerCert(t, pop3s, false)); got != fpA {
		t.Fatalf("pop3s serves %s, want certificate A %s", got, fpA)
	}

	// A connection open across the change keeps working.
	p := dialPOP3(t, pop3)

	writeTestCert(t, dir)
	fpB := fileFingerprint(t, certFile)
	mtime = mtime.Add(time.Minute)
	touch(t, certFile, mtime)
	touch(t, keyFile, mtime)
	if fpB == fpA {
		t.Fatal("writeTestCert wrote the same certificate twice")
	}
	if got := tlsconf.Fingerprint(peerCert(t, pop3s, false)); got != fpB {
		t.Errorf("pop3s after the change serves %s, want certificate B %s", got, fpB)
	}
	if got := tlsconf.Fingerprint(peerCert(t, pop3, true)); got != fpB {
		t.Errorf("STLS after the change serves %s, want certificate B %s", got, fpB)
	}
	if s := p.cmd("CAPA"); !strings.HasPrefix(s, "+OK") {
		t.Errorf("CAPA on the connection opened before the change: %q", s)
	}
	if ev := eventsWith(stderr.String(), "TLS certificate reloaded"); len(ev) != 1 || ev[0]["sha256"] != fpB {
		t.Errorf("reload events %v, want one with sha256 %s", ev, fpB)
	}

	// A key that does not match: B stays, one error for the change.
	keyB := must(os.ReadFile(keyFile))
	other := t.TempDir()
	writeTestCert(t, other)
	if err := os.WriteFile(keyFile, must(os.ReadFile(filepath.Join(other, "key.pem"))), 0o600); err != nil {
		t.Fatal(err)
	}
	mtime = mtime.Add(time.Minute)
	touch(t, keyFile, mtime)
	for range 3 {
		if got := tlsconf.Fingerprint(peerCert(t, pop3s, false)); got != fpB {
			t.Errorf("with a mismatched key, pop3s serves %s, want B %s", got, fpB)
		}
	}
	if ev := eventsWith(stderr.String(), "TLS certificate changed but does not load"); len(ev) != 1 {
		t.Errorf("%d errors logged for one bad change, want 1; log:\n%s", len(ev), stderr)
	}

	// Fixed again: the matching key is back.
	if err := os.WriteFile(keyFile, keyB, 0o600); err != nil {
		t.Fatal(err)
	}
	mtime = mtime.Add(time.Minute)
	touch(t, keyFile, mtime)
	if got := tlsconf.Fingerprint(peerCert(t, pop3, true)); got != fpB {
		t.Errorf("STLS after the fix serves %s, want B %s", got, fpB)
	}
	if ev := eventsWith(stderr.String(), "TLS certificate reloaded"); len(ev) != 2 {
		t.Errorf("%d reload events after the fix, want 2", len(ev))
	}
	if code := stop(); code != 0 {
		t.Errorf("serve exited %d", code)
	}
}
