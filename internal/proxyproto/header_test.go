package proxyproto

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/netip"
	"strings"
	"testing"
)

// v2 builds a v2 header: command, family byte, address block.
func v2(cmd, fam byte, body []byte) []byte {
	h := append([]byte{}, sigV2...)
	h = append(h, 0x20|cmd, fam, 0, 0)
	binary.BigEndian.PutUint16(h[14:], uint16(len(body)))
	return append(h, body...)
}

func inet4(src, dst string, sport, dport uint16) []byte {
	var b []byte
	b = append(b, netip.MustParseAddr(src).AsSlice()...)
	b = append(b, netip.MustParseAddr(dst).AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func TestReadHeader(t *testing.T) {
	tlv := []byte{0x01, 0x00, 0x02, 'h', '2'} // ALPN TLV, ignored
	for _, tc := range []struct {
		name string
		in   []byte
		want string // "" = keep the connection's address
	}{
		{"v1 TCP4", []byte("PROXY TCP4 203.0.113.9 192.0.2.1 40000 110\r\n"), "203.0.113.9:40000"},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::9 2001:db8::1 40001 995\r\n"), "[2001:db8::9]:40001"},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), ""},
		{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), ""},
		{"v1 longest", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"), "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
		{"v2 IPv4", v2(1, 0x11, inet4("198.51.100.7", "192.0.2.1", 5000, 110)), "198.51.100.7:5000"},
		{"v2 IPv4 with TLV", v2(1, 0x11, append(inet4("198.51.100.7", "192.0.2.1", 5000, 110), tlv...)), "198.51.100.7:5000"},
		{"v2 IPv6", v2(1, 0x21, append(append(append(netip.MustParseAddr("2001:db8::7").AsSlice(),
			netip.MustParseAddr("2001:db8::1").AsSlice()...), 0x13, 0x88), 0, 110)), "[2001:db8::7]:5000"},
		{"v2 LOCAL", v2(0, 0x00, nil), ""},
		{"v2 LOCAL with addresses", v2(0, 0x11, inet4("198.51.100.7", "192.0.2.1", 5000, 110)), ""},
		{"v2 UNSPEC", v2(1, 0x00, tlv), ""},
		{"v2 UNIX", v2(1, 0x31, make([]byte, 216)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The bytes after the header must be left unread.
			r := bytes.NewReader(append(append([]byte{}, tc.in...), "USER x\r\n"...))
			got, err := ReadHeader(r)
			if err != nil {
				t.Fatal(err)
			}
			if s := ""; got != nil {
				s = got.String()
				if s != tc.want {
					t.Errorf("address %s, want %s", s, tc.want)
				}
			} else if tc.want != "" {
				t.Errorf("address kept, want %s", tc.want)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != "USER x\r\n" {
				t.Errorf("left %q after the header", rest)
			}
		})
	}
}

func TestReadHeaderBad(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"none", "USER bob\r\n", "no PROXY protocol header"},
		{"v1 too long", "PROXY TCP4 " + strings.Repeat("1", 200) + "\r\n", "longer than 107"},
		{"v1 LF only", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF"},
		{"v1 family mismatch", "PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n", "mismatch"},
		{"v1 bad address", "PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", "malformed address"},
		{"v1 bad port", "PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "malformed port"},
		{"v1 leading zero port", "PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", "malformed port"},
		{"v1 missing field", "PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "malformed PROXY v1"},
		{"v1 unknown protocol", "PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", "malformed PROXY v1"},
		{"v1 truncated", "PROXY TCP4 1.2", "EOF"},
		{"v2 bad signature", "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x00", "signature"},
		{"v2 version 3", string(sigV2) + "\x31\x11\x00\x00", "version 3"},
		{"v2 command 2", string(sigV2) + "\x22\x11\x00\x00", "command 2"},
		{"v2 family 4", string(v2(1, 0x41, nil)), "family 4"},
		{"v2 short IPv4 block", string(v2(1, 0x11, make([]byte, 11))), "too short"},
		{"v2 short IPv6 block", string(v2(1, 0x21, make([]byte, 35))), "too short"},
		{"v2 truncated body", string(sigV2) + "\x21\x11\x00\x0c\x01\x02", "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadHeader(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 203.0.113.9 192.0.2.1 40000 110\r\nUSER x\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::9 2001:db8::1 40001 995\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(v2(1, 0x11, inet4("198.51.100.7", "192.0.2.1", 5000, 110)))
	f.Add(v2(0, 0x00, nil))
	f.Add(v2(1, 0x21, make([]byte, 40)))
	f.Add([]byte("USER bob\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		a, err := ReadHeader(r)
		used := len(in) - r.Len()
		if err != nil {
			return
		}
		if in[0] == 'P' && used > v1Max {
			t.Fatalf("v1 header of %d bytes accepted", used)
		}
		if in[0] == '\r' && used != 16+int(binary.BigEndian.Uint16(in[14:])) {
			t.Fatalf("v2 header read %d bytes, its length says otherwise", used)
		}
		if a != nil && (a.IP == nil || a.Port < 0 || a.Port > 65535) {
			t.Fatalf("bad address %v", a)
		}
	})
}
