package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// wait bounds every blocking step of these tests.
const wait = 10 * time.Second

// target is a loopback server that records what each connection sent and
// how it ended; with echo it also writes everything back.
type target struct {
	ln    net.Listener
	wg    sync.WaitGroup
	echo  bool
	ended chan ending
	mu    sync.Mutex
	conns []net.Conn
}

// ending is what a target connection read before it ended, and why.
type ending struct {
	got []byte
	err error // nil: orderly close (EOF)
}

func startTarget(t *testing.T, echo bool) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{ln: ln, echo: echo, ended: make(chan ending, 16)}
	tg.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			tg.mu.Lock()
			tg.conns = append(tg.conns, nc)
			tg.mu.Unlock()
			tg.wg.Go(func() { tg.serve(nc) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		tg.mu.Lock()
		for _, nc := range tg.conns {
			nc.Close()
		}
		tg.mu.Unlock()
		tg.wg.Wait()
	})
	return tg
}

func (tg *target) serve(nc net.Conn) {
	defer nc.Close()
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := nc.Read(buf)
		got = append(got, buf[:n]...)
		if n > 0 && tg.echo {
			if _, werr := nc.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			tg.ended <- ending{got: got, err: err}
			return
		}
	}
}

func (tg *target) next(t *testing.T) ending {
	t.Helper()
	select {
	case e := <-tg.ended:
		return e
	case <-time.After(wait):
		t.Fatal("the target connection did not end")
		return ending{}
	}
}

func dial(t *testing.T, p *Proxy) *net.TCPConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", p.Addr(), wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc.(*net.TCPConn)
}

// readN reads exactly n bytes within the wait.
func readN(t *testing.T, nc net.Conn, n int) []byte {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	b := make([]byte, n)
	if _, err := io.ReadFull(nc, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// waitLinks polls until the proxy has n open links.
func waitLinks(t *testing.T, p *Proxy, n int) {
	t.Helper()
	for deadline := time.Now().Add(wait); p.Links() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d links open, want %d", p.Links(), n)
		}
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// TestForwards: bytes go both ways unchanged, a client's half close
// reaches the target and the target's answers still reach the client, and
// the link is gone once both sides closed.
func TestForwards(t *testing.T) {
	tg := startTarget(t, true)
	p := Start(t, tg.ln.Addr().String())
	nc := dial(t, p)
	msg := bytes.Repeat([]byte("0123456789"), 10000) // several reads
	go func() { _, _ = nc.Write(msg) }()
	if got := readN(t, nc, len(msg)); !bytes.Equal(got, msg) {
		t.Fatal("echo through the proxy differs from what was sent")
	}
	if err := nc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if e := tg.next(t); e.err != nil || len(e.got) != len(msg) {
		t.Errorf("target read %d bytes and ended with %v; want %d and EOF", len(e.got), e.err, len(msg))
	}
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	if n, err := nc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("client read after the target closed: %d, %v; want EOF", n, err)
	}
	waitLinks(t, p, 0)
	if up, down := p.Forwarded(); up != int64(len(msg)) || down != int64(len(msg)) || p.Accepted() != 1 {
		t.Errorf("forwarded %d up, %d down, accepted %d; want %d both ways, 1", up, down, p.Accepted(), len(msg))
	}
}

// TestBlackhole: while blackholed nothing passes either way and nothing
// closes, not even a close of the far side; on Resume what was held
// arrives in order, the close after it.
func TestBlackhole(t *testing.T) {
	tg := startTarget(t, true)
	p := Start(t, tg.ln.Addr().String())
	nc := dial(t, p)
	if _, err := nc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	readN(t, nc, 4)

	p.Blackhole()
	if _, err := nc.Write([]byte("lost?")); err != nil {
		t.Fatal(err)
	}
	if err := nc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// Nothing comes back and the connection stays open: the read times out
	// instead of returning an answer, EOF or a reset.
	_ = nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := nc.Read(make([]byte, 16)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read while blackholed: %d bytes, %v; want a timeout", n, err)
	}
	select {
	case e := <-tg.ended:
		t.Fatalf("the target saw its connection end (%v) while blackholed", e.err)
	default:
	}
	if p.Links() != 1 {
		t.Errorf("%d links while blackholed, want 1", p.Links())
	}

	p.Resume()
	if got := readN(t, nc, 5); string(got) != "lost?" {
		t.Errorf("after Resume the client got %q, want the held bytes", got)
	}
	if e := tg.next(t); e.err != nil || string(e.got) != "pinglost?" {
		t.Errorf("target read %q, %v; want everything in order, then EOF", e.got, e.err)
	}
}

// TestBlackholeNewLinks: a link opened while blackholed is accepted but
// silent.
func TestBlackholeNewLinks(t *testing.T) {
	tg := startTarget(t, true)
	p := Start(t, tg.ln.Addr().String())
	p.Blackhole()
	nc := dial(t, p)
	if _, err := nc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitLinks(t, p, 1)
	_ = nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := nc.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a new link while blackholed: %v; want a timeout", err)
	}
	p.Resume()
	if got := readN(t, nc, 1); string(got) != "x" {
		t.Errorf("got %q after Resume", got)
	}
}

// TestReset: both sides of every open link see a reset.
func TestReset(t *testing.T) {
	tg := startTarget(t, false)
	p := Start(t, tg.ln.Addr().String())
	nc := dial(t, p)
	if _, err := nc.Write([]byte("half a mess")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(wait); ; time.Sleep(time.Millisecond) {
		if up, _ := p.Forwarded(); up == 11 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bytes never reached the target")
		}
	}
	p.Reset()
	if e := tg.next(t); !isReset(e.err) || string(e.got) != "half a mess" {
		t.Errorf("target read %q and ended with %v; want the bytes, then a reset", e.got, e.err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	if _, err := nc.Read(make([]byte, 1)); !isReset(err) {
		t.Errorf("client read after Reset: %v; want a reset", err)
	}
	waitLinks(t, p, 0)
}

// TestCutAfter: a link opened after CutAfter(n) forwards exactly n bytes
// of what its client sends, then resets both sides; earlier links and
// links after CutAfter(-1) are not cut.
func TestCutAfter(t *testing.T) {
	tg := startTarget(t, false)
	p := Start(t, tg.ln.Addr().String())
	before := dial(t, p)
	waitLinks(t, p, 1)
	p.CutAfter(7)
	nc := dial(t, p)
	if _, err := nc.Write([]byte("0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	if e := tg.next(t); !isReset(e.err) || string(e.got) != "0123456" {
		t.Errorf("target read %q and ended with %v; want 7 bytes, then a reset", e.got, e.err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	if _, err := nc.Read(make([]byte, 1)); !isReset(err) {
		t.Errorf("client read after the cut: %v; want a reset", err)
	}

	p.CutAfter(-1)
	for _, c := range []*net.TCPConn{before, dial(t, p)} {
		if _, err := c.Write([]byte("0123456789abcdef")); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if e := tg.next(t); e.err != nil || len(e.got) != 16 {
			t.Errorf("uncut link: target read %q, %v; want all 16 bytes, then EOF", e.got, e.err)
		}
	}
}

// TestDelay: nothing arrives before the delay has passed.
func TestDelay(t *testing.T) {
	const delay = 150 * time.Millisecond
	tg := startTarget(t, true)
	p := Start(t, tg.ln.Addr().String())
	p.SetDelay(delay)
	nc := dial(t, p)
	start := time.Now()
	if _, err := nc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	readN(t, nc, 1)
	// Each way is delayed: the echo took at least twice the delay.
	if took := time.Since(start); took < 2*delay {
		t.Errorf("echo took %v, want at least %v", took, 2*delay)
	}
	p.SetDelay(0)
	if _, err := nc.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	readN(t, nc, 1)
}

// TestUnreachableTarget: a client of a proxy whose target refuses is reset.
func TestUnreachableTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Closed only once the proxy has its port, so the two cannot share one
	// (the proxy would dial itself).
	p := Start(t, ln.Addr().String())
	ln.Close()
	nc, err := net.DialTimeout("tcp", p.Addr(), wait)
	if err == nil {
		defer nc.Close()
		_ = nc.SetReadDeadline(time.Now().Add(wait))
		_, err = nc.Read(make([]byte, 1))
	}
	// The reset can come so fast that the connect itself reports it.
	if !isReset(err) {
		t.Errorf("a proxy whose target is down: %v; want a reset", err)
	}
}

// TestCloseEndsEverything: Close ends links that are blackholed or in the
// middle of a delay, and a second Close is harmless (goleak checks the
// goroutines).
func TestCloseEndsEverything(t *testing.T) {
	tg := startTarget(t, true)
	p := Start(t, tg.ln.Addr().String())
	held := dial(t, p)
	waitLinks(t, p, 1)
	p.SetDelay(time.Hour)
	delayed := dial(t, p)
	if _, err := delayed.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	if _, err := held.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	waitLinks(t, p, 2)
	p.Close()
	p.Close()
	for _, nc := range []*net.TCPConn{held, delayed} {
		_ = nc.SetReadDeadline(time.Now().Add(wait))
		if _, err := nc.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read after Close: %v; want the connection closed", err)
		}
	}
	if nc, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		nc.Close()
		t.Error("the proxy still accepts after Close")
	}
}
