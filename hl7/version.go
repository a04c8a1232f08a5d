package hl7

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
