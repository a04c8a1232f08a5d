package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// serveChild is `switchboard serve` run as a child of this test binary
// (SWITCHBOARD_RUN_MAIN=1, see TestMain) on loopback, with JSON logs. The
// tests that need a whole process (the CLI, the client examples, security,
// hostile peers) start it with startServeChild.
type serveChild struct {
	cmd       *exec.Cmd
	grpcAddr  string
	adminAddr string        // "" unless --admin-addr names an address
	exited    chan struct{} // closed once the process has exited
	exitErr   error         // cmd.Wait's result, valid once exited is closed

	mu      sync.Mutex
	logs    bytes.Buffer // every line it logged, unless childOpts.onLine takes them
	tooLong bool         // it logged a line over 1 MiB
}

// childOpts are startServeChild's options.
type childOpts struct {
	// onLine, if set, gets every log line instead of the logs buffer (it
	// must not keep the slice).
	onLine func(line []byte)
	// kill ends the process with SIGKILL at cleanup instead of SIGTERM
	// (then SIGKILL 20 s later).
	kill bool
}

// childWait bounds the child's start and its exit after SIGTERM.
const childWait = 30 * time.Second

// startServeChild starts serve with --grpc-addr 127.0.0.1:0, no admin
// server, a temporary data directory and JSON logs, then args (a flag in
// args wins over the same flag before it), and returns once it logged
// "switchboard serving". Cleanup stops it.
func startServeChild(t testing.TB, o childOpts, args ...string) *serveChild {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a child process")
	}
	all := append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "", "--data-dir", t.TempDir(), "--log-format", "json"}, args...)
	c := &serveChild{cmd: exec.Command(os.Args[0], all...), exited: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), "SWITCHBOARD_RUN_MAIN=1")
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	up := make(chan [2]string, 1)
	go c.read(stderr, o.onLine, up)
	t.Cleanup(func() {
		if o.kill {
			_ = c.cmd.Process.Kill()
			<-c.exited
			return
		}
		c.terminate()
	})
	select {
	case a, ok := <-up:
		if !ok {
			t.Fatalf("serve exited before serving (%v):\n%s", c.exitErr, c.logged())
		}
		c.grpcAddr, c.adminAddr = a[0], a[1]
	case <-time.After(childWait):
		t.Fatalf("serve did not log \"switchboard serving\" within %v:\n%s", childWait, c.logged())
	}
	return c
}

// read reads the child's log until it exits, sending the addresses on up
// once it serves (up is closed if it never does).
func (c *serveChild) read(stderr io.Reader, onLine func([]byte), up chan<- [2]string) {
	defer close(c.exited)
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var admin string
	for sc.Scan() {
		line := sc.Bytes()
		if onLine != nil {
			onLine(line)
		} else {
			c.mu.Lock()
			c.logs.Write(append(line, '\n'))
			c.mu.Unlock()
		}
		if up == nil {
			continue
		}
		var rec struct {
			Msg       string `json:"msg"`
			GRPCAddr  string `json:"grpc_addr"`
			AdminAddr string `json:"admin_addr"`
		}
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		switch rec.Msg {
		case "admin serving":
			admin = rec.AdminAddr
		case "switchboard serving":
			up <- [2]string{rec.GRPCAddr, admin}
			up = nil
		}
	}
	if sc.Err() != nil {
		// A line over 1 MiB: keep draining so the child never blocks on
		// its stderr.
		c.mu.Lock()
		c.tooLong = true
		c.mu.Unlock()
		_, _ = io.Copy(io.Discard, stderr)
	}
	c.exitErr = c.cmd.Wait()
	if up != nil {
		close(up)
	}
}

// terminate sends SIGTERM, as an operator stops the server, and waits for
// the exit; after childWait it kills the process and reports false.
func (c *serveChild) terminate() bool {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return true
	case <-time.After(childWait):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return false
	}
}

// logged returns what the child has logged so far (nothing with
// childOpts.onLine).
func (c *serveChild) logged() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logs.String()
}

// loggedTooLong reports whether the child logged a line over 1 MiB.
func (c *serveChild) loggedTooLong() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tooLong
}
