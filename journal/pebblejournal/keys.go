package pebblejournal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Key layout. Every key starts with one prefix byte naming what it is, so
// each store of the database has a key range of its own and never
// interleaves with another; the rest is built so that Pebble's byte order is
// the order the store reads in.
//
//	0x01 seq                          journal record (value: journal.AppendRecord)
//	0x02 unix-nanos                   time mark: the first sequence of the group committed then (retention)
//	0x03 id                           duplicate index: the record holding a DedupID (dedup.go)
//	0x04 expires-nanos id             duplicate expiry index (empty value; retention)
//	0x05 seq                          answer sent for an inbound record (answers.go)
//	0x10 type 0x00 id                 desired state: a resource's spec
//	0x20 conn 0x00 seq                outbox message (value: outboxValue)
//	0x21 conn 0x00 seq                outbox pending index: the message is not final (empty value)
//	0x22 unix-nanos conn 0x00 seq     outbox final index: when the message became final (value: size, idempotency key)
//	0x23 conn 0x00 idempotency-key    outbox idempotency index (value: seq)
//	0x24 conn                         outbox: the last sequence given out on conn (value: seq)
//	0x30 name                         durable consumer: its state (value: opaque, service/delivery's)
//	0x31 name 0x00 seq                durable consumer's dead letter (value: deadLetterValue)
//	0xf0 ...                          the journal's own keys (the recovery probe)
//
// Numbers are 8 bytes big-endian. Connection ids and resource types may not
// contain 0x00, so the separator ends them and a shorter id sorts before a
// longer one it prefixes, as Go compares strings.
const (
	prefixRecord     byte = 0x01
	prefixMark       byte = 0x02
	prefixState      byte = 0x10
	prefixOutMsg     byte = 0x20
	prefixOutPending byte = 0x21
	prefixOutFinal   byte = 0x22
	prefixOutIdem    byte = 0x23
	prefixOutSeq     byte = 0x24
	prefixConsumer   byte = 0x30
	prefixDead       byte = 0x31
	keyLen                = 1 + 8
)

// Keys under prefixInternal are the journal's own (the recovery probe),
// never records: they sort after every record key, and readStored never
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

// markKey is the key of the time mark written at t (unix nanoseconds, which
// sort as unsigned numbers for every time after 1970).
func markKey(t int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixMark}, uint64(max(t, 0)))
}

// prefixEnd is the first key after every key starting with p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// errBadName is wrapped by the error for an id a key cannot hold.
var errBadName = errors.New("must be non-empty and must not contain NUL")

// checkName rejects what cannot end a key component: empty, or holding the
// 0x00 separator.
func checkName(what, s string) error {
	if s == "" || strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%s %q: %w", what, s, errBadName)
	}
	return nil
}

// nameKey is prefix, name, 0x00: the start of every key under name.
func nameKey(prefix byte, name string) []byte {
	k := make([]byte, 0, 1+len(name)+1+8)
	k = append(k, prefix)
	k = append(k, name...)
	return append(k, 0)
}

// connSeqKey is prefix, conn, 0x00, seq.
func connSeqKey(prefix byte, conn string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nameKey(prefix, conn), seq)
}

// splitConnSeq parses conn, 0x00, seq: a connSeqKey without its prefix.
func splitConnSeq(b []byte) (conn string, seq uint64, ok bool) {
	if len(b) < 1+1+8 {
		return "", 0, false
	}
	sep := len(b) - 9
	if b[sep] != 0 {
		return "", 0, false
	}
	return string(b[:sep]), binary.BigEndian.Uint64(b[sep+1:]), true
}
