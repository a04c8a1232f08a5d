package transport

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// FramingKind selects how frames are delimited on the wire.
type FramingKind int

const (
	// FramingMLLP is HL7's Minimal Lower Layer Protocol: 0x0B, payload, 0x1C 0x0D.
	FramingMLLP FramingKind = iota + 1
	// FramingLengthPrefix is a 4-byte big-endian payload length followed by the payload.
	FramingLengthPrefix
	// FramingDelimiter ends every payload with Framing.Delimiter (for example "\n" or "\r\n").
	// Empty frames are skipped and counted as junk.
	FramingDelimiter
	// FramingStartEnd wraps every payload in Framing.Start and Framing.End.
	// It behaves like MLLP without the trailing CR.
	FramingStartEnd
)

const (
	mllpStartByte   = 0x0B
	mllpEndByte     = 0x1C
	mllpTrailerByte = 0x0D

	lengthPrefixBytes = 4
	// initialBufSize is what an idle decoder holds: 10,000 idle connections
	// must stay cheap. Only growth beyond it counts against a MemoryBudget.
	initialBufSize = 4 << 10
	// maxEmptyReads mirrors bufio: a reader that keeps returning 0, nil is broken.
	maxEmptyReads = 100
)

// The MLLP markers are shared by every Envelope call; full slice
// expressions keep a caller's append from writing into them.
var (
	mllpHeader  = []byte{mllpStartByte}
	mllpTrailer = []byte{mllpEndByte, mllpTrailerByte}
)

// Errors reported in FrameError.Err.
var (
	// ErrFrameTooLarge means a frame's payload exceeds Framing.MaxFrameBytes.
	ErrFrameTooLarge = errors.New("frame exceeds the maximum size")
	// ErrJunk means bytes outside a frame in strict mode.
	ErrJunk = errors.New("bytes outside a frame")
	// ErrMissingTrailer means that, in strict MLLP, 0x1C was not followed by 0x0D.
	ErrMissingTrailer = errors.New("frame end not followed by the MLLP trailer 0x0D")
	// ErrNestedStart means that, in strict mode, a frame start appeared inside a frame.
	ErrNestedStart = errors.New("frame start inside a frame")
	// ErrTooMuchJunk means that more than Framing.MaxJunkBytes bytes in a
	// row arrived outside frames (lenient mode).
	ErrTooMuchJunk = errors.New("too many bytes outside frames")
	// ErrNoMemory means the frame being received needs more buffer than its
	// connection's MemoryBudget has left.
	ErrNoMemory = errors.New("no memory left for the message")
)

// FrameError reports a framing violation. It never holds payload bytes in
// its message: payloads are PHI.
type FrameError struct {
	// Err is ErrFrameTooLarge, ErrNoMemory, ErrJunk, ErrTooMuchJunk,
	// ErrMissingTrailer or ErrNestedStart.
	Err error
	// Partial holds, for ErrFrameTooLarge and ErrNoMemory, the first bytes of the oversized
	// payload (at most MaxFrameBytes) so that the caller can read an HL7
	// header and answer with a negative ACK before closing. It is valid
	// until the next call to Next. For length-prefix framing it holds only
	// what was already buffered and may be empty. It is payload: never log it.
	Partial []byte
	// Offset is the stream offset of the violation: the first byte of the
	// oversized frame or of the junk, the nested start, or the byte that
	// should have been the MLLP trailer.
	Offset int64
}

// Error implements error.
func (e *FrameError) Error() string {
	return "transport: " + e.Err.Error() + " at stream offset " + strconv.FormatInt(e.Offset, 10)
}

// Unwrap returns e.Err.
func (e *FrameError) Unwrap() error { return e.Err }

func (k FramingKind) String() string {
	switch k {
	case FramingMLLP:
		return "mllp"
	case FramingLengthPrefix:
		return "length-prefix"
	case FramingDelimiter:
		return "delimiter"
	case FramingStartEnd:
		return "start-end"
	}
	return fmt.Sprintf("FramingKind(%d)", int(k))
}

// Framing describes a wire framing. The zero value is not valid until
// WithDefaults makes it lenient MLLP; see Validate.
type Framing struct {
	// Kind selects the framing.
	Kind FramingKind
	// Strict applies to MLLP and start-end framing: bytes outside frames, a
	// frame start inside a frame and (MLLP) a missing CR after 0x1C are
	// errors instead of being skipped or accepted and counted in DecoderStats.
	Strict bool
	// Delimiter ends every payload in delimiter framing.
	Delimiter []byte
	// Start and End surround every payload in start-end framing.
	Start, End []byte
	// MaxFrameBytes limits a payload's size; 0 means DefaultMaxFrameBytes.
	// It is at most MaxFrameBytesLimit.
	MaxFrameBytes int
	// MaxJunkBytes limits how many bytes in a row lenient framing skips
	// outside frames before it gives up (ErrTooMuchJunk); 0 means
	// DefaultMaxJunkBytes.
	MaxJunkBytes int
}

// Validate reports whether f describes a usable framing.
func (f Framing) Validate() error {
	switch {
	case f.Kind < FramingMLLP || f.Kind > FramingStartEnd:
		return fmt.Errorf("transport: unknown framing kind %d", int(f.Kind))
	case f.MaxFrameBytes < 0:
		return fmt.Errorf("transport: MaxFrameBytes must not be negative, got %d", f.MaxFrameBytes)
	case f.MaxFrameBytes > MaxFrameBytesLimit:
		return fmt.Errorf("transport: MaxFrameBytes %d exceeds the limit of %d", f.MaxFrameBytes, MaxFrameBytesLimit)
	case f.MaxJunkBytes < 0:
		return fmt.Errorf("transport: MaxJunkBytes must not be negative, got %d", f.MaxJunkBytes)
	case f.Strict && f.Kind != FramingMLLP && f.Kind != FramingStartEnd:
		return errors.New("transport: Strict only applies to mllp and start-end framing")
	case f.Kind != FramingDelimiter && len(f.Delimiter) > 0:
		return errors.New("transport: Delimiter is only used by delimiter framing")
	case f.Kind != FramingStartEnd && (len(f.Start) > 0 || len(f.End) > 0):
		return errors.New("transport: Start and End are only used by start-end framing")
	}
	switch f.Kind {
	case FramingDelimiter:
		if len(f.Delimiter) == 0 {
			return errors.New("transport: delimiter framing needs a non-empty Delimiter")
		}
		if len(f.Delimiter) > MaxMarkerBytes {
			return fmt.Errorf("transport: Delimiter is longer than %d bytes", MaxMarkerBytes)
		}
	case FramingStartEnd:
		if len(f.Start) == 0 || len(f.End) == 0 {
			return errors.New("transport: start-end framing needs non-empty Start and End")
		}
		if len(f.Start) > MaxMarkerBytes || len(f.End) > MaxMarkerBytes {
			return fmt.Errorf("transport: Start and End must be at most %d bytes", MaxMarkerBytes)
		}
		// A frame start containing End would end the frame it begins, and
		// a lost End could never be detected.
		if bytes.Contains(f.Start, f.End) {
			return errors.New("transport: start-end framing: End must not occur inside Start")
		}
	}
	return nil
}

// WithDefaults returns f with Kind (MLLP), MaxFrameBytes and MaxJunkBytes
// filled in.
func (f Framing) WithDefaults() Framing {
	if f.Kind == 0 {
		f.Kind = FramingMLLP
	}
	if f.MaxFrameBytes == 0 {
		f.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if f.MaxJunkBytes == 0 {
		f.MaxJunkBytes = DefaultMaxJunkBytes
	}
	return f
}

// String describes f for logs and configuration dumps, for example "mllp",
// "mllp(strict)", "length-prefix", `delimiter("\n")` or
// "start-end(0x02,0x03)". A non-default MaxFrameBytes is appended as max=N.
func (f Framing) String() string {
	name := f.Kind.String()
	var args []string
	switch f.Kind {
	case FramingMLLP, FramingLengthPrefix:
	case FramingDelimiter:
		args = append(args, strconv.Quote(string(f.Delimiter)))
	case FramingStartEnd:
		args = append(args, "0x"+hex.EncodeToString(f.Start), "0x"+hex.EncodeToString(f.End))
	default:
		return fmt.Sprintf("framing(%d)", int(f.Kind))
	}
	if f.Strict {
		args = append(args, "strict")
	}
	if f.MaxFrameBytes != 0 && f.MaxFrameBytes != DefaultMaxFrameBytes {
		args = append(args, "max="+strconv.Itoa(f.MaxFrameBytes))
	}
	if len(args) == 0 {
		return name
	}
	return name + "(" + strings.Join(args, ",") + ")"
}

// AppendFrame appends payload framed by f to dst and returns the extended
// slice. It does not check the payload: a payload containing the framing's
// markers, or longer than MaxFrameBytes, will not decode as one frame.
func (f Framing) AppendFrame(dst, payload []byte) []byte {
	for _, b := range f.Envelope(payload) {
		dst = append(dst, b...)
	}
	return dst
}

// Envelope returns the header, payload and trailer of one frame as
// separate slices so that the frame can be written with writev without
// copying the payload. Header and trailer may be shared static slices and
// must not be mutated. Empty parts are left out.
func (f Framing) Envelope(payload []byte) net.Buffers {
	switch f.Kind {
	case FramingMLLP:
		return net.Buffers{mllpHeader[:1:1], payload, mllpTrailer[:2:2]}
	case FramingLengthPrefix:
		hdr := binary.BigEndian.AppendUint32(make([]byte, 0, lengthPrefixBytes), uint32(len(payload)))
		return net.Buffers{hdr, payload}
	case FramingDelimiter:
		return net.Buffers{payload, fullSlice(f.Delimiter)}
	case FramingStartEnd:
		return net.Buffers{fullSlice(f.Start), payload, fullSlice(f.End)}
	}
	return net.Buffers{payload}
}

// Overhead returns the number of bytes f adds to every payload.
func (f Framing) Overhead() int {
	switch f.Kind {
	case FramingMLLP:
		return len(mllpHeader) + len(mllpTrailer)
	case FramingLengthPrefix:
		return lengthPrefixBytes
	case FramingDelimiter:
		return len(f.Delimiter)
	case FramingStartEnd:
		return len(f.Start) + len(f.End)
	}
	return 0
}

func fullSlice(b []byte) []byte { return b[:len(b):len(b)] }

// CheckPayload reports whether payload can be framed without the peer
// reading it differently: the markers that end (or, for MLLP and start-end,
// start) a frame must not occur in it, nor be formed by its tail and the
// trailing marker.
func (f Framing) CheckPayload(payload []byte) error {
	switch f.Kind {
	case FramingMLLP:
		if i := bytes.IndexByte(payload, mllpEndByte); i >= 0 {
			return fmt.Errorf("byte 0x1C at offset %d would end the MLLP frame early", i)
		}
		if i := bytes.IndexByte(payload, mllpStartByte); i >= 0 {
			return fmt.Errorf("byte 0x0B at offset %d would start a new MLLP frame", i)
		}
	case FramingDelimiter:
		if i := markerAt(payload, f.Delimiter); i >= 0 {
			return fmt.Errorf("the delimiter would be read at offset %d", i)
		}
	case FramingStartEnd:
		if i := bytes.Index(payload, f.Start); i >= 0 {
			return fmt.Errorf("the start sequence occurs at offset %d", i)
		}
		if i := markerAt(payload, f.End); i >= 0 {
			return fmt.Errorf("the end sequence would be read at offset %d", i)
		}
	}
	return nil
}

// markerAt returns where a decoder would first find marker in payload
// followed by marker, if that is before the end of payload, else -1.
func markerAt(payload, marker []byte) int {
	if i := bytes.Index(payload, marker); i >= 0 {
		return i
	}
	// Only the last len(marker)-1 bytes can combine with the marker.
	tail := payload[max(0, len(payload)-len(marker)+1):]
	joined := append(bytes.Clone(tail), marker...)
	if i := bytes.Index(joined, marker); i < len(tail) {
		return len(payload) - len(tail) + i
	}
	return -1
}
