package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
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
	dir, err := filepath.Abs(filepath.Join("..", "..", "examples", "node"))
	if err != nil {
		t.Fatal(err)
	}
	missing := ""
	if _, err := exec.LookPath("node"); err != nil {
		missing = "node is not on PATH"
	} else if _, err := os.Stat(filepath.Join(dir, "node_modules", "@grpc", "grpc-js")); err != nil {
		missing = "examples/node/node_modules is missing (run npm ci in examples/node)"
	} else if _, err := os.Stat(filepath.Join(dir, "node_modules", "simple-hl7")); err != nil {
		missing = "examples/node/node_modules lacks simple-hl7 (run npm ci in examples/node)"
	}
	if missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s; CI must run the Node examples (.ci/run installs them)", missing)
		}
		t.Skip(missing)
	}
	return dir
}

// serveForNode starts `switchboard serve` on loopback with a temporary
// data directory and returns its gRPC address. Cleanup stops it with
// SIGTERM (SIGKILL if it has not exited 20 s later).
func serveForNode(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "", "--data-dir", t.TempDir(), "--log-format", "json")
	cmd.Env = append(os.Environ(), "SWITCHBOARD_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec struct {
				Msg      string `json:"msg"`
				GRPCAddr string `json:"grpc_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "switchboard serving" {
				select {
				case addr <- rec.GRPCAddr:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case a := <-addr:
		return a
	case <-exited:
		t.Fatal("serve exited before serving")
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not log \"switchboard serving\" within 30 s")
	}
	return ""
}

// nodeSummary is the JSON summary every example program prints last.
type nodeSummary struct {
	Program       string `json:"program"`
	OK            bool   `json:"ok"`
	Error         string `json:"error"`
	Unimplemented string `json:"unimplemented"`
	Checks        []struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	} `json:"checks"`
}

// runNode runs `node script` in dir against the server at addr, within a
// minute, and returns its exit status and summary (the last line of its
// output that parses as one). The summaries carry no payload bytes.
func runNode(t *testing.T, dir, script, addr string) (int, nodeSummary) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SWITCHBOARD_ADDR="+addr)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("node %s: %v", script, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("node %s did not finish within a minute; stderr:\n%s", script, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Logf("node %s stderr:\n%s", script, stderr.String())
	}
	var sum nodeSummary
	lines := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if json.Unmarshal(lines[i], &sum) == nil && sum.Program != "" {
			break
		}
	}
	for _, c := range sum.Checks {
		if !c.OK {
			t.Errorf("%s: %s: %s", script, c.Name, c.Detail)
		}
	}
	return code, sum
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
	code, sum := runNode(t, dir, script, serveForNode(t))
	if code != 0 || !sum.OK || len(sum.Checks) == 0 {
		t.Fatalf("%s exited %d, ok %v, %d checks, error %q", script, code, sum.OK, len(sum.Checks), sum.Error)
	}
	t.Logf("%s: %d checks passed", script, len(sum.Checks))
}

// TestNodeExample runs the documented example (examples/node/example.js):
// listener, Receive, Connect, Send.
func TestNodeExample(t *testing.T) {
	dir := nodeExamples(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "example.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SWITCHBOARD_ADDR="+serveForNode(t))
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
