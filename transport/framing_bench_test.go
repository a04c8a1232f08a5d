package transport

import (
	"bytes"
	"testing"
)

// loopReader serves stream endlessly, at most chunk bytes per read and
// never across a boundary in bounds (offsets in stream; nil means none).
type loopReader struct {
	stream []byte
	bounds []int
	chunk  int
	off, b int
}

func (r *loopReader) Read(p []byte) (int, error) {
	end := len(r.stream)
	if len(r.bounds) > 0 {
		end = r.bounds[r.b]
	}
	n := copy(p, r.stream[r.off:min(end, r.off+r.chunk)])
	r.off += n
	if r.off == end && len(r.bounds) > 0 {
		r.b = (r.b + 1) % len(r.bounds)
	}
	if r.off == len(r.stream) {
		r.off = 0
	}
	return n, nil
}

func BenchmarkDecodeMLLP(b *testing.B) {
	f := Framing{Kind: FramingMLLP}
	// A 260-byte HL7-like message.
	small := bytes.Repeat([]byte("OBX|1|NM|8867-4^Heart rate^LN||72|/min\r"), 7)[:260]
	const frames = 1000
	var stream []byte
	var bounds []int
	for range frames {
		stream = f.AppendFrame(stream, small)
		bounds = append(bounds, len(stream))
	}
	large := readTestdata(b, "oru_r01_embedded_pdf_270k.hl7")
	largeFrame := f.AppendFrame(nil, large)

	cases := []struct {
		name    string
		r       *loopReader
		payload int
	}{
		{"260B/many-per-read", &loopReader{stream: stream, chunk: 64 << 10}, len(small)},
		{"260B/one-per-read", &loopReader{stream: stream, bounds: bounds, chunk: 64 << 10}, len(small)},
		// TCP typically delivers a large message in 64 KiB reads.
		{"270KiB", &loopReader{stream: largeFrame, chunk: 64 << 10}, len(large)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			d := NewDecoder(c.r, f)
			b.SetBytes(int64(c.payload))
			b.ReportAllocs()
			for b.Loop() {
				p, err := d.Next()
				if err != nil || len(p) != c.payload {
					b.Fatalf("got %d bytes, %v", len(p), err)
				}
			}
		})
	}
}
