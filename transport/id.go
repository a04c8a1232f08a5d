package transport

import (
	"crypto/rand"
	"encoding/base32"
	"strconv"
)

// controlIDs makes the MSH-10 of the acknowledgements a connection sends:
// a random prefix per connection and a counter, at most 20 characters (the
// HL7 v2.5 length of MSH-10).
type controlIDs struct {
	prefix string
	n      uint64
	buf    []byte
}

func newControlIDs() controlIDs {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return controlIDs{prefix: "SB" + base32.StdEncoding.EncodeToString(b[:])}
}

func (g *controlIDs) next() string {
	g.n++
	g.buf = strconv.AppendUint(append(g.buf[:0], g.prefix...), g.n, 36)
	return string(g.buf)
}

// newConnID returns a random id for an accepted connection.
func newConnID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "c-" + base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}
