package imap

import (
	"testing"

	"github.com/emersion/go-imap/v2"
)

func TestUIDL(t *testing.T) {
	if got := UIDL(1, 0x6b09ddc6); got != "000000016b09ddc6" {
		t.Fatalf("UIDL(1, 0x6b09ddc6) = %q", got)
	}
	for _, c := range []struct {
		uid, v uint32
	}{{1, 0}, {0xffffffff, 0xffffffff}, {42, 1700000000}} {
		s := UIDL(imap.UID(c.uid), c.v)
		uid, v, ok := parseUIDL(s)
		if !ok || uint32(uid) != c.uid || v != c.v {
			t.Errorf("parseUIDL(%q) = %d, %d, %v", s, uid, v, ok)
		}
	}
	for _, bad := range []string{"", "000000016B09DDC6", "00000000deadbeef", "000000016b09ddc", "x00000016b09ddc6", "000000016b09ddc6a"} {
		if _, _, ok := parseUIDL(bad); ok {
			t.Errorf("parseUIDL(%q) accepted", bad)
		}
	}
}
