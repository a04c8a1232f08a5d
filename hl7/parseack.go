package hl7

import "errors"

// ErrNoMSA means an acknowledgement has no MSA segment. It is returned by
// ParseAck and, like every error here, carries no message bytes.
var ErrNoMSA = errors.New("hl7: no MSA segment")

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
