package hl7

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
)

// addSeeds adds every sample file as a seed.
func addSeeds(f *testing.F) {
	for _, name := range testdataFiles(f) {
		f.Add(readTestdata(f, name))
	}
}

// fuzzReq has text full of delimiters so escaping is exercised on every input.
var fuzzReq = AckRequest{
	Code: AE, Text: "a|b^c~d\\e&f#$*@!\r\nx", ErrorCode: "207", ErrorLocation: "MSH^1^10",
	ControlID: "ACK-1", Time: time.Date(2026, 11, 25, 10, 15, 1, 0, time.UTC),
}

// FuzzParseHeader checks that any input yields an acknowledgement that
// answers exactly the control id that was read. That holds for every
// header ParseHeader returns, even with an error: fields are read only once
// the separators are known, so a returned ControlID never contains the field
// separator, CR or LF and is copied to MSA-2 unchanged.
func FuzzParseHeader(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, err := ParseHeader(msg)
		if err == nil {
			if !h.Separators.usable() || h.Segment == "" {
				t.Fatalf("ParseHeader succeeded with %+v", h)
			}
			for _, v := range []string{h.ControlID, h.SendingApplication, h.Version, h.CharacterSet} {
				if bytes.ContainsAny([]byte(v), "\r\n"+string(h.Separators.Field)) {
					t.Fatalf("field %q holds a delimiter", v)
				}
			}
		} else if h.ControlID != "" || h.Separators != (Separators{}) {
			t.Fatalf("ParseHeader failed (%v) but returned fields %+v", err, h)
		}
		if IsBatch(msg) != (h.Segment == "FHS" || h.Segment == "BHS") {
			t.Fatalf("IsBatch disagrees with Segment %q", h.Segment)
		}

		ack := AppendAck(nil, h, fuzzReq)
		if bytes.IndexByte(ack, '\n') >= 0 || ack[len(ack)-1] != '\r' {
			t.Fatalf("malformed ACK %q", ack)
		}
		a, err := ParseAck(ack)
		if err != nil {
			t.Fatalf("ParseAck(AppendAck(...)): %v\n%q", err, ack)
		}
		wantSep := h.Separators
		if !wantSep.usable() {
			wantSep = DefaultSeparators()
		}
		// The caller's id is escaped where it holds the field separator
		// (fuzzReq.ControlID has '-', which is a legal separator).
		esc := string(wantSep.Escape)
		wantID := strings.ReplaceAll(fuzzReq.ControlID, string(wantSep.Field), esc+"F"+esc)
		if a.ControlID != h.ControlID || a.Code != fuzzReq.Code || a.Header.ControlID != wantID {
			t.Fatalf("round trip: MSA-2 %q code %q MSH-10 %q; want %q %q %q",
				a.ControlID, a.Code, a.Header.ControlID, h.ControlID, fuzzReq.Code, wantID)
		}
		if a.Header.Separators != wantSep ||
			a.Header.SendingApplication != h.ReceivingApplication || a.Header.ReceivingApplication != h.SendingApplication ||
			a.Header.SendingFacility != h.ReceivingFacility || a.Header.ReceivingFacility != h.SendingFacility {
			t.Fatalf("ACK header %+v does not answer %+v", a.Header, h)
		}

		out, err := AppendBatchAck([]byte("dst"), msg, fuzzReq)
		if err != nil {
			if string(out) != "dst" {
				t.Fatalf("AppendBatchAck failed (%v) but changed dst", err)
			}
			return
		}
		out = out[len("dst"):]
		if !IsBatch(msg) {
			if !bytes.Equal(out, ack) {
				t.Fatalf("AppendBatchAck of a single message %q, want %q", out, ack)
			}
			return
		}
		// One MSA per contained message, each ACK parseable, and the count in BTS.
		if !IsBatch(out) || bytes.IndexByte(out, '\n') >= 0 || out[len(out)-1] != '\r' {
			t.Fatalf("malformed batch ACK %q", out)
		}
		n := 0
		for rest := out; ; n++ {
			i := bytes.Index(rest, []byte("\rMSH"))
			if i < 0 {
				break
			}
			rest = rest[i+1:]
			if _, err := ParseAck(rest); err != nil {
				t.Fatalf("batch ACK message %d: %v\n%q", n+1, err, out)
			}
		}
		// BTS uses the BHS's separator, which may differ from the FHS's.
		i := bytes.LastIndex(out, []byte("\rBTS"))
		if i < 0 || !bytes.HasPrefix(out[i+5:], []byte(strconv.Itoa(n)+"\r")) {
			t.Fatalf("batch ACK with %d messages has no matching BTS: %q", n, out)
		}
	})
}

// FuzzParseAck checks that ParseAck never panics, agrees with HasMSA and
// only returns values taken from the input.
func FuzzParseAck(f *testing.F) {
	addSeeds(f)
	f.Add([]byte("MSH|^~\\&|A\rMSA|AE|X1\r\nERR|PID^1^3^101&Missing&HL70357\r"))
	f.Add([]byte("MSH|^~\\&|A\rMSA|AE|X1\rERR||PID^1^3|101^Missing^HL70357|E\r"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		a, err := ParseAck(msg)
		if HasMSA(msg) != (err == nil) {
			t.Fatalf("HasMSA = %v but ParseAck error = %v", HasMSA(msg), err)
		}
		if err != nil {
			return
		}
		for _, v := range []string{string(a.Code), a.ControlID, a.Text} {
			if len(v) > len(msg) || !bytes.Contains(msg, []byte(v)) {
				t.Fatalf("value %q not taken from the input", v)
			}
			if bytes.ContainsAny([]byte(v), "\r\n"+string(a.Header.Separators.Field)) {
				t.Fatalf("value %q holds a delimiter", v)
			}
		}
	})
}
