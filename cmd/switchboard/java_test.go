package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Java example (examples/java) is a client of the real API on gRPC
// Java and protobuf Java from Debian's packages: build.sh generates the
// stubs from proto/ (protoc with grpc_java_plugin) and compiles them with
// Example.java. This test builds it into a temporary directory, so what
// runs is always what proto/ says, and runs it against a real
// `switchboard serve`.

// TestJavaExample runs the documented round trip (examples/java/Example.java):
// StartListener, Receive, Connect to it, Send; then reads the journal with a
// Go client: the one message it holds is the one Java sent.
func TestJavaExample(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the Java stubs and starts a JVM")
	}
	// Compiling the stubs takes a core for about 20 s: alongside the
	// other client tests rather than after them.
	t.Parallel()
	dir := examplesDir(t, "java")
	missing := ""
	if out, err := exec.Command("sh", filepath.Join(dir, "build.sh"), "--check").CombinedOutput(); err != nil {
		missing = strings.TrimSpace(string(out))
		if missing == "" {
			missing = "build.sh --check: " + err.Error()
		}
	}
	requireRuntime(t, missing)

	out := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "sh", filepath.Join(dir, "build.sh"), out)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	addr := serveForExample(t)
	code, sum := runProgram(t, dir, 2*time.Minute, addr, nil, "java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-jar", filepath.Join(out, "example.jar"))
	mustPass(t, code, sum)
	f := sum.Facts
	if f["outcome"] != "SEND_OUTCOME_ACCEPTED" || f["ack_code"] != "ACK_CODE_AA" || f["sequence"] != "1" {
		t.Errorf("Example.java saw outcome %q, ACK %q, sequence %q; want ACCEPTED, AA, 1", f["outcome"], f["ack_code"], f["sequence"])
	}
	wantJournal(t, addr, f["listener_id"], f["control_id"])
}
