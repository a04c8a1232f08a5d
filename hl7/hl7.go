// Package hl7 reads HL7 v2 message headers and builds and parses acknowledgements.
//
// Everything works on raw bytes. HL7 v2 is often not UTF-8 (ISO-8859-1 and
// other single-byte charsets are common), so values are copied verbatim and
// never converted; a Go string here may hold any bytes. Only the segments that
// are needed are read, so the cost of parsing a header does not grow with the
// size of the message body.
//
// Messages carry protected health information: errors returned by this
// package name fields and positions but never contain message bytes.
package hl7

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors returned by ParseHeader, ParseAck and AppendBatchAck. They never
// carry message bytes.
var (
	// ErrNoHeader means the message does not start with an MSH, BHS or FHS
	// segment (after an optional UTF-8 byte order mark and blank lines).
	ErrNoHeader = errors.New("hl7: message does not start with an MSH, BHS or FHS segment")
	// ErrBadSeparators means MSH-1 or MSH-2 (or the batch-header equivalent)
	// is missing or declares unusable separators: not printable ASCII
	// punctuation, not pairwise distinct, or an MSH-2 outside 2..5 characters.
	ErrBadSeparators = errors.New("hl7: header segment field 1 or 2 (separators) missing or unusable")
	// ErrNoMSA means an acknowledgement has no MSA segment.
	ErrNoMSA = errors.New("hl7: no MSA segment")
)

// Separators are the delimiters declared in MSH-1/MSH-2 (defaults | ^ ~ \ &).
type Separators struct{ Field, Component, Repetition, Escape, Subcomponent byte }

// DefaultSeparators returns the separators HL7 recommends: | ^ ~ \ &.
func DefaultSeparators() Separators {
	return Separators{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&'}
}

// defaultEncodingChars is MSH-2 for DefaultSeparators.
const defaultEncodingChars = `^~\&`

// Header holds the header-segment fields Switchboard needs. Values are
// verbatim bytes from the message: not unescaped, not charset-converted.
//
// For a batch (FHS or BHS first) the fields come from that batch header, which
// shares positions 3..7 with MSH; ControlID is FHS-11/BHS-11 and the MSH-only
// fields stay empty. Fields of the contained messages are never mixed in.
type Header struct {
	Segment       string // "MSH", "BHS" or "FHS": which segment the fields were read from
	Separators    Separators
	EncodingChars string // MSH-2 verbatim

	SendingApplication   string // MSH-3
	SendingFacility      string // MSH-4
	ReceivingApplication string // MSH-5
	ReceivingFacility    string // MSH-6
	Time                 string // MSH-7

	MessageType      string // MSH-9 verbatim, e.g. "ADT^A01^ADT_A01"
	MessageCode      string // MSH-9.1
	TriggerEvent     string // MSH-9.2
	MessageStructure string // MSH-9.3

	ControlID    string // MSH-10 (for BHS/FHS: BHS-11/FHS-11)
	ProcessingID string // MSH-11 verbatim
	Version      string // MSH-12 verbatim (may carry components; see VersionID)

	AcceptAckType      string // MSH-15
	ApplicationAckType string // MSH-16
	CharacterSet       string // MSH-18
}

// ParseHeader reads the first segment of msg, which must be MSH, BHS or FHS,
// optionally preceded by a UTF-8 byte order mark and CR/LF characters. It
// reads nothing past that segment. Segments may end in CR, LF or CRLF.
//
// ParseHeader checks structure only: it does not reject empty required
// fields such as MSH-10; callers decide what to do with those. On error it
// still returns whatever it could read (at least Segment once the segment is
// recognised) so that the caller can build a rejecting acknowledgement.
//
// All string fields share one copy of the header segment.
func ParseHeader(msg []byte) (Header, error) {
	var h Header
	seg, _ := firstSegment(msg)
	h.Segment = headerID(seg)
	if h.Segment == "" {
		return h, ErrNoHeader
	}
	sep, n, ok := readSeparators(seg)
	if !ok {
		return h, ErrBadSeparators
	}
	s := string(seg) // the only allocation: every field below is a substring
	h.Separators = sep
	h.EncodingChars = s[4 : 4+n]
	rest := s[4+n:] // empty or starting with the separator before field 3
	for i := 3; len(rest) > 0 && i <= 18; i++ {
		rest = rest[1:]
		v := rest
		if j := strings.IndexByte(rest, sep.Field); j >= 0 {
			v, rest = rest[:j], rest[j:]
		} else {
			rest = ""
		}
		h.set(i, v)
	}
	return h, nil
}

// set stores field i of the header segment.
func (h *Header) set(i int, v string) {
	switch i {
	case 3:
		h.SendingApplication = v
	case 4:
		h.SendingFacility = v
	case 5:
		h.ReceivingApplication = v
	case 6:
		h.ReceivingFacility = v
	case 7:
		h.Time = v
	}
	if h.Segment != "MSH" {
		if i == 11 {
			h.ControlID = v
		}
		return
	}
	switch i {
	case 9:
		c := h.Separators.Component
		h.MessageType = v
		h.MessageCode = component(v, c, 0)
		h.TriggerEvent = component(v, c, 1)
		h.MessageStructure = component(v, c, 2)
	case 10:
		h.ControlID = v
	case 11:
		h.ProcessingID = v
	case 12:
		h.Version = v
	case 15:
		h.AcceptAckType = v
	case 16:
		h.ApplicationAckType = v
	case 18:
		h.CharacterSet = v
	}
}

// VersionID returns the version ID: the first component of MSH-12.
func (h Header) VersionID() string {
	return component(h.Version, h.Separators.Component, 0)
}

// Enhanced reports whether the sender asked for enhanced acknowledgement
// mode, i.e. MSH-15 or MSH-16 is non-empty. Otherwise original mode applies.
func (h Header) Enhanced() bool {
	return h.AcceptAckType != "" || h.ApplicationAckType != ""
}

// AcceptAckWanted applies MSH-15 (HL7 table 0155) to an accept
// acknowledgement that would be negative or not: AL or empty means always,
// NE never, ER only when negative, SU only when positive. An unknown value
// means always, because an unwanted ACK is harmless and a missing one is not.
func (h Header) AcceptAckWanted(negative bool) bool {
	switch h.AcceptAckType {
	case "NE":
		return false
	case "ER":
		return negative
	case "SU":
		return !negative
	}
	return true
}

// IsAck reports whether the message is a general acknowledgement (MSH-9.1 ACK).
func (h Header) IsAck() bool { return h.MessageCode == "ACK" }

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

// Ack is a parsed acknowledgement.
type Ack struct {
	Header    Header  // header of the ACK message itself
	Code      AckCode // MSA-1 verbatim; may be any value, so test it with Positive
	ControlID string  // MSA-2: the control id being acknowledged
	// Text is MSA-3 verbatim (still escaped) or, when MSA-3 is empty, the
	// error text of an ERR segment directly after MSA (ERR-3.2, or ERR-1.4.2
	// before v2.5).
	Text string
}

// ParseAck reads the header and the first MSA segment of an acknowledgement
// message (segments ending in CR, LF or CRLF). Because the field separator
// comes from the header, it returns the ParseHeader error when the header is
// unusable, and ErrNoMSA when no segment starts with "MSA" and the field
// separator. It does not check that the message type is ACK, since other
// responses carry MSA too, and it does not interpret MSA-1: compare Code and
// ControlID yourself.
func ParseAck(msg []byte) (Ack, error) {
	h, err := ParseHeader(msg)
	a := Ack{Header: h}
	if err != nil {
		return a, err
	}
	fs := h.Separators.Field
	_, rest := firstSegment(msg)
	msa, rest := findSegment(rest, "MSA", fs)
	if msa == nil {
		return a, ErrNoMSA
	}
	s := string(msa)
	a.Code = AckCode(field(s, fs, 1))
	a.ControlID = field(s, fs, 2)
	a.Text = field(s, fs, 3)
	if a.Text == "" {
		a.Text = errText(rest, h.Separators)
	}
	return a, nil
}

// errText returns the error text of an ERR segment at the start of b
// (blank lines skipped), or "".
func errText(b []byte, sep Separators) string {
	var seg []byte
	for len(b) > 0 && len(seg) == 0 {
		seg, b = cut(b)
	}
	if len(seg) < 4 || string(seg[:3]) != "ERR" || seg[3] != sep.Field {
		return ""
	}
	s := string(seg)
	if e := component(field(s, sep.Field, 3), sep.Repetition, 0); e != "" {
		return component(e, sep.Component, 1) // v2.5+: ERR-3 is code^text^system
	}
	e := component(field(s, sep.Field, 1), sep.Repetition, 0)
	return component(component(e, sep.Component, 3), sep.Subcomponent, 1)
}

// HasMSA reports whether msg has a usable header and some later segment
// starts with "MSA" and the field separator: exactly when ParseAck succeeds.
// It does not allocate.
func HasMSA(msg []byte) bool {
	seg, rest := firstSegment(msg)
	if headerID(seg) == "" {
		return false
	}
	sep, _, ok := readSeparators(seg)
	if !ok {
		return false
	}
	msa, _ := findSegment(rest, "MSA", sep.Field)
	return msa != nil
}

// IsBatch reports whether the first segment of msg is FHS or BHS.
func IsBatch(msg []byte) bool {
	seg, _ := firstSegment(msg)
	id := headerID(seg)
	return id == "FHS" || id == "BHS"
}

// AppendBatchAck appends to dst the acknowledgement of the HL7 batch msg
// (FHS, BHS, MSH..., BTS, FTS; FHS/FTS or BHS/BTS optional) and returns it:
//
//	FHS|<enc>|<FHS-5>|<FHS-6>|<FHS-3>|<FHS-4>|<Time>||||<ControlID>-F|<inbound FHS-11>   (only if msg has FHS)
//	BHS|<enc>|<BHS-5>|<BHS-6>|<BHS-3>|<BHS-4>|<Time>||||<ControlID>-B|<inbound BHS-11>
//	one AppendAck per contained MSH, with MSH-10 <ControlID>-1, <ControlID>-2, ...
//	BTS|<number of messages>
//	FTS|1                                                                               (only if msg has FHS)
//
// Sender and receiver are swapped as in AppendAck; without a BHS, the BHS is
// built from the FHS and has no reference. All messages get req's code, text
// and error; every message is acknowledged in the one BHS.
//
// If msg is not a batch, AppendBatchAck is AppendAck for its header. If the
// batch header or a contained MSH cannot be parsed it returns dst unchanged
// and an error wrapping the ParseHeader error, so the caller can reject the
// whole batch with AppendAck.
func AppendBatchAck(dst []byte, msg []byte, req AckRequest) ([]byte, error) {
	h, err := ParseHeader(msg)
	if err != nil {
		return dst, err
	}
	if h.Segment == "MSH" {
		return AppendAck(dst, h, req), nil
	}
	_, rest := firstSegment(msg)
	bhs, ref := h, ""
	if h.Segment == "BHS" {
		ref = h.ControlID
	} else if b, err := ParseHeader(rest); b.Segment == "BHS" {
		if err != nil {
			return dst, fmt.Errorf("hl7: batch header BHS: %w", err)
		}
		bhs, ref = b, b.ControlID
		_, rest = firstSegment(rest)
	}

	out := dst
	if h.Segment == "FHS" {
		out = appendBatchHeader(out, "FHS", h, req, 'F', h.ControlID)
	}
	out = appendBatchHeader(out, "BHS", bhs, req, 'B', ref)
	n := 0
	for len(rest) > 0 {
		var seg []byte
		seg, rest = cut(rest)
		if headerID(seg) != "MSH" {
			continue
		}
		n++
		m, err := ParseHeader(seg)
		if err != nil {
			return dst, fmt.Errorf("hl7: batch message %d: %w", n, err)
		}
		out = appendAck(out, m, req, n)
	}
	out = append(out, "BTS"...)
	out = append(out, bhs.Separators.Field)
	out = strconv.AppendInt(out, int64(n), 10)
	out = append(out, '\r')
	if h.Segment == "FHS" {
		out = append(out, "FTS"...)
		out = append(out, h.Separators.Field, '1', '\r')
	}
	return out, nil
}

// appendBatchHeader appends an FHS or BHS (id) answering h, whose
// separators are usable since it was parsed.
func appendBatchHeader(dst []byte, id string, h Header, req AckRequest, suffix byte, ref string) []byte {
	sep := h.Separators
	fs := sep.Field
	dst = append(dst, id...)
	dst = append(dst, fs)
	dst = append(dst, h.EncodingChars...)
	for _, v := range [...]string{h.ReceivingApplication, h.ReceivingFacility, h.SendingApplication, h.SendingFacility} {
		dst = append(dst, fs)
		dst = appendRaw(dst, v, sep)
	}
	dst = append(dst, fs)
	if !req.Time.IsZero() {
		dst = req.Time.AppendFormat(dst, "20060102150405")
	}
	dst = append(dst, fs, fs, fs, fs) // fields 8..10 empty
	dst = appendRaw(dst, req.ControlID, sep)
	dst = appendRaw(dst, "-", sep) // '-' may be the field separator
	dst = append(dst, suffix)
	if ref != "" {
		dst = append(dst, fs)
		dst = appendRaw(dst, ref, sep)
	}
	return append(dst, '\r')
}

// firstSegment skips a UTF-8 byte order mark and CR/LF characters at the
// start of msg and returns the first segment and what follows it.
func firstSegment(msg []byte) (seg, rest []byte) {
	if len(msg) >= 3 && string(msg[:3]) == "\xef\xbb\xbf" {
		msg = msg[3:]
	}
	for len(msg) > 0 && (msg[0] == '\r' || msg[0] == '\n') {
		msg = msg[1:]
	}
	return cut(msg)
}

// cut splits b after its first segment, which ends at CR or LF. With CRLF
// the following segment is empty, which callers skip.
func cut(b []byte) (seg, rest []byte) {
	// Two IndexByte scans beat one IndexAny: CR is the norm, so the LF
	// scan only covers the segment.
	i := bytes.IndexByte(b, '\r')
	if i < 0 {
		i = len(b)
	}
	if j := bytes.IndexByte(b[:i], '\n'); j >= 0 {
		i = j
	}
	if i == len(b) {
		return b, nil
	}
	return b[:i], b[i+1:]
}

// findSegment returns the first segment in b that starts with id and the
// field separator fs, and the bytes after it; seg is nil if there is none.
func findSegment(b []byte, id string, fs byte) (seg, rest []byte) {
	for len(b) > 0 {
		seg, b = cut(b)
		if len(seg) > 3 && string(seg[:3]) == id && seg[3] == fs {
			return seg, b
		}
	}
	return nil, nil
}

// headerID returns "MSH", "BHS" or "FHS" if seg starts with one, else "".
func headerID(seg []byte) string {
	if len(seg) < 3 {
		return ""
	}
	switch string(seg[:3]) {
	case "MSH":
		return "MSH"
	case "BHS":
		return "BHS"
	case "FHS":
		return "FHS"
	}
	return ""
}

// readSeparators reads field 1 (the byte after the segment ID) and field 2
// of a header segment, returning the separators and the length of field 2.
func readSeparators(seg []byte) (sep Separators, n int, ok bool) {
	if len(seg) < 4 {
		return sep, 0, false
	}
	enc := seg[4:]
	if i := bytes.IndexByte(enc, seg[3]); i >= 0 {
		enc = enc[:i]
	}
	sep, ok = separatorsFrom(seg[3], enc)
	return sep, len(enc), ok
}

// separatorsFrom interprets a field separator and MSH-2. MSH-2 holds 2 to 5
// characters: component, repetition, escape, subcomponent and (v2.7+)
// truncation; missing ones take their defaults.
func separatorsFrom[T string | []byte](fs byte, enc T) (Separators, bool) {
	s := DefaultSeparators()
	s.Field = fs
	if len(enc) < 2 || len(enc) > 5 {
		return s, false
	}
	s.Component, s.Repetition = enc[0], enc[1]
	if len(enc) > 2 {
		s.Escape = enc[2]
	}
	if len(enc) > 3 {
		s.Subcomponent = enc[3]
	}
	if !s.usable() {
		return s, false
	}
	if len(enc) == 5 {
		t := enc[4]
		if !usableByte(t) || t == fs || t == s.Component || t == s.Repetition || t == s.Escape || t == s.Subcomponent {
			return s, false
		}
	}
	return s, true
}

// usable reports whether the separators can delimit a message unambiguously:
// each is printable ASCII punctuation and no two are equal.
func (s Separators) usable() bool {
	b := [...]byte{s.Field, s.Component, s.Repetition, s.Escape, s.Subcomponent}
	for i, c := range b {
		if !usableByte(c) {
			return false
		}
		for _, d := range b[:i] {
			if c == d {
				return false
			}
		}
	}
	return true
}

// usableByte reports whether c is printable ASCII other than space, a letter
// or a digit. Letters and digits are refused because they would make segment
// IDs and ordinary values ambiguous, and because accepting them would let
// arbitrary text that happens to start with "MSH" pass as HL7.
func usableByte(c byte) bool {
	switch {
	case c <= ' ' || c >= 0x7f:
		return false
	case '0' <= c && c <= '9', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		return false
	}
	return true
}

// truncationChar returns the v2.7 truncation character declared in MSH-2, or 0.
func truncationChar(enc string) byte {
	if len(enc) == 5 {
		return enc[4]
	}
	return 0
}

// field returns field i of segment s (0 is the segment ID).
func field(s string, fs byte, i int) string {
	for ; i > 0; i-- {
		j := strings.IndexByte(s, fs)
		if j < 0 {
			return ""
		}
		s = s[j+1:]
	}
	if j := strings.IndexByte(s, fs); j >= 0 {
		return s[:j]
	}
	return s
}

// component returns part i (from 0) of s split at sep.
func component(s string, sep byte, i int) string { return field(s, sep, i) }

// versionAtLeast reports whether version ID v (e.g. "2.3.1" or "2.10") is at
// least major.minor, comparing numbers, not strings. A version that does not
// start with a digit is treated as current.
func versionAtLeast(v string, major, minor int) bool {
	ma, rest, ok := leadingInt(v)
	if !ok {
		return true
	}
	if ma != major {
		return ma > major
	}
	mi := 0
	if len(rest) > 0 && rest[0] == '.' {
		mi, _, _ = leadingInt(rest[1:])
	}
	return mi >= minor
}

// leadingInt parses the decimal digits at the start of s, saturating
// instead of overflowing.
func leadingInt(s string) (n int, rest string, ok bool) {
	i := 0
	for ; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
		if n < 1e6 {
			n = n*10 + int(s[i]-'0')
		}
	}
	return n, s[i:], i > 0
}

// appendRaw appends an already-encoded value. Only what would break the
// segment structure is escaped: the field separator, CR and LF. Values read
// by ParseHeader never contain them.
func appendRaw(dst []byte, v string, sep Separators) []byte {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case sep.Field, '\r', '\n':
			dst = appendEscapedByte(dst, c, sep, 0)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// appendEscaped appends text with every separator, CR and LF escaped.
func appendEscaped(dst []byte, text string, sep Separators, trunc byte) []byte {
	for i := 0; i < len(text); i++ {
		dst = appendEscapedByte(dst, text[i], sep, trunc)
	}
	return dst
}

// appendEscapedByte appends c, as an escape sequence if it is a delimiter.
func appendEscapedByte(dst []byte, c byte, sep Separators, trunc byte) []byte {
	var name string
	switch c {
	case sep.Field:
		name = "F"
	case sep.Component:
		name = "S"
	case sep.Subcomponent:
		name = "T"
	case sep.Repetition:
		name = "R"
	case sep.Escape:
		name = "E"
	case '\r':
		name = "X0D"
	case '\n':
		name = "X0A"
	default:
		if c != trunc || trunc == 0 {
			return append(dst, c)
		}
		name = "P"
	}
	dst = append(dst, sep.Escape)
	dst = append(dst, name...)
	return append(dst, sep.Escape)
}
