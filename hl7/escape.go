package hl7

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
