package journal

import (
	"encoding/binary"
	"errors"
	"time"
)

// Record is one inbound frame and the metadata needed to deliver it later.
type Record struct {
	Seq          uint64    // assigned by Append
	Time         time.Time // when the frame was received (caller sets; stored with ns precision, UTC)
	ListenerID   string
	ConnectionID string
	RemoteAddr   string
	MessageType  string // HL7 MSH-9 when known
	ControlID    string // HL7 MSH-10 when known
	Payload      []byte
}

// recordVersion is the first byte of every stored value. Bump it when the
// layout changes; DecodeRecord rejects versions it does not know.
const recordVersion byte = 1

// ErrMalformedRecord is returned for stored values that do not decode. It signals
// corruption or a newer writer; it is never expected in normal operation.
var ErrMalformedRecord = errors.New("malformed record value")

// RecordLen returns the exact size AppendRecord produces for r, so the
// value can be encoded straight into the Pebble batch without a scratch copy.
func RecordLen(r *Record) int {
	n := 1 + varintLen(r.Time.Unix()) + uvarintLen(uint64(r.Time.Nanosecond()))
	for _, s := range [...]string{r.ListenerID, r.ConnectionID, r.RemoteAddr, r.MessageType, r.ControlID} {
		n += uvarintLen(uint64(len(s))) + len(s)
	}
	return n + uvarintLen(uint64(len(r.Payload))) + len(r.Payload)
}

// AppendRecord encodes every field of r except Seq (which is the key):
//
//	version byte | varint unix seconds | uvarint nanoseconds |
//	5 × (uvarint length | string) | uvarint length | payload
//
// Seconds plus nanoseconds rather than UnixNano so that any time.Time,
// including the zero value, survives the round trip.
func AppendRecord(dst []byte, r *Record) []byte {
	dst = append(dst, recordVersion)
	dst = binary.AppendVarint(dst, r.Time.Unix())
	dst = binary.AppendUvarint(dst, uint64(r.Time.Nanosecond()))
	for _, s := range [...]string{r.ListenerID, r.ConnectionID, r.RemoteAddr, r.MessageType, r.ControlID} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Payload)))
	return append(dst, r.Payload...)
}

// DecodeRecord parses a value written by AppendRecord. Strings and payload
// are copied, so the result does not alias b (Pebble reuses its buffers).
func DecodeRecord(seq uint64, b []byte) (Record, error) {
	d := decoder{b: b}
	if v := d.byte(); v != recordVersion {
		return Record{}, ErrMalformedRecord
	}
	sec := d.varint()
	nsec := d.uvarint()
	r := Record{
		Seq:          seq,
		ListenerID:   string(d.bytes()),
		ConnectionID: string(d.bytes()),
		RemoteAddr:   string(d.bytes()),
		MessageType:  string(d.bytes()),
		ControlID:    string(d.bytes()),
	}
	if p := d.bytes(); len(p) > 0 {
		r.Payload = append([]byte(nil), p...)
	}
	if d.bad || len(d.b) != 0 || nsec >= uint64(time.Second) {
		return Record{}, ErrMalformedRecord
	}
	r.Time = time.Unix(sec, int64(nsec)).UTC()
	return r, nil
}

// decoder reads fields front to back. After the first error it sets bad and
// returns zero values, so callers check once at the end.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.bad = true
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.b)) {
		d.bad = true
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	// Zig-zag, as binary.AppendVarint does.
	return uvarintLen(uint64(v<<1) ^ uint64(v>>63))
}
