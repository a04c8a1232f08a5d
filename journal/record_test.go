package journal_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/journaltest"
)

// Format versions and field numbers are written out here, not taken from
// the package, so a change to the stored format fails these tests.
const (
	recordV1 byte = 1
	recordV2 byte = 2

	fieldKind       protowire.Number = 1
	fieldNanos      protowire.Number = 3
	fieldListenerID protowire.Number = 5
	fieldControlID  protowire.Number = 9
	fieldPayload    protowire.Number = 10
	fieldPeerID     protowire.Number = 11
)

var sameRecord = journaltest.CheckRecord

// appendV1 writes format version 1 exactly as Switchboard did before record
// kinds (journal/record.go at 8a692d1), so old values stay readable.
func appendV1(dst []byte, r *journal.Record) []byte {
	dst = append(dst, recordV1)
	dst = binary.AppendVarint(dst, r.Time.Unix())
	dst = binary.AppendUvarint(dst, uint64(r.Time.Nanosecond()))
	for _, s := range [...]string{r.ListenerID, r.ConnectionID, r.RemoteAddr, r.MessageType, r.ControlID} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Payload)))
	return append(dst, r.Payload...)
}

func sampleRecords() []journal.Record {
	return []journal.Record{
		{
			Kind:         journal.KindMessage,
			Time:         time.Date(2024, 2, 29, 23, 59, 59, 123456789, time.FixedZone("CET", 3600)),
			InstanceID:   "sb-2",
			ListenerID:   "listener-a",
			ConnectionID: "conn-1",
			RemoteAddr:   "[2001:db8::1]:2575",
			MessageType:  "ORU^R01^ORU_R01",
			ControlID:    "MSG00001",
			Payload:      []byte{0x0b, 0x00, 0xff, 0xfe, 0xc3, 0x28, 0x1c, 0x0d},
		},
		{Kind: journal.KindAck, Time: time.Unix(0, 1), ListenerID: "b", Payload: []byte{}},
		{Kind: journal.KindMessage, Time: time.Unix(-62135596800, 0), ControlID: "\xe9t\xe9"},
		{Kind: journal.KindMessage, Time: time.Unix(1, 0), PeerIdentity: "spiffe://hospital.example/lab", Payload: []byte("MSH|")},
		{}, // every field empty, zero time
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for i, r := range sampleRecords() {
		enc := journal.AppendRecord(nil, &r)
		if len(enc) != journal.RecordLen(&r) {
			t.Fatalf("record %d: journal.RecordLen = %d, encoding is %d bytes", i, journal.RecordLen(&r), len(enc))
		}
		got, err := journal.DecodeRecord(7, enc)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		r.Seq = 7
		if len(r.Payload) == 0 {
			r.Payload = nil
		}
		sameRecord(t, &got, &r)
	}
}

// TestRecordGolden pins the stored bytes of a record: a change to the
// format must be deliberate (and keep old values readable).
func TestRecordGolden(t *testing.T) {
	r := sampleRecords()[0]
	const want = "02" + // format version 2, then protobuf fields:
		"0801" + // 1 kind: message
		"10deb188de0c" + // 2 time_seconds (zigzag)
		"18959aef3a" + // 3 time_nanos
		"2204" + "73622d32" + // 4 instance_id "sb-2"
		"2a0a" + "6c697374656e65722d61" + // 5 listener_id
		"3206" + "636f6e6e2d31" + // 6 connection_id
		"3a12" + "5b323030313a6462383a3a315d3a32353735" + // 7 remote_addr
		"420f" + "4f52555e5230315e4f52555f523031" + // 8 message_type
		"4a08" + "4d53473030303031" + // 9 control_id
		"5208" + "0b00fffec3281c0d" // 10 payload
	if got := hex.EncodeToString(journal.AppendRecord(nil, &r)); got != want {
		t.Fatalf("stored form changed:\n got %s\nwant %s", got, want)
	}
}

// TestRecordGoldenPeerIdentity pins field 11 (record format 2, added with
// TLS): the peer identity, written before the payload.
func TestRecordGoldenPeerIdentity(t *testing.T) {
	r := journal.Record{Kind: journal.KindMessage, PeerIdentity: "lab", Payload: []byte{0x41}}
	want := []byte{recordV2}
	want = protowire.AppendTag(want, fieldKind, protowire.VarintType)
	want = protowire.AppendVarint(want, 1)
	want = protowire.AppendTag(want, 2, protowire.VarintType)
	want = protowire.AppendVarint(want, protowire.EncodeZigZag(time.Time{}.Unix()))
	want = protowire.AppendTag(want, fieldPeerID, protowire.BytesType)
	want = protowire.AppendString(want, "lab")
	want = protowire.AppendTag(want, fieldPayload, protowire.BytesType)
	want = protowire.AppendBytes(want, []byte{0x41})
	if got := journal.AppendRecord(nil, &r); !bytes.Equal(got, want) {
		t.Fatalf("stored form:\n got %x\nwant %x", got, want)
	}
}

// TestDecodeVersion1: values stored by the code before record kinds still
// decode, as messages with no instance id.
func TestDecodeVersion1(t *testing.T) {
	for i, r := range sampleRecords() {
		got, err := journal.DecodeRecord(3, appendV1(nil, &r))
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		want := r
		want.Seq, want.Kind, want.InstanceID, want.PeerIdentity = 3, journal.KindMessage, "", ""
		if len(want.Payload) == 0 {
			want.Payload = nil
		}
		sameRecord(t, &got, &want)
	}
}

// TestDecodeSkipsUnknownFields: a later writer's optional fields do not stop
// this reader, and a repeated field keeps its last value, as in protobuf.
func TestDecodeSkipsUnknownFields(t *testing.T) {
	r := sampleRecords()[0]
	enc := journal.AppendRecord(nil, &r)
	enc = protowire.AppendTag(enc, 14, protowire.BytesType)
	enc = protowire.AppendString(enc, "CN=lab.example.org")
	enc = protowire.AppendTag(enc, 12, protowire.VarintType)
	enc = protowire.AppendVarint(enc, 2)
	enc = protowire.AppendTag(enc, 1000, protowire.Fixed64Type)
	enc = protowire.AppendFixed64(enc, 42)
	enc = protowire.AppendTag(enc, 13, protowire.Fixed32Type)
	enc = protowire.AppendFixed32(enc, 42)
	enc = protowire.AppendTag(enc, fieldControlID, protowire.BytesType)
	enc = protowire.AppendString(enc, "MSG00002")
	got, err := journal.DecodeRecord(1, enc)
	if err != nil {
		t.Fatal(err)
	}
	r.Seq, r.ControlID = 1, "MSG00002"
	sameRecord(t, &got, &r)
}

func TestDecodeRejectsMalformed(t *testing.T) {
	v1 := appendV1(nil, &journal.Record{Time: time.Unix(1, 2), ControlID: "c", Payload: []byte("p")})
	v2 := journal.AppendRecord(nil, &journal.Record{Kind: journal.KindMessage, Time: time.Unix(1, 2), ControlID: "c", Payload: []byte("p")})
	tagged := func(num protowire.Number, typ protowire.Type, rest ...byte) []byte {
		return append(protowire.AppendTag([]byte{recordV2}, num, typ), rest...)
	}
	cases := map[string][]byte{
		"empty":                nil,
		"unknown version":      append([]byte{3}, v2[1:]...),
		"v1 truncated":         v1[:len(v1)-1],
		"v1 trailing":          append(append([]byte(nil), v1...), 0),
		"v1 nanos>=1e9":        append(binary.AppendUvarint([]byte{recordV1, 0}, uint64(time.Second)), 0, 0, 0, 0, 0, 0),
		"v1 huge length":       {recordV1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"v1 varint too long":   {recordV1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"v2 truncated":         v2[:len(v2)-1],
		"v2 bad tag":           {recordV2, 0xff},
		"v2 field 0":           {recordV2, 0x00, 0x01},
		"v2 nanos>=1e9":        protowire.AppendVarint(tagged(fieldNanos, protowire.VarintType), uint64(time.Second)),
		"v2 kind > 32 bits":    protowire.AppendVarint(tagged(fieldKind, protowire.VarintType), 1<<32),
		"v2 string as varint":  tagged(fieldListenerID, protowire.VarintType, 1),
		"v2 kind as bytes":     tagged(fieldKind, protowire.BytesType, 1, 1),
		"v2 huge length":       tagged(fieldPayload, protowire.BytesType, 0xff, 0xff, 0xff, 0xff, 0x0f),
		"v2 unknown truncated": tagged(99, protowire.Fixed64Type, 1, 2, 3),
		"v2 end group":         tagged(99, protowire.EndGroupType),
	}
	for name, b := range cases {
		if _, err := journal.DecodeRecord(1, b); err == nil {
			t.Errorf("%s: decode succeeded", name)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[journal.Kind]string{journal.KindUnspecified: "unspecified", journal.KindMessage: "message", journal.KindAck: "ack", 9: "Kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint32(k), got, want)
		}
	}
}

// FuzzDecodeRecord checks that encoding round-trips every field and that
// decoding arbitrary bytes never panics. The seeds run in every `go test`.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{}, uint32(0), int64(0), int64(0), "", "", "", "", "", "", []byte{})
	f.Add([]byte{recordV1}, uint32(1), int64(1700000000), int64(123456789),
		"sb-1", "mllp-1", "conn-7", "10.0.0.1:5000", "ADT^A01", "MSG0001", []byte("MSH|^~\\&|\r"))
	f.Add([]byte{recordV2, 0xff, 0xff}, uint32(2), int64(-62135596800), int64(999999999),
		"", "l", "c", "[::1]:1", "ORU^R01", "x", []byte{0x0b, 0x00, 0xff, 0xfe, 0x1c, 0x0d})
	for _, r := range sampleRecords() {
		f.Add(journal.AppendRecord(nil, &r), uint32(7), int64(1<<62), int64(0), "é", "\x00", "\xff", "", "", "", []byte(nil))
		f.Add(appendV1(nil, &r), uint32(0), int64(5), int64(6), "", "", "", "", "", "", []byte{1, 2, 3})
	}
	f.Fuzz(func(t *testing.T, data []byte, kind uint32, sec, nsec int64, instance, listener, conn, remote, msgType, controlID string, payload []byte) {
		peerID := remote + instance // one more string without changing the corpus's shape
		// Arbitrary bytes: must not panic; anything accepted must re-encode
		// to something that decodes to the same record.
		if r, err := journal.DecodeRecord(9, data); err == nil {
			again, err := journal.DecodeRecord(9, journal.AppendRecord(nil, &r))
			if err != nil {
				t.Fatalf("re-decode: %v", err)
			}
			sameRecord(t, &again, &r)
		}

		want := journal.Record{
			Seq:          42,
			Kind:         journal.Kind(kind),
			Time:         time.Unix(sec, nsec%int64(time.Second)).In(time.FixedZone("X", 3600)),
			InstanceID:   instance,
			ListenerID:   listener,
			ConnectionID: conn,
			RemoteAddr:   remote,
			MessageType:  msgType,
			ControlID:    controlID,
			PeerIdentity: peerID,
			Payload:      payload,
		}
		enc := journal.AppendRecord(nil, &want)
		if len(enc) != journal.RecordLen(&want) {
			t.Fatalf("journal.RecordLen = %d, encoding is %d bytes", journal.RecordLen(&want), len(enc))
		}
		got, err := journal.DecodeRecord(42, enc)
		if err != nil {
			t.Fatalf("decode(encode(r)): %v", err)
		}
		if len(want.Payload) == 0 {
			want.Payload = nil
		}
		sameRecord(t, &got, &want)
		if len(payload) > 0 && &got.Payload[0] == &enc[len(enc)-len(payload)] {
			t.Fatal("decoded payload aliases the stored value")
		}
	})
}

// benchRecord is a message with every field set and a 1 KiB payload.
func benchRecord() journal.Record {
	r := *journaltest.Message(123456)
	r.Payload = bytes.Repeat([]byte("ABCDEFGHIJKLMNOP"), 64)
	return r
}

// BenchmarkEncode compares this format with version 1 on a 1 KiB message:
// sizing plus encoding into a buffer of exactly that size, as Append does.
func BenchmarkEncode(b *testing.B) {
	r := benchRecord()
	buf := make([]byte, 0, 2048)
	b.Run("v2", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = journal.AppendRecord(buf[:0:journal.RecordLen(&r)], &r)
		}
	})
	b.Run("v1", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = appendV1(buf[:0], &r)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	r := benchRecord()
	v2, v1 := journal.AppendRecord(nil, &r), appendV1(nil, &r)
	for _, c := range []struct {
		name string
		enc  []byte
	}{{"v2", v2}, {"v1", v1}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := journal.DecodeRecord(1, c.enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
