package hl7

import (
	"strconv"
	"time"
)

// AckCode is an acknowledgement code (MSA-1, HL7 table 0008).
type AckCode string

// Acknowledgement codes: Application Accept/Error/Reject (original mode and
// enhanced-mode application ACKs) and Commit Accept/Error/Reject (enhanced-mode
// accept ACKs).
const (
	AA AckCode = "AA"
	AE AckCode = "AE"
	AR AckCode = "AR"
	CA AckCode = "CA"
	CE AckCode = "CE"
	CR AckCode = "CR"
)

// Positive reports whether c is AA or CA. Any other value, including an
// unknown one, is not positive.
func (c AckCode) Positive() bool { return c == AA || c == CA }

// Commit reports whether c is a commit (accept) code: CA, CE or CR.
func (c AckCode) Commit() bool { return c == CA || c == CE || c == CR }

// AckRequest says what acknowledgement to build.
type AckRequest struct {
	Code AckCode // MSA-1
	// Text goes to MSA-3 and the ERR text. It is escaped with the message's
	// escape character (\F\ \S\ \T\ \R\ \E\, \P\ for a v2.7 truncation
	// character, \X0D\ and \X0A\ for CR and LF) before writing.
	Text string
	// ErrorCode is an HL7 table 0357 code (e.g. "100", "101", "207") for an
	// ERR segment; empty means no ERR segment.
	ErrorCode string
	// ErrorLocation is the optional error location written with ^ between
	// components, e.g. "MSH^1^10"; ^ is replaced by the message's component
	// separator and everything else is escaped.
	ErrorLocation string
	ControlID     string    // MSH-10 of the ACK itself: a new unique id chosen by the caller
	Time          time.Time // MSH-7, written YYYYMMDDHHMMSS in Time's location; zero leaves MSH-7 empty
}

// AppendAck appends an HL7 ACK message for the message whose header is h to
// dst and returns it. Every segment ends in CR. It writes, with the separators
// and MSH-2 of h:
//
//	MSH|^~\&|<h MSH-5>|<h MSH-6>|<h MSH-3>|<h MSH-4>|<Time>||ACK^<h MSH-9.2>^ACK|<ControlID>|<h MSH-11>|<h MSH-12>[||||||<h MSH-18>]
//	MSA|<Code>|<h MSH-10>[|<Text>]
//	[ERR...]
//
// MSH-9 is plain ACK when h has no trigger event or its version is before
// 2.4. Empty MSH-11 and MSH-12 become P and 2.5, and a version that does not
// start with digits is treated as current. With an ErrorCode, versions 2.5
// and later get
//
//	ERR||<ErrorLocation>|<ErrorCode>^<Text>^HL70357|E
//
// and earlier versions get ERR-1 (ELD), with at most three location
// components and the code in the fourth:
//
//	ERR|<seg>^<seq>^<field>^<ErrorCode>&<Text>&HL70357
//
// AppendAck accepts any Header, including a zero or partial one from a
// failed ParseHeader: unusable separators are replaced by the defaults and
// missing fields are left empty (MSA-2 included). Values copied from h are
// written verbatim except that a field separator, CR or LF in them (possible
// only in a hand-built Header) is escaped, so the result is always a
// well-formed message.
func AppendAck(dst []byte, h Header, req AckRequest) []byte {
	return appendAck(dst, h, req, 0)
}

// appendAck is AppendAck; n > 0 appends "-n" to req.ControlID so that a batch
// acknowledgement can number its messages without allocating.
func appendAck(dst []byte, h Header, req AckRequest, n int) []byte {
	sep, enc := h.Separators, h.EncodingChars
	if !sep.usable() {
		sep, enc = DefaultSeparators(), defaultEncodingChars
	} else if s, ok := separatorsFrom(sep.Field, enc); !ok || s != sep {
		enc = "" // written from sep below
	}
	version := h.Version
	if version == "" {
		version = "2.5"
	}
	versionID := component(version, sep.Component, 0)
	fs := sep.Field

	dst = append(dst, "MSH"...)
	dst = append(dst, fs)
	if enc != "" {
		dst = append(dst, enc...)
	} else {
		dst = append(dst, sep.Component, sep.Repetition, sep.Escape, sep.Subcomponent)
	}
	for _, v := range [...]string{h.ReceivingApplication, h.ReceivingFacility, h.SendingApplication, h.SendingFacility} {
		dst = append(dst, fs)
		dst = appendRaw(dst, v, sep)
	}
	dst = append(dst, fs)
	if !req.Time.IsZero() {
		dst = req.Time.AppendFormat(dst, "20060102150405")
	}
	dst = append(dst, fs, fs, 'A', 'C', 'K')
	if h.TriggerEvent != "" && versionAtLeast(versionID, 2, 4) {
		dst = append(dst, sep.Component)
		dst = appendRaw(dst, h.TriggerEvent, sep)
		dst = append(dst, sep.Component, 'A', 'C', 'K')
	}
	dst = append(dst, fs)
	dst = appendRaw(dst, req.ControlID, sep)
	if n > 0 {
		dst = appendRaw(dst, "-", sep) // '-' may be the field separator
		dst = strconv.AppendInt(dst, int64(n), 10)
	}
	dst = append(dst, fs)
	if h.ProcessingID != "" {
		dst = appendRaw(dst, h.ProcessingID, sep)
	} else {
		dst = append(dst, 'P')
	}
	dst = append(dst, fs)
	dst = appendRaw(dst, version, sep)
	if h.CharacterSet != "" {
		dst = append(dst, fs, fs, fs, fs, fs, fs) // MSH-13..17 empty
		dst = appendRaw(dst, h.CharacterSet, sep)
	}
	dst = append(dst, '\r')

	trunc := truncationChar(enc)
	dst = append(dst, "MSA"...)
	dst = append(dst, fs)
	dst = appendRaw(dst, string(req.Code), sep)
	dst = append(dst, fs)
	dst = appendRaw(dst, h.ControlID, sep)
	if req.Text != "" {
		dst = append(dst, fs)
		dst = appendEscaped(dst, req.Text, sep, trunc)
	}
	dst = append(dst, '\r')

	if req.ErrorCode != "" {
		dst = appendErr(dst, req, sep, trunc, versionAtLeast(versionID, 2, 5))
	}
	return dst
}

// appendErr appends the ERR segment described in AppendAck.
func appendErr(dst []byte, req AckRequest, sep Separators, trunc byte, v25 bool) []byte {
	fs, cs := sep.Field, sep.Component
	dst = append(dst, "ERR"...)
	if v25 {
		dst = append(dst, fs, fs)
		dst, _ = appendLocation(dst, req.ErrorLocation, sep, trunc, 0)
		dst = append(dst, fs)
		dst = appendEscaped(dst, req.ErrorCode, sep, trunc)
		dst = append(dst, cs)
		dst = appendEscaped(dst, req.Text, sep, trunc)
		dst = append(dst, cs)
		dst = append(dst, "HL70357"...)
		dst = append(dst, fs, 'E', '\r')
		return dst
	}
	// ELD: segment ID ^ sequence ^ field position ^ code (a CE, hence &).
	dst = append(dst, fs)
	dst, n := appendLocation(dst, req.ErrorLocation, sep, trunc, 3)
	for ; n < 4; n++ {
		dst = append(dst, cs)
	}
	dst = appendEscaped(dst, req.ErrorCode, sep, trunc)
	dst = append(dst, sep.Subcomponent)
	dst = appendEscaped(dst, req.Text, sep, trunc)
	dst = append(dst, sep.Subcomponent)
	dst = append(dst, "HL70357"...)
	return append(dst, '\r')
}

// appendLocation appends loc, whose components are separated by ^, with the
// message's component separator, keeping at most limit components if limit > 0.
// It returns how many components it wrote.
func appendLocation(dst []byte, loc string, sep Separators, trunc byte, limit int) ([]byte, int) {
	n := 1
	for i := 0; i < len(loc); i++ {
		if loc[i] != '^' {
			dst = appendEscapedByte(dst, loc[i], sep, trunc)
			continue
		}
		if limit > 0 && n == limit {
			break
		}
		dst = append(dst, sep.Component)
		n++
	}
	return dst, n
}
