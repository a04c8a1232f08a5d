package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Python examples (examples/python) are clients of the real API with
// stubs generated from proto/ (gen.sh: Debian's protoc and
// grpc_python_plugin), on Debian's python3-grpcio, and drive python-hl7
// (Debian's python3-hl7) as a third-party MLLP peer. These tests generate
// the stubs into a temporary directory, so what runs is always what proto/
// says, and run the programs against a real `switchboard serve`.

// pythonExamples returns the Python interpreter to use (one that imports
// every module in modules), examples/python and a directory of freshly
// generated stubs; it skips (fails in CI) when something is missing.
// SWITCHBOARD_PYTHON names the interpreter; by default Debian's
// /usr/bin/python3, for which Debian's packages install, then python3 on
// PATH.
func pythonExamples(t *testing.T, modules string) (python, dir, stubs string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a child process and python3")
	}
	dir = examplesDir(t, "python")
	candidates := []string{"/usr/bin/python3", "python3"}
	if p := os.Getenv("SWITCHBOARD_PYTHON"); p != "" {
		candidates = []string{p}
	}
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil && exec.Command(p, "-c", "import "+modules).Run() == nil {
			python = p
			break
		}
	}
	missing := ""
	switch {
	case python == "":
		missing = "none of " + strings.Join(candidates, ", ") + " imports " + modules + " (apt-get install python3-grpcio python3-hl7)"
	case !onPath("protoc") || !onPath("grpc_python_plugin"):
		missing = "protoc or grpc_python_plugin is not on PATH (apt-get install protobuf-compiler protobuf-compiler-grpc libprotobuf-dev)"
	}
	requireRuntime(t, missing)

	stubs = t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "sh", filepath.Join(dir, "gen.sh"), stubs).CombinedOutput(); err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, out)
	}
	return python, dir, stubs
}

func onPath(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// TestPythonExample runs the documented round trip (examples/python/example.py):
// StartListener, Receive, Connect to it, Send; then reads the journal with a
// Go client: the one message it holds is the one Python sent.
func TestPythonExample(t *testing.T) {
	python, dir, stubs := pythonExamples(t, "grpc, google.protobuf")
	addr := serveForExample(t)
	code, sum := runProgram(t, dir, time.Minute, addr, []string{"SWITCHBOARD_PY_STUBS=" + stubs}, python, "example.py")
	mustPass(t, code, sum)
	f := sum.Facts
	if f["outcome"] != "SEND_OUTCOME_ACCEPTED" || f["ack_code"] != "ACK_CODE_AA" || f["sequence"] != "1" {
		t.Errorf("example.py saw outcome %q, ACK %q, sequence %q; want ACCEPTED, AA, 1", f["outcome"], f["ack_code"], f["sequence"])
	}
	wantJournal(t, addr, f["listener_id"], f["control_id"])
}

// TestPythonHL7Peer: python-hl7 (Debian's python3-hl7) in both directions
// (examples/python/hl7_peer.py). Its mllp_send command and its asyncio
// client each send to a Switchboard listener and get an AA that
// python-hl7's own parser reads; its asyncio MLLP server answers a
// Switchboard connection's Sends with AA and AE, which Send reports as
// ACCEPTED and REJECTED. The journal then holds the two messages sent to
// the listener, in order.
func TestPythonHL7Peer(t *testing.T) {
	python, dir, stubs := pythonExamples(t, "grpc, google.protobuf, hl7.mllp")
	requireRuntime(t, map[bool]string{false: "mllp_send is not on PATH (apt-get install python3-hl7)"}[onPath("mllp_send")])
	addr := serveForExample(t)
	code, sum := runProgram(t, dir, time.Minute, addr, []string{"SWITCHBOARD_PY_STUBS=" + stubs}, python, "hl7_peer.py")
	mustPass(t, code, sum)
	f := sum.Facts
	wantJournal(t, addr, f["listener_id"], f["mllp_send_control_id"], f["asyncio_client_control_id"])
	if f["server_aa_control_id"] == "" || f["server_ae_control_id"] == "" {
		t.Errorf("hl7_peer.py did not report the server side's sends: %v", f)
	}
}
