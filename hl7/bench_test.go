package hl7

import "testing"

func BenchmarkParseHeader(b *testing.B) {
	msg := readTestdata(b, "adt_a01_v25.hl7")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseHeader(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendAck(b *testing.B) {
	h, err := ParseHeader(readTestdata(b, "adt_a01_v25.hl7"))
	if err != nil {
		b.Fatal(err)
	}
	req := AckRequest{Code: AA, ControlID: ackID, Time: ackTime}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendAck(buf[:0], h, req)
	}
}

func BenchmarkParseAck(b *testing.B) {
	msg := readTestdata(b, "ack_ae_with_err.hl7")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseAck(msg); err != nil {
			b.Fatal(err)
		}
	}
}
