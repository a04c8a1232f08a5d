package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The Node.js examples (examples/node) are clients of the real API: these
// tests start `switchboard serve` and run them with node, so a change to
// the API or the server that breaks a Node client (grpc-js, proto-loader
// reading proto/ at run time) or the third-party MLLP peer from npm
// (simple-hl7) fails here. .ci/run installs node's packages (npm ci);
// without node or examples/node/node_modules the tests skip, except in CI
// (CI set), where they fail.

// nodeExamples returns examples/node, or skips (fails in CI) when node or
// the packages are not installed.
func nodeExamples(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a child process and node")
	}
	dir := examplesDir(t, "node")
	missing := ""
	if _, err := exec.LookPath("node"); err != nil {
		missing = "node is not on PATH"
	} else if _, err := os.Stat(filepath.Join(dir, "node_modules", "@grpc", "grpc-js")); err != nil {
		missing = "examples/node/node_modules is missing (run npm ci in examples/node)"
	} else if _, err := os.Stat(filepath.Join(dir, "node_modules", "simple-hl7")); err != nil {
		missing = "examples/node/node_modules lacks simple-hl7 (run npm ci in examples/node)"
	}
	requireRuntime(t, missing)
	return dir
}

// TestNodePeer: simple-hl7 from npm sends an ADT over MLLP and gets an AA
// for its MSH-10; a Node gRPC Receive stream gets the message byte for
// byte (examples/node/peer_test.js).
func TestNodePeer(t *testing.T) { runNodeChecks(t, "peer_test.js") }

// runNodeChecks runs a checking script against a real serve: it must exit
// 0 with every check passed.
func runNodeChecks(t *testing.T, script string) {
	t.Helper()
	dir := nodeExamples(t)
	code, sum := runProgram(t, dir, time.Minute, serveForExample(t), nil, "node", script)
	mustPass(t, code, sum)
}

// TestNodeExample runs the documented example (examples/node/example.js):
// listener, Receive, Connect, Send.
func TestNodeExample(t *testing.T) {
	dir := nodeExamples(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "example.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SWITCHBOARD_ADDR="+serveForExample(t))
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.HasSuffix(bytes.TrimSpace(out), []byte("\nok")) {
		t.Fatalf("node example.js: %v\n%s", err, out)
	}
}

// TestNodeAppAck runs the application-ACK scenario (examples/node/appack.js):
// a Node consumer decides the ACK (AE with text and error code), the
// fallback AR with no consumer attached, and a complete RSP^K22 answer,
// each checked at the npm MLLP peer.
func TestNodeAppAck(t *testing.T) { runNodeChecks(t, "appack.js") }
