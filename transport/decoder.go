package transport

import (
	"bytes"
	"encoding/binary"
	"io"
)

// DecoderStats counts the irregularities a lenient decoder tolerated.
type DecoderStats struct {
	// JunkBytes counts bytes skipped outside frames, including the
	// delimiters of empty frames in delimiter framing.
	JunkBytes int64
	// DiscardedPartials counts frames dropped because a new frame start
	// arrived before their end (lenient MLLP and start-end).
	DiscardedPartials int64
	// MissingTrailers counts lenient MLLP frames accepted without the final CR.
	MissingTrailers int64
}

// Decoder reads frames from a byte stream. Whatever the read boundaries,
// it returns the same frames, the same final error and the same final
// stats. An idle decoder holds at most a 4 KiB buffer; the buffer grows to
// what a frame needs (never beyond about MaxFrameBytes) and shrinks back
// after it. A Decoder is not safe for concurrent use.
type Decoder struct {
	r      io.Reader
	kind   FramingKind
	strict bool
	limit  int
	// startM and endM are the frame markers of MLLP, start-end and
	// delimiter framing (startM is empty for delimiter framing).
	startM, endM []byte
	// maxBuf bounds the buffer: the longest span that can still be
	// undecided, so memory stays at about MaxFrameBytes.
	maxBuf int

	buf        []byte // len(buf) == cap(buf)
	head, tail int    // buf[head:tail] is buffered and not yet consumed
	base       int64  // stream offset of buf[0]

	// inFrame: buf[head:] begins with startM, so the payload starts at
	// head+len(startM).
	inFrame bool
	// scanEnd and scanStart are payload offsets up to which the current
	// frame has been searched for endM and a nested startM without a
	// match, so that a large frame is not rescanned on every read.
	scanEnd, scanStart int
	// want is the size of the frame at head when known (length prefix),
	// so that the buffer does not grow past it.
	want int
	// swallowCR: a lenient MLLP frame ended at the last buffered byte; a
	// CR arriving next is its trailer.
	swallowCR bool

	// ready: a frame is buffered at buf[head+from : head+to], and the
	// next frame begins at head+next.
	ready          bool
	from, to, next int

	// junkRun counts junk bytes skipped since the last frame began;
	// maxJunk bounds it.
	junkRun, maxJunk int64

	// budget, when set, is charged for the buffer beyond initialBufSize;
	// reserved is what this decoder holds of it.
	budget   *MemoryBudget
	reserved int64

	pendingErr error // a read error that came with data, returned on the next read
	err        error // sticky: invalid framing or *FrameError
	stats      DecoderStats
}

// NewDecoder returns a decoder reading frames framed by f from r. If f is
// not valid, every call to Next returns the error from f.Validate.
func NewDecoder(r io.Reader, f Framing) *Decoder {
	f = f.WithDefaults()
	d := &Decoder{r: r, kind: f.Kind, strict: f.Strict, limit: f.MaxFrameBytes, maxJunk: int64(f.MaxJunkBytes)}
	if err := f.Validate(); err != nil {
		d.err = err
		return d
	}
	switch f.Kind {
	case FramingMLLP:
		d.startM, d.endM = mllpHeader[:1:1], mllpTrailer[:1:1]
	case FramingDelimiter:
		d.endM = bytes.Clone(f.Delimiter)
	case FramingStartEnd:
		d.startM, d.endM = bytes.Clone(f.Start), bytes.Clone(f.End)
	}
	if f.Kind == FramingLengthPrefix {
		d.maxBuf = lengthPrefixBytes + d.limit
	} else {
		// Start, payload, then enough to rule out an end or nested start
		// at any offset <= limit (see scanMarked). It also covers the byte
		// after an MLLP end that strict mode waits for.
		d.maxBuf = 2*len(d.startM) + d.limit + len(d.endM)
	}
	return d
}

// Stats returns the counts of tolerated irregularities so far.
func (d *Decoder) Stats() DecoderStats { return d.stats }

// Ready reports whether Next would return without reading: a complete
// frame or an error is already buffered.
func (d *Decoder) Ready() bool {
	d.scan()
	return d.ready || d.err != nil || d.pendingErr != nil
}

// InFrame reports whether the stream is not at a frame boundary: bytes of
// a frame that Next has not returned yet are buffered. Once the buffered
// complete frames (see Ready) have been read, it means an incomplete frame
// is pending, for which the caller may set a completion deadline or wait
// before closing.
//
// InFrame and Ready may be called from the reader's Read while Next is
// reading, for example to choose a read deadline.
func (d *Decoder) InFrame() bool {
	d.scan()
	return d.head < d.tail
}

// Next returns the next frame's payload. The slice is valid only until the
// next call to Next.
//
// It returns io.EOF at a clean frame boundary, io.ErrUnexpectedEOF if the
// stream ends inside a frame and a *FrameError for a protocol violation;
// after a FrameError the decoder keeps returning it. Any other error from
// the reader (for example a timeout) is returned as is and the decoder
// stays usable: calling Next again continues where it stopped.
func (d *Decoder) Next() ([]byte, error) {
	if d.err != nil {
		return nil, d.err
	}
	d.shrink()
	for {
		d.scan()
		if d.err != nil {
			return nil, d.err
		}
		if d.ready {
			// The cap keeps a caller's append from overwriting the next frame.
			p := d.buf[d.head+d.from : d.head+d.to : d.head+d.to]
			d.head += d.next
			d.ready, d.inFrame, d.want = false, false, 0
			return p, nil
		}
		if err := d.fill(); err != nil {
			if err == io.EOF {
				return nil, d.atEOF()
			}
			return nil, err
		}
	}
}

func (d *Decoder) atEOF() error {
	if d.swallowCR {
		d.swallowCR = false
		d.stats.MissingTrailers++
	}
	if d.head < d.tail {
		return io.ErrUnexpectedEOF
	}
	return io.EOF
}

// shrink returns to a small buffer after a large frame so that an idle
// connection does not keep it. Back-to-back large frames therefore regrow
// the buffer each time; that is the price of cheap idle connections.
func (d *Decoder) shrink() {
	if len(d.buf) <= initialBufSize || d.tail-d.head > initialBufSize/2 {
		return
	}
	nb := make([]byte, initialBufSize)
	d.base += int64(d.head)
	d.tail = copy(nb, d.buf[d.head:d.tail])
	d.head = 0
	d.buf = nb
	d.Release()
}

// Release gives back what the decoder holds of its MemoryBudget. The
// connection calls it when it closes; the decoder must not be used after
// that, except that shrink calls it when the buffer is back to its idle size.
func (d *Decoder) Release() {
	if d.reserved > 0 {
		d.budget.release(d.reserved)
		d.reserved = 0
	}
}

// grow replaces the buffer by one of size bytes, charging the budget for
// what exceeds the idle size. It reports false (and sets d.err) when the
// budget cannot pay.
func (d *Decoder) grow(size int) bool {
	if d.budget != nil {
		need := int64(max(size-initialBufSize, 0)) - d.reserved
		if need > 0 {
			if !d.budget.reserve(need) {
				d.err = &FrameError{Err: ErrNoMemory, Partial: fullSlice(d.payloadSoFar()), Offset: d.base + int64(d.head)}
				return false
			}
			d.reserved += need
		}
	}
	nb := make([]byte, size)
	copy(nb, d.buf[:d.tail])
	d.buf = nb
	return true
}

// payloadSoFar returns the buffered bytes of the frame at head, without its
// start marker (at most limit bytes).
func (d *Decoder) payloadSoFar() []byte {
	b := d.buf[d.head:d.tail]
	skip := len(d.startM)
	if d.kind == FramingLengthPrefix {
		skip = lengthPrefixBytes
	}
	b = b[min(skip, len(b)):]
	return b[:min(len(b), d.limit)]
}

// fill reads more bytes into the free tail of the buffer, first moving the
// unconsumed bytes to the front and growing the buffer only if a frame
// does not fit.
func (d *Decoder) fill() error {
	if err := d.pendingErr; err != nil {
		d.pendingErr = nil
		return err
	}
	if d.head > 0 {
		d.base += int64(d.head)
		d.tail = copy(d.buf, d.buf[d.head:d.tail])
		d.head = 0
	}
	size := len(d.buf)
	if size == 0 {
		size = min(initialBufSize, d.maxBuf)
	}
	// Grow only when the buffer is full, doubling, and never past a known
	// frame size: memory follows the bytes that arrived, not the size a
	// length prefix announces (4 bytes must not hold 4 MiB of the budget).
	if need := d.tail + 1; need > size {
		size = max(need, 2*size)
		if d.want >= need {
			size = min(size, d.want)
		}
		size = min(size, d.maxBuf)
	}
	if size != len(d.buf) && !d.grow(size) {
		return d.err
	}
	for range maxEmptyReads {
		n, err := d.r.Read(d.buf[d.tail:])
		d.tail += n
		if n > 0 {
			// Data first; the error comes on the next read.
			d.pendingErr = err
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// scan looks for the next frame in the buffered bytes, consuming what
// lenient mode skips. It sets d.ready, sets d.err or leaves things as they
// are when more input is needed. It never moves buffered bytes, so the
// last returned frame stays valid.
func (d *Decoder) scan() {
	if d.ready || d.err != nil {
		return
	}
	if d.kind == FramingLengthPrefix {
		d.scanLengthPrefix()
		return
	}
	for !d.ready && d.err == nil {
		if d.swallowCR && d.head < d.tail {
			d.swallowCR = false
			if d.buf[d.head] == mllpTrailerByte {
				d.head++
			} else {
				d.stats.MissingTrailers++
			}
		}
		if !d.inFrame && !d.findStart() {
			return
		}
		if !d.scanMarked() {
			return
		}
	}
}

func (d *Decoder) scanLengthPrefix() {
	b := d.buf[d.head:d.tail]
	if len(b) < lengthPrefixBytes {
		return
	}
	n := binary.BigEndian.Uint32(b)
	if n > uint32(d.limit) {
		p := b[lengthPrefixBytes:min(len(b), lengthPrefixBytes+d.limit)]
		d.err = &FrameError{Err: ErrFrameTooLarge, Partial: fullSlice(p), Offset: d.base + int64(d.head)}
		return
	}
	d.want = lengthPrefixBytes + int(n)
	if len(b) >= d.want {
		d.setReady(d.head+lengthPrefixBytes, d.head+d.want, d.head+d.want)
	}
}

// findStart positions head on a frame start, skipping junk in lenient
// mode. It reports whether a frame has begun.
func (d *Decoder) findStart() bool {
	s := d.startM
	b := d.buf[d.head:d.tail]
	if len(s) == 0 {
		// Delimiter framing: a frame begins with the first byte.
		if len(b) == 0 {
			return false
		}
	} else if d.strict {
		n := min(len(b), len(s))
		if !bytes.Equal(b[:n], s[:n]) {
			d.err = &FrameError{Err: ErrJunk, Offset: d.base + int64(d.head)}
			return false
		}
		if n < len(s) {
			return false
		}
	} else {
		i := bytes.Index(b, s)
		if i < 0 {
			// Keep a possible beginning of the start marker; everything
			// before it can never be part of a frame.
			d.skipJunk(len(b) - prefixSuffix(b, s))
			return false
		}
		d.skipJunk(i)
		if d.err != nil {
			return false
		}
	}
	if len(s) > 0 {
		d.junkRun = 0
	}
	d.inFrame = true
	d.scanEnd, d.scanStart = 0, 0
	return true
}

// skipJunk consumes n bytes outside frames. Once more than maxJunk have
// been skipped in a row it stops exactly at the first byte over the limit
// and sets ErrTooMuchJunk, so the outcome (and the count) does not depend on
// how the bytes were split into reads.
func (d *Decoder) skipJunk(n int) {
	if over := d.junkRun + int64(n) - d.maxJunk; d.maxJunk > 0 && over > 0 {
		n -= int(over) - 1
		d.err = &FrameError{Err: ErrTooMuchJunk, Offset: d.base + int64(d.head+n-1)}
	}
	d.stats.JunkBytes += int64(n)
	d.junkRun += int64(n)
	d.head += n
}

// prefixSuffix returns the length of the longest suffix of b that is a
// proper prefix of s.
func prefixSuffix(b, s []byte) int {
	for k := min(len(b), len(s)-1); k > 0; k-- {
		if bytes.Equal(b[len(b)-k:], s[:k]) {
			return k
		}
	}
	return 0
}

// scanMarked looks for the end of the frame that starts at head. It
// reports whether it made progress (a frame, a skipped empty frame or a
// discarded partial); false means an error or that more input is needed.
//
// The outcome depends only on the stream's content, never on how much of
// it is buffered: with e the first end marker and s the first start
// marker lying entirely before e, the frame is cut off at s if s exists,
// else it ends at e, and it is too large if that point is beyond limit.
// Everything at or before limit is decided once limit+len(start)+len(end)
// payload bytes are buffered, so no more are ever looked at.
func (d *Decoder) scanMarked() bool {
	payload := d.head + len(d.startM)
	region := d.buf[payload:d.tail]
	window := region[:min(len(region), d.limit+len(d.startM)+len(d.endM))]

	e := index(window, d.endM, &d.scanEnd)
	s := -1
	if len(d.startM) > 0 {
		// Without an end in view, a start is only known to be nested when
		// an end arriving later could not begin before it is complete.
		bound := max(0, len(window)-len(d.endM)+1)
		if e >= 0 {
			bound = e
		}
		s = index(window[:bound], d.startM, &d.scanStart)
	}

	switch {
	case s >= 0:
		if s > d.limit {
			d.tooLarge(region)
			return false
		}
		if d.strict {
			d.err = &FrameError{Err: ErrNestedStart, Offset: d.base + int64(payload+s)}
			return false
		}
		d.stats.DiscardedPartials++
		d.head = payload + s
		d.scanEnd, d.scanStart = 0, 0
		return true
	case e >= 0:
		if e > d.limit {
			d.tooLarge(region)
			return false
		}
		next := payload + e + len(d.endM)
		if d.kind == FramingMLLP {
			switch {
			case next == d.tail && d.strict:
				return false
			case next == d.tail:
				// Return the frame now rather than wait for a CR that may
				// never come; the CR is swallowed if it arrives.
				d.swallowCR = true
			case d.buf[next] == mllpTrailerByte:
				next++
			case d.strict:
				d.err = &FrameError{Err: ErrMissingTrailer, Offset: d.base + int64(next)}
				return false
			default:
				d.stats.MissingTrailers++
			}
		}
		if e == 0 && d.kind == FramingDelimiter {
			d.skipJunk(next - d.head)
			d.inFrame = false
			return true
		}
		d.setReady(payload, payload+e, next)
		return true
	case len(window) >= d.limit+len(d.startM)+len(d.endM):
		d.tooLarge(region)
	}
	return false
}

// index returns the index in b of the first sep starting at or after
// *from, or -1. On a miss it advances *from past the positions that cannot
// start a match even when more bytes are appended to b.
func index(b, sep []byte, from *int) int {
	if i := bytes.Index(b[*from:], sep); i >= 0 {
		return *from + i
	}
	*from = max(*from, len(b)-len(sep)+1)
	return -1
}

func (d *Decoder) tooLarge(payload []byte) {
	d.err = &FrameError{
		Err:     ErrFrameTooLarge,
		Partial: fullSlice(payload[:min(len(payload), d.limit)]),
		Offset:  d.base + int64(d.head),
	}
}

func (d *Decoder) setReady(from, to, next int) {
	d.junkRun = 0
	d.ready = true
	d.from, d.to, d.next = from-d.head, to-d.head, next-d.head
}
