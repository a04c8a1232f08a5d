package hl7

import (
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
