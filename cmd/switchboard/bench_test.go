package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/bench"
)

// TestBenchSuiteStoreAndForward runs the suite's store-and-forward groups
// and the metrics cost tiny, with this test binary as the servers (TestMain runs the command in
// the children), so they cannot rot. Nothing about the figures is checked
// but that there are some.
func TestBenchSuiteStoreAndForward(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	rep, table := runSuite(t, "--only", "queued,pipeline,restart,metrics", "--metrics-conns", "1,2", "--rounds", "1", "--duration", "200ms", "--warmup", "0s",
		"--pipeline-count", "20", "--restart-resources", "2", "--restart-messages", "30")
	got := map[string]int{}
	for _, r := range rep.Results {
		got[r.Group+"/"+r.Target]++
		switch {
		case r.Errors != nil:
			t.Errorf("%s/%s: errors %v", r.Group, r.Target, r.Errors)
		case r.Group == "restart" && r.Seconds <= 0:
			t.Errorf("restart %s: %+v", r.Target, r)
		case (r.Group == "pipeline" || r.Target == "switchboard-queued") && r.DeliveredRate <= 0:
			t.Errorf("%s/%s delivered nothing: %+v", r.Group, r.Target, r)
		}
	}
	for _, want := range []string{"queued/switchboard-send", "queued/switchboard-queued", "pipeline/window-1", "pipeline/window-8",
		"restart/empty", "restart/2+2+30", "metrics/metrics-on", "metrics/metrics-off"} {
		n := 1
		if strings.HasPrefix(want, "metrics/") {
			n = 2 // at 1 and 2 connections
		}
		if got[want] != n {
			t.Errorf("%s: %d results, want %d (all: %v)", want, got[want], n, got)
		}
	}
	if !strings.Contains(table, "delivered/s") {
		t.Errorf("no table:\n%s", table)
	}
}

func TestBenchSuiteOnlyUnknownGroup(t *testing.T) {
	var out bytes.Buffer
	if err := benchCmd([]string{"suite", "--only", "queued,nope"}, &out, &out); err != errUsage || !strings.Contains(out.String(), `unknown group "nope"`) {
		t.Errorf("bench suite --only nope = %v, %q", err, out.String())
	}
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// TestBenchSuiteConsumers runs the issue 10 groups (consumer, app-ack,
// dedup) tiny, with this test binary as the servers, so they cannot rot:
// every row there, without errors.
func TestBenchSuiteConsumers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	rep, _ := runSuite(t, "--only", "consumer,app-ack,dedup", "--dedup-conns", "1,2", "--receive-count", "300", "--rounds", "1",
		"--duration", "300ms", "--warmup", "0s")
	got := map[string]int{}
	for _, r := range rep.Results {
		got[r.Group+"/"+r.Target]++
		if r.Errors != nil || r.Msgs == 0 {
			t.Errorf("%s/%s: %d messages, errors %v", r.Group, r.Target, r.Msgs, r.Errors)
		}
	}
	for want, n := range map[string]int{"consumer/anonymous": 1, "consumer/consumer-through": 1, "consumer/consumer-each": 1, "consumer/consumer-async": 1,
		"app-ack/automatic": 1, "app-ack/app-ack": 1, "dedup/dedup-off": 2, "dedup/dedup-10m": 2} {
		if got[want] != n {
			t.Errorf("%s: %d results, want %d (all: %v)", want, got[want], n, got)
		}
	}
}

// runSuite runs `bench suite` with args, this test binary as the servers,
// and returns its report and the table it printed.
func runSuite(t *testing.T, args ...string) (bench.Report, string) {
	t.Helper()
	t.Setenv("SWITCHBOARD_RUN_MAIN", "1") // for the children
	path := t.TempDir() + "/report.json"
	var stdout, stderr bytes.Buffer
	if err := benchCmd(append(append([]string{"suite"}, args...), "--dir", t.TempDir(), "--json", path), &stdout, &stderr); err != nil {
		t.Fatalf("bench suite: %v\n%s", err, stderr.String())
	}
	var rep bench.Report
	if err := readJSON(path, &rep); err != nil {
		t.Fatal(err)
	}
	return rep, stdout.String()
}
