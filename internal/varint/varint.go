// Package varint reads the varint-framed values Switchboard stores by hand
// (journal records of format version 1, durable consumers' state): a
// Reader takes fields front to back and, after the first one that does not
// decode, returns zero values and reports it once, so a decoder checks Bad
// at the end instead of after every field.
package varint

import "encoding/binary"

// Reader reads fields from B, front to back.
type Reader struct {
	B []byte
	// Bad is set by the first field that does not decode.
	Bad bool
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	v, n := binary.Uvarint(r.B)
	if n <= 0 {
		r.Bad = true
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Varint reads a zigzag varint.
func (r *Reader) Varint() int64 {
	v, n := binary.Varint(r.B)
	if n <= 0 {
		r.Bad = true
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Bytes reads a length-prefixed byte string; the result aliases B.
func (r *Reader) Bytes() []byte {
	n := r.Uvarint()
	if r.Bad || n > uint64(len(r.B)) {
		r.Bad = true
		return nil
	}
	p := r.B[:n]
	r.B = r.B[n:]
	return p
}

// Count reads a number of elements that each take at least one byte: more
// than what is left is malformed (and would make a caller loop or allocate
// for nothing).
func (r *Reader) Count() int {
	n := r.Uvarint()
	if n > uint64(len(r.B)) {
		r.Bad = true
		return 0
	}
	return int(n)
}
