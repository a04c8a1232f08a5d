package hl7

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// TestAppendAckTestdata builds an AA for every sample file and compares the
// whole output, then checks the round trip through ParseAck for every code.
func TestAppendAckTestdata(t *testing.T) {
	const (
		goodHealth = "MSH|^~\\&|LAB|GOOD HEALTH HOSPITAL|ADT1|GOOD HEALTH HOSPITAL|20261125101501||ACK^A01^ACK|ACK-0001|P|2.5\r"
		noHeader   = "MSH|^~\\&|||||20261125101501||ACK|ACK-0001|P|2.5\rMSA|AA|\r"
	)
	want := map[string]struct {
		err error
		ack string
	}{
		"adt_a01_v25.hl7":             {nil, goodHealth + "MSA|AA|MSG00001\r"},
		"adt_a01_v25_lf_segments.hl7": {nil, goodHealth + "MSA|AA|MSG00001\r"},
		"adt_a04_v23_no_trigger_version.hl7": {nil,
			"MSH|^~\\&|IFENG||REGADT|MCM|20261125101501||ACK|ACK-0001|P|2.3\rMSA|AA|000001\r"},
		"adt_a08_latin1.hl7": {nil,
			"MSH|^~\\&|LIS|LABOR|HIS|KLINIKUM|20261125101501||ACK^A08^ACK|ACK-0001|P|2.5||||||8859/1\rMSA|AA|L1-0001\r"},
		"adt_a08_utf8.hl7": {nil,
			"MSH|^~\\&|LIS|LAB|HIS|SZPITAL|20261125101501||ACK^A08^ACK|ACK-0001|P|2.5.1||||||UNICODE UTF-8\rMSA|AA|U8-0001\r"},
		"oru_r01_enhanced_mode.hl7": {nil,
			"MSH|^~\\&|EHR|CITYHOSP|LABSYS|CITYLAB|20261125101501||ACK^R01^ACK|ACK-0001|P|2.5.1\rMSA|AA|ENH-42\r"},
		"oru_r01_embedded_pdf_270k.hl7": {nil,
			"MSH|^~\\&|EHR|CITYHOSP|RADSYS|CITYRAD|20261125101501||ACK^R01^ACK|ACK-0001|P|2.5.1\rMSA|AA|PDF-0007\r"},
		"custom_separators.hl7": {nil,
			"MSH#$*@!#RECEIVER#FAC2#SENDER#FAC#20261125101501##ACK$A03$ACK#ACK-0001#P#2.5\rMSA#AA#SEP-01\r"},
		"missing_control_id.hl7": {nil,
			"MSH|^~\\&|APP2|FAC2|APP|FAC|20261125101501||ACK^A01^ACK|ACK-0001|P|2.5\rMSA|AA|\r"},
		"not_hl7.txt": {ErrNoHeader, noHeader},
		"README.md":   {ErrNoHeader, noHeader},
		"batch_fhs_bhs_3msgs.hl7": {nil,
			"MSH|^~\\&|RECV|FAC2|BATCHAPP|FAC|20261125101501||ACK|ACK-0001|P|2.5\rMSA|AA|FILE-1\r"},
		"ack_aa_for_MSG00001.hl7": {nil,
			"MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|LAB|GOOD HEALTH HOSPITAL|20261125101501||ACK^A01^ACK|ACK-0001|P|2.5\rMSA|AA|ACK-7f3a\r"},
		"ack_ae_with_err.hl7": {nil,
			"MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|LAB|GOOD HEALTH HOSPITAL|20261125101501||ACK^A01^ACK|ACK-0001|P|2.5\rMSA|AA|ACK-7f3b\r"},
		"ack_ar_wrong_control_id.hl7": {nil,
			"MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|LAB|GOOD HEALTH HOSPITAL|20261125101501||ACK^A01^ACK|ACK-0001|P|2.5\rMSA|AA|ACK-7f3c\r"},
	}
	for _, name := range testdataFiles(t) {
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatal("no expectation for this testdata file; add one")
			}
			h, err := ParseHeader(readTestdata(t, name))
			if !errors.Is(err, w.err) {
				t.Fatalf("ParseHeader error = %v, want %v", err, w.err)
			}
			ack := AppendAck(nil, h, AckRequest{Code: AA, ControlID: ackID, Time: ackTime})
			if string(ack) != w.ack {
				t.Errorf("AppendAck =\n%s\nwant\n%s", show(ack), show([]byte(w.ack)))
			}

			for _, code := range []AckCode{AA, AE, AR, CA, CE, CR} {
				req := AckRequest{Code: code, ControlID: ackID, Time: ackTime,
					Text: "x|y^z~w\\v&u#$*@!\r\n", ErrorCode: "207", ErrorLocation: "MSH^1^10"}
				ack := AppendAck(nil, h, req)
				a, err := ParseAck(ack)
				if err != nil {
					t.Fatalf("ParseAck(AppendAck(%s)): %v\n%s", code, err, show(ack))
				}
				if a.ControlID != h.ControlID || a.Code != code || a.Header.ControlID != ackID {
					t.Errorf("round trip %s: got code %q MSA-2 %q MSH-10 %q, want %q %q %q",
						code, a.Code, a.ControlID, a.Header.ControlID, code, h.ControlID, ackID)
				}
				if bytes.IndexByte(ack, '\n') >= 0 {
					t.Errorf("ACK contains LF:\n%s", show(ack))
				}
			}
		})
	}
}

func TestAppendAckErrorAndEscaping(t *testing.T) {
	adt := readTestdata(t, "adt_a01_v25.hl7")
	v23 := readTestdata(t, "adt_a04_v23_no_trigger_version.hl7")
	custom := readTestdata(t, "custom_separators.hl7")
	const (
		adtMSH    = "MSH|^~\\&|LAB|GOOD HEALTH HOSPITAL|ADT1|GOOD HEALTH HOSPITAL|20261125101501||ACK^A01^ACK|ACK-0001|P|2.5\r"
		v23MSH    = "MSH|^~\\&|IFENG||REGADT|MCM|20261125101501||ACK|ACK-0001|P|2.3\r"
		customMSH = "MSH#$*@!#RECEIVER#FAC2#SENDER#FAC#20261125101501##ACK$A03$ACK#ACK-0001#P#2.5\r"
	)
	tests := []struct {
		name string
		msg  []byte
		req  AckRequest
		want string
	}{
		{"text escaped", adt, AckRequest{Code: AE, Text: "a|b^c~d\\e&f\r\ng"},
			adtMSH + "MSA|AE|MSG00001|a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f\\X0D\\\\X0A\\g\r"},
		{"v2.5 ERR", adt, AckRequest{Code: AE, Text: "Required field missing", ErrorCode: "101", ErrorLocation: "PID^1^3"},
			adtMSH + "MSA|AE|MSG00001|Required field missing\rERR||PID^1^3|101^Required field missing^HL70357|E\r"},
		{"v2.5 ERR without text or location", adt, AckRequest{Code: AR, ErrorCode: "207"},
			adtMSH + "MSA|AR|MSG00001\rERR|||207^^HL70357|E\r"},
		{"v2.5 ERR escaped", adt, AckRequest{Code: AE, Text: "a&b^c", ErrorCode: "101", ErrorLocation: "P|D^1"},
			adtMSH + "MSA|AE|MSG00001|a\\T\\b\\S\\c\rERR||P\\F\\D^1|101^a\\T\\b\\S\\c^HL70357|E\r"},
		{"v2.3 ERR", v23, AckRequest{Code: AE, Text: "Required field missing", ErrorCode: "101", ErrorLocation: "PID^1^3"},
			v23MSH + "MSA|AE|000001|Required field missing\rERR|PID^1^3^101&Required field missing&HL70357\r"},
		{"v2.3 ERR without location", v23, AckRequest{Code: AR, Text: "x&y", ErrorCode: "207"},
			v23MSH + "MSA|AR|000001|x\\T\\y\rERR|^^^207&x\\T\\y&HL70357\r"},
		{"v2.3 ERR long location", v23, AckRequest{Code: AR, ErrorCode: "102", ErrorLocation: "PID^1^3^1^2^1"},
			v23MSH + "MSA|AR|000001\rERR|PID^1^3^102&&HL70357\r"},
		{"custom separators", custom, AckRequest{Code: AE, Text: "a#b$c*d@e!f^g", ErrorCode: "207", ErrorLocation: "PID^1^3"},
			customMSH + "MSA#AE#SEP-01#a@F@b@S@c@R@d@E@e@T@f^g\rERR##PID$1$3#207$a@F@b@S@c@R@d@E@e@T@f^g$HL70357#E\r"},
		{"truncation char escaped", []byte("MSH|^~\\&#|A|B|C|D|T||ADT^A01|X1|P|2.7\r"), AckRequest{Code: AA, Text: "#1"},
			"MSH|^~\\&#|C|D|A|B|20261125101501||ACK^A01^ACK|ACK-0001|P|2.7\rMSA|AA|X1|\\P\\1\r"},
		{"version 2.10 is after 2.4", []byte("MSH|^~\\&|A||||||ADT^A01|X1|T|2.10\r"), AckRequest{Code: CA},
			"MSH|^~\\&|||A||20261125101501||ACK^A01^ACK|ACK-0001|T|2.10\rMSA|CA|X1\r"},
		{"version 2.3.1 is before 2.4", []byte("MSH|^~\\&|A||||||ADT^A01|X1|P|2.3.1\r"), AckRequest{Code: AA},
			"MSH|^~\\&|||A||20261125101501||ACK|ACK-0001|P|2.3.1\rMSA|AA|X1\r"},
		{"version with components", []byte("MSH|^~\\&|A||||||ADT^A01|X1|P|2.3^DEU\r"), AckRequest{Code: AA},
			"MSH|^~\\&|||A||20261125101501||ACK|ACK-0001|P|2.3^DEU\rMSA|AA|X1\r"},
		{"no version or processing id", []byte("MSH|^~\\&|A||||||ADT^A01|X1\r"), AckRequest{Code: AA},
			"MSH|^~\\&|||A||20261125101501||ACK^A01^ACK|ACK-0001|P|2.5\rMSA|AA|X1\r"},
		{"two encoding chars kept", []byte("MSH|^~|A||||||ADT^A01|X1|P|2.5\r"), AckRequest{Code: AA, Text: "\\"},
			"MSH|^~|||A||20261125101501||ACK^A01^ACK|ACK-0001|P|2.5\rMSA|AA|X1|\\E\\\r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseHeader(tt.msg)
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			tt.req.ControlID, tt.req.Time = ackID, ackTime
			got := AppendAck(nil, h, tt.req)
			if string(got) != tt.want {
				t.Errorf("AppendAck =\n%s\nwant\n%s", show(got), show([]byte(tt.want)))
			}
		})
	}
}

func TestAppendAckHandBuiltHeader(t *testing.T) {
	tests := []struct {
		name string
		h    Header
		want string
	}{
		{"zero", Header{},
			"MSH|^~\\&|||||||ACK|ACK-0001|P|2.5\rMSA|AA|\r"},
		{"separators in values are escaped", Header{ControlID: "A|B\rC", SendingApplication: "X\nY"},
			"MSH|^~\\&|||X\\X0A\\Y||||ACK|ACK-0001|P|2.5\rMSA|AA|A\\F\\B\\X0D\\C\r"},
		{"MSH-2 disagrees with separators", Header{Separators: Separators{'|', '$', '~', '\\', '&'}, EncodingChars: "^~\\&", ControlID: "C"},
			"MSH|$~\\&|||||||ACK|ACK-0001|P|2.5\rMSA|AA|C\r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendAck(nil, tt.h, AckRequest{Code: AA, ControlID: ackID})
			if string(got) != tt.want {
				t.Errorf("AppendAck =\n%s\nwant\n%s", show(got), show([]byte(tt.want)))
			}
			if _, err := ParseAck(got); err != nil {
				t.Errorf("ParseAck: %v", err)
			}
		})
	}
}

func TestAppendAckAppends(t *testing.T) {
	h, _ := ParseHeader(readTestdata(t, "adt_a01_v25.hl7"))
	req := AckRequest{Code: AA, ControlID: ackID, Time: ackTime}
	got := AppendAck([]byte("\x0b"), h, req)
	if want := "\x0b" + string(AppendAck(nil, h, req)); string(got) != want {
		t.Errorf("AppendAck did not append: %q", got)
	}
	// MSH-7 is written in the location of Time.
	req.Time = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", -5*3600))
	if got := AppendAck(nil, h, req); !bytes.Contains(got, []byte("|20260102030405|")) {
		t.Errorf("MSH-7 not in Time's location:\n%s", show(got))
	}
}

// TestRawBytesPreserved checks that non-UTF-8 and UTF-8 bytes in header
// fields reach the ACK untouched.
func TestRawBytesPreserved(t *testing.T) {
	tests := []struct {
		name, sendFac, recvFac, charset string
	}{
		{"latin1", "KLINIKUM M\xdcNCHEN", "LABOR K\xd6LN", "8859/1"},
		{"utf8", "SZPITAL \xc5\x81\xc3\x93D\xc5\xb9", "LAB \xe2\x82\xac", "UNICODE UTF-8"},
		{"invalid utf8", "\xff\xfe\x80", "\xc3", "\xa0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := []byte("MSH|^~\\&|HIS|" + tt.sendFac + "|LIS|" + tt.recvFac +
				"|20261125111000||ADT^A08^ADT_A01|L1-0001|P|2.5|||||DEU|" + tt.charset + "\rPID|1\r")
			h, err := ParseHeader(msg)
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if !bytes.Equal([]byte(h.SendingFacility), []byte(tt.sendFac)) ||
				!bytes.Equal([]byte(h.ReceivingFacility), []byte(tt.recvFac)) ||
				!bytes.Equal([]byte(h.CharacterSet), []byte(tt.charset)) {
				t.Errorf("bytes changed: % x / % x / % x", h.SendingFacility, h.ReceivingFacility, h.CharacterSet)
			}
			got := AppendAck(nil, h, AckRequest{Code: AA, ControlID: ackID, Time: ackTime})
			want := []byte("MSH|^~\\&|LIS|" + tt.recvFac + "|HIS|" + tt.sendFac +
				"|20261125101501||ACK^A08^ACK|ACK-0001|P|2.5||||||" + tt.charset + "\rMSA|AA|L1-0001\r")
			if !bytes.Equal(got, want) {
				t.Errorf("AppendAck =\n% x\nwant\n% x", got, want)
			}
		})
	}
}

func TestAckCode(t *testing.T) {
	tests := []struct {
		code             AckCode
		positive, commit bool
	}{
		{AA, true, false}, {AE, false, false}, {AR, false, false},
		{CA, true, true}, {CE, false, true}, {CR, false, true},
		{"", false, false}, {"aa", false, false},
	}
	for _, tt := range tests {
		if tt.code.Positive() != tt.positive || tt.code.Commit() != tt.commit {
			t.Errorf("%q: Positive=%v Commit=%v, want %v %v", tt.code, tt.code.Positive(), tt.code.Commit(), tt.positive, tt.commit)
		}
	}
}
