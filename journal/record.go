package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/switchboard-dev/switchboard/internal/varint"
)

// Record is one frame received from a peer and the metadata needed to
// deliver it later.
type Record struct {
	Seq  uint64 // assigned by Append
	Kind Kind   // required: Append refuses KindUnspecified
	Time time.Time
	// InstanceID names the Switchboard instance that stored the record, so
	// several instances can share one journal; empty on a single instance.
	InstanceID   string
	ListenerID   string
	ConnectionID string
	RemoteAddr   string
	MessageType  string // HL7 MSH-9 when known
	ControlID    string // HL7 MSH-10 when known
	// PeerIdentity is the identity of the peer's verified TLS certificate
	// (its first URI SAN, else first DNS SAN, else common name, else
	// subject); empty without one.
	PeerIdentity string
	Payload      []byte

	// DedupID, when not empty, makes Append refuse a second record with
	// the same id appended less than DedupWindow before it: Append then
	// returns the first record's sequence and a *DuplicateError. The id is
	// the backend's index key, not part of the stored record, so Read
	// returns it empty. DedupWindow must be positive when DedupID is set.
	DedupID     string
	DedupWindow time.Duration
}

// Kind says what a record is, so consumers can tell (and filter) peers'
// messages from stray acknowledgements.
type Kind uint32

const (
	// KindUnspecified is the zero value; no stored record has it.
	KindUnspecified Kind = iota
	// KindMessage is a message from a peer. Every record written before
	// kinds existed (format version 1) is one.
	KindMessage
	// KindAck is an acknowledgement frame that arrived with no Send waiting
	// for it, for example an HL7 application ACK (MSA) sent after the
	// commit ACK.
	KindAck
)

func (k Kind) String() string {
	switch k {
	case KindUnspecified:
		return "unspecified"
	case KindMessage:
		return "message"
	case KindAck:
		return "ack"
	}
	return fmt.Sprintf("Kind(%d)", uint32(k))
}

// ErrMalformedRecord is returned for stored values that do not decode. It
// signals corruption or a writer of a newer, incompatible format; it is
// never expected in normal operation.
var ErrMalformedRecord = errors.New("journal: malformed record value")

// Stored record values start with a format version byte.
//
// Version 1 (Switchboard before record kinds) is a fixed sequence:
//
//	varint unix seconds | uvarint nanoseconds |
//	5 × (uvarint length | string: listener, connection, remote address,
//	message type, control id) | uvarint length | payload
//
// Version 2 is the protobuf wire format of the message sketched below,
// written by hand (no reflection, no allocation). Fields with zero values
// are omitted, unknown fields are skipped, and when a field repeats the last
// one wins, as in protobuf. So a later optional field (peer TLS identity,
// direction, ...) needs a new field number, not a new version, and older
// readers skip it. A new version is only for a change old readers must not
// misread.
//
//	message Record {
//	  uint32 kind = 1;
//	  sint64 time_seconds = 2;
//	  uint32 time_nanos = 3;
//	  string instance_id = 4;
//	  string listener_id = 5;
//	  string connection_id = 6;
//	  string remote_addr = 7;
//	  string message_type = 8;
//	  string control_id = 9;
//	  bytes payload = 10;
//	  string peer_identity = 11;
//	}
//
// Seconds plus nanoseconds rather than UnixNano so that any time.Time,
// including the zero value, survives the round trip. Seq is not stored: it
// is the record's key (or a stream's sequence number).
const (
	recordV1 byte = 1
	recordV2 byte = 2
)

const (
	fieldKind protowire.Number = iota + 1
	fieldSeconds
	fieldNanos
	fieldInstanceID
	fieldListenerID
	fieldConnectionID
	fieldRemoteAddr
	fieldMessageType
	fieldControlID
	fieldPayload
	fieldPeerIdentity
)

// RecordLen returns the exact length of AppendRecord's output for r, so a
// backend can encode straight into its write buffer without a scratch copy.
func RecordLen(r *Record) int {
	// Every field number is below 16, so every tag is one byte.
	n := 1 + varintFieldLen(uint64(r.Kind)) +
		varintFieldLen(protowire.EncodeZigZag(r.Time.Unix())) +
		varintFieldLen(uint64(r.Time.Nanosecond()))
	for _, l := range [...]int{len(r.InstanceID), len(r.ListenerID), len(r.ConnectionID), len(r.RemoteAddr), len(r.MessageType), len(r.ControlID), len(r.PeerIdentity), len(r.Payload)} {
		if l > 0 {
			n += 1 + protowire.SizeBytes(l)
		}
	}
	return n
}

// AppendRecord appends the stored form of r (every field except Seq) to dst
// and returns the extended slice. It allocates only if dst is too small.
func AppendRecord(dst []byte, r *Record) []byte {
	dst = append(dst, recordV2)
	dst = appendVarintField(dst, fieldKind, uint64(r.Kind))
	dst = appendVarintField(dst, fieldSeconds, protowire.EncodeZigZag(r.Time.Unix()))
	dst = appendVarintField(dst, fieldNanos, uint64(r.Time.Nanosecond()))
	dst = appendStringField(dst, fieldInstanceID, r.InstanceID)
	dst = appendStringField(dst, fieldListenerID, r.ListenerID)
	dst = appendStringField(dst, fieldConnectionID, r.ConnectionID)
	dst = appendStringField(dst, fieldRemoteAddr, r.RemoteAddr)
	dst = appendStringField(dst, fieldMessageType, r.MessageType)
	dst = appendStringField(dst, fieldControlID, r.ControlID)
	// Before the payload (which stays last, where a hex dump shows it),
	// though any order decodes.
	dst = appendStringField(dst, fieldPeerIdentity, r.PeerIdentity)
	if len(r.Payload) > 0 {
		dst = append(dst, byte(protowire.EncodeTag(fieldPayload, protowire.BytesType)))
		dst = binary.AppendUvarint(dst, uint64(len(r.Payload)))
		dst = append(dst, r.Payload...)
	}
	return dst
}

func varintFieldLen(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

// The append helpers write a field's tag as one byte (every field number is
// below 16) and varints with encoding/binary, which produces the same bytes
// as protowire and is inlined, so the encoder stays close to version 1's
// speed.
func appendStringField(dst []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return dst
	}
	dst = append(dst, byte(protowire.EncodeTag(num, protowire.BytesType)))
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendVarintField(dst []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return dst
	}
	dst = append(dst, byte(protowire.EncodeTag(num, protowire.VarintType)))
	return binary.AppendUvarint(dst, v)
}

// DecodeRecord parses a stored record value of any known format version and
// gives it sequence number seq. Strings and payload are copies, so the
// result does not alias b (storage engines reuse their buffers).
func DecodeRecord(seq uint64, b []byte) (Record, error) {
	if len(b) == 0 {
		return Record{}, ErrMalformedRecord
	}
	switch b[0] {
	case recordV2:
		return decodeV2(seq, b[1:])
	case recordV1:
		return decodeV1(seq, b[1:])
	}
	return Record{}, fmt.Errorf("%w: unknown format version %d", ErrMalformedRecord, b[0])
}

func decodeV2(seq uint64, b []byte) (Record, error) {
	r := Record{Seq: seq}
	var sec int64
	var nsec uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Record{}, ErrMalformedRecord
		}
		b = b[n:]
		switch {
		case num >= fieldKind && num <= fieldNanos && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Record{}, ErrMalformedRecord
			}
			b = b[n:]
			switch num {
			case fieldKind:
				if v > uint64(^Kind(0)) {
					return Record{}, ErrMalformedRecord
				}
				r.Kind = Kind(v)
			case fieldSeconds:
				sec = protowire.DecodeZigZag(v)
			case fieldNanos:
				nsec = v
			}
		case num >= fieldInstanceID && num <= fieldPeerIdentity && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Record{}, ErrMalformedRecord
			}
			b = b[n:]
			if num == fieldPayload {
				r.Payload = append([]byte(nil), v...)
			} else {
				*r.stringField(num) = string(v)
			}
		case num >= fieldKind && num <= fieldPeerIdentity:
			// A known field with the wrong wire type: not something any
			// version of this code wrote.
			return Record{}, ErrMalformedRecord
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Record{}, ErrMalformedRecord
			}
			b = b[n:]
		}
	}
	if nsec >= uint64(time.Second) {
		return Record{}, ErrMalformedRecord
	}
	r.Time = time.Unix(sec, int64(nsec)).UTC()
	return r, nil
}

func (r *Record) stringField(num protowire.Number) *string {
	switch num {
	case fieldInstanceID:
		return &r.InstanceID
	case fieldListenerID:
		return &r.ListenerID
	case fieldConnectionID:
		return &r.ConnectionID
	case fieldRemoteAddr:
		return &r.RemoteAddr
	case fieldMessageType:
		return &r.MessageType
	case fieldPeerIdentity:
		return &r.PeerIdentity
	}
	return &r.ControlID
}

// decodeV1 reads format version 1, which had no kind (every record was a
// message) and no instance id.
func decodeV1(seq uint64, b []byte) (Record, error) {
	d := varint.Reader{B: b}
	sec := d.Varint()
	nsec := d.Uvarint()
	r := Record{
		Seq:          seq,
		Kind:         KindMessage,
		ListenerID:   string(d.Bytes()),
		ConnectionID: string(d.Bytes()),
		RemoteAddr:   string(d.Bytes()),
		MessageType:  string(d.Bytes()),
		ControlID:    string(d.Bytes()),
	}
	if p := d.Bytes(); len(p) > 0 {
		r.Payload = append([]byte(nil), p...)
	}
	if d.Bad || len(d.B) != 0 || nsec >= uint64(time.Second) {
		return Record{}, ErrMalformedRecord
	}
	r.Time = time.Unix(sec, int64(nsec)).UTC()
	return r, nil
}
