package delivery

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/switchboard-dev/switchboard/internal/varint"
	"github.com/switchboard-dev/switchboard/journal"
)

// stored is what a Store keeps of a consumer (besides its dead letters).
type stored struct {
	spec    Spec
	created time.Time
	next    uint64
	dead    int64
	pending []storedPending // by sequence
}

type storedPending struct {
	seq   uint64
	count uint32
	first time.Time // first delivery
}

// stateV1 starts every stored state. The rest is a fixed sequence of
// varints (u: unsigned, s: zigzag):
//
//	u mode | u ack wait ns | u max deliveries | u max ack pending |
//	u n | n × (u len | listener id) | u n | n × (u len | connection id) |
//	u n | n × u kind | s created unix ns | u next | u dead letters |
//	u n | n × (u seq minus the previous one | u count | s first delivery unix ns)
//
// A change old readers must not misread needs a new version.
const stateV1 byte = 1

var errMalformedState = errors.New("delivery: malformed stored consumer state")

func encodeState(st *stored) []byte {
	s := st.spec
	b := make([]byte, 0, 64+16*len(st.pending))
	b = append(b, stateV1)
	b = binary.AppendUvarint(b, uint64(s.Mode))
	b = binary.AppendUvarint(b, uint64(s.AckWait))
	b = binary.AppendUvarint(b, uint64(s.MaxDeliveries))
	b = binary.AppendUvarint(b, uint64(s.MaxAckPending))
	for _, ids := range [][]string{s.ListenerIDs, s.ConnectionIDs} {
		b = binary.AppendUvarint(b, uint64(len(ids)))
		for _, id := range ids {
			b = binary.AppendUvarint(b, uint64(len(id)))
			b = append(b, id...)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(s.Kinds)))
	for _, k := range s.Kinds {
		b = binary.AppendUvarint(b, uint64(k))
	}
	b = binary.AppendVarint(b, st.created.UnixNano())
	b = binary.AppendUvarint(b, st.next)
	b = binary.AppendUvarint(b, uint64(st.dead))
	b = binary.AppendUvarint(b, uint64(len(st.pending)))
	prev := uint64(0)
	for _, p := range st.pending {
		b = binary.AppendUvarint(b, p.seq-prev)
		b = binary.AppendUvarint(b, uint64(p.count))
		b = binary.AppendVarint(b, p.first.UnixNano())
		prev = p.seq
	}
	return b
}

func decodeState(b []byte) (stored, error) {
	if len(b) == 0 || b[0] != stateV1 {
		return stored{}, errMalformedState
	}
	d := varint.Reader{B: b[1:]}
	var st stored
	s := &st.spec
	s.Mode = Mode(d.Uvarint())
	s.AckWait = time.Duration(d.Uvarint())
	s.MaxDeliveries = int(d.Uvarint())
	s.MaxAckPending = int(d.Uvarint())
	for _, ids := range []*[]string{&s.ListenerIDs, &s.ConnectionIDs} {
		for n := d.Count(); n > 0; n-- {
			*ids = append(*ids, string(d.Bytes()))
		}
	}
	for n := d.Count(); n > 0; n-- {
		s.Kinds = append(s.Kinds, journal.Kind(d.Uvarint()))
	}
	st.created = time.Unix(0, d.Varint()).UTC()
	st.next = d.Uvarint()
	st.dead = int64(d.Uvarint())
	prev := uint64(0)
	for n := d.Count(); n > 0; n-- {
		delta := d.Uvarint()
		if delta == 0 { // sequences start at 1 and grow
			d.Bad = true
		}
		p := storedPending{seq: prev + delta, count: uint32(d.Uvarint()), first: time.Unix(0, d.Varint()).UTC()}
		st.pending = append(st.pending, p)
		prev = p.seq
	}
	if d.Bad || len(d.B) != 0 {
		return stored{}, errMalformedState
	}
	return st, nil
}
