package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
)

// helloConn is the connection under a server-side tls.Conn; the
// GetConfigForClient hook of Server.tlsConfig records the client's hello
// in it.
type helloConn struct {
	net.Conn
	hello *clientHello // nil until the ClientHello arrived
}

// clientHello is what a client offered.
type clientHello struct {
	versions []uint16
	ciphers  []uint16
}

// versionNames names TLS versions as people write them ("TLS 1.0").
func versionNames(vs []uint16) []string {
	names := make([]string, 0, len(vs))
	for _, v := range vs {
		names = append(names, tls.VersionName(v))
	}
	return names
}

// cipherNames names cipher suites ("TLS_RSA_WITH_RC4_128_SHA", or hex).
func cipherNames(cs []uint16) []string {
	names := make([]string, 0, len(cs))
	for _, c := range cs {
		names = append(names, tls.CipherSuiteName(c))
	}
	return names
}

// certAlerts are the alerts a client sends when it rejects the
// server's certificate.
var certAlerts = map[string]bool{
	"bad certificate": true, "unsupported certificate": true, "revoked certificate": true,
	"expired certificate": true, "unknown certificate": true, "unknown certificate authority": true,
	"bad certificate hash value": true, "access denied": true,
}

// handshakeFailure says in plain words why a server-side TLS handshake
// failed, from its error, what the client offered (nil if no hello came)
// and the server's minimum version.
func handshakeFailure(err error, hello *clientHello, minVersion uint16) string {
	msg := err.Error()
	var rhe tls.RecordHeaderError
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "server shutting down"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "no TLS handshake in time"
	case errors.As(err, &rhe):
		return "the client does not speak TLS (plain POP3 on a TLS port?)"
	case strings.Contains(msg, "unsupported SSLv2 handshake"):
		return "the client offers only SSL 2.0"
	case strings.Contains(msg, "client offered only unsupported versions"):
		offered := "older versions"
		if hello != nil && len(hello.versions) > 0 {
			offered = strings.Join(versionNames(hello.versions), ", ")
		}
		hint := ""
		if minVersion > tls.VersionTLS10 {
			hint = "; an old client may need tls.min_version: 1.0"
		}
		return fmt.Sprintf("the client offers only %s, the minimum is %s%s", offered, tls.VersionName(minVersion), hint)
	case strings.Contains(msg, "no cipher suite supported by both"):
		return "no cipher suite in common with the client (an old client may need tls.min_version: 1.0, or an RSA certificate)"
	case strings.Contains(msg, "no key exchanges supported by both"), strings.Contains(msg, "incompatible point formats"):
		return "no key exchange in common with the client"
	case strings.Contains(msg, "doesn't support any of the certificate's signature algorithms"):
		return "the client supports none of the certificate's signature algorithms (an RSA certificate may help)"
	case errors.As(err, &op) && op.Op == "remote error":
		alert := strings.TrimPrefix(op.Err.Error(), "tls: ")
		if certAlerts[alert] {
			return "the client rejects the certificate (" + alert + ")"
		}
		return "the client aborted the handshake (" + alert + ")"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		if hello == nil {
			return "the client closed the connection before starting TLS"
		}
		return "the client closed the connection during the handshake (it may not trust the certificate)"
	}
	return msg
}
