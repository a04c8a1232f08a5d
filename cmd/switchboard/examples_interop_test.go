package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// The client examples in other languages (examples/node, examples/python,
// examples/java) and the third-party MLLP peers they drive run against a
// real `switchboard serve` started by these helpers. Each program prints a
// JSON summary last (programSummary); the tests fail on any failed check
// and then assert, through a Go client of the same server, what the
// journal holds. A missing runtime or package skips a test, except with CI
// set (.ci/run sets it and installs them), where it fails.

// requireRuntime skips the test, or fails it in CI, when missing is not
// empty.
func requireRuntime(t *testing.T, missing string) {
	t.Helper()
	if missing == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI must run this test (.ci/run installs what it needs)", missing)
	}
	t.Skip(missing)
}

// examplesDir returns the absolute path of examples/NAME.
func examplesDir(t *testing.T, name string) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// serveForExample starts `switchboard serve` (startServeChild) and returns
// its gRPC address.
func serveForExample(t *testing.T) string {
	t.Helper()
	return startServeChild(t, childOpts{}).grpcAddr
}

// programSummary is the JSON summary every example program prints last.
// Facts are values the Go test checks on its own (ids, codes); the
// summaries carry no payload bytes.
type programSummary struct {
	Program       string            `json:"program"`
	OK            bool              `json:"ok"`
	Error         string            `json:"error"`
	Unimplemented string            `json:"unimplemented"`
	Facts         map[string]string `json:"facts"`
	Checks        []struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	} `json:"checks"`
}

// runProgram runs argv in dir with SWITCHBOARD_ADDR=addr and the extra
// environment, within limit, and returns its exit status and summary (the
// last line of its output that parses as one). Every failed check is a
// test error.
func runProgram(t *testing.T, dir string, limit time.Duration, addr string, env []string, argv ...string) (int, programSummary) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "SWITCHBOARD_ADDR="+addr), env...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%v did not finish within %v; stderr:\n%s", argv, limit, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Logf("%v stderr:\n%s", argv, stderr.String())
	}
	var sum programSummary
	lines := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if json.Unmarshal(lines[i], &sum) == nil && sum.Program != "" {
			break
		}
	}
	for _, c := range sum.Checks {
		if !c.OK {
			t.Errorf("%s: %s: %s", argv[len(argv)-1], c.Name, c.Detail)
		}
	}
	return code, sum
}

// mustPass fails the test unless the program exited 0 with every check
// passed.
func mustPass(t *testing.T, code int, sum programSummary) {
	t.Helper()
	if code != 0 || !sum.OK || len(sum.Checks) == 0 {
		t.Fatalf("%s exited %d, ok %v, %d checks, error %q", sum.Program, code, sum.OK, len(sum.Checks), sum.Error)
	}
	t.Logf("%s: %d checks passed", sum.Program, len(sum.Checks))
}

// journaled returns the records the server at addr has journaled from the
// listener, in sequence order, read with a Go client of the API. (The
// whole journal is read: a filter naming a listener the program has
// removed is NOT_FOUND.)
func journaled(t *testing.T, addr, listenerID string) []*switchboardv1.ReceivedMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	start := uint64(1)
	stream, err := switchboardv1.NewSwitchboardServiceClient(cc).Receive(ctx, &switchboardv1.ReceiveRequest{
		StartSequence: &start,
		StopAtHead:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []*switchboardv1.ReceivedMessage
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatalf("Receive the journal of %s: %v", listenerID, err)
		}
		for _, m := range resp.GetMessages() {
			if m.GetListenerId() == listenerID {
				got = append(got, m)
			}
		}
	}
}

// wantJournal checks that the listener's journal holds messages with
// exactly these control ids, in this order.
func wantJournal(t *testing.T, addr, listenerID string, controlIDs ...string) {
	t.Helper()
	got := journaled(t, addr, listenerID)
	ids := make([]string, len(got))
	for i, m := range got {
		ids[i] = m.GetControlId()
		if m.GetKind() != switchboardv1.RecordKind_RECORD_KIND_MESSAGE {
			t.Errorf("journal of %s: record %d is %v", listenerID, m.GetSequence(), m.GetKind())
		}
	}
	if len(ids) != len(controlIDs) {
		t.Fatalf("journal of %s holds control ids %q, want %q", listenerID, ids, controlIDs)
	}
	for i := range ids {
		if ids[i] != controlIDs[i] || controlIDs[i] == "" {
			t.Fatalf("journal of %s holds control ids %q, want %q", listenerID, ids, controlIDs)
		}
	}
}
