package pebblejournal

import "encoding/binary"

// Key layout: one prefix byte, then the sequence number as 8 big-endian
// bytes, so Pebble's byte order is sequence order. Prefixes other than
// prefixRecord are reserved for future data in the same store (for example
// subscriber cursors), which therefore never interleaves with records.
const (
	prefixRecord byte = 0x01
	keyLen            = 1 + 8
)

// Keys under prefixInternal are the journal's own (the recovery probe),
// never records: they sort after every record key, and lastStoredSeq never
// sees them.
const prefixInternal byte = 0xf0

// maxRecordBytes bounds one encoded record. Pebble panics on batches of 4 GiB
// or more, and no sane HL7 frame comes close, so reject such records early.
const maxRecordBytes = 1 << 30

func recordKey(dst []byte, seq uint64) []byte {
	dst = append(dst, prefixRecord)
	return binary.BigEndian.AppendUint64(dst, seq)
}

func keySeq(key []byte) (uint64, bool) {
	if len(key) != keyLen || key[0] != prefixRecord {
		return 0, false
	}
	return binary.BigEndian.Uint64(key[1:]), true
}
