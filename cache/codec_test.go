package cache

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestMessageCodec(t *testing.T) {
	for _, r := range []MessageRecord{
		{Key: "k", Size: 0, UIDL: ""},
		{Key: "k", Size: 1, UIDL: "a"},
		{Key: "k", Size: 1<<62 - 1, UIDL: strings.Repeat("z", 70)},
		{Key: "k", Size: 300, UIDL: "\x00\xff binary"},
		{Key: "k", Size: 5, UIDL: "", Stamp: "only a stamp"},
		{Key: "k", Size: 4000, UIDL: "u", Stamp: "4096:1700000000123456789"},
		{Key: "k", Size: 7, UIDL: strings.Repeat("y", 200), Stamp: "\x00"},
	} {
		v := encodeMessage(r)
		got, err := decodeMessage([]byte(r.Key), v)
		if err != nil || got != r {
			t.Errorf("round trip of %+v = %+v, %v", r, got, err)
		}
		// A truncated UIDL is caught by its length.
		if len(r.UIDL) > 0 {
			cut := v[:len(v)-len(r.Stamp)-1]
			if _, err := decodeMessage([]byte("k"), cut); !errors.Is(err, errCorrupt) {
				t.Errorf("decodeMessage of %+v without its last UIDL byte: %v, want errCorrupt", r, err)
			}
		}
	}
	if n := len(encodeMessage(MessageRecord{Size: 4000, UIDL: "0123456789"})); n != 13 {
		t.Errorf("4000-octet record with a 10-char UIDL encodes to %d bytes, want 13", n)
	}
	for _, v := range [][]byte{nil, {}, {0x80}, {0x05}, {0x05, 0x80}, {0x05, 0x02, 'a'},
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00}} {
		if _, err := decodeMessage([]byte("k"), v); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeMessage(%x) = %v, want errCorrupt", v, err)
		}
	}
}

// encodeMessageV1 writes the schema 1 layout, for migration tests.
func encodeMessageV1(r MessageRecord) []byte {
	return append(binary.AppendUvarint(nil, uint64(r.Size)), r.UIDL...)
}

func TestMessageCodecV1(t *testing.T) {
	for _, r := range []MessageRecord{
		{Key: "k", Size: 0},
		{Key: "k", Size: 321, UIDL: "uidl-1"},
		{Key: "k", Size: 1<<62 - 1, UIDL: strings.Repeat("z", 70)},
	} {
		got, err := decodeMessageV1([]byte(r.Key), encodeMessageV1(r))
		if err != nil || got != r {
			t.Errorf("v1 round trip of %+v = %+v, %v", r, got, err)
		}
	}
	for _, v := range [][]byte{nil, {0x80}} {
		if _, err := decodeMessageV1([]byte("k"), v); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeMessageV1(%x) = %v, want errCorrupt", v, err)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeMessage(MessageRecord{Size: 48213, UIDL: "1733412345.M1P2.host", Stamp: "4321:17"}))
	f.Add([]byte{0x05, 0x00})
	f.Fuzz(func(t *testing.T, v []byte) {
		r, err := decodeMessage([]byte("k"), v)
		if err != nil {
			return
		}
		r2, err := decodeMessage([]byte("k"), encodeMessage(r))
		if err != nil || r2 != r {
			t.Fatalf("re-encoding of %x decodes to %+v, %v; want %+v", v, r2, err, r)
		}
	})
}

func TestSyncCodec(t *testing.T) {
	for _, s := range []SyncState{
		{},
		{UIDValidity: 1, HighestUID: 2, HistoryID: 3},
		{UIDValidity: 1<<32 - 1, HighestUID: 1<<32 - 1, HistoryID: 1<<64 - 1, POP3UIDLs: []string{"", "a", strings.Repeat("b", 300)}},
	} {
		v := encodeSync(s)
		got, err := decodeSync(v)
		if err != nil || got.UIDValidity != s.UIDValidity || got.HighestUID != s.HighestUID ||
			got.HistoryID != s.HistoryID || !slices.Equal(got.POP3UIDLs, s.POP3UIDLs) {
			t.Errorf("round trip of %+v = %+v, %v", s, got, err)
		}
		// Every strict prefix, and any trailing byte, is refused.
		for i := range len(v) {
			if _, err := decodeSync(v[:i]); !errors.Is(err, errCorrupt) {
				t.Errorf("decodeSync of %d of %d bytes: %v, want errCorrupt", i, len(v), err)
			}
		}
		if _, err := decodeSync(append(v, 0)); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeSync with a trailing byte: %v, want errCorrupt", err)
		}
	}
	// A UIDVALIDITY beyond 32 bits is corrupt, not truncated.
	if _, err := decodeSync([]byte{0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0}); !errors.Is(err, errCorrupt) {
		t.Errorf("33-bit UIDVALIDITY: %v", err)
	}
}

func FuzzDecodeSync(f *testing.F) {
	f.Add(encodeSync(SyncState{UIDValidity: 5, POP3UIDLs: []string{"x", "yy"}}))
	f.Add([]byte{0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, v []byte) {
		s, err := decodeSync(v)
		if err != nil {
			return
		}
		// Padded varints decode too, so compare values, not bytes.
		s2, err := decodeSync(encodeSync(s))
		if err != nil || s2.UIDValidity != s.UIDValidity || s2.HighestUID != s.HighestUID ||
			s2.HistoryID != s.HistoryID || !slices.Equal(s2.POP3UIDLs, s.POP3UIDLs) {
			t.Fatalf("re-encoding of %x decodes to %+v, %v; want %+v", v, s2, err, s)
		}
	})
}

// jsonRecord is what a JSON encoding of a message record would store.
type jsonRecord struct {
	Size int64  `json:"size"`
	UIDL string `json:"uidl"`
}

// BenchmarkCodec compares the binary record encoding with JSON.
func BenchmarkCodec(b *testing.B) {
	r := MessageRecord{Key: "1733412345.M123P4567.host,S=4321", Size: 48213, UIDL: "1733412345.M123P4567.host"}
	bin := encodeMessage(r)
	js, _ := json.Marshal(jsonRecord{r.Size, r.UIDL})
	b.Run("binary/encode", func(b *testing.B) {
		for b.Loop() {
			encodeMessage(r)
		}
		b.ReportMetric(float64(len(bin)), "bytes/record")
	})
	b.Run("binary/decode", func(b *testing.B) {
		k := []byte(r.Key)
		for b.Loop() {
			if _, err := decodeMessage(k, bin); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json/encode", func(b *testing.B) {
		for b.Loop() {
			json.Marshal(jsonRecord{r.Size, r.UIDL})
		}
		b.ReportMetric(float64(len(js)), "bytes/record")
	})
	b.Run("json/decode", func(b *testing.B) {
		for b.Loop() {
			var j jsonRecord
			if err := json.Unmarshal(js, &j); err != nil {
				b.Fatal(err)
			}
		}
	})
}
