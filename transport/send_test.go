package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// stalledPeer accepts one connection, reads its first n bytes, closes read
// (returned) and then reads nothing more until the test ends.
func stalledPeer(t *testing.T, n int64) (addr string, read <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := make(chan struct{})
	end := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		nc, err := ln.Accept()
		if err != nil {
			close(r)
			return
		}
		defer nc.Close()
		_, _ = io.CopyN(io.Discard, nc, n)
		close(r)
		<-end
	})
	t.Cleanup(func() {
		close(end)
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String(), r
}

// TestSendBlockedWrite: a large Send to a peer that stops reading blocks in
// its write. The Send's own timeout, its call's deadline or its
// cancellation ends it, long before the connection's 30 s write timeout,
// as in doubt (bytes went out), and resets the connection.
func TestSendBlockedWrite(t *testing.T) {
	// Far more than loopback socket buffers hold.
	payload := sizedMsg("BIG-1", 40<<20)
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		// deadline is the call's; zero: none.
		deadline time.Duration
		// cancelAfter cancels the call once the peer has read this much.
		cancelAfter int64
		cause       SendCause
		err         error
	}{
		{name: "timeout", timeout: time.Second, cause: CauseAckTimeout, err: ErrAckTimeout},
		{name: "call deadline", timeout: time.Minute, deadline: time.Second, cause: CauseAckTimeout},
		{name: "cancelled", timeout: time.Minute, cancelAfter: 1 << 20, cause: CauseCancelled, err: context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, read := stalledPeer(t, tc.cancelAfter)
			c, err := Dial(context.Background(), DialConfig{ID: "out", Address: addr, Sink: &memSink{}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			switch {
			case tc.deadline > 0:
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
			case tc.cancelAfter > 0:
				ctx, cancel = context.WithCancel(ctx)
			}
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := c.Send(ctx, payload, tc.timeout)
				errc <- err
			}()
			if tc.cancelAfter > 0 {
				<-read // the write is under way and cannot finish
				cancel()
			}
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				c.Close() // ends the Send, so the test does not leak it
				t.Fatalf("Send still blocked after 10 s: %v", <-errc)
			}
			var se *SendError
			if !errors.As(err, &se) || se.Cause != tc.cause || !se.Written {
				t.Fatalf("Send = %v, want an in-doubt SendError with cause %v", err, tc.cause)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("Send = %v, want it to wrap %v", err, tc.err)
			}
			if info := c.Info(); info.State != StateClosed || info.CloseReason != CloseSendWriteFailed {
				t.Errorf("connection %v, closed for %v; want reset for the failed write", info.State, info.CloseReason)
			}
		})
	}
}

// TestSendWriteGetsItsTimeout: a Send's write may take as long as the
// Send's timeout allows, even when an acknowledgement written just before
// it left a shorter write deadline in force. Here the peer reads nothing
// for longer than WriteTimeout, then reads the message and acknowledges it.
func TestSendWriteGetsItsTimeout(t *testing.T) {
	const writeTimeout = 500 * time.Millisecond
	opened := make(chan *Conn, 1)
	l := startListener(t, ListenerConfig{Conn: ConnConfig{WriteTimeout: writeTimeout}, Sink: &memSink{},
		OnOpen: func(c *Conn) { opened <- c }})
	// More than the socket buffers hold while the peer does not read.
	payload := sizedMsg("BIG-1", 16<<20)
	p := dialRaw(t, l, mllpFraming)
	p.send(adt)
	p.ackOf() // the server's write deadline is now about WriteTimeout away
	c := <-opened
	type result struct {
		res SendResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Send(context.Background(), payload, 20*time.Second)
		done <- result{res, err}
	}()
	time.Sleep(3 * writeTimeout) // a slow reader, not an assertion
	big := Framing{Kind: FramingMLLP, MaxFrameBytes: MaxFrameBytesLimit}
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := NewDecoder(p.nc, big).Next()
	if err != nil || len(got) != len(payload) {
		r := <-done
		t.Fatalf("peer read %d bytes, %v; Send = %v", len(got), err, r.err)
	}
	p.send(hl7.AppendAck(nil, mustHeader(t, payload), hl7.AckRequest{Code: hl7.AA, ControlID: "PEER-1", Time: time.Now()}))
	if r := <-done; r.err != nil || r.res.Outcome != OutcomeAccepted {
		t.Fatalf("Send = %+v, %v; want accepted", r.res, r.err)
	}
}
