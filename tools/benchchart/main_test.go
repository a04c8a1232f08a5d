package main

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/bench"
)

// writeSuite writes a suite document with the given rows and returns its path.
func writeSuite(t *testing.T, results []bench.Result) string {
	t.Helper()
	var s suite
	s.Machine.CPUs, s.Machine.CPUModel, s.Machine.Date = 2, "Test CPU", "2026-11-25T22:00:00Z"
	s.Settings.Size, s.Settings.Duration, s.Settings.Rounds = 260, "5s", 3
	s.Results = results
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "results.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRun(t *testing.T) {
	var rows []bench.Result
	for i, target := range []string{"switchboard", "minimal-durable", "bare-ack"} {
		for j, conns := range []int{1, 8, 64} {
			for round := range 3 { // repeated rounds are reduced to the median
				rows = append(rows, bench.Result{
					Group: "inbound", Target: target, Conns: conns, Size: 260, Msgs: 1000, Seconds: 5,
					Rate: float64(1000 * (i + 1) * (j + 1) * (round + 1)),
					P50:  float64(100 * (j + 1)), P99: float64(300 * (i + 1) * (j + 1)),
				})
			}
		}
	}
	rows = append(rows, bench.Result{Group: "outbound", Target: "switchboard-send", Conns: 64, Calls: 64, Rate: 1e9, P99: 1e9})
	out := filepath.Join(t.TempDir(), "chart.png")
	if err := run(writeSuite(t, rows), out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	if b := img.Bounds(); b.Dx() != 1400 || b.Dy() != 560 {
		t.Errorf("image is %dx%d, want 1400x560", b.Dx(), b.Dy())
	}
}

func TestRunBadInput(t *testing.T) {
	dir := t.TempDir()
	notJSON := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(notJSON, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	noInbound := writeSuite(t, []bench.Result{{Group: "outbound", Target: "switchboard-send", Conns: 8, Rate: 10}})
	for _, tc := range []struct{ name, in, want string }{
		{"not JSON", notJSON, "not valid"},
		{"no inbound rows", noInbound, "no inbound results"},
		{"missing file", filepath.Join(dir, "missing.json"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "out.png")
			err := run(tc.in, out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%s) = %v, want error containing %q", tc.in, err, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("%s written despite the error", out)
			}
		})
	}
}
