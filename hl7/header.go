package hl7

import (
	"errors"
	"strings"
)

// Errors about the header segment. ParseHeader returns them, and ParseAck and
// AppendBatchAck pass them on (AppendBatchAck wraps those of an inner BHS or
// MSH). They never carry message bytes.
var (
	// ErrNoHeader means the message does not start with an MSH, BHS or FHS
	// segment (after an optional UTF-8 byte order mark and blank lines).
	ErrNoHeader = errors.New("hl7: message does not start with an MSH, BHS or FHS segment")
	// ErrBadSeparators means MSH-1 or MSH-2 (or the batch-header equivalent)
	// is missing or declares unusable separators: not printable ASCII
	// punctuation, not pairwise distinct, or an MSH-2 outside 2..5 characters.
	ErrBadSeparators = errors.New("hl7: header segment field 1 or 2 (separators) missing or unusable")
)

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
func (h Header) AcceptAckWanted(negative bool) bool { return ackWanted(h.AcceptAckType, negative) }

// ApplicationAckWanted applies MSH-16 (HL7 table 0155) to an application
// acknowledgement that would be negative or not, as AcceptAckWanted does
// for MSH-15: AL or empty means always, NE never, ER only when negative, SU
// only when positive, and an unknown value always.
func (h Header) ApplicationAckWanted(negative bool) bool {
	return ackWanted(h.ApplicationAckType, negative)
}

// ackWanted applies an HL7 table 0155 value (MSH-15 or MSH-16).
func ackWanted(typ string, negative bool) bool {
	switch typ {
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
