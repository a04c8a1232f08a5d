package journal

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

func sameRecord(t *testing.T, got, want *Record) {
	t.Helper()
	if got.Seq != want.Seq || got.Kind != want.Kind ||
		!got.Time.Equal(want.Time) || got.Time.Location() != time.UTC ||
		got.InstanceID != want.InstanceID ||
		got.ListenerID != want.ListenerID ||
		got.ConnectionID != want.ConnectionID ||
		got.RemoteAddr != want.RemoteAddr ||
		got.MessageType != want.MessageType ||
		got.ControlID != want.ControlID ||
		!bytes.Equal(got.Payload, want.Payload) {
		t.Fatalf("record mismatch:\n got %+v\nwant %+v", *got, *want)
	}
}

// appendV1 writes format version 1 exactly as Switchboard did before record
// kinds (journal/record.go at 8a692d1), so old values stay readable.
func appendV1(dst []byte, r *Record) []byte {
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

func sampleRecords() []Record {
	return []Record{
		{
			Kind:         KindMessage,
			Time:         time.Date(2024, 2, 29, 23, 59, 59, 123456789, time.FixedZone("CET", 3600)),
			InstanceID:   "sb-2",
			ListenerID:   "listener-a",
			ConnectionID: "conn-1",
			RemoteAddr:   "[2001:db8::1]:2575",
			MessageType:  "ORU^R01^ORU_R01",
			ControlID:    "MSG00001",
			Payload:      []byte{0x0b, 0x00, 0xff, 0xfe, 0xc3, 0x28, 0x1c, 0x0d},
		},
		{Kind: KindAck, Time: time.Unix(0, 1), ListenerID: "b", Payload: []byte{}},
		{Kind: KindMessage, Time: time.Unix(-62135596800, 0), ControlID: "\xe9t\xe9"},
		{}, // every field empty, zero time
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for i, r := range sampleRecords() {
		enc := AppendRecord(nil, &r)
		if len(enc) != RecordLen(&r) {
			t.Fatalf("record %d: RecordLen = %d, encoding is %d bytes", i, RecordLen(&r), len(enc))
		}
		got, err := DecodeRecord(7, enc)
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

// TestDecodeVersion1: values stored by the code before record kinds still
// decode, as messages with no instance id.
func TestDecodeVersion1(t *testing.T) {
	for i, r := range sampleRecords() {
		got, err := DecodeRecord(3, appendV1(nil, &r))
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		want := r
		want.Seq, want.Kind, want.InstanceID = 3, KindMessage, ""
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
	enc := AppendRecord(nil, &r)
	enc = protowire.AppendTag(enc, 11, protowire.BytesType)
	enc = protowire.AppendString(enc, "CN=lab.example.org")
	enc = protowire.AppendTag(enc, 12, protowire.VarintType)
	enc = protowire.AppendVarint(enc, 2)
	enc = protowire.AppendTag(enc, 1000, protowire.Fixed64Type)
	enc = protowire.AppendFixed64(enc, 42)
	enc = protowire.AppendTag(enc, 13, protowire.Fixed32Type)
	enc = protowire.AppendFixed32(enc, 42)
	enc = protowire.AppendTag(enc, fieldControlID, protowire.BytesType)
	enc = protowire.AppendString(enc, "MSG00002")
	got, err := DecodeRecord(1, enc)
	if err != nil {
		t.Fatal(err)
	}
	r.Seq, r.ControlID = 1, "MSG00002"
	sameRecord(t, &got, &r)
}

func TestDecodeRejectsMalformed(t *testing.T) {
	v1 := appendV1(nil, &Record{Time: time.Unix(1, 2), ControlID: "c", Payload: []byte("p")})
	v2 := AppendRecord(nil, &Record{Kind: KindMessage, Time: time.Unix(1, 2), ControlID: "c", Payload: []byte("p")})
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
		if _, err := DecodeRecord(1, b); err == nil {
			t.Errorf("%s: decode succeeded", name)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindUnspecified: "unspecified", KindMessage: "message", KindAck: "ack", 9: "Kind(9)"} {
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
		f.Add(AppendRecord(nil, &r), uint32(7), int64(1<<62), int64(0), "é", "\x00", "\xff", "", "", "", []byte(nil))
		f.Add(appendV1(nil, &r), uint32(0), int64(5), int64(6), "", "", "", "", "", "", []byte{1, 2, 3})
	}
	f.Fuzz(func(t *testing.T, data []byte, kind uint32, sec, nsec int64, instance, listener, conn, remote, msgType, controlID string, payload []byte) {
		// Arbitrary bytes: must not panic; anything accepted must re-encode
		// to something that decodes to the same record.
		if r, err := DecodeRecord(9, data); err == nil {
			again, err := DecodeRecord(9, AppendRecord(nil, &r))
			if err != nil {
				t.Fatalf("re-decode: %v", err)
			}
			sameRecord(t, &again, &r)
		}

		want := Record{
			Seq:          42,
			Kind:         Kind(kind),
			Time:         time.Unix(sec, nsec%int64(time.Second)).In(time.FixedZone("X", 3600)),
			InstanceID:   instance,
			ListenerID:   listener,
			ConnectionID: conn,
			RemoteAddr:   remote,
			MessageType:  msgType,
			ControlID:    controlID,
			Payload:      payload,
		}
		enc := AppendRecord(nil, &want)
		if len(enc) != RecordLen(&want) {
			t.Fatalf("RecordLen = %d, encoding is %d bytes", RecordLen(&want), len(enc))
		}
		got, err := DecodeRecord(42, enc)
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

func benchRecord() Record {
	p := make([]byte, 1024)
	for i := range p {
		p[i] = byte('A' + i%26)
	}
	return Record{
		Kind:         KindMessage,
		Time:         time.Now(),
		ListenerID:   "listener-1",
		ConnectionID: "conn-12345",
		RemoteAddr:   "10.20.30.40:51234",
		MessageType:  "ADT^A01",
		ControlID:    "MSG000123456",
		Payload:      p,
	}
}

// BenchmarkEncode compares this format with version 1 on a 1 KiB message:
// sizing plus encoding into a buffer of exactly that size, as Append does.
func BenchmarkEncode(b *testing.B) {
	r := benchRecord()
	buf := make([]byte, 0, 2048)
	b.Run("v2", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendRecord(buf[:0:RecordLen(&r)], &r)
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
	v2, v1 := AppendRecord(nil, &r), appendV1(nil, &r)
	for _, c := range []struct {
		name string
		enc  []byte
	}{{"v2", v2}, {"v1", v1}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeRecord(1, c.enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
