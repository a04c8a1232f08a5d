package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// testFraming is a framing under test with the payload bytes it cannot carry.
type testFraming struct {
	name      string
	f         Framing
	forbidden string
}

var testFramings = []testFraming{
	{"mllp", Framing{Kind: FramingMLLP}, "\x0b\x1c"},
	{"mllp-strict", Framing{Kind: FramingMLLP, Strict: true}, "\x0b\x1c"},
	{"length-prefix", Framing{Kind: FramingLengthPrefix}, ""},
	{"delimiter-lf", Framing{Kind: FramingDelimiter, Delimiter: []byte("\n")}, "\n"},
	{"delimiter-crlf", Framing{Kind: FramingDelimiter, Delimiter: []byte("\r\n")}, "\n"},
	{"start-end", Framing{Kind: FramingStartEnd, Start: []byte{0x02}, End: []byte{0x03}}, "\x02\x03"},
	{"start-end-strict", Framing{Kind: FramingStartEnd, Strict: true, Start: []byte{0x02}, End: []byte{0x03}}, "\x02\x03"},
	{"start-end-multi", Framing{Kind: FramingStartEnd, Start: []byte("<<"), End: []byte(">>")}, "<>"},
}

// clean returns a copy of p without the bytes tf cannot carry.
func (tf testFraming) clean(p []byte) []byte {
	out := make([]byte, 0, len(p))
	for _, b := range p {
		if strings.IndexByte(tf.forbidden, b) < 0 {
			out = append(out, b)
		}
	}
	return out
}

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "hl7", "testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// binaryPayload holds every byte value and sequences that are not UTF-8.
func binaryPayload() []byte {
	p := []byte("\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\x00\x00")
	for i := range 256 {
		p = append(p, byte(i))
	}
	return p
}

func encodeAll(f Framing, payloads ...[]byte) []byte {
	var b []byte
	for _, p := range payloads {
		b = f.AppendFrame(b, p)
	}
	return b
}

// step is one scripted Read result: data (possibly returned over several
// reads when p is small), then err with the last of it.
type step struct {
	data []byte
	err  error
}

// scriptReader plays its steps, then returns io.EOF.
type scriptReader struct {
	steps []step
	reads int
}

func (r *scriptReader) Read(p []byte) (int, error) {
	r.reads++
	if len(r.steps) == 0 {
		return 0, io.EOF
	}
	s := &r.steps[0]
	n := copy(p, s.data)
	s.data = s.data[n:]
	if len(s.data) > 0 {
		return n, nil
	}
	r.steps = r.steps[1:]
	return n, s.err
}

// chunks splits b into steps whose sizes cycle through sizes.
func chunks(b []byte, sizes ...int) []step {
	var steps []step
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		steps = append(steps, step{data: b[:n]})
		b = b[n:]
	}
	return steps
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var _ net.Error = timeoutError{}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readers returns the ways a test stream is delivered: all at once, byte
// by byte, with the data carrying io.EOF, in halves and in scripted chunks.
func readers(stream []byte) map[string]io.Reader {
	return map[string]io.Reader{
		"one-read": bytes.NewReader(stream),
		"one-byte": iotest.OneByteReader(bytes.NewReader(stream)),
		"data-eof": iotest.DataErrReader(bytes.NewReader(stream)),
		"half":     iotest.HalfReader(bytes.NewReader(stream)),
		"chunks":   &scriptReader{steps: chunks(stream, 3, 1, 17, 250, 4093, 65536)},
	}
}

// decoded is everything a decoder produced from a stream.
type decoded struct {
	frames [][]byte
	err    error
	stats  DecoderStats
}

// decodeAll calls Next until an error other than a timeout (the test
// readers never time out twice in a row), checking the memory bound after
// every call.
func decodeAll(tb testing.TB, d *Decoder) decoded {
	tb.Helper()
	var out decoded
	for {
		p, err := d.Next()
		if len(d.buf) > d.maxBuf || cap(d.buf) != len(d.buf) {
			tb.Fatalf("buffer capacity %d exceeds the bound %d", cap(d.buf), d.maxBuf)
		}
		if err != nil {
			if isTimeout(err) {
				continue
			}
			out.err, out.stats = err, d.Stats()
			return out
		}
		if len(p) > d.limit {
			tb.Fatalf("frame of %d bytes exceeds the limit %d", len(p), d.limit)
		}
		out.frames = append(out.frames, bytes.Clone(p))
	}
}

func checkFrames(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d: got %d bytes %.40q, want %d bytes %.40q", i, len(got[i]), got[i], len(want[i]), want[i])
		}
	}
}

func TestDecoderDeliversFrames(t *testing.T) {
	adt := readTestdata(t, "adt_a01_v25.hl7")
	large := readTestdata(t, "oru_r01_embedded_pdf_270k.hl7")
	sets := []struct {
		name     string
		payloads [][]byte
	}{
		{"single", [][]byte{adt}},
		{"coalesced", [][]byte{
			adt,
			readTestdata(t, "ack_aa_for_MSG00001.hl7"),
			readTestdata(t, "adt_a08_latin1.hl7"),
			readTestdata(t, "adt_a08_utf8.hl7"),
			readTestdata(t, "batch_fhs_bhs_3msgs.hl7"),
		}},
		{"large-270k", [][]byte{adt, large, adt}},
		{"binary", [][]byte{binaryPayload(), {0xff}, binaryPayload()}},
	}
	for _, tf := range testFramings {
		for _, set := range sets {
			var want [][]byte
			for _, p := range set.payloads {
				want = append(want, tf.clean(p))
			}
			stream := encodeAll(tf.f, want...)
			for rname, r := range readers(stream) {
				t.Run(tf.name+"/"+set.name+"/"+rname, func(t *testing.T) {
					got := decodeAll(t, NewDecoder(r, tf.f))
					checkFrames(t, got.frames, want)
					if got.err != io.EOF {
						t.Errorf("final error %v, want io.EOF", got.err)
					}
					if got.stats != (DecoderStats{}) {
						t.Errorf("stats %+v, want zero", got.stats)
					}
				})
			}
		}
	}
}

func TestDecoderOversize(t *testing.T) {
	const limit = 1000
	for _, tf := range testFramings {
		f := tf.f
		f.MaxFrameBytes = limit
		fill := func(n int) []byte { return bytes.Repeat([]byte("x"), n) }
		stream := encodeAll(f, fill(limit-1), fill(limit), fill(limit+1))
		oversizeAt := int64(len(encodeAll(f, fill(limit-1), fill(limit))))
		for rname, r := range readers(stream) {
			t.Run(tf.name+"/"+rname, func(t *testing.T) {
				got := decodeAll(t, NewDecoder(r, f))
				checkFrames(t, got.frames, [][]byte{fill(limit - 1), fill(limit)})
				var fe *FrameError
				if !errors.As(got.err, &fe) || !errors.Is(got.err, ErrFrameTooLarge) {
					t.Fatalf("error %v, want a FrameError for ErrFrameTooLarge", got.err)
				}
				if fe.Offset != oversizeAt {
					t.Errorf("offset %d, want %d", fe.Offset, oversizeAt)
				}
				wantPartial := limit
				if f.Kind == FramingLengthPrefix {
					// Detected from the header: only what happens to be buffered.
					wantPartial = min(len(fe.Partial), limit)
				}
				if len(fe.Partial) != wantPartial || !bytes.Equal(fe.Partial, fill(wantPartial)) {
					t.Errorf("partial of %d bytes, want %d", len(fe.Partial), wantPartial)
				}
			})
		}
	}
}

func TestDecoderOversizeDefaultLimit(t *testing.T) {
	t.Run("length-prefix header only", func(t *testing.T) {
		hdr := []byte{0, 0x40, 0, 1} // DefaultMaxFrameBytes + 1
		d := NewDecoder(&scriptReader{steps: []step{{data: hdr, err: timeoutError{}}}}, Framing{Kind: FramingLengthPrefix})
		_, err := d.Next()
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Err != ErrFrameTooLarge || len(fe.Partial) != 0 {
			t.Fatalf("got %v, want ErrFrameTooLarge with an empty partial", err)
		}
	})
	t.Run("mllp", func(t *testing.T) {
		payload := bytes.Repeat([]byte("y"), DefaultMaxFrameBytes+1)
		f := Framing{Kind: FramingMLLP}
		d := NewDecoder(bytes.NewReader(f.AppendFrame(nil, payload)), f)
		got := decodeAll(t, d)
		var fe *FrameError
		if !errors.As(got.err, &fe) || fe.Err != ErrFrameTooLarge || len(fe.Partial) != DefaultMaxFrameBytes {
			t.Fatalf("got %v, want ErrFrameTooLarge with a full partial", got.err)
		}
		if cap(d.buf) > DefaultMaxFrameBytes+4 {
			t.Errorf("buffer grew to %d bytes", cap(d.buf))
		}
	})
}

func TestFrameErrorHidesPayload(t *testing.T) {
	f := Framing{Kind: FramingMLLP, MaxFrameBytes: 16}
	d := NewDecoder(bytes.NewReader(f.AppendFrame(nil, []byte("PID|1||SECRET-PATIENT-ID"))), f)
	_, err := d.Next()
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("error %q must exist and must not contain payload bytes", err)
	}
}

func TestDecoderEOF(t *testing.T) {
	payload := []byte("MSH|^~\\&|A")
	for _, tf := range testFramings {
		t.Run(tf.name, func(t *testing.T) {
			enc := tf.f.AppendFrame(nil, payload)
			complete := len(enc)
			if tf.f.Kind == FramingMLLP && !tf.f.Strict {
				complete-- // lenient MLLP accepts a frame without its CR
			}
			for cut := 1; cut < complete; cut++ {
				got := decodeAll(t, NewDecoder(iotest.OneByteReader(bytes.NewReader(enc[:cut])), tf.f))
				if got.err != io.ErrUnexpectedEOF || len(got.frames) != 0 {
					t.Fatalf("cut at %d: %d frames, error %v; want io.ErrUnexpectedEOF", cut, len(got.frames), got.err)
				}
			}
			for _, n := range []int{0, 1, 3} {
				var payloads [][]byte
				for range n {
					payloads = append(payloads, payload)
				}
				got := decodeAll(t, NewDecoder(bytes.NewReader(encodeAll(tf.f, payloads...)), tf.f))
				checkFrames(t, got.frames, payloads)
				if got.err != io.EOF {
					t.Fatalf("%d frames: error %v, want io.EOF", n, got.err)
				}
			}
		})
	}
}

func TestDecoderMLLPLenientStrict(t *testing.T) {
	type outcome struct {
		frames []string
		err    error // io.EOF, io.ErrUnexpectedEOF or a FrameError's Err
		stats  DecoderStats
	}
	tests := []struct {
		name            string
		chunks          []string
		lenient, strict outcome
	}{{
		name:    "junk before start",
		chunks:  []string{"xx\x0bA\x1c\x0d"},
		lenient: outcome{frames: []string{"A"}, err: io.EOF, stats: DecoderStats{JunkBytes: 2}},
		strict:  outcome{err: ErrJunk},
	}, {
		name:    "missing final CR",
		chunks:  []string{"\x0bA\x1c\x0bB\x1c\x0d"},
		lenient: outcome{frames: []string{"A", "B"}, err: io.EOF, stats: DecoderStats{MissingTrailers: 1}},
		strict:  outcome{err: ErrMissingTrailer},
	}, {
		name:    "missing CR at end of stream",
		chunks:  []string{"\x0bA\x1c"},
		lenient: outcome{frames: []string{"A"}, err: io.EOF, stats: DecoderStats{MissingTrailers: 1}},
		strict:  outcome{err: io.ErrUnexpectedEOF},
	}, {
		name:    "CR in the next read",
		chunks:  []string{"\x0bA\x1c", "\x0d\x0bB\x1c", "\x0d"},
		lenient: outcome{frames: []string{"A", "B"}, err: io.EOF},
		strict:  outcome{frames: []string{"A", "B"}, err: io.EOF},
	}, {
		name:    "nested start",
		chunks:  []string{"\x0bPARTIAL\x0bA\x1c\x0d"},
		lenient: outcome{frames: []string{"A"}, err: io.EOF, stats: DecoderStats{DiscardedPartials: 1}},
		strict:  outcome{err: ErrNestedStart},
	}, {
		name:    "CR LF between frames",
		chunks:  []string{"\x0bA\x1c\x0d\r\n\x0bB\x1c\x0d"},
		lenient: outcome{frames: []string{"A", "B"}, err: io.EOF, stats: DecoderStats{JunkBytes: 2}},
		strict:  outcome{frames: []string{"A"}, err: ErrJunk},
	}, {
		name:    "junk after last frame",
		chunks:  []string{"\x0bA\x1c\x0d", "\n"},
		lenient: outcome{frames: []string{"A"}, err: io.EOF, stats: DecoderStats{JunkBytes: 1}},
		strict:  outcome{frames: []string{"A"}, err: ErrJunk},
	}}
	for _, tt := range tests {
		for _, strict := range []bool{false, true} {
			want := tt.lenient
			if strict {
				want = tt.strict
			}
			stream := []byte(strings.Join(tt.chunks, ""))
			rs := readers(stream)
			var steps []step
			for _, c := range tt.chunks {
				steps = append(steps, step{data: []byte(c)})
			}
			rs["script"] = &scriptReader{steps: steps}
			for rname, r := range rs {
				t.Run(fmt.Sprintf("%s/strict=%v/%s", tt.name, strict, rname), func(t *testing.T) {
					got := decodeAll(t, NewDecoder(r, Framing{Kind: FramingMLLP, Strict: strict}))
					var frames []string
					for _, p := range got.frames {
						frames = append(frames, string(p))
					}
					if fmt.Sprint(frames) != fmt.Sprint(want.frames) {
						t.Errorf("frames %q, want %q", frames, want.frames)
					}
					if !errors.Is(got.err, want.err) {
						t.Errorf("error %v, want %v", got.err, want.err)
					}
					if got.stats != want.stats {
						t.Errorf("stats %+v, want %+v", got.stats, want.stats)
					}
				})
			}
		}
	}
}

func TestDecoderReaderTimeout(t *testing.T) {
	payload := []byte("MSH|^~\\&|SENDER|FAC|RCV|FAC|20260101||ADT^A01|MSG1|P|2.5\rPID|1\r")
	for _, tf := range testFramings {
		enc := tf.f.AppendFrame(nil, payload)
		tests := []struct {
			name        string
			steps       []step
			wantInFrame bool
		}{
			{"mid-frame", []step{{data: enc[:5]}, {err: timeoutError{}}, {data: enc[5:]}}, true},
			{"with the data", []step{{data: enc[:5], err: timeoutError{}}, {data: enc[5:]}}, true},
			{"between frames", []step{{data: enc}, {err: timeoutError{}}, {data: enc}}, false},
		}
		for _, tt := range tests {
			t.Run(tf.name+"/"+tt.name, func(t *testing.T) {
				d := NewDecoder(&scriptReader{steps: tt.steps}, tf.f)
				var frames [][]byte
				for {
					p, err := d.Next()
					if err == nil {
						frames = append(frames, bytes.Clone(p))
						continue
					}
					if !isTimeout(err) {
						t.Fatalf("got %v before the timeout", err)
					}
					if d.InFrame() != tt.wantInFrame || d.Ready() {
						t.Fatalf("after timeout: InFrame %v, Ready %v; want %v, false", d.InFrame(), d.Ready(), tt.wantInFrame)
					}
					break
				}
				got := decodeAll(t, d)
				frames = append(frames, got.frames...)
				want := [][]byte{payload}
				if !tt.wantInFrame {
					want = append(want, payload)
				}
				checkFrames(t, frames, want)
				if got.err != io.EOF {
					t.Fatalf("final error %v, want io.EOF", got.err)
				}
			})
		}
	}
}

func TestDecoderReadsOnlyWhenNeeded(t *testing.T) {
	f := Framing{Kind: FramingMLLP}
	r := &scriptReader{steps: []step{{data: encodeAll(f, []byte("A"), []byte("B"), []byte("C"))}}}
	d := NewDecoder(r, f)
	for i, want := range []string{"A", "B", "C"} {
		p, err := d.Next()
		if err != nil || string(p) != want {
			t.Fatalf("frame %d: %q, %v", i, p, err)
		}
		if ready := d.Ready(); ready != (i < 2) {
			t.Errorf("after frame %d: Ready %v", i, ready)
		}
	}
	if r.reads != 1 {
		t.Errorf("%d reads, want 1", r.reads)
	}
}

func TestDecoderAppendToFrameIsSafe(t *testing.T) {
	f := Framing{Kind: FramingDelimiter, Delimiter: []byte("\n")}
	d := NewDecoder(strings.NewReader("A\nB\n"), f)
	p, _ := d.Next()
	_ = append(p, "XXXX"...)
	if p, err := d.Next(); err != nil || string(p) != "B" {
		t.Fatalf("second frame %q, %v; want B", p, err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	payloads := [][]byte{
		readTestdata(t, "adt_a01_v25.hl7"),
		binaryPayload(),
		readTestdata(t, "oru_r01_embedded_pdf_270k.hl7"),
	}
	for _, tf := range testFramings {
		t.Run(tf.name, func(t *testing.T) {
			var want [][]byte
			var appended []byte
			var written bytes.Buffer
			for _, p := range payloads {
				p = tf.clean(p)
				want = append(want, p)
				before := len(appended)
				appended = tf.f.AppendFrame(appended, p)
				if got := len(appended) - before - len(p); got != tf.f.Overhead() {
					t.Errorf("AppendFrame added %d bytes, Overhead says %d", got, tf.f.Overhead())
				}
				bufs := tf.f.Envelope(p)
				if _, err := bufs.WriteTo(&written); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(appended, written.Bytes()) {
				t.Fatal("AppendFrame and Envelope disagree")
			}
			got := decodeAll(t, NewDecoder(bytes.NewReader(appended), tf.f))
			checkFrames(t, got.frames, want)
			if got.err != io.EOF {
				t.Fatalf("final error %v", got.err)
			}
		})
	}
}

func TestDecoderMemory(t *testing.T) {
	f := Framing{Kind: FramingMLLP}
	small := readTestdata(t, "adt_a01_v25.hl7")
	large := readTestdata(t, "oru_r01_embedded_pdf_270k.hl7")

	t.Run("idle", func(t *testing.T) {
		d := NewDecoder(&scriptReader{steps: []step{{err: timeoutError{}}}}, f)
		if _, err := d.Next(); !isTimeout(err) {
			t.Fatalf("got %v, want the timeout", err)
		}
		if cap(d.buf) > initialBufSize {
			t.Errorf("idle buffer capacity %d", cap(d.buf))
		}
	})
	for name, steps := range map[string][]step{
		"separate reads": append(chunks(f.AppendFrame(nil, large), 64<<10), step{data: f.AppendFrame(nil, small)}),
		"one read":       {{data: encodeAll(f, large, small)}},
	} {
		t.Run("shrinks after a large frame/"+name, func(t *testing.T) {
			d := NewDecoder(&scriptReader{steps: steps}, f)
			if p, err := d.Next(); err != nil || len(p) != len(large) {
				t.Fatalf("large frame: %d bytes, %v", len(p), err)
			}
			if cap(d.buf) <= initialBufSize {
				t.Fatalf("buffer did not grow: %d", cap(d.buf))
			}
			if p, err := d.Next(); err != nil || !bytes.Equal(p, small) {
				t.Fatalf("small frame: %d bytes, %v", len(p), err)
			}
			if cap(d.buf) > initialBufSize {
				t.Errorf("buffer capacity %d after a small frame, want <= %d", cap(d.buf), initialBufSize)
			}
		})
	}
}

func TestFramingValidate(t *testing.T) {
	tests := []struct {
		name    string
		f       Framing
		wantErr string
	}{
		{"mllp", Framing{Kind: FramingMLLP}, ""},
		{"mllp strict max", Framing{Kind: FramingMLLP, Strict: true, MaxFrameBytes: MaxFrameBytesLimit}, ""},
		{"length-prefix", Framing{Kind: FramingLengthPrefix}, ""},
		{"delimiter", Framing{Kind: FramingDelimiter, Delimiter: []byte("\r\n")}, ""},
		{"start-end", Framing{Kind: FramingStartEnd, Start: []byte{2}, End: []byte{3}}, ""},
		{"start inside end", Framing{Kind: FramingStartEnd, Start: []byte("ab"), End: []byte("aab")}, ""},
		{"unknown kind", Framing{Kind: 9}, "unknown framing kind 9"},
		{"negative max", Framing{Kind: FramingMLLP, MaxFrameBytes: -1}, "must not be negative"},
		{"max too large", Framing{Kind: FramingMLLP, MaxFrameBytes: MaxFrameBytesLimit + 1}, "exceeds the limit"},
		{"empty delimiter", Framing{Kind: FramingDelimiter}, "non-empty Delimiter"},
		{"long delimiter", Framing{Kind: FramingDelimiter, Delimiter: make([]byte, 17)}, "longer than 16"},
		{"empty start", Framing{Kind: FramingStartEnd, End: []byte{3}}, "non-empty Start and End"},
		{"empty end", Framing{Kind: FramingStartEnd, Start: []byte{2}}, "non-empty Start and End"},
		{"long start", Framing{Kind: FramingStartEnd, Start: make([]byte, 17), End: []byte{3}}, "at most 16 bytes"},
		{"end inside start", Framing{Kind: FramingStartEnd, Start: []byte("<E>"), End: []byte("E")}, "End must not occur inside Start"},
		{"start equals end", Framing{Kind: FramingStartEnd, Start: []byte("|"), End: []byte("|")}, "End must not occur inside Start"},
		{"strict delimiter", Framing{Kind: FramingDelimiter, Delimiter: []byte("\n"), Strict: true}, "Strict only applies"},
		{"delimiter on mllp", Framing{Kind: FramingMLLP, Delimiter: []byte("\n")}, "only used by delimiter"},
		{"start on mllp", Framing{Kind: FramingMLLP, Start: []byte{2}}, "only used by start-end"},
	}
	t.Run("zero value", func(t *testing.T) {
		if err := (Framing{}).Validate(); err == nil || !strings.Contains(err.Error(), "unknown framing kind 0") {
			t.Fatalf("Validate of the zero value = %v, want unknown framing kind 0", err)
		}
		if got := (Framing{}).WithDefaults(); got.Kind != FramingMLLP || got.Validate() != nil {
			t.Fatalf("zero value with defaults = %v (%v), want valid MLLP", got, got.Validate())
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.f.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if _, nerr := NewDecoder(strings.NewReader(""), tt.f).Next(); nerr == nil || nerr.Error() != err.Error() {
				t.Fatalf("Next on an invalid framing returned %v", nerr)
			}
		})
	}
}

func TestFramingString(t *testing.T) {
	tests := []struct {
		f    Framing
		want string
	}{
		{Framing{Kind: FramingMLLP}, "mllp"},
		{Framing{Kind: FramingMLLP, Strict: true}, "mllp(strict)"},
		{Framing{Kind: FramingMLLP, MaxFrameBytes: DefaultMaxFrameBytes}, "mllp"},
		{Framing{Kind: FramingLengthPrefix, MaxFrameBytes: 1 << 20}, "length-prefix(max=1048576)"},
		{Framing{Kind: FramingDelimiter, Delimiter: []byte("\n")}, `delimiter("\n")`},
		{Framing{Kind: FramingDelimiter, Delimiter: []byte("\r\n")}, `delimiter("\r\n")`},
		{Framing{Kind: FramingStartEnd, Start: []byte{2}, End: []byte{3}}, "start-end(0x02,0x03)"},
		{Framing{Kind: FramingStartEnd, Strict: true, Start: []byte("<<"), End: []byte{3, 13}}, "start-end(0x3c3c,0x030d,strict)"},
		{Framing{}, "framing(0)"},
	}
	for _, tt := range tests {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("%#v: got %s, want %s", tt.f, got, tt.want)
		}
	}
	if got := (Framing{Kind: FramingMLLP}).WithDefaults().MaxFrameBytes; got != DefaultMaxFrameBytes {
		t.Errorf("WithDefaults: MaxFrameBytes %d", got)
	}
	if got := (Framing{Kind: FramingMLLP, MaxFrameBytes: 10}).WithDefaults().MaxFrameBytes; got != 10 {
		t.Errorf("WithDefaults overrode MaxFrameBytes: %d", got)
	}
}
