package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

// Fuzzing uses small limits so that the oversize and junk-limit paths are
// reached.
var (
	fuzzLimits = []int{64, 5}
	// fuzzJunkLimits are the MaxJunkBytes tried with lenient framings: the
	// default (beyond any fuzzed input) and limits that a few bytes of junk,
	// or one empty frame of a long delimiter, exceed.
	fuzzJunkLimits = []int{0, 1, 3}
)

// junkLimits returns the MaxJunkBytes worth trying with f: junk only
// counts in lenient framings with markers.
func junkLimits(f Framing) []int {
	if f.Strict || f.Kind == FramingLengthPrefix {
		return []int{0}
	}
	return fuzzJunkLimits
}

// fuzzReader serves data in chunks chosen by splits. For each split byte,
// the low six bits give the chunk size minus one; bit 0x40 makes the read
// fail with a timeout first; bit 0x80 returns the chunk together with an
// error (a timeout, or io.EOF for the last chunk). Like a connection's
// reader, it asks the decoder InFrame and Ready on every read.
type fuzzReader struct {
	d         *Decoder
	data      []byte
	splits    []byte
	i         int
	timedOut  bool
	eofRepeat bool
}

func (r *fuzzReader) Read(p []byte) (int, error) {
	if r.d != nil {
		r.d.InFrame()
		r.d.Ready()
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	s := byte(0x3f)
	if len(r.splits) > 0 {
		s = r.splits[r.i%len(r.splits)]
	}
	if s&0x40 != 0 && !r.timedOut {
		r.timedOut = true
		return 0, timeoutError{}
	}
	r.timedOut = false
	r.i++
	n := copy(p, r.data[:min(int(s&0x3f)+1, len(r.data))])
	r.data = r.data[n:]
	switch {
	case s&0x80 == 0:
		return n, nil
	case len(r.data) == 0:
		return n, io.EOF
	default:
		return n, timeoutError{}
	}
}

// errClass describes a final error so that runs can be compared.
func errClass(tb testing.TB, err error) string {
	var fe *FrameError
	switch {
	case errors.As(err, &fe):
		return fmt.Sprintf("%v at %d", fe.Err, fe.Offset)
	case err == io.EOF, err == io.ErrUnexpectedEOF:
		return err.Error()
	}
	tb.Fatalf("unexpected error %v", err)
	return ""
}

// checkSplitInvariance decodes data in one read and in the chunks given by
// splits and requires the same frames, final error and stats.
func checkSplitInvariance(t *testing.T, f Framing, data, splits []byte) {
	one := NewDecoder(bytes.NewReader(data), f)
	whole := decodeAll(t, one)
	r := &fuzzReader{data: data, splits: splits}
	split := NewDecoder(r, f)
	r.d = split
	parts := decodeAll(t, split)

	if len(whole.frames) != len(parts.frames) {
		t.Fatalf("%v: %d frames in one read, %d in chunks", f, len(whole.frames), len(parts.frames))
	}
	for i := range whole.frames {
		if !bytes.Equal(whole.frames[i], parts.frames[i]) {
			t.Fatalf("%v: frame %d differs: %q vs %q", f, i, whole.frames[i], parts.frames[i])
		}
	}
	if a, b := errClass(t, whole.err), errClass(t, parts.err); a != b {
		t.Fatalf("%v: error %q in one read, %q in chunks", f, a, b)
	}
	if whole.stats != parts.stats {
		t.Fatalf("%v: stats %+v in one read, %+v in chunks", f, whole.stats, parts.stats)
	}
	var fa, fb *FrameError
	if f.Kind != FramingLengthPrefix && errors.As(whole.err, &fa) && errors.As(parts.err, &fb) && !bytes.Equal(fa.Partial, fb.Partial) {
		t.Fatalf("%v: partial %q in one read, %q in chunks", f, fa.Partial, fb.Partial)
	}
}

// encodable reports whether p decodes as itself under f.
func encodable(f Framing, p []byte) bool {
	if len(p) > f.MaxFrameBytes {
		return false
	}
	switch f.Kind {
	case FramingMLLP:
		return bytes.IndexByte(p, mllpStartByte) < 0 && bytes.IndexByte(p, mllpEndByte) < 0
	case FramingDelimiter:
		return len(p) > 0 && bytes.Index(append(bytes.Clone(p), f.Delimiter...), f.Delimiter) == len(p)
	case FramingStartEnd:
		return !bytes.Contains(p, f.Start) && bytes.Index(append(bytes.Clone(p), f.End...), f.End) == len(p)
	}
	return true
}

// checkRoundTrip encodes the pieces of data (cut at the sizes in splits)
// that f can carry and requires the decoder to return exactly them.
func checkRoundTrip(t *testing.T, f Framing, data, splits []byte) {
	var payloads [][]byte
	// A zero split yields an empty payload; the cap on pieces keeps zeros
	// from looping forever.
	for i := 0; len(data) > 0 && i < 256; i++ {
		n := len(data)
		if len(splits) > 0 {
			n = min(int(splits[i%len(splits)]&0x7f), len(data))
		}
		if p := data[:n]; encodable(f, p) {
			payloads = append(payloads, p)
		}
		data = data[n:]
	}
	stream := encodeAll(f, payloads...)
	r := &fuzzReader{data: stream, splits: splits}
	d := NewDecoder(r, f)
	r.d = d
	got := decodeAll(t, d)
	if got.err != io.EOF || got.stats != (DecoderStats{}) || len(got.frames) != len(payloads) {
		t.Fatalf("%v: round trip of %d payloads: %d frames, %v, %+v", f, len(payloads), len(got.frames), got.err, got.stats)
	}
	for i := range payloads {
		if !bytes.Equal(got.frames[i], payloads[i]) {
			t.Fatalf("%v: round trip frame %d: %q, want %q", f, i, got.frames[i], payloads[i])
		}
	}
}

func fuzzFramings(f *testing.F, framings []Framing, seeds [][]byte, check func(*testing.T, Framing, []byte, []byte)) {
	for _, s := range seeds {
		f.Add(s, []byte{0})
		f.Add(s, []byte{1, 2, 3, 0x41, 0x85, 7})
		f.Add(s, []byte{0x3f})
	}
	f.Fuzz(func(t *testing.T, data, splits []byte) {
		for _, fr := range framings {
			for _, junk := range junkLimits(fr) {
				for _, limit := range fuzzLimits {
					fr.MaxFrameBytes, fr.MaxJunkBytes = limit, junk
					check(t, fr, data, splits)
				}
			}
		}
	})
}

func checkBoth(t *testing.T, f Framing, data, splits []byte) {
	checkSplitInvariance(t, f, data, splits)
	checkRoundTrip(t, f, data, splits)
}

func mllpSeeds() [][]byte {
	return [][]byte{
		{},
		[]byte("\x0bMSH|^~\\&|A\x1c\x0d"),
		[]byte("\x0bA\x1c\x0d\x0bB\x1c\x0d"),
		[]byte("junk\r\n\x0bA\x1c\x0d\n\x0bB\x1c\x0bC\x1c"),
		[]byte("\x0bPARTIAL\x0bA\x1c\x0d\x0b"),
		[]byte("\x0b" + string(bytes.Repeat([]byte("x"), 70)) + "\x1c\x0d\x0bok\x1c\x0d"),
		[]byte("\x0bxxxxx\x1c\x0d\x0bxxxxxx\x1c\x0d\x0b\x1c\x0d"),
		[]byte("\x0b\x1c\x1c\x0d\x0b\x0b\x0d\x1c"),
		// A nested start just past the limit of 64.
		[]byte("\x0b" + string(bytes.Repeat([]byte("x"), 65)) + "\x0bA\x1c\x0d"),
		// Junk runs below, at and over the small junk limits.
		[]byte("x\x0bA\x1c\x0dxxx\x0bB\x1c\x0d\rxxxx\x0bC\x1c\x0d"),
	}
}

func FuzzDecodeMLLP(f *testing.F) {
	fuzzFramings(f, []Framing{{Kind: FramingMLLP}}, mllpSeeds(), checkBoth)
}

func FuzzDecodeMLLPStrict(f *testing.F) {
	fuzzFramings(f, []Framing{{Kind: FramingMLLP, Strict: true}}, mllpSeeds(), checkBoth)
}

func FuzzDecodeLengthPrefix(f *testing.F) {
	seeds := [][]byte{
		{},
		{0, 0, 0, 0},
		{0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 0, 0, 0, 0, 1, 'z'},
		{0, 0, 0, 5, 'a', 'b', 'c', 'd', 'e', 0, 0, 0, 6, 1, 2, 3, 4, 5, 6},
		{0, 0, 0, 64},
		{0xff, 0xff, 0xff, 0xff, 1},
		{0, 0},
	}
	fuzzFramings(f, []Framing{{Kind: FramingLengthPrefix}}, seeds, checkBoth)
}

func FuzzDecodeDelimiter(f *testing.F) {
	framings := []Framing{
		{Kind: FramingDelimiter, Delimiter: []byte("\n")},
		{Kind: FramingDelimiter, Delimiter: []byte("\r\n")},
		// Self-overlapping, so that a match can hide inside a near match.
		{Kind: FramingDelimiter, Delimiter: []byte("abab")},
	}
	seeds := [][]byte{
		{},
		[]byte("a\nb\n\n\nc"),
		[]byte("one\r\ntwo\r\r\n\r\nthree\r"),
		[]byte("xabababyabab\nabab\r\n"),
		[]byte("a\n\nb\n\n\n\nc\r\n\r\n\r\nabababababab"),
		[]byte("aaaaaaaa\r\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n"),
	}
	fuzzFramings(f, framings, seeds, checkBoth)
}

func FuzzDecodeStartEnd(f *testing.F) {
	var framings []Framing
	for _, m := range [][2]string{{"\x02", "\x03"}, {"<<", ">>"}, {"ab", "aab"}, {"{{", "}"}} {
		for _, strict := range []bool{false, true} {
			framings = append(framings, Framing{Kind: FramingStartEnd, Strict: strict, Start: []byte(m[0]), End: []byte(m[1])})
		}
	}
	seeds := [][]byte{
		{},
		[]byte("\x02A\x03\x02B\x03"),
		[]byte("junk<<A>>>><<B<<C>>"),
		[]byte("xabcaabab aab abaab"),
		[]byte("{{a}{{b}}{{{c}"),
		[]byte("x<<A>>xxx<<B>>x<x<x<<C>>aaab<<"),
		[]byte("<" + string(bytes.Repeat([]byte("<x"), 40)) + ">>"),
	}
	fuzzFramings(f, framings, seeds, checkBoth)
}
