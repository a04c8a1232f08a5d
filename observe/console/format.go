package console

import (
	"fmt"
	"html/template"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"
)

var funcs = template.FuncMap{
	"num": fmtNum,
}

// timeLayout is how the console shows times: UTC, to the second.
const timeLayout = "2006-01-02 15:04:05Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func fmtTimestamp(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return fmtTime(ts.AsTime())
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	default:
		return d.Round(time.Second).String()
	}
}

// fmtNum writes an integer with thin groups of three digits.
func fmtNum(v any) string {
	var s string
	switch n := v.(type) {
	case int64:
		s = strconv.FormatInt(n, 10)
	case uint64:
		s = strconv.FormatUint(n, 10)
	case int:
		s = strconv.Itoa(n)
	default:
		return fmt.Sprint(v)
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString("\u202f")
		}
		b.WriteRune(r)
	}
	return b.String()
}

// enumName is a proto enum value's name without its prefix.
func enumName(name, prefix string) string {
	return strings.TrimPrefix(name, prefix)
}

func messagesURL(q url.Values) string {
	if len(q) == 0 {
		return Prefix + "messages"
	}
	return Prefix + "messages?" + q.Encode()
}

func messageURL(id string) string {
	return Prefix + "message?" + url.Values{"id": {id}}.Encode()
}

// payloadText is a payload as text for a <pre>: valid UTF-8 is kept,
// anything else is read as ISO-8859-1 (as the API does for its string
// fields), HL7 segment ends (CR) become line ends, and other control bytes
// are shown as \xNN. html/template escapes the result.
func payloadText(b []byte) string {
	s := string(b)
	if !utf8.ValidString(s) {
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		s = string(r)
	}
	var out strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		switch {
		case r == '\r':
			out.WriteByte('\n')
			if i < len(s) && s[i] == '\n' {
				i++
			}
		case r == '\n' || r == '\t':
			out.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&out, `\x%02X`, r)
		default:
			out.WriteRune(r)
		}
	}
	return out.String()
}
