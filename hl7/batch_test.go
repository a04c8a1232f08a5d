package hl7

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

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
