package journal

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

func sameRecord(t *testing.T, got, want *Record) {
	t.Helper()
	if got.Seq != want.Seq ||
		!got.Time.Equal(want.Time) || got.Time.Location() != time.UTC ||
		got.ListenerID != want.ListenerID ||
		got.ConnectionID != want.ConnectionID ||
		got.RemoteAddr != want.RemoteAddr ||
		got.MessageType != want.MessageType ||
		got.ControlID != want.ControlID ||
		!bytes.Equal(got.Payload, want.Payload) {
		t.Fatalf("record mismatch:\n got %+v\nwant %+v", *got, *want)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	good := AppendRecord(nil, &Record{Time: time.Unix(1, 2), ControlID: "c", Payload: []byte("p")})
	cases := map[string][]byte{
		"empty":           nil,
		"version":         append([]byte{2}, good[1:]...),
		"truncated":       good[:len(good)-1],
		"trailing":        append(append([]byte(nil), good...), 0),
		"nanos>=1e9":      append(binary.AppendUvarint([]byte{recordVersion, 0}, uint64(time.Second)), 0, 0, 0, 0, 0, 0),
		"huge length":     {recordVersion, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"varint too long": {recordVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	}
	for name, b := range cases {
		if _, err := DecodeRecord(1, b); err == nil {
			t.Errorf("%s: decode succeeded", name)
		}
	}
}

// FuzzDecodeRecord checks that encoding round-trips every field and that
// decoding arbitrary bytes never panics. The seeds run in every `go test`.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{}, int64(0), int64(0), "", "", "", "", "", []byte{})
	f.Add([]byte{recordVersion}, int64(1700000000), int64(123456789),
		"mllp-1", "conn-7", "10.0.0.1:5000", "ADT^A01", "MSG0001", []byte("MSH|^~\\&|\r"))
	f.Add([]byte{recordVersion, 0xff, 0xff}, int64(-62135596800), int64(999999999),
		"l", "c", "[::1]:1", "ORU^R01", "x", []byte{0x0b, 0x00, 0xff, 0xfe, 0x1c, 0x0d})
	f.Add(AppendRecord(nil, &Record{Time: time.Unix(5, 6), Payload: []byte{1, 2, 3}}),
		int64(1<<62), int64(0), "é", "\x00", "\xff", "", "", []byte(nil))
	f.Fuzz(func(t *testing.T, data []byte, sec, nsec int64, listener, conn, remote, msgType, controlID string, payload []byte) {
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
			Time:         time.Unix(sec, nsec%int64(time.Second)).In(time.FixedZone("X", 3600)),
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
		sameRecord(t, &got, &want)
		if len(payload) > 0 && &got.Payload[0] == &enc[len(enc)-len(payload)] {
			t.Fatal("decoded payload aliases the stored value")
		}
	})
}
