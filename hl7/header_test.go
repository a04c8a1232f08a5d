package hl7

import (
	"errors"
	"testing"
)

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
		// MSH-16 follows the same table (0155) for the application ACK.
		a := Header{ApplicationAckType: tt.msh15}
		if a.ApplicationAckWanted(true) != tt.negative || a.ApplicationAckWanted(false) != tt.positive {
			t.Errorf("MSH-16 %q: ApplicationAckWanted(negative, positive) = %v, %v; want %v, %v", tt.msh15,
				a.ApplicationAckWanted(true), a.ApplicationAckWanted(false), tt.negative, tt.positive)
		}
	}
}
