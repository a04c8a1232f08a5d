package peersim_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/internal/peersim"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"one CR message", "MSH|^~\\&|A\rPID|1\r", []string{"MSH|^~\\&|A\rPID|1\r"}},
		{"LF and blank lines", "\nMSH|^~\\&|A\nPID|1\n\n\nMSH|^~\\&|B\r\nPID|2\r\n", []string{"MSH|^~\\&|A\rPID|1\r", "MSH|^~\\&|B\rPID|2\r"}},
		{"BOM", "\xef\xbb\xbfMSH|^~\\&|A\n", []string{"MSH|^~\\&|A\r"}},
		{"custom separators", "MSH#$~\\&#A\nMSH#$~\\&#B\n", []string{"MSH#$~\\&#A\r", "MSH#$~\\&#B\r"}},
		{"a batch is one message", "FHS|^~\\&\nBHS|^~\\&\nMSH|^~\\&|1\nMSH|^~\\&|2\nBTS|2\nFTS|1\n", []string{"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|1\rMSH|^~\\&|2\rBTS|2\rFTS|1\r"}},
		{"not HL7: verbatim", "{\"a\": 1}\n", []string{"{\"a\": 1}\n"}},
		{"MSH inside a line is not a start", "MSH|^~\\&|A\nNTE|MSH|x\n", []string{"MSH|^~\\&|A\rNTE|MSH|x\r"}},
		{"empty", "\n\r\n  \n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := peersim.Split([]byte(tc.in))
			if len(got) != len(tc.want) {
				t.Fatalf("Split(%q) = %q, want %q", tc.in, got, tc.want)
			}
			for i := range got {
				if string(got[i]) != tc.want[i] {
					t.Errorf("message %d = %q, want %q", i+1, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestReadMessages reads a directory (files in name order, hidden ones
// skipped), a file and standard input.
func TestReadMessages(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".hidden.hl7"), []byte("MSH|^~\\&|X\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	msgs, err := peersim.ReadMessages([]string{"testdata/messages", "-", dir}, strings.NewReader("MSH|^~\\&|S|||||||STDIN-1|P|2.5\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		h, err := hl7.ParseHeader(m.Payload)
		if err != nil {
			t.Fatalf("%s: %v", m.Source, err)
		}
		if bytes.ContainsAny(m.Payload, "\n") {
			t.Errorf("%s: LF left in the payload", m.Source)
		}
		got = append(got, m.Source+"="+h.ControlID)
	}
	want := "testdata/messages/a-three-adts.hl7#1=PEER-1 testdata/messages/a-three-adts.hl7#2=PEER-2 " +
		"testdata/messages/a-three-adts.hl7#3=PEER-3 testdata/messages/b-oru.hl7=PEER-4 stdin=STDIN-1"
	if strings.Join(got, " ") != want {
		t.Errorf("messages:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	if _, err := peersim.ReadMessages([]string{filepath.Join(dir, "missing")}, nil); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}
