package varint

import (
	"encoding/binary"
	"testing"
)

// TestReader: fields decode in order, and the first bad one zeroes the rest
// and sets Bad.
func TestReader(t *testing.T) {
	b := binary.AppendUvarint(nil, 300)
	b = binary.AppendVarint(b, -7)
	b = binary.AppendUvarint(b, 3)
	b = append(b, "abc"...)
	b = binary.AppendUvarint(b, 2)
	r := Reader{B: b}
	if u, v, s, n := r.Uvarint(), r.Varint(), string(r.Bytes()), r.Count(); u != 300 || v != -7 || s != "abc" || n != 0 || !r.Bad {
		// Count 2 with nothing left is malformed.
		t.Fatalf("got %d %d %q %d bad=%v; want 300 -7 abc 0 bad", u, v, s, n, r.Bad)
	}
	r = Reader{B: []byte{0x80}} // a varint that never ends
	if r.Uvarint() != 0 || !r.Bad || r.Bytes() != nil || r.Varint() != 0 {
		t.Fatal("a truncated varint decoded")
	}
	r = Reader{B: binary.AppendUvarint(nil, 5)} // a length past the end
	if r.Bytes() != nil || !r.Bad {
		t.Fatal("a length past the end decoded")
	}
}
