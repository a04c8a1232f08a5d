package hl7

import (
	"errors"
	"testing"
)

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
