package hl7

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ackTime and ackID make generated acknowledgements reproducible.
var (
	ackTime = time.Date(2026, 11, 25, 10, 15, 1, 0, time.UTC)
	ackID   = "ACK-0001"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testdataFiles lists the sample files (not directories such as fuzz/).
func testdataFiles(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names
}

// show makes segment boundaries readable in failure messages.
func show(b []byte) string { return strings.ReplaceAll(string(b), "\r", "<CR>\n") }

func TestParseHeader(t *testing.T) {
	tests := []struct {
		file string
		want Header
	}{
		{"adt_a01_v25.hl7", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "ADT1", SendingFacility: "GOOD HEALTH HOSPITAL",
			ReceivingApplication: "LAB", ReceivingFacility: "GOOD HEALTH HOSPITAL",
			Time: "20261125101500", MessageType: "ADT^A01^ADT_A01",
			MessageCode: "ADT", TriggerEvent: "A01", MessageStructure: "ADT_A01",
			ControlID: "MSG00001", ProcessingID: "P", Version: "2.5",
		}},
		{"adt_a01_v25_lf_segments.hl7", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "ADT1", SendingFacility: "GOOD HEALTH HOSPITAL",
			ReceivingApplication: "LAB", ReceivingFacility: "GOOD HEALTH HOSPITAL",
			Time: "20261125101500", MessageType: "ADT^A01^ADT_A01",
			MessageCode: "ADT", TriggerEvent: "A01", MessageStructure: "ADT_A01",
			ControlID: "MSG00001", ProcessingID: "P", Version: "2.5",
		}},
		{"adt_a04_v23_no_trigger_version.hl7", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "REGADT", SendingFacility: "MCM", ReceivingApplication: "IFENG",
			Time: "199112311501", MessageType: "ADT^A04", MessageCode: "ADT", TriggerEvent: "A04",
			ControlID: "000001", ProcessingID: "P", Version: "2.3",
		}},
		{"custom_separators.hl7", Header{
			Segment: "MSH", Separators: Separators{'#', '$', '*', '@', '!'}, EncodingChars: "$*@!",
			SendingApplication: "SENDER", SendingFacility: "FAC",
			ReceivingApplication: "RECEIVER", ReceivingFacility: "FAC2",
			Time: "20261125130000", MessageType: "ADT$A03$ADT_A03",
			MessageCode: "ADT", TriggerEvent: "A03", MessageStructure: "ADT_A03",
			ControlID: "SEP-01", ProcessingID: "P", Version: "2.5",
		}},
		{"oru_r01_enhanced_mode.hl7", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "LABSYS", SendingFacility: "CITYLAB",
			ReceivingApplication: "EHR", ReceivingFacility: "CITYHOSP",
			Time: "20261125120000", MessageType: "ORU^R01^ORU_R01",
			MessageCode: "ORU", TriggerEvent: "R01", MessageStructure: "ORU_R01",
			ControlID: "ENH-42", ProcessingID: "P", Version: "2.5.1",
			AcceptAckType: "AL", ApplicationAckType: "NE",
		}},
		{"oru_r01_embedded_pdf_270k.hl7", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "RADSYS", SendingFacility: "CITYRAD",
			ReceivingApplication: "EHR", ReceivingFacility: "CITYHOSP",
			Time: "20261125121500", MessageType: "ORU^R01^ORU_R01",
			MessageCode: "ORU", TriggerEvent: "R01", MessageStructure: "ORU_R01",
			ControlID: "PDF-0007", ProcessingID: "P", Version: "2.5.1",
		}},
		{"adt_a08_latin1.hl7", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "HIS", SendingFacility: "KLINIKUM",
			ReceivingApplication: "LIS", ReceivingFacility: "LABOR",
			Time: "20261125111000", MessageType: "ADT^A08^ADT_A01",
			MessageCode: "ADT", TriggerEvent: "A08", MessageStructure: "ADT_A01",
			ControlID: "L1-0001", ProcessingID: "P", Version: "2.5", CharacterSet: "8859/1",
		}},
		{"adt_a08_utf8.hl7", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "HIS", SendingFacility: "SZPITAL",
			ReceivingApplication: "LIS", ReceivingFacility: "LAB",
			Time: "20261125111500", MessageType: "ADT^A08^ADT_A01",
			MessageCode: "ADT", TriggerEvent: "A08", MessageStructure: "ADT_A01",
			ControlID: "U8-0001", ProcessingID: "P", Version: "2.5.1", CharacterSet: "UNICODE UTF-8",
		}},
		{"missing_control_id.hl7", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "APP", SendingFacility: "FAC",
			ReceivingApplication: "APP2", ReceivingFacility: "FAC2",
			Time: "20261125131000", MessageType: "ADT^A01^ADT_A01",
			MessageCode: "ADT", TriggerEvent: "A01", MessageStructure: "ADT_A01",
			ProcessingID: "P", Version: "2.5",
		}},
		{"batch_fhs_bhs_3msgs.hl7", Header{
			Segment: "FHS", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "BATCHAPP", SendingFacility: "FAC",
			ReceivingApplication: "RECV", ReceivingFacility: "FAC2",
			Time: "20261125140000", ControlID: "FILE-1",
		}},
		{"ack_ae_with_err.hl7", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "LAB", SendingFacility: "GOOD HEALTH HOSPITAL",
			ReceivingApplication: "ADT1", ReceivingFacility: "GOOD HEALTH HOSPITAL",
			Time: "20261125101502", MessageType: "ACK^A01^ACK",
			MessageCode: "ACK", TriggerEvent: "A01", MessageStructure: "ACK",
			ControlID: "ACK-7f3b", ProcessingID: "P", Version: "2.5",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseHeader(readTestdata(t, tt.file))
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParseHeader =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseHeaderMethods(t *testing.T) {
	enhanced, _ := ParseHeader(readTestdata(t, "oru_r01_enhanced_mode.hl7"))
	if !enhanced.Enhanced() || !enhanced.AcceptAckWanted(false) || !enhanced.AcceptAckWanted(true) {
		t.Errorf("enhanced mode: Enhanced=%v AcceptAckWanted(false)=%v", enhanced.Enhanced(), enhanced.AcceptAckWanted(false))
	}
	plain, _ := ParseHeader(readTestdata(t, "adt_a01_v25.hl7"))
	if plain.Enhanced() || plain.IsAck() {
		t.Errorf("plain ADT: Enhanced=%v IsAck=%v", plain.Enhanced(), plain.IsAck())
	}
	ack, _ := ParseHeader(readTestdata(t, "ack_aa_for_MSG00001.hl7"))
	if !ack.IsAck() {
		t.Error("IsAck = false for an ACK")
	}
	for _, tt := range []struct{ version, want string }{
		{"2.5", "2.5"}, {"2.5.1^DEU^ISO", "2.5.1"}, {"", ""},
	} {
		h := Header{Separators: DefaultSeparators(), Version: tt.version}
		if got := h.VersionID(); got != tt.want {
			t.Errorf("VersionID(%q) = %q, want %q", tt.version, got, tt.want)
		}
	}
}

func TestParseHeaderErrors(t *testing.T) {
	tests := []struct {
		name    string
		msg     string
		err     error
		segment string
	}{
		{"empty", "", ErrNoHeader, ""},
		{"not hl7", "GET / HTTP/1.1\r\nHost: example\r\n", ErrNoHeader, ""},
		{"leading space", " MSH|^~\\&|A\r", ErrNoHeader, ""},
		{"leading tab", "\tMSH|^~\\&|A\r", ErrNoHeader, ""},
		{"lower case", "msh|^~\\&|A\r", ErrNoHeader, ""},
		{"ID only", "MSH", ErrBadSeparators, "MSH"},
		{"ID then CR", "MSH\r|^~\\&|", ErrBadSeparators, "MSH"},
		{"no MSH-2", "MSH|", ErrBadSeparators, "MSH"},
		{"empty MSH-2", "MSH||A|B\r", ErrBadSeparators, "MSH"},
		{"one encoding char", "MSH|^|A\r", ErrBadSeparators, "MSH"},
		{"six encoding chars", "MSH|^~\\&#%|A\r", ErrBadSeparators, "MSH"},
		{"letter separator", "MSHA^~\\&AB\r", ErrBadSeparators, "MSH"},
		{"space separator", "MSH ^~\\& A\r", ErrBadSeparators, "MSH"},
		{"duplicate", "MSH|^^\\&|A\r", ErrBadSeparators, "MSH"},
		{"defaulted duplicate", "MSH&^~|A\r", ErrBadSeparators, "MSH"},
		{"non-ASCII", "MSH|^~\\\xa7|A\r", ErrBadSeparators, "MSH"},
		{"BHS no separators", "BHS", ErrBadSeparators, "BHS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseHeader([]byte(tt.msg))
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseHeader error = %v, want %v", err, tt.err)
			}
			if want := (Header{Segment: tt.segment}); h != want {
				t.Errorf("ParseHeader = %+v, want %+v", h, want)
			}
			// The caller must always be able to answer, with default separators.
			ack := AppendAck(nil, h, AckRequest{Code: AR, ControlID: ackID, Time: ackTime, ErrorCode: "102"})
			want := "MSH|^~\\&|||||20261125101501||ACK|ACK-0001|P|2.5\rMSA|AR|\rERR|||102^^HL70357|E\r"
			if string(ack) != want {
				t.Errorf("AppendAck =\n%s\nwant\n%s", show(ack), show([]byte(want)))
			}
		})
	}
}

func TestParseHeaderTolerated(t *testing.T) {
	tests := []struct {
		name, msg string
		want      Header
	}{
		{"BOM and blank lines", "\xef\xbb\xbf\r\n\rMSH|^~\\&|A||||||X^Y|ID1\r", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "A", MessageType: "X^Y", MessageCode: "X", TriggerEvent: "Y", ControlID: "ID1",
		}},
		{"two encoding chars", "MSH|^~|A", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: "^~", SendingApplication: "A",
		}},
		{"truncation char", "MSH|^~\\&#|A\r", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: "^~\\&#", SendingApplication: "A",
		}},
		{"header only, no terminator", "MSH|^~\\&", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
		}},
		{"CRLF", "MSH|^~\\&|A|B\r\nPID|1\r\n", Header{
			Segment: "MSH", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "A", SendingFacility: "B",
		}},
		{"BHS", "BHS|^~\\&|A|B|C|D|T|S|N|C|BID|REF\r", Header{
			Segment: "BHS", Separators: DefaultSeparators(), EncodingChars: `^~\&`,
			SendingApplication: "A", SendingFacility: "B", ReceivingApplication: "C",
			ReceivingFacility: "D", Time: "T", ControlID: "BID",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHeader([]byte(tt.msg))
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParseHeader =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

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

func TestParseAck(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want Ack // Header not compared
		err  error
	}{
		{"ack_aa_for_MSG00001.hl7", readTestdata(t, "ack_aa_for_MSG00001.hl7"),
			Ack{Code: AA, ControlID: "MSG00001"}, nil},
		{"ack_ae_with_err.hl7", readTestdata(t, "ack_ae_with_err.hl7"),
			Ack{Code: AE, ControlID: "MSG00001", Text: "Required field missing"}, nil},
		{"ack_ar_wrong_control_id.hl7", readTestdata(t, "ack_ar_wrong_control_id.hl7"),
			Ack{Code: AR, ControlID: "SOMETHING-ELSE"}, nil},
		{"ERR text when MSA-3 empty", []byte("MSH|^~\\&|A\rMSA|AE|X1\r\nERR||PID^1^3|101^Missing \\T\\ bad^HL70357|E\r"),
			Ack{Code: AE, ControlID: "X1", Text: "Missing \\T\\ bad"}, nil},
		{"ERR-1 text before v2.5", []byte("MSH|^~\\&|A\rMSA|AE|X1\rERR|PID^1^3^101&Missing&HL70357\r"),
			Ack{Code: AE, ControlID: "X1", Text: "Missing"}, nil},
		{"ERR not directly after MSA ignored", []byte("MSH|^~\\&|A\rMSA|AE|X1\rZZZ|1\rERR||PID|101^Missing^HL70357|E\r"),
			Ack{Code: AE, ControlID: "X1"}, nil},
		{"custom separators", []byte("MSH#$*@!#A\rMSA#CA#SEP-01#ok$fine\r"),
			Ack{Code: CA, ControlID: "SEP-01", Text: "ok$fine"}, nil},
		{"LF segments", []byte("MSH|^~\\&|A\nMSA|AA|X1\n"),
			Ack{Code: AA, ControlID: "X1"}, nil},
		{"empty MSA", []byte("MSH|^~\\&|A\rMSA|\r"), Ack{}, nil},
		{"no MSA", readTestdata(t, "adt_a01_v25.hl7"), Ack{}, ErrNoMSA},
		{"MSA without field separator", []byte("MSH|^~\\&|A\rMSA\rMSA^AA^X\r"), Ack{}, ErrNoMSA},
		{"MSA in header segment only", []byte("MSH|^~\\&|MSA|AA|X1"), Ack{}, ErrNoMSA},
		{"not hl7", readTestdata(t, "not_hl7.txt"), Ack{}, ErrNoHeader},
		{"bad separators", []byte("MSH|^\rMSA|AA|X1\r"), Ack{}, ErrBadSeparators},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAck(tt.msg)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseAck error = %v, want %v", err, tt.err)
			}
			got.Header = Header{}
			if got != tt.want {
				t.Errorf("ParseAck = %+v, want %+v", got, tt.want)
			}
			if has := HasMSA(tt.msg); has != (err == nil) {
				t.Errorf("HasMSA = %v, but ParseAck error = %v", has, err)
			}
		})
	}
	a, _ := ParseAck(readTestdata(t, "ack_aa_for_MSG00001.hl7"))
	if a.Header.ControlID != "ACK-7f3a" || !a.Header.IsAck() {
		t.Errorf("ACK header = %+v", a.Header)
	}
}

func TestAcceptAckWanted(t *testing.T) {
	tests := []struct {
		msh15              string
		negative, positive bool // AcceptAckWanted(true), AcceptAckWanted(false)
	}{
		{"AL", true, true},
		{"", true, true},
		{"NE", false, false},
		{"ER", true, false},
		{"SU", false, true},
		{"XX", true, true},
	}
	for _, tt := range tests {
		h := Header{AcceptAckType: tt.msh15}
		if got := h.AcceptAckWanted(true); got != tt.negative {
			t.Errorf("MSH-15 %q: AcceptAckWanted(negative) = %v, want %v", tt.msh15, got, tt.negative)
		}
		if got := h.AcceptAckWanted(false); got != tt.positive {
			t.Errorf("MSH-15 %q: AcceptAckWanted(positive) = %v, want %v", tt.msh15, got, tt.positive)
		}
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

func TestBatch(t *testing.T) {
	batch := readTestdata(t, "batch_fhs_bhs_3msgs.hl7")
	req := AckRequest{Code: AA, ControlID: ackID, Time: ackTime}
	const msgs = "MSH|^~\\&|RECV|FAC2|BATCHAPP|FAC|20261125101501||ACK^A01^ACK|ACK-0001-1|P|2.5\rMSA|AA|B-1\r" +
		"MSH|^~\\&|RECV|FAC2|BATCHAPP|FAC|20261125101501||ACK^A01^ACK|ACK-0001-2|P|2.5\rMSA|AA|B-2\r" +
		"MSH|^~\\&|RECV|FAC2|BATCHAPP|FAC|20261125101501||ACK^A01^ACK|ACK-0001-3|P|2.5\rMSA|AA|B-3\r"

	if !IsBatch(batch) || IsBatch(readTestdata(t, "adt_a01_v25.hl7")) || IsBatch(nil) {
		t.Error("IsBatch wrong")
	}
	got, err := AppendBatchAck([]byte("x"), batch, req)
	if err != nil {
		t.Fatalf("AppendBatchAck: %v", err)
	}
	want := "x" +
		"FHS|^~\\&|RECV|FAC2|BATCHAPP|FAC|20261125101501||||ACK-0001-F|FILE-1\r" +
		"BHS|^~\\&|RECV|FAC2|BATCHAPP|FAC|20261125101501||||ACK-0001-B|BATCH-1\r" +
		msgs + "BTS|3\rFTS|1\r"
	if string(got) != want {
		t.Errorf("AppendBatchAck =\n%s\nwant\n%s", show(got), show([]byte(want)))
	}
	if n := bytes.Count(got, []byte("\rMSA|")); n != 3 {
		t.Errorf("%d MSA segments, want 3", n)
	}

	// BHS only, with CRLF segments.
	bhsOnly := bytes.ReplaceAll(batch, []byte("\r"), []byte("\r\n"))
	bhsOnly = bhsOnly[bytes.Index(bhsOnly, []byte("BHS")):bytes.Index(bhsOnly, []byte("FTS"))]
	got, err = AppendBatchAck(nil, bhsOnly, req)
	if err != nil {
		t.Fatalf("AppendBatchAck(BHS only): %v", err)
	}
	want = "BHS|^~\\&|RECV|FAC2|BATCHAPP|FAC|20261125101501||||ACK-0001-B|BATCH-1\r" + msgs + "BTS|3\r"
	if string(got) != want {
		t.Errorf("AppendBatchAck(BHS only) =\n%s\nwant\n%s", show(got), show([]byte(want)))
	}

	// FHS without BHS: the BHS answers the FHS and has no reference.
	noBHS := bytes.Replace(batch, []byte("BHS|^~\\&|BATCHAPP|FAC|RECV|FAC2|20261125140000||||BATCH-1\r"), nil, 1)
	got, err = AppendBatchAck(nil, noBHS, req)
	if err != nil {
		t.Fatalf("AppendBatchAck(no BHS): %v", err)
	}
	want = "FHS|^~\\&|RECV|FAC2|BATCHAPP|FAC|20261125101501||||ACK-0001-F|FILE-1\r" +
		"BHS|^~\\&|RECV|FAC2|BATCHAPP|FAC|20261125101501||||ACK-0001-B\r" + msgs + "BTS|3\rFTS|1\r"
	if string(got) != want {
		t.Errorf("AppendBatchAck(no BHS) =\n%s\nwant\n%s", show(got), show([]byte(want)))
	}

	// A '-' field separator: the "-n" and "-B" suffixes must be escaped too.
	dash := []byte("BHS-^~\\&-S-F-R-G-T----B9\rMSH-^~\\&-S-F-R-G-T--ADT^A01-M1-P-2.5\rBTS-1\r")
	got, err = AppendBatchAck(nil, dash, req)
	if err != nil {
		t.Fatalf("AppendBatchAck('-' separator): %v", err)
	}
	want = "BHS-^~\\&-R-G-S-F-20261125101501----ACK\\F\\0001\\F\\B-B9\r" +
		"MSH-^~\\&-R-G-S-F-20261125101501--ACK^A01^ACK-ACK\\F\\0001\\F\\1-P-2.5\rMSA-AA-M1\rBTS-1\r"
	if string(got) != want {
		t.Errorf("AppendBatchAck('-' separator) =\n%s\nwant\n%s", show(got), show([]byte(want)))
	}

	// Not a batch: a plain ACK.
	adt := readTestdata(t, "adt_a01_v25.hl7")
	h, _ := ParseHeader(adt)
	got, err = AppendBatchAck(nil, adt, req)
	if err != nil || !bytes.Equal(got, AppendAck(nil, h, req)) {
		t.Errorf("AppendBatchAck(single message) = %q, %v", got, err)
	}

	// Errors leave dst unchanged.
	for name, msg := range map[string][]byte{
		"no header":   readTestdata(t, "not_hl7.txt"),
		"bad MSH":     bytes.Replace(batch, []byte("MSH|^~\\&|BATCHAPP|FAC|RECV|FAC2|20261125140001"), []byte("MSH|^"), 1),
		"bad BHS":     bytes.Replace(batch, []byte("BHS|^~\\&"), []byte("BHS|^^"), 1),
		"bad FHS sep": bytes.Replace(batch, []byte("FHS|^~\\&"), []byte("FHS|"), 1),
	} {
		got, err := AppendBatchAck([]byte("dst"), msg, req)
		if err == nil || string(got) != "dst" {
			t.Errorf("%s: AppendBatchAck = %q, %v; want dst unchanged and an error", name, got, err)
		}
		if name == "bad MSH" && (!errors.Is(err, ErrBadSeparators) || !strings.Contains(err.Error(), "message 2")) {
			t.Errorf("%s: error %q should wrap ErrBadSeparators and name message 2", name, err)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	tests := []struct {
		v            string
		major, minor int
		want         bool
	}{
		{"2.4", 2, 4, true},
		{"2.3.1", 2, 4, false},
		{"2.3", 2, 4, false},
		{"2.10", 2, 4, true},
		{"2.5.1", 2, 5, true},
		{"2.4", 2, 5, false},
		{"2", 2, 4, false},
		{"3", 2, 5, true},
		{"1.9", 2, 4, false},
		{"", 2, 4, true},
		{"v2.3", 2, 4, true},
		{"99999999999999999999999.1", 2, 4, true},
	}
	for _, tt := range tests {
		if got := versionAtLeast(tt.v, tt.major, tt.minor); got != tt.want {
			t.Errorf("versionAtLeast(%q, %d, %d) = %v, want %v", tt.v, tt.major, tt.minor, got, tt.want)
		}
	}
}

// TestAllocations pins the allocation behaviour the MLLP path relies on:
// one string for the header segment however large the message, and no
// allocation when building an ACK into a reused buffer.
func TestAllocations(t *testing.T) {
	big := readTestdata(t, "oru_r01_embedded_pdf_270k.hl7")
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseHeader(big) }); n > 1 {
		t.Errorf("ParseHeader allocations = %v, want at most 1", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = HasMSA(big) }); n != 0 {
		t.Errorf("HasMSA allocations = %v, want 0", n)
	}
	h, err := ParseHeader(big)
	if err != nil {
		t.Fatal(err)
	}
	req := AckRequest{Code: AE, Text: "text|with^separators", ErrorCode: "207", ErrorLocation: "OBX^1^5", ControlID: ackID, Time: ackTime}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf = AppendAck(buf[:0], h, req) }); n != 0 {
		t.Errorf("AppendAck allocations = %v, want 0", n)
	}
}
