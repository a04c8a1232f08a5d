package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/transport"
)

// cliServer is a `switchboard serve` child process (this test binary, see
// TestMain) on loopback with a journal in a temporary directory.
type cliServer struct {
	addr string
	env  map[string]string
}

// startCLIServer starts serve with extra flags (startServeChild).
func startCLIServer(t *testing.T, extra ...string) *cliServer {
	t.Helper()
	c := startServeChild(t, childOpts{}, extra...)
	return &cliServer{addr: c.grpcAddr, env: map[string]string{"SWITCHBOARD_SERVER": c.grpcAddr}}
}

// cliResult is what one command printed and its exit code.
type cliResult struct {
	code           int
	stdout, stderr string
}

func (r cliResult) String() string {
	return "exit " + itoa(int64(r.code)) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

// runCLI runs the command in this process with env as its environment
// (nothing else of the test's) and stdin.
func runCLI(env map[string]string, stdin string, args ...string) cliResult {
	var out, errb bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := runIO(args, strings.NewReader(stdin), &out, &errb, getenv)
	return cliResult{code: code, stdout: out.String(), stderr: errb.String()}
}

// run runs a command against s.
func (s *cliServer) run(args ...string) cliResult { return runCLI(s.env, "", args...) }

// want runs a command and checks its exit code.
func (s *cliServer) want(t *testing.T, code int, args ...string) cliResult {
	t.Helper()
	r := s.run(args...)
	if r.code != code {
		t.Fatalf("switchboard %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, code, r)
	}
	return r
}

// jsonOf decodes a JSON document.
func jsonOf(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	return m
}

// jsonLines decodes one JSON object per line.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l == "" {
			continue
		}
		out = append(out, jsonOf(t, l))
	}
	return out
}

// jget reads a nested field of decoded JSON: jget(m, "listener", "status").
func jget(m any, keys ...string) any {
	for _, k := range keys {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[k]
	}
	return m
}

func hl7Message(id string) string {
	return "MSH|^~\\&|CLI|TEST|LAB|HOSP|20261202080000||ADT^A01^ADT_A01|" + id + "|P|2.5\nPID|1||" + id + "\n"
}

// hl7Peer is an MLLP peer on loopback that answers each message with
// answer(n) for the n-th message (from 1): an ACK code, or "" for no answer
// at all.
type hl7Peer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	n    int
	conn []net.Conn
}

func startHL7Peer(t *testing.T, answer func(n int) hl7.AckCode) *hl7Peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hl7Peer{ln: ln}
	mllp := transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conn = append(p.conn, c)
			p.mu.Unlock()
			p.wg.Go(func() {
				defer c.Close()
				dec := transport.NewDecoder(c, mllp)
				for {
					msg, err := dec.Next()
					if err != nil {
						return
					}
					p.mu.Lock()
					p.n++
					n := p.n
					p.mu.Unlock()
					code := answer(n)
					if code == "" {
						continue
					}
					h, err := hl7.ParseHeader(msg)
					if err != nil {
						return
					}
					ack := hl7.AppendAck(nil, h, hl7.AckRequest{Code: code, ControlID: "ACK" + itoa(int64(n)), Text: "peer says " + string(code)})
					if _, err := c.Write(mllp.AppendFrame(nil, ack)); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(p.close)
	return p
}

func (p *hl7Peer) addr() string { return p.ln.Addr().String() }

// close stops accepting and closes every connection.
func (p *hl7Peer) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conn {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// eventually polls cond, for at most 20 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20 s", what)
		}
	}
}

func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// readAll reads a file, failing the test if it cannot.
func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return b
}
