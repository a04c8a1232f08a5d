package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service"
)

const peerTestdata = "../../internal/peersim/testdata/"

// peerRun runs `switchboard peer args...` and returns its output and exit
// code (2 for cobra's own usage errors).
func peerRun(ctx context.Context, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	defer func() { stdout = peerSpaces(stdout) }()
	cmd := newPeerCmd()
	cmd.SetArgs(args)
	cmd.SetIn(stdin)
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	err := cmd.ExecuteContext(ctx)
	return out.String(), errb.String() + peerErrText(err), peerExitCode(err)
}

// peerSpaces collapses the runs of spaces that align tables, so that tests
// do not depend on column widths.
func peerSpaces(s string) string {
	for strings.Contains(s, "  ") {
		s = strings.ReplaceAll(s, "  ", " ")
	}
	return s
}

func peerErrText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func peerExitCode(err error) int {
	var ec interface{ ExitCode() int }
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ec):
		return ec.ExitCode()
	}
	return 2 // cobra: unknown flag, wrong number of arguments
}

// peerListening runs `switchboard peer listen` in the background and
// returns its address and its output lines as they come; wait ends it (by
// ctx, unless it ends by itself) and returns its exit code.
type peerListening struct {
	addr   string
	lines  chan string
	cancel context.CancelFunc
	done   chan int
}

func peerListen(t *testing.T, args ...string) *peerListening {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	pr, pw := io.Pipe()
	l := &peerListening{lines: make(chan string, 100), cancel: cancel, done: make(chan int, 1)}
	cmd := newPeerCmd()
	cmd.SetArgs(append([]string{"listen", "127.0.0.1:0"}, args...))
	cmd.SetOut(pw)
	cmd.SetErr(io.Discard)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		err := cmd.ExecuteContext(ctx)
		_ = pw.Close()
		l.done <- peerExitCode(err)
	}()
	go func() {
		defer wg.Done()
		defer close(l.lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	first, ok := <-l.lines
	if !ok {
		t.Fatalf("peer listen %q printed nothing; exit %d", args, <-l.done)
	}
	if j := strings.Index(first, `"listening":"`); j >= 0 {
		l.addr = strings.SplitN(first[j+len(`"listening":"`):], `"`, 2)[0]
	} else if _, err := fmt.Sscanf(first, "listening on %s", &l.addr); err != nil {
		t.Fatalf("first line %q: %v", first, err)
	}
	return l
}

// wait returns the exit code and the lines printed after the first.
func (l *peerListening) wait(stop bool) (int, []string) {
	if stop {
		l.cancel()
	}
	var lines []string
	for s := range l.lines {
		lines = append(lines, s)
	}
	return <-l.done, lines
}

// TestPeerListenAndSend plays the example between the two halves of
// the command: `peer listen --scenario three-aa-silence-reset.yaml
// --until-done` answers three messages AA, says nothing to the fourth and
// resets the connection on the fifth, then exits; `peer send` reports three
// AA and two messages in doubt, and exits 8.
func TestPeerListenAndSend(t *testing.T) {
	l := peerListen(t, "--scenario", peerTestdata+"three-aa-silence-reset.yaml", "--until-done")
	m := peerTestdata + "messages/"
	out, errOut, code := peerRun(t.Context(), nil, "send", l.addr, m+"a-three-adts.hl7", m+"b-oru.hl7", m+"b-oru.hl7", "--timeout", "300ms")
	if code != peerExitInDoubt {
		t.Errorf("peer send exit %d, want %d\n%s%s", code, peerExitInDoubt, out, errOut)
	}
	for _, want := range []string{
		"a-three-adts.hl7#1 PEER-1 AA in ", "a-three-adts.hl7#3 PEER-3 AA in ",
		"b-oru.hl7 PEER-4 in doubt: ack timeout\n", "b-oru.hl7 PEER-4 in doubt: connection lost\n",
		"\nsent 5 in ", "\nAA 3\n", "\nin doubt 2\n", "\n ack timeout 1\n", "\n connection lost 1\n", "\nround trip p50 ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("peer send output lacks %q:\n%s", want, out)
		}
	}
	code, lines := l.wait(false)
	got := strings.Join(lines, "\n")
	if code != 0 || len(lines) != 6 {
		t.Fatalf("peer listen exit %d, output:\n%s", code, got)
	}
	for i, want := range []string{
		"#1 127.0.0.1:", "PEER-1 ADT^A01^ADT_A01: answer AA (step 1, line 4)",
		"#4 127.0.0.1:", "PEER-4 ORU^R01^ORU_R01: silence (step 2, line 6)",
		"#5 127.0.0.1:", "PEER-4 ORU^R01^ORU_R01: reset (step 3, line 7)",
		"stopped: 2 connections, 5 messages, AA 3, silent 1, reset 1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("peer listen output (%d) lacks %q:\n%s", i, want, got)
		}
	}
}

// TestPeerJSON: with -o json both halves print one JSON object a line; a
// peer answering AE makes send exit 7.
func TestPeerJSON(t *testing.T) {
	l := peerListen(t, "--answer", "AE", "-o", "json")
	out, errOut, code := peerRun(t.Context(), nil, "send", l.addr, peerTestdata+"messages", "-o", "json", "--rate", "100")
	if code != peerExitRejected {
		t.Errorf("exit %d, want %d\n%s%s", code, peerExitRejected, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	for _, s := range lines[:4] {
		var v struct {
			Source      string  `json:"source"`
			ControlID   string  `json:"control_id"`
			Code        string  `json:"code"`
			RoundTripMs float64 `json:"round_trip_ms"`
		}
		if err := json.Unmarshal([]byte(s), &v); err != nil || v.Code != "AE" || !strings.HasPrefix(v.ControlID, "PEER-") {
			t.Errorf("line %s: %+v, %v", s, v, err)
		}
	}
	var sum struct {
		Summary struct {
			Sent, Rejected int
			Codes          map[string]int
		}
	}
	if err := json.Unmarshal([]byte(lines[4]), &sum); err != nil || sum.Summary.Sent != 4 || sum.Summary.Rejected != 4 || sum.Summary.Codes["AE"] != 4 {
		t.Errorf("summary %s: %+v, %v", lines[4], sum, err)
	}
	code, turns := l.wait(true)
	if code != 0 || len(turns) != 5 || !strings.Contains(turns[0], `"code":"AE"`) || !strings.Contains(turns[4], `"stopped":{"connections":1,"messages":4,"answers":{"AE":4}`) {
		t.Errorf("listen exit %d:\n%s", code, strings.Join(turns, "\n"))
	}
}

// TestPeerOtherFramings runs both halves with single-byte NAKs in
// length-prefix frames, and fixed payloads after a newline delimiter given
// as an escape.
func TestPeerOtherFramings(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen []string
		send   []string
		code   int
		want   string
	}{
		{"single-byte", []string{"--framing", "length-prefix", "--ack", "single-byte", "--answer", "NAK"},
			[]string{"--framing", "length-prefix", "--ack", "single-byte"}, peerExitRejected, "\nNAK 4\n"},
		{"fixed", []string{"--scenario", peerTestdata + "fixed-delimiter.yaml"},
			[]string{"--delimiter", `\n`, "--fixed-ack", "OK", "--fixed-nak", "ERR"}, peerExitRejected, "\nACK 3\nNAK 1\n"},
		{"none", []string{"--ack", "none"}, []string{"--ack", "none"}, 0, "\nwritten 4 (no answer expected)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := peerListen(t, tc.listen...)
			out, errOut, code := peerRun(t.Context(), nil, append([]string{"send", l.addr, peerTestdata + "messages"}, tc.send...)...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want %d and %q:\n%s%s", code, tc.code, tc.want, out, errOut)
			}
			l.wait(true)
		})
	}
}

// TestPeerSendToSwitchboard sends a directory and standard input to a
// real Switchboard listener (journal in a temp dir): every message AA,
// exit 0, and Switchboard journaled all of them.
func TestPeerSendToSwitchboard(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	client := peerStartSwitchboard(t)
	resp, err := client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "adt", Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := resp.GetListener().GetStatus().GetBoundAddress()
	stdin := strings.NewReader("MSH|^~\\&|CLI|SIM|SWB|HOSP|20261202080000||ADT^A01^ADT_A01|STDIN-1|P|2.5\nPID|1||P9\n")
	out, errOut, code := peerRun(ctx, stdin, "send", addr, peerTestdata+"messages", "-", "--rate", "50")
	if code != 0 || !strings.Contains(out, "\nAA 5\n") || !strings.Contains(out, "stdin STDIN-1 AA in ") {
		t.Errorf("exit %d:\n%s%s", code, out, errOut)
	}
	stream, err := client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: new(uint64(1)), StopAtHead: true, ListenerIds: []string{"adt"}})
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for {
		resp, err := stream.Recv()
		if err != nil {
			break
		}
		for _, m := range resp.GetMessages() {
			stored = append(stored, m.GetControlId())
		}
	}
	if got := strings.Join(stored, " "); got != "PEER-1 PEER-2 PEER-3 PEER-4 STDIN-1" {
		t.Errorf("Switchboard journaled %q", got)
	}
}

// TestPeerUsage: mistakes are usage errors (exit 2) that say what is
// wrong, a scenario's with its file and line.
func TestPeerUsage(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("steps:\n  - answer: AA\n  - answer: XY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"listen"}, "accepts 1 arg(s)"},
		{[]string{"listen", "127.0.0.1:0", "--answer", "OK"}, `--answer: "OK": want AA, AE`},
		{[]string{"listen", "127.0.0.1:0", "--scenario", bad}, "bad.yaml: line 3: step 2: answer \"XY\""},
		{[]string{"listen", "127.0.0.1:0", "--scenario", bad, "--answer", "AA"}, "exclude each other"},
		{[]string{"listen", "127.0.0.1:0", "--scenario", peerTestdata + "every-outcome.yaml", "--ack", "single-byte"}, `every-outcome.yaml: line 4: step 1: answer "AA": the single-byte ack mode answers ACK or NAK`},
		{[]string{"listen", "127.0.0.1:0", "--ack", "fixed"}, "--ack fixed needs --fixed-ack"},
		{[]string{"listen", "127.0.0.1:0", "--framing", "length-prefix", "--ack", "mllp-commit"}, "requires MLLP framing"},
		{[]string{"listen", "127.0.0.1:0", "--framing", "json"}, `--framing: unknown framing "json"`},
		{[]string{"listen", "127.0.0.1:0", "--delimiter", `\q`}, `--delimiter: "\\q": not a valid escaped string`},
		{[]string{"listen", "127.0.0.1:0", "-o", "yaml"}, `--output "yaml": want table or json`},
		{[]string{"listen", "127.0.0.1:0", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"send", "127.0.0.1:1"}, "requires at least 2 arg(s)"},
		{[]string{"send", "127.0.0.1:1", "no-such-file.hl7"}, "no-such-file.hl7: no such file"},
		{[]string{"send", "127.0.0.1:1", peerTestdata + "messages", "--rate", "-1"}, "--rate must be a positive number"},
		{[]string{"send", "127.0.0.1:1", "-"}, "no message to send"},
		{[]string{"send", "127.0.0.1", peerTestdata + "messages"}, "missing port in address"},
	} {
		out, errOut, code := peerRun(t.Context(), strings.NewReader(""), tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("peer %q: exit %d, %q%q; want 2 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
	// Listening on an address in use is an error, not a usage error.
	l := peerListen(t)
	if _, errOut, code := peerRun(t.Context(), nil, "listen", l.addr); code != 1 || !strings.Contains(errOut, "address already in use") {
		t.Errorf("listen on a used address: exit %d, %q", code, errOut)
	}
	// Nobody listening: exit 6 (unavailable), every message not sent.
	addr := l.addr
	l.wait(true)
	out, errOut, code := peerRun(t.Context(), nil, "send", addr, peerTestdata+"messages")
	if code != peerExitUnavailable || !strings.Contains(out, "\nnot sent 4\n connect failed 4\n") || !strings.Contains(errOut, "connection refused") {
		t.Errorf("send to nobody: exit %d\n%s%s", code, out, errOut)
	}
}

// peerStartSwitchboard runs a real Switchboard in-process, as
// service/harness_test.go does: a journal in a temp dir, the Service and
// its gRPC server on loopback.
func peerStartSwitchboard(t *testing.T) switchboardv1.SwitchboardServiceClient {
	t.Helper()
	j, err := pebblejournal.Open(t.TempDir(), pebblejournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Config{Journal: j, Consumers: j.Consumers(), Answers: j.Answers()})
	if err != nil {
		t.Fatal(err)
	}
	gs, _, err := service.NewGRPCServer(svc, service.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svc.Shutdown(ctx)
		gs.Stop()
		wg.Wait()
		_ = cc.Close()
		if err := j.Close(); err != nil {
			t.Errorf("journal close: %v", err)
		}
	})
	return switchboardv1.NewSwitchboardServiceClient(cc)
}
