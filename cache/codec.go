package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Records are stored in a compact binary form rather than JSON: a message
// record is a varint size, the UIDL with a varint length, then the stamp,
// 29 bytes where JSON takes 49 for a typical record without a stamp, and
// many times faster to decode (see BenchmarkCodec). A large account is
// decoded whole on a cold read, so decode speed matters. Any change to
// these layouts is a schema migration.

var errCorrupt = errors.New("corrupt record")

// encodeMessage returns uvarint(size) || uvarint(len(uidl)) || uidl ||
// stamp (schema 2).
func encodeMessage(r MessageRecord) []byte {
	buf := make([]byte, 0, 2*binary.MaxVarintLen64+len(r.UIDL)+len(r.Stamp))
	buf = binary.AppendUvarint(buf, uint64(r.Size))
	buf = binary.AppendUvarint(buf, uint64(len(r.UIDL)))
	buf = append(buf, r.UIDL...)
	return append(buf, r.Stamp...)
}

// decodeMessage parses encodeMessage's output. The strings are copied,
// in one allocation: bbolt values are only valid inside their
// transaction.
func decodeMessage(key, v []byte) (MessageRecord, error) {
	size, n := binary.Uvarint(v)
	if n <= 0 || size > 1<<62 {
		return MessageRecord{}, fmt.Errorf("message %q: %w", key, errCorrupt)
	}
	v = v[n:]
	l, n := binary.Uvarint(v)
	if n <= 0 || l > uint64(len(v)-n) {
		return MessageRecord{}, fmt.Errorf("message %q: %w", key, errCorrupt)
	}
	rest := string(v[n:])
	return MessageRecord{Key: string(key), Size: int64(size), UIDL: rest[:l], Stamp: rest[l:]}, nil
}

// decodeMessageV1 parses the schema 1 layout, uvarint(size) || uidl, for
// the migration to schema 2.
func decodeMessageV1(key, v []byte) (MessageRecord, error) {
	size, n := binary.Uvarint(v)
	if n <= 0 || size > 1<<62 {
		return MessageRecord{}, fmt.Errorf("message %q: %w", key, errCorrupt)
	}
	return MessageRecord{Key: string(key), Size: int64(size), UIDL: string(v[n:])}, nil
}

// encodeSync returns the uvarints UIDValidity, HighestUID, HistoryID, the
// number of POP3 UIDLs, then each UIDL as uvarint(len) || bytes.
func encodeSync(s SyncState) []byte {
	n := 4 * binary.MaxVarintLen64
	for _, u := range s.POP3UIDLs {
		n += binary.MaxVarintLen64 + len(u)
	}
	buf := make([]byte, 0, n)
	buf = binary.AppendUvarint(buf, uint64(s.UIDValidity))
	buf = binary.AppendUvarint(buf, uint64(s.HighestUID))
	buf = binary.AppendUvarint(buf, s.HistoryID)
	buf = binary.AppendUvarint(buf, uint64(len(s.POP3UIDLs)))
	for _, u := range s.POP3UIDLs {
		buf = binary.AppendUvarint(buf, uint64(len(u)))
		buf = append(buf, u...)
	}
	return buf
}

// decodeSync parses encodeSync's output, copying every string.
func decodeSync(v []byte) (SyncState, error) {
	var s SyncState
	var fields [4]uint64
	for i := range fields {
		x, n := binary.Uvarint(v)
		if n <= 0 {
			return SyncState{}, fmt.Errorf("sync state: %w", errCorrupt)
		}
		fields[i], v = x, v[n:]
	}
	if fields[0] > 1<<32-1 || fields[1] > 1<<32-1 || fields[3] > uint64(len(v)) {
		return SyncState{}, fmt.Errorf("sync state: %w", errCorrupt)
	}
	s.UIDValidity, s.HighestUID, s.HistoryID = uint32(fields[0]), uint32(fields[1]), fields[2]
	if fields[3] > 0 {
		s.POP3UIDLs = make([]string, 0, fields[3])
	}
	for range fields[3] {
		l, n := binary.Uvarint(v)
		if n <= 0 || l > uint64(len(v)-n) {
			return SyncState{}, fmt.Errorf("sync state: %w", errCorrupt)
		}
		s.POP3UIDLs = append(s.POP3UIDLs, string(v[n:n+int(l)]))
		v = v[n+int(l):]
	}
	if len(v) != 0 {
		return SyncState{}, fmt.Errorf("sync state: %d trailing bytes: %w", len(v), errCorrupt)
	}
	return s, nil
}
