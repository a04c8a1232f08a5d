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
// (simple-hl7, node-hl7-client, node-hl7-server) fails here. .ci/run installs node's packages (npm ci);
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
	} else {
		for _, pkg := range []string{"simple-hl7", "node-hl7-client", "node-hl7-server"} {
			if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg)); err != nil {
				missing = "examples/node/node_modules lacks " + pkg + " (run npm ci in examples/node)"
				break
			}
		}
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

// TestNodeMLLPPeers: MLLP implementations from npm in both directions
// (examples/node/peers.js). node-hl7-client sends to a Switchboard
// listener and reads an AA with its own parser; simple-hl7's TCP server
// and node-hl7-server each answer a Switchboard connection's Sends with AA
// and AE, which Send reports as ACCEPTED and REJECTED, and Switchboard's
// copy of each ACK parses with that library. The journal then holds the
// message node-hl7-client sent.
func TestNodeMLLPPeers(t *testing.T) {
	dir := nodeExamples(t)
	addr := serveForExample(t)
	code, sum := runProgram(t, dir, time.Minute, addr, nil, "node", "peers.js")
	mustPass(t, code, sum)
	f := sum.Facts
	wantJournal(t, addr, f["listener_id"], f["node_hl7_client_control_id"])
	for _, k := range []string{"simple_hl7_server_aa", "simple_hl7_server_ae", "node_hl7_server_aa", "node_hl7_server_ae"} {
		if f[k+"_control_id"] == "" {
			t.Errorf("peers.js did not report %s: %v", k, f)
		}
	}
}

// TestNodeFrictions (examples/node/frictions.js): what tripped up the
// first Node client is a non-event with client.js: requests spelled with
// proto names arrive, an unknown field or enum name is an error instead of
// silently dropped or zeroed, Durations may be "5s", sequences are strings
// and proto3 optional start_sequence keeps its presence.
func TestNodeFrictions(t *testing.T) { runNodeChecks(t, "frictions.js") }

// TestNodeAppAck runs the application-ACK scenario (examples/node/appack.js):
// a Node consumer decides the ACK (AE with text and error code), the
// fallback AR with no consumer attached, and a complete RSP^K22 answer,
// each checked at the npm MLLP peer.
func TestNodeAppAck(t *testing.T) { runNodeChecks(t, "appack.js") }
