package service

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestText: strings taken from message bytes come out valid UTF-8 (their
// ISO-8859-1 reading when they are not UTF-8) and at most maxTextBytes
// long, cut at a character boundary.
func TestText(t *testing.T) {
	long := strings.Repeat("a", maxTextBytes-1)
	for _, tc := range []struct {
		name, in, want string
	}{
		{"ASCII", "MSG00001", "MSG00001"},
		{"empty", "", ""},
		{"UTF-8 kept", "M\u00fcller-\u20ac", "M\u00fcller-\u20ac"},
		{"Latin-1", "M\xfcller-\xe9", "M\u00fcller-\u00e9"},
		{"lone continuation and 0xFF", "\x80\xbf\xff", "\u0080\u00bf\u00ff"},
		{"truncated sequence", "\xe2\x82", "\u00e2\u0082"},
		{"at the limit", long + "b", long + "b"},
		{"cut", long + "bc", long + "b"},
		{"cut before a character that would cross the limit", long + "\u20ac", long},
		{"Latin-1 cut", strings.Repeat("\xe9", maxTextBytes), strings.Repeat("\u00e9", maxTextBytes/2)},
		{"Latin-1 cut before a character that would cross the limit", "a" + strings.Repeat("\xe9", maxTextBytes), "a" + strings.Repeat("\u00e9", maxTextBytes/2-1)},
	} {
		got := text(tc.in)
		if got != tc.want {
			t.Errorf("%s: text(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
		if !utf8.ValidString(got) || len(got) > maxTextBytes {
			t.Errorf("%s: text returned %d bytes, valid UTF-8 %v", tc.name, len(got), utf8.ValidString(got))
		}
	}
}
