package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/internal/devcerts"
)

// TestCLIUsage: mistakes on the command line are exit 2 with a message
// that says what is wrong, before any server is called; help, version
// and completion work without one.
func TestCLIUsage(t *testing.T) {
	env := map[string]string{"SWITCHBOARD_SERVER": "127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stdout or stderr
	}{
		{[]string{"listen"}, 2, "want 1 to 2 arguments"},
		{[]string{"listen", "adt"}, 2, "give the ADDRESS"},
		{[]string{"listen", "adt", "127.0.0.1:0", "--framing", "smoke-signals"}, 2, `--framing "smoke-signals"`},
		{[]string{"listen", "adt", "127.0.0.1:0", "--config-json", "{nope"}, 2, "--config-json"},
		{[]string{"listen", "adt", "127.0.0.1:0", "--client-cert", "maybe"}, 2, "want one of none, optional, required"},
		{[]string{"listen", "adt", "127.0.0.1:0", "--no-such-flag"}, 2, "unknown flag: --no-such-flag"},
		{[]string{"connect", "lab", "127.0.0.1:1", "--in-doubt", "shrug"}, 2, "want one of fail, hold, resend"},
		{[]string{"ls", "-o", "yaml"}, 2, `--output "yaml": want table or json`},
		{[]string{"ls", "widgets"}, 2, `ls "widgets"`},
		{[]string{"send"}, 2, "give the CONNECTION"},
		{[]string{"send", "lab", "/no/such/file"}, 2, "no such file"},
		{[]string{"send", "lab", "--split", "words", "-"}, 2, "--split"},
		{[]string{"stop"}, 2, "want 1 argument"},
		{[]string{"events", "--kind", "weather"}, 2, "--kind \"weather\""},
		{[]string{"messages"}, 2, "Usage:"},
		{[]string{"messages", "frobnicate"}, 2, `unknown command "frobnicate" for "switchboard messages"`},
		{[]string{"messages", "resolve", "out-x-1", "pray"}, 2, "--resolution"},
		{[]string{"messages", "list", "--since", "yesterday"}, 2, "--since"},
		{[]string{"consumers", "dead-letters", "replay", "c", "x"}, 2, `sequence "x"`},
		{[]string{"ls", "--token", "t", "--server", "192.0.2.1:50051"}, 2, "refusing to send --token in clear text"},
		{[]string{"ls", "--tls-cert", "a.crt"}, 2, "--tls-cert and --tls-key go together"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"help"}, 0, "Exit codes:"},
		{[]string{"send", "--help"}, 0, "split into one message per MSH"},
		{[]string{"completion", "bash"}, 0, "bash completion"},
		{[]string{"completion", "zsh"}, 0, "compdef"},
		{[]string{"completion", "fish"}, 0, "complete -c switchboard"},
	} {
		r := runCLI(env, "", tc.args...)
		if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.out) {
			t.Errorf("switchboard %s = %s\nwant exit %d with %q", strings.Join(tc.args, " "), r, tc.code, tc.out)
		}
	}
	// An empty standard input is bad input too.
	if r := runCLI(env, "", "send", "lab", "-"); r.code != 2 || !strings.Contains(r.stderr, "input is empty") {
		t.Errorf("send of an empty stdin = %s", r)
	}
	r := runCLI(env, "", "--version")
	if r.code != 0 || !strings.Contains(r.stdout, "switchboard ") || !strings.Contains(r.stdout, "commit ") || !strings.Contains(r.stdout, "go1.") {
		t.Errorf("--version = %s", r)
	}
}

// TestCLIServerDown: a server that cannot be reached is exit 6, with a
// hint about --server.
func TestCLIServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	r := runCLI(map[string]string{"SWITCHBOARD_SERVER": addr}, "", "ls")
	if r.code != exitUnavailable || !strings.Contains(r.stderr, "SWITCHBOARD_SERVER") || !strings.Contains(r.stderr, addr) {
		t.Errorf("ls against nothing = %s", r)
	}
	// The flag wins over the environment.
	r = runCLI(map[string]string{"SWITCHBOARD_SERVER": "127.0.0.1:1"}, "", "journal", "--server", addr)
	if r.code != exitUnavailable || !strings.Contains(r.stderr, addr) {
		t.Errorf("journal --server = %s", r)
	}
}

// TestCLIListenConnectSend is the integrator's first hour against a real
// server: a listener, a connection to it, messages sent from a file, a
// directory and stdin, read back, in tables and JSON, with the exit codes
// of the mistakes along the way.
func TestCLIListenConnectSend(t *testing.T) {
	s := startCLIServer(t)

	// listen: a table, idempotent, a conflict is exit 5.
	r := s.want(t, 0, "listen", "adt", "127.0.0.1:0")
	if !strings.Contains(r.stdout, "LISTENER") || !strings.Contains(r.stdout, "adt ") || !strings.Contains(r.stdout, "LISTENING") {
		t.Errorf("listen printed:\n%s", r.stdout)
	}
	s.want(t, 0, "listen", "adt", "127.0.0.1:0")
	r = s.want(t, exitConflict, "listen", "adt", "127.0.0.1:0", "--max-connections", "5")
	if !strings.Contains(r.stderr, "CONFIG_CONFLICT") {
		t.Errorf("conflict says %q", r.stderr)
	}
	r = s.want(t, 0, "status", "adt", "-o", "json")
	adtAddr, _ := jget(jsonOf(t, r.stdout), "listener", "status", "bound_address").(string)
	if adtAddr == "" {
		t.Fatalf("status -o json has no bound address:\n%s", r.stdout)
	}
	// Flags and --config-json together: the flags win.
	r = s.want(t, 0, "listen", "raw", "127.0.0.1:0", "--config-json", `{"max_connections": 7, "max_frame_bytes": 1000}`, "--max-frame-bytes", "2000", "--delimiter", `\n`, "--ack", "none", "-o", "json")
	cfg := jget(jsonOf(t, r.stdout), "listener", "config")
	if jget(cfg, "max_connections") != 7.0 || jget(cfg, "max_frame_bytes") != 2000.0 || jget(cfg, "framing", "delimiter", "delimiter") != "Cg==" || jget(cfg, "ack_policy", "none") == nil {
		t.Errorf("listen raw config = %v", cfg)
	}
	// The server refuses what it validates: exit 2 with the field named.
	r = s.want(t, exitUsage, "listen", "big", "127.0.0.1:0", "--max-frame-bytes", "-1")
	if !strings.Contains(r.stderr, "max_frame_bytes") {
		t.Errorf("invalid max frame bytes says %q", r.stderr)
	}
	s.want(t, exitUsage, "listen", "bad id!", "127.0.0.1:0")

	// connect to our own listener; a refused connect is exit 6 and
	// creates nothing.
	r = s.want(t, 0, "connect", "lab", adtAddr)
	if !strings.Contains(r.stdout, "lab ") || !strings.Contains(r.stdout, "OPEN") {
		t.Errorf("connect printed:\n%s", r.stdout)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	r = s.want(t, exitUnavailable, "connect", "nowhere", closedAddr)
	if !strings.Contains(r.stderr, "CONNECT_FAILED") || strings.Contains(r.stderr, "Is `switchboard serve` running") {
		t.Errorf("refused connect says %q", r.stderr)
	}
	s.want(t, exitNotFound, "status", "nowhere")
	// Shell completion asks the server for the ids.
	if r := s.want(t, 0, "__complete", "stop", ""); !strings.Contains(r.stdout, "adt\tlistener "+adtAddr) || strings.Contains(r.stdout, "lab") {
		t.Errorf("completion of stop:\n%s", r.stdout)
	}
	if r := s.want(t, 0, "__complete", "send", "l"); !strings.Contains(r.stdout, "lab\toutbound") {
		t.Errorf("completion of send:\n%s", r.stdout)
	}

	// send one file: the outcome and the ACK.
	dir := t.TempDir()
	one := writeFile(t, filepath.Join(dir, "msg.hl7"), hl7Message("ONE-1"))
	r = s.want(t, 0, "send", "lab", one)
	for _, want := range []string{"ACCEPTED", "AA", "ONE-1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("send printed no %q:\n%s", want, r.stdout)
		}
	}
	// A directory (in name order, dot files skipped) with a file of two
	// messages split on MSH, CRLF line ends: a summary.
	batch := filepath.Join(dir, "batch")
	writeFile(t, filepath.Join(batch, "a.hl7"), hl7Message("DIR-1"))
	writeFile(t, filepath.Join(batch, "b.hl7"), strings.ReplaceAll(hl7Message("DIR-2")+"\n\n"+hl7Message("DIR-3"), "\n", "\r\n"))
	writeFile(t, filepath.Join(batch, ".hidden"), "not a message")
	r = s.want(t, 0, "send", "lab", batch)
	if !strings.Contains(r.stdout, "Sent 3 of 3 messages") || !strings.Contains(r.stdout, "ACCEPTED AA") || !strings.Contains(r.stdout, "p99") {
		t.Errorf("send of a directory printed:\n%s", r.stdout)
	}
	// stdin, JSON: one object per message, then the summary.
	r = runCLI(s.env, hl7Message("IN-1")+hl7Message("IN-2"), "send", "lab", "-o", "json")
	if r.code != 0 {
		t.Fatalf("send from stdin: %s", r)
	}
	lines := jsonLines(t, r.stdout)
	if len(lines) != 3 || jget(lines[0], "source") != "stdin#1" || jget(lines[1], "response", "outcome") != "SEND_OUTCOME_ACCEPTED" ||
		jget(lines[1], "response", "sent_control_id") != "IN-2" || jget(lines[2], "summary", "sent") != 2.0 {
		t.Errorf("send -o json printed:\n%s", r.stdout)
	}
	// To a connection that does not exist: exit 3, and the rest is not
	// tried.
	r = s.want(t, exitNotFound, "send", "nope", one, one)
	if strings.Count(r.stderr, "not found") != 1 {
		t.Errorf("send to an unknown connection reported:\n%s", r.stderr)
	}
	// A payload the HL7 policy cannot send (no MSH-10): exit 2.
	writeFile(t, filepath.Join(dir, "bad.hl7"), "MSH|^~\\&|A|B|C|D|||ADT^A01||P|2.5\n")
	s.want(t, exitUsage, "send", "lab", filepath.Join(dir, "bad.hl7"))

	// recv: everything retained, with the payloads, then exit.
	r = s.want(t, 0, "recv")
	for _, want := range []string{"#1 ", "adt/", "ADT^A01^ADT_A01", "ONE-1", "PID|1||DIR-3", "IN-2"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("recv printed no %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "\r") {
		t.Error("recv printed segments with CR instead of one per line")
	}
	r = s.want(t, 0, "recv", "--from", "2", "--limit", "2", "-o", "json")
	lines = jsonLines(t, r.stdout)
	if len(lines) != 2 || jget(lines[0], "sequence") != "2" || jget(lines[1], "control_id") != "DIR-2" {
		t.Errorf("recv --from 2 --limit 2 -o json:\n%s", r.stdout)
	}
	out := filepath.Join(t.TempDir(), "inbox")
	r = s.want(t, 0, "recv", "--out-dir", out, "--listener", "adt")
	got := readAll(t, filepath.Join(out, "000000000001.hl7"))
	if want := strings.ReplaceAll(hl7Message("ONE-1"), "\n", "\r"); string(got) != want {
		t.Errorf("recv --out-dir wrote %q, want %q", got, want)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 6 || !strings.Contains(r.stdout, "-> "+filepath.Join(out, "000000000006.hl7")) {
		t.Errorf("recv --out-dir: %d files, printed:\n%s", len(ents), r.stdout)
	}
	// A durable consumer remembers what it acked.
	r = s.want(t, 0, "recv", "--consumer", "archive", "--from", "1", "--no-payload")
	if strings.Count(r.stdout, "\n") != 6 {
		t.Errorf("first consumer run printed:\n%s", r.stdout)
	}
	s.want(t, 0, "send", "lab", one)
	r = s.want(t, 0, "recv", "--consumer", "archive", "--no-payload")
	if strings.Count(r.stdout, "\n") != 1 || !strings.Contains(r.stdout, "#7 ") {
		t.Errorf("second consumer run printed:\n%s", r.stdout)
	}
	r = s.want(t, 0, "consumers", "list")
	if !strings.Contains(r.stdout, "archive") {
		t.Errorf("consumers list:\n%s", r.stdout)
	}
	r = s.want(t, 0, "consumers", "get", "archive", "-o", "json")
	if jget(jsonOf(t, r.stdout), "consumer", "status", "ack_floor") != "7" {
		t.Errorf("consumers get -o json:\n%s", r.stdout)
	}
	r = s.want(t, 0, "consumers", "dead-letters", "list", "archive")
	if !strings.Contains(r.stdout, "No dead letters.") {
		t.Errorf("dead-letters list:\n%s", r.stdout)
	}
	r = s.want(t, 0, "consumers", "dead-letters", "replay", "archive")
	if !strings.Contains(r.stdout, "0 dead letters replayed") {
		t.Errorf("dead-letters replay:\n%s", r.stdout)
	}
	s.want(t, 0, "consumers", "delete", "archive")
	s.want(t, exitNotFound, "consumers", "get", "archive")

	// Queued sends and messages.
	r = s.want(t, 0, "send", "lab", one, "--queued", "--idempotency-key", "k1", "-o", "json")
	msgID, _ := jget(jsonLines(t, r.stdout)[0], "response", "message_id").(string)
	if !strings.HasPrefix(msgID, "out-lab-") {
		t.Fatalf("queued send:\n%s", r.stdout)
	}
	eventually(t, "the queued message accepted", func() bool {
		return strings.Contains(s.run("messages", "get", msgID).stdout, "ACCEPTED")
	})
	r = s.want(t, 0, "messages", "list", "--connection", "lab")
	if !strings.Contains(r.stdout, msgID) || !strings.Contains(r.stdout, "ACCEPTED") {
		t.Errorf("messages list:\n%s", r.stdout)
	}
	r = s.want(t, 0, "messages", "get", msgID)
	if !strings.Contains(r.stdout, "Idempotency key:") || !strings.Contains(r.stdout, "\nPID|1||ONE-1\n") {
		t.Errorf("messages get:\n%s", r.stdout)
	}
	r = s.want(t, 0, "messages", "get", "in-1", "--raw")
	if want := strings.ReplaceAll(hl7Message("ONE-1"), "\n", "\r"); r.stdout != want {
		t.Errorf("messages get --raw = %q, want %q", r.stdout, want)
	}
	r = s.want(t, exitFailure, "messages", "resolve", msgID, "resend")
	if !strings.Contains(r.stderr, "NOT_IN_DOUBT") {
		t.Errorf("resolve of an accepted message: %q", r.stderr)
	}
	s.want(t, exitNotFound, "messages", "get", "in-999")
	r = s.want(t, 0, "messages", "list", "--direction", "inbound", "--control-id", "DIR-2", "-o", "json")
	if ms, _ := jget(jsonOf(t, r.stdout), "messages").([]any); len(ms) != 1 {
		t.Errorf("messages list --control-id DIR-2:\n%s", r.stdout)
	}

	// ls, status, journal, events.
	r = s.want(t, 0, "ls")
	for _, want := range []string{"adt", "raw", "lab", "outbound", "inbound"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("ls printed no %q:\n%s", want, r.stdout)
		}
	}
	r = s.want(t, 0, "ls", "connections", "--direction", "outbound", "-o", "json")
	if cs, _ := jget(jsonOf(t, r.stdout), "connections").([]any); len(cs) != 1 || jget(cs[0], "connection_id") != "lab" {
		t.Errorf("ls connections --direction outbound:\n%s", r.stdout)
	}
	r = s.want(t, 0, "status")
	for _, want := range []string{"Health:       SERVING", "Listeners:    2 (2 LISTENING)", "sequences 1 to 8"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status printed no %q:\n%s", want, r.stdout)
		}
	}
	r = s.want(t, 0, "status", "lab")
	if !strings.Contains(r.stdout, "Connection lab (outbound)") || !strings.Contains(r.stdout, "ACKs received:") {
		t.Errorf("status lab:\n%s", r.stdout)
	}
	r = s.want(t, 0, "journal", "-o", "json")
	if jget(jsonOf(t, r.stdout), "last_sequence") != "8" {
		t.Errorf("journal -o json:\n%s", r.stdout)
	}
	r = s.want(t, 0, "events", "--recent", "--kind", "listener-started", "--limit", "2", "-o", "json")
	if ev := jsonLines(t, r.stdout); len(ev) != 2 || jget(ev[0], "kind") != "EVENT_KIND_LISTENER_STARTED" || jget(ev[0], "listener_id") != "adt" {
		t.Errorf("events -o json:\n%s", r.stdout)
	}
	r = s.want(t, 0, "events", "--recent", "--connection", "lab", "--limit", "1")
	if !strings.Contains(r.stdout, "CONNECTION_OPENED") {
		t.Errorf("events --connection lab:\n%s", r.stdout)
	}

	// disconnect and stop, then nothing is left; again is exit 3.
	s.want(t, 0, "disconnect", "lab")
	s.want(t, exitNotFound, "disconnect", "lab")
	r = s.want(t, 0, "stop", "adt", "--drain-timeout", "1s")
	if !strings.Contains(r.stdout, "STOPPED") {
		t.Errorf("stop printed:\n%s", r.stdout)
	}
	s.want(t, 0, "stop", "raw")
	s.want(t, exitNotFound, "stop", "adt")
	r = s.want(t, 0, "ls")
	if !strings.Contains(r.stdout, "No listeners.") {
		t.Errorf("ls after stop:\n%s", r.stdout)
	}
}

// TestCLISendOutcomes: negative ACKs, messages in doubt and messages not
// sent are counted by code and are the exit codes 7, 8 and 9.
func TestCLISendOutcomes(t *testing.T) {
	s := startCLIServer(t)
	// The answers the peer gives, by message number (AA for the others).
	var mu sync.Mutex
	answers := map[int]hl7.AckCode{1: hl7.AA, 2: hl7.AE, 3: "", 4: hl7.AA, 5: hl7.AR}
	answer := func(m map[int]hl7.AckCode) {
		mu.Lock()
		defer mu.Unlock()
		answers = m
	}
	peer := startHL7Peer(t, func(n int) hl7.AckCode {
		mu.Lock()
		defer mu.Unlock()
		if c, ok := answers[n]; ok {
			return c
		}
		return hl7.AA
	})
	s.want(t, 0, "connect", "peer", peer.addr(), "--ack-timeout", "500ms", "--reconnect-delay", "50ms")
	// The connect flags land in the ConnectionConfig, over --config-json.
	r := s.want(t, 0, "connect", "other", peer.addr(), "--config-json", `{"outbox": {"max_attempts": 2, "fail_rejected": true}}`, "--in-doubt", "hold", "--max-attempts", "3",
		"--no-reconnect", "--framing", "mllp", "--strict", "-o", "json")
	cfg := jget(jsonOf(t, r.stdout), "connection", "config")
	if jget(cfg, "outbox", "max_attempts") != 3.0 || jget(cfg, "outbox", "fail_rejected") != true || jget(cfg, "outbox", "in_doubt") != "IN_DOUBT_POLICY_HOLD" ||
		jget(cfg, "reconnect", "disabled") != true || jget(cfg, "framing", "mllp", "strict") != true {
		t.Errorf("connect config = %v", cfg)
	}
	s.want(t, 0, "disconnect", "other")
	dir := t.TempDir()
	var all strings.Builder
	for i := 1; i <= 5; i++ {
		all.WriteString(hl7Message(fmt.Sprintf("OUT-%d", i)))
	}
	f := writeFile(t, filepath.Join(dir, "five.hl7"), all.String())
	// 1 AA, 2 AE, 3 silence (in doubt; the connection is reset and comes
	// back), 4 AA, 5 AR: in doubt wins.
	r = s.want(t, exitInDoubt, "send", "peer", f)
	summary := strings.Join(strings.Fields(r.stdout), " ")
	for _, want := range []string{"Sent 5 of 5", "ACCEPTED AA 2", "REJECTED AE 1", "REJECTED AR 1", "IN_DOUBT ACK_TIMEOUT 1"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary has no %q:\n%s", want, r.stdout)
		}
	}
	for _, want := range []string{f + "#2: REJECTED AE, control id OUT-2: peer says AE", f + "#3: ", "IN_DOUBT"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr has no %q:\n%s", want, r.stderr)
		}
	}
	// A rejection alone is 7, with the ACK's text.
	answer(map[int]hl7.AckCode{6: hl7.AE})
	r = s.want(t, exitRejected, "send", "peer", writeFile(t, filepath.Join(dir, "one.hl7"), hl7Message("OUT-6")))
	if !strings.Contains(r.stdout, "REJECTED") || !strings.Contains(r.stdout, "peer says AE") {
		t.Errorf("rejected send printed:\n%s", r)
	}
	// --stop-on-failure stops there.
	answer(map[int]hl7.AckCode{7: hl7.AR})
	r = s.want(t, exitRejected, "send", "peer", f, "--stop-on-failure")
	if !strings.Contains(r.stdout, "Sent 1 of 5") {
		t.Errorf("--stop-on-failure:\n%s", r.stdout)
	}
	// The peer goes away: with --fail-fast nothing is written, exit 9.
	peer.close()
	eventually(t, "the connection backing off", func() bool {
		return !strings.Contains(s.run("status", "peer").stdout, "OPEN")
	})
	r = s.want(t, exitNotSent, "send", "peer", f, "--fail-fast", "-o", "json")
	lines := jsonLines(t, r.stdout)
	if len(lines) != 6 || jget(lines[0], "error", "reason") != "NOT_SENT" || jget(lines[0], "error", "send_failure", "cause") != "SEND_FAILURE_CAUSE_CONNECTION_NOT_OPEN" {
		t.Errorf("--fail-fast on a closed connection:\n%s", r.stdout)
	}
}

// TestCLIToken: with an access file the server wants a token: none is
// exit 4, SWITCHBOARD_TOKEN or --token works, a viewer cannot listen.
func TestCLIToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "access")
	admin := runCLI(nil, "", "token", "create", "--access-file", file, "--name", "ops", "--role", "admin")
	viewer := runCLI(nil, "", "token", "create", "--access-file", file, "--name", "watcher", "--role", "viewer")
	if admin.code != 0 || viewer.code != 0 {
		t.Fatalf("token create: %s\n%s", admin, viewer)
	}
	s := startCLIServer(t, "--access-file", file)
	r := s.want(t, exitDenied, "ls")
	if !strings.Contains(r.stderr, "no credentials") || !strings.Contains(r.stderr, "(Unauthenticated)") {
		t.Errorf("ls without a token: %q", r.stderr)
	}
	s.env["SWITCHBOARD_TOKEN"] = strings.TrimSpace(admin.stdout)
	s.want(t, 0, "listen", "adt", "127.0.0.1:0")
	delete(s.env, "SWITCHBOARD_TOKEN")
	s.want(t, 0, "ls", "--token", strings.TrimSpace(viewer.stdout))
	r = s.want(t, exitDenied, "listen", "adt2", "127.0.0.1:0", "--token", strings.TrimSpace(viewer.stdout))
	if !strings.Contains(r.stderr, "ROLE_REQUIRED") {
		t.Errorf("viewer listen: %q", r.stderr)
	}
	s.want(t, exitDenied, "ls", "--token", "sbt_not-a-token")
}

// TestCLITLS: a control plane with TLS is reached with --tls-ca (or
// SWITCHBOARD_TLS_CA); without TLS the call fails.
func TestCLITLS(t *testing.T) {
	certs := filepath.Join(t.TempDir(), "certs")
	if err := devcerts.Write(certs, devcerts.Options{}); err != nil {
		t.Fatal(err)
	}
	s := startCLIServer(t, "--grpc-tls-cert", filepath.Join(certs, "grpc", "tls.crt"), "--grpc-tls-key", filepath.Join(certs, "grpc", "tls.key"))
	s.want(t, 0, "journal", "--tls-ca", filepath.Join(certs, "ca.crt"))
	s.env["SWITCHBOARD_TLS_CA"] = filepath.Join(certs, "ca.crt")
	s.env["SWITCHBOARD_TLS_SERVER_NAME"] = "localhost"
	s.want(t, 0, "ls")
	delete(s.env, "SWITCHBOARD_TLS_CA")
	delete(s.env, "SWITCHBOARD_TLS_SERVER_NAME")
	s.want(t, exitUnavailable, "ls")
	r := s.want(t, exitUnavailable, "ls", "--tls") // the system's CAs do not know the dev CA
	if !strings.Contains(r.stderr, "certificate") {
		t.Errorf("ls --tls with an unknown CA: %q", r.stderr)
	}
	r = s.want(t, exitFailure, "ls", "--tls-ca", filepath.Join(certs, "grpc", "tls.key"))
	if !strings.Contains(r.stderr, "no PEM certificate") {
		t.Errorf("--tls-ca of a key: %q", r.stderr)
	}
}

// TestCLIDocsFresh fails when docs/cli/ is not what the command tree
// generates, and says how to regenerate it.
func TestCLIDocsFresh(t *testing.T) {
	dir := t.TempDir()
	if err := genDocs(newRootCmd(&cliEnv{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}), dir); err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.Glob(filepath.Join(dir, "*.md"))
	have, _ := filepath.Glob(filepath.Join("..", "..", "docs", "cli", "*.md"))
	stale := len(want) != len(have)
	for _, w := range want {
		h, err := os.ReadFile(filepath.Join("..", "..", "docs", "cli", filepath.Base(w)))
		if err != nil || !bytes.Equal(h, readAll(t, w)) {
			t.Logf("docs/cli/%s differs", filepath.Base(w))
			stale = true
		}
	}
	if stale {
		t.Errorf("docs/cli is stale: run `%s` and commit it", regenerateDocs)
	}
}

// TestSplitMessages: files of HL7 messages are cut on MSH and their line
// ends made CR; other payloads are left whole.
func TestSplitMessages(t *testing.T) {
	for _, tc := range []struct {
		in, split string
		want      []string
	}{
		{"MSH|a\nPID|1\n", "auto", []string{"MSH|a\rPID|1\r"}},
		{"MSH|a\r\nPID|1\r\n\r\nMSH|b\r\nPID|2", "auto", []string{"MSH|a\rPID|1\r", "MSH|b\rPID|2\r"}},
		{"\x0bMSH|a\rPID|1\r\x1c\r\x0bMSH|b\r\x1c\r", "auto", []string{"MSH|a\rPID|1\r", "MSH|b\r"}},
		{"\xef\xbb\xbfMSH|a\n", "auto", []string{"MSH|a\r"}},
		{"MSH|a\nNTE|MSH inside a field\n", "auto", []string{"MSH|a\rNTE|MSH inside a field\r"}},
		{"MSH|a\nMSH|b\n", "none", []string{"MSH|a\rMSH|b\r"}},
		{"hello\nMSH|x\n", "auto", []string{"hello\nMSH|x\n"}},
		{"hello\nMSH|x\n", "msh", []string{"hello\n", "MSH|x\r"}},
		{"\n\n", "auto", nil},
	} {
		var got []string
		for _, m := range splitMessages([]byte(tc.in), tc.split) {
			if n := normalizeHL7(m); len(bytes.Trim(n, "\r\n")) > 0 {
				got = append(got, string(n))
			}
		}
		if strings.Join(got, "|||") != strings.Join(tc.want, "|||") {
			t.Errorf("split %q (%s) = %q, want %q", tc.in, tc.split, got, tc.want)
		}
	}
}

// FuzzSplitMessages: cutting on MSH loses and invents no byte, every
// piece but the first starts with MSH, and a normalized HL7 message ends
// with one CR and holds no LF.
func FuzzSplitMessages(f *testing.F) {
	for _, s := range []string{"MSH|a\nPID|1\n", "MSH|a\r\nMSH|b", "\x0bMSH|a\r\x1c\r", "hello", "", "MSHMSH\nMSH"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parts := cutOnMSH(data)
		if !bytes.Equal(bytes.Join(parts, nil), data) {
			t.Fatalf("cut %q into %q", data, parts)
		}
		for i, p := range parts {
			if len(p) == 0 || (i > 0 && !bytes.HasPrefix(p, []byte("MSH"))) {
				t.Fatalf("cut %q: piece %d is %q", data, i, p)
			}
			if n := normalizeHL7(p); isHL7(p) && (!bytes.HasSuffix(n, []byte("\r")) || bytes.Contains(n, []byte("\n"))) {
				t.Fatalf("normalized %q to %q", p, n)
			}
		}
	})
}

// TestCLIRecvFollow: recv --follow streams messages as they arrive, and
// an interrupt ends it with exit 0; events follows too.
func TestCLIRecvFollow(t *testing.T) {
	s := startCLIServer(t)
	r := s.want(t, 0, "listen", "adt", "127.0.0.1:0", "-o", "json")
	addr, _ := jget(jsonOf(t, r.stdout), "listener", "status", "bound_address").(string)
	s.want(t, 0, "connect", "lab", addr)
	msg := writeFile(t, filepath.Join(t.TempDir(), "m.hl7"), hl7Message("F-1")+hl7Message("F-2")+hl7Message("F-3"))

	// From sequence 1, so no message can come before the stream.
	got := make(chan cliResult, 1)
	go func() {
		got <- s.run("recv", "--follow", "--from", "1", "--limit", "3", "-o", "json", "--listener", "adt")
	}()
	evs := make(chan cliResult, 1)
	go func() {
		evs <- s.run("events", "--recent", "--kind", "connection-opened,listener-started", "--limit", "3", "-o", "json")
	}()
	s.want(t, 0, "send", "lab", msg)
	r = <-got
	lines := jsonLines(t, r.stdout)
	if r.code != 0 || len(lines) != 3 || jget(lines[2], "control_id") != "F-3" {
		t.Errorf("recv --follow --limit 3 = %s", r)
	}
	r = <-evs
	if ev := jsonLines(t, r.stdout); r.code != 0 || len(ev) != 3 {
		t.Errorf("events --limit 3 = %s", r)
	}

	// In a process of its own, interrupted once it has printed a message.
	cmd := exec.Command(os.Args[0], "recv", "--follow", "--from", "1", "--server", s.addr)
	cmd.Env = append(os.Environ(), "SWITCHBOARD_RUN_MAIN=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "#3 ") {
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if err := cmd.Wait(); err != nil {
		t.Errorf("recv --follow interrupted: %v, want exit 0", err)
	}
}
