// Package proxyproto reads the PROXY protocol header (v1 and v2, as
// specified by haproxy) that a load balancer puts before the client's
// bytes, so that servers behind it see the client's address.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// v1Max is the longest v1 header, CRLF included.
const v1Max = 107

// sigV2 starts every v2 header.
var sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

// ReadHeader reads one PROXY protocol header from r, byte-exact: it
// never reads past the header. It returns the client address the header
// carries, or nil when the header says to keep the connection's own
// address (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC or UNIX families).
func ReadHeader(r io.Reader) (*net.TCPAddr, error) {
	var start [5]byte
	if _, err := io.ReadFull(r, start[:]); err != nil {
		return nil, fmt.Errorf("reading PROXY header: %w", err)
	}
	switch {
	case string(start[:]) == "PROXY":
		return readV1(r)
	case bytes.Equal(start[:], sigV2[:5]):
		return readV2(r)
	}
	return nil, errors.New("no PROXY protocol header (the peer must send one: it is listed in listen.proxy_protocol)")
}

func readV1(r io.Reader) (*net.TCPAddr, error) {
	line := make([]byte, 0, v1Max)
	line = append(line, "PROXY"...)
	var b [1]byte
	for {
		if len(line) >= v1Max {
			return nil, errors.New("PROXY v1 header longer than 107 bytes")
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("reading PROXY v1 header: %w", err)
		}
		line = append(line, b[0])
		if b[0] == '\n' {
			break
		}
	}
	if !bytes.HasSuffix(line, []byte("\r\n")) {
		return nil, errors.New("PROXY v1 header does not end in CRLF")
	}
	f := strings.Split(string(line[:len(line)-2]), " ")
	if len(f) >= 2 && f[0] == "PROXY" && f[1] == "UNKNOWN" {
		return nil, nil
	}
	if len(f) != 6 || f[0] != "PROXY" || (f[1] != "TCP4" && f[1] != "TCP6") {
		return nil, fmt.Errorf("malformed PROXY v1 header %q", line)
	}
	src, err1 := netip.ParseAddr(f[2])
	dst, err2 := netip.ParseAddr(f[3])
	if err1 != nil || err2 != nil || src.Zone() != "" || dst.Zone() != "" {
		return nil, fmt.Errorf("malformed address in PROXY v1 header %q", line)
	}
	if want4 := f[1] == "TCP4"; src.Is4() != want4 || dst.Is4() != want4 {
		return nil, fmt.Errorf("address family mismatch in PROXY v1 header %q", line)
	}
	sport, err1 := parsePort(f[4])
	_, err2 = parsePort(f[5])
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("malformed port in PROXY v1 header %q", line)
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, sport)), nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, errors.New("bad port")
	}
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err
}

func readV2(r io.Reader) (*net.TCPAddr, error) {
	var h [16]byte
	copy(h[:], sigV2[:5])
	if _, err := io.ReadFull(r, h[5:]); err != nil {
		return nil, fmt.Errorf("reading PROXY v2 header: %w", err)
	}
	if !bytes.Equal(h[:12], sigV2) {
		return nil, errors.New("malformed PROXY v2 signature")
	}
	if h[12]>>4 != 2 {
		return nil, fmt.Errorf("unsupported PROXY protocol version %d", h[12]>>4)
	}
	cmd := h[12] & 0xf
	if cmd > 1 {
		return nil, fmt.Errorf("unknown PROXY v2 command %d", cmd)
	}
	body := make([]byte, binary.BigEndian.Uint16(h[14:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("reading PROXY v2 addresses: %w", err)
	}
	if cmd == 0 { // LOCAL: the balancer's own connection (health check)
		return nil, nil
	}
	var n int
	switch h[13] >> 4 {
	case 0, 3: // UNSPEC, UNIX: keep the real address
		return nil, nil
	case 1:
		n = 4
	case 2:
		n = 16
	default:
		return nil, fmt.Errorf("unknown PROXY v2 address family %d", h[13]>>4)
	}
	if len(body) < 2*n+4 {
		return nil, fmt.Errorf("PROXY v2 address block too short (%d bytes)", len(body))
	}
	src, _ := netip.AddrFromSlice(body[:n])
	sport := binary.BigEndian.Uint16(body[2*n:])
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, sport)), nil
}
