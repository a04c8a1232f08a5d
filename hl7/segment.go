package hl7

import (
	"bytes"
	"strings"
)

// Separators are the delimiters declared in MSH-1/MSH-2 (defaults | ^ ~ \ &).
type Separators struct{ Field, Component, Repetition, Escape, Subcomponent byte }

// DefaultSeparators returns the separators HL7 recommends: | ^ ~ \ &.
func DefaultSeparators() Separators {
	return Separators{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&'}
}

// defaultEncodingChars is MSH-2 for DefaultSeparators.
const defaultEncodingChars = `^~\&`

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
