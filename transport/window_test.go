package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// scriptedPeer is the far end of one outbound connection, driven by the
// test: it reads the frames the connection writes and writes whatever the
// test tells it to.
type scriptedPeer struct {
	t   *testing.T
	nc  net.Conn
	dec *Decoder
}

// dialScripted dials a loopback listener with cfg and returns the
// connection and its peer. Both are closed when the test ends.
func dialScripted(t *testing.T, cfg ConnConfig) (*Conn, *scriptedPeer, closeLog) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- nc
	}()
	closes := newCloseLog()
	c, err := Dial(context.Background(), DialConfig{ID: "out", Address: ln.Addr().String(), Conn: cfg, Sink: &memSink{}, OnClose: closes.onClose})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	nc := <-accepted
	if nc == nil {
		t.Fatal("peer accepted nothing")
	}
	t.Cleanup(func() { nc.Close() })
	return c, &scriptedPeer{t: t, nc: nc, dec: NewDecoder(nc, mllpFraming.WithDefaults())}, closes
}

// read returns the next frame the connection wrote, within 5 s.
func (p *scriptedPeer) read() []byte {
	p.t.Helper()
	_ = p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := p.dec.Next()
	if err != nil {
		p.t.Fatalf("peer read: %v", err)
	}
	return bytes.Clone(f)
}

// quiet asserts that nothing arrives for a little while.
func (p *scriptedPeer) quiet() {
	p.t.Helper()
	_ = p.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if f, err := p.dec.Next(); err == nil {
		p.t.Fatalf("peer got %q, want nothing yet", f)
	}
}

// ack answers control id with code.
func (p *scriptedPeer) ack(code hl7.AckCode, controlID string) {
	p.t.Helper()
	h, err := hl7.ParseHeader(hl7Msg("ADT^A01^ADT_A01", controlID))
	if err != nil {
		p.t.Fatal(err)
	}
	p.write(hl7.AppendAck(nil, h, hl7.AckRequest{Code: code, ControlID: "P-" + controlID, Time: time.Now()}))
}

func (p *scriptedPeer) write(payload []byte) {
	p.t.Helper()
	if _, err := p.nc.Write(mllpFraming.WithDefaults().AppendFrame(nil, payload)); err != nil {
		p.t.Fatalf("peer write: %v", err)
	}
}

// dispatchAll dispatches one message per control id, in order.
func dispatchAll(t *testing.T, c *Conn, timeout time.Duration, ids ...string) []*InFlight {
	t.Helper()
	var fs []*InFlight
	for _, id := range ids {
		f, err := c.Dispatch(context.Background(), hl7Msg("ADT^A01^ADT_A01", id), timeout)
		if err != nil {
			t.Fatalf("Dispatch(%s): %v", id, err)
		}
		fs = append(fs, f)
	}
	return fs
}

// result waits (at most 10 s) for f's outcome.
func result(t *testing.T, f *InFlight) (SendResult, error) {
	t.Helper()
	select {
	case <-f.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("no outcome for %s within 10 s", f.ControlID())
	}
	return f.Result()
}

// TestDispatchOutOfOrder: eight messages are written before any is
// acknowledged, and the peer answers them in reverse order with a code of
// its choosing for each. Every message gets its own acknowledgement, and
// the connection stays open for more.
func TestDispatchOutOfOrder(t *testing.T) {
	c, peer, _ := dialScripted(t, ConnConfig{})
	if !c.Pipelines() {
		t.Fatal("the HL7 policy does not pipeline")
	}
	var ids []string
	for i := range 8 {
		ids = append(ids, fmt.Sprintf("M%d", i))
	}
	fs := dispatchAll(t, c, 5*time.Second, ids...)
	for _, id := range ids {
		if h, err := hl7.ParseHeader(peer.read()); err != nil || h.ControlID != id {
			t.Fatalf("peer read %q, %v; want %s next", h.ControlID, err, id)
		}
	}
	codeOf := func(i int) hl7.AckCode { return []hl7.AckCode{hl7.AA, hl7.AR, hl7.AE}[i%3] }
	for i := len(ids) - 1; i >= 0; i-- {
		peer.ack(codeOf(i), ids[i])
	}
	for i, f := range fs {
		res, err := result(t, f)
		want := map[hl7.AckCode]AckCode{hl7.AA: AckAA, hl7.AR: AckAR, hl7.AE: AckAE}[codeOf(i)]
		if err != nil || res.Ack.Code != want || res.Ack.ControlID != ids[i] || res.SentControlID != ids[i] {
			t.Errorf("%s: %+v, %v; want its own %v", ids[i], res, err, want)
		}
	}
	if c.State() != StateOpen {
		t.Fatalf("connection %v after a clean window", c.State())
	}
	// And a plain Send works on it afterwards.
	done := make(chan error, 1)
	go func() {
		_, err := c.Send(context.Background(), hl7Msg("ADT^A01^ADT_A01", "AFTER"), 5*time.Second)
		done <- err
	}()
	peer.read()
	peer.ack(hl7.AA, "AFTER")
	if err := <-done; err != nil {
		t.Fatalf("Send after the window: %v", err)
	}
}

// TestDispatchUnmatchedAck: an acknowledgement that names none of the
// messages in flight cannot be credited to any of them: every one ends in
// doubt with the reply attached, and the connection is reset.
func TestDispatchUnmatchedAck(t *testing.T) {
	c, peer, closes := dialScripted(t, ConnConfig{})
	fs := dispatchAll(t, c, 5*time.Second, "A", "B", "C")
	for range fs {
		peer.read()
	}
	peer.ack(hl7.AA, "B")     // fine
	peer.ack(hl7.AA, "OTHER") // matches nothing
	res, err := result(t, fs[1])
	if err != nil || res.Outcome != OutcomeAccepted {
		t.Errorf("B = %+v, %v; want accepted before the stray reply", res, err)
	}
	for _, f := range []*InFlight{fs[0], fs[2]} {
		_, err := result(t, f)
		var se *SendError
		if !errors.As(err, &se) || !se.Written || se.Cause != CauseAckMismatch || se.Ack == nil || se.Ack.ControlID != "OTHER" {
			t.Errorf("%s = %v; want in doubt, ack mismatch, with the stray reply", f.ControlID(), err)
		}
	}
	if info := closes.next(t); info.CloseReason != CloseAckMismatch || info.Counters.AckMismatches != 1 {
		t.Errorf("closed for %v with %d mismatches; want reset for the mismatch", info.CloseReason, info.Counters.AckMismatches)
	}
}

// TestDispatchTimeout: the peer answers only the second of three messages.
// The first one's timeout resets the connection: it is in doubt for the
// timeout, the third one for the lost connection, and the second keeps its
// answer.
func TestDispatchTimeout(t *testing.T) {
	c, peer, closes := dialScripted(t, ConnConfig{})
	fs := append(dispatchAll(t, c, 500*time.Millisecond, "A"), dispatchAll(t, c, 5*time.Second, "B", "C")...)
	for range fs {
		peer.read()
	}
	peer.ack(hl7.AA, "B")
	for _, tc := range []struct {
		f     *InFlight
		cause SendCause // 0: accepted
	}{{fs[0], CauseAckTimeout}, {fs[1], 0}, {fs[2], CauseConnectionLost}} {
		res, err := result(t, tc.f)
		var se *SendError
		switch {
		case tc.cause == 0 && (err != nil || res.Outcome != OutcomeAccepted):
			t.Errorf("%s = %+v, %v; want accepted", tc.f.ControlID(), res, err)
		case tc.cause != 0 && (!errors.As(err, &se) || !se.Written || se.Cause != tc.cause):
			t.Errorf("%s = %v; want in doubt for %v", tc.f.ControlID(), err, tc.cause)
		}
	}
	if info := closes.next(t); info.CloseReason != CloseAckTimeout || info.Counters.AckTimeouts != 1 {
		t.Errorf("closed for %v with %d timeouts; want reset for one timeout", info.CloseReason, info.Counters.AckTimeouts)
	}
	if _, err := c.Dispatch(context.Background(), hl7Msg("ADT^A01^ADT_A01", "D"), time.Second); err == nil {
		t.Error("Dispatch on the reset connection succeeded")
	} else if se := (*SendError)(nil); !errors.As(err, &se) || se.Written {
		t.Errorf("Dispatch on the reset connection = %v; want not sent", err)
	}
}

// TestDispatchUnreadableReply: a reply that names a message in flight but
// cannot be read (an unknown MSA-1 code) leaves that message in doubt and
// resets the connection, so the others are in doubt too.
func TestDispatchUnreadableReply(t *testing.T) {
	c, peer, closes := dialScripted(t, ConnConfig{})
	fs := dispatchAll(t, c, 5*time.Second, "A", "B")
	peer.read()
	peer.read()
	peer.ack("ZZ", "A")
	var se *SendError
	if _, err := result(t, fs[0]); !errors.As(err, &se) || !se.Written || se.Cause != CauseAckUnreadable {
		t.Errorf("A = %v; want in doubt, unreadable", err)
	}
	if _, err := result(t, fs[1]); !errors.As(err, &se) || !se.Written || se.Cause != CauseConnectionLost {
		t.Errorf("B = %v; want in doubt, connection lost", err)
	}
	if info := closes.next(t); info.CloseReason != CloseAckMismatch {
		t.Errorf("closed for %v; want reset for the unreadable reply", info.CloseReason)
	}
}

// TestDispatchWindowOfOne: under a policy whose acknowledgements name no
// message, a second Dispatch waits until the first is answered; so does a
// message whose control id is already in flight, and so does a Send.
func TestDispatchWindowOfOne(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    ConnConfig
		first  []byte
		second func(*Conn) error
		answer func(*scriptedPeer)
	}{
		{name: "single byte", cfg: ConnConfig{Ack: SingleByteAck()}, first: []byte("one"),
			second: func(c *Conn) error {
				_, err := c.Dispatch(context.Background(), []byte("two"), 5*time.Second)
				return err
			},
			answer: func(p *scriptedPeer) { p.write([]byte{0x06}) }},
		{name: "same control id", cfg: ConnConfig{}, first: hl7Msg("ADT^A01^ADT_A01", "SAME"),
			second: func(c *Conn) error {
				_, err := c.Dispatch(context.Background(), hl7Msg("ADT^A08^ADT_A01", "SAME"), 5*time.Second)
				return err
			},
			answer: func(p *scriptedPeer) { p.ack(hl7.AA, "SAME") }},
		{name: "send", cfg: ConnConfig{}, first: hl7Msg("ADT^A01^ADT_A01", "W1"),
			second: func(c *Conn) error {
				_, err := c.Send(context.Background(), hl7Msg("ADT^A01^ADT_A01", "S1"), 5*time.Second)
				return err
			},
			answer: func(p *scriptedPeer) { p.ack(hl7.AA, "W1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer, _ := dialScripted(t, tc.cfg)
			f, err := c.Dispatch(context.Background(), tc.first, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got := peer.read(); !bytes.Equal(got, tc.first) {
				t.Fatalf("peer read %q", got)
			}
			second := make(chan error, 1)
			go func() { second <- tc.second(c) }()
			peer.quiet() // the second waits for the first's answer
			tc.answer(peer)
			if res, err := result(t, f); err != nil || res.Outcome != OutcomeAccepted {
				t.Fatalf("first = %+v, %v", res, err)
			}
			peer.read() // now the second is written
			c.Close()
			<-second
		})
	}
}

// TestDispatchDrainAndClose: Drain lets the acknowledgements of messages in
// flight arrive before it closes the connection; Close fails those still
// waiting as in doubt, and a Dispatch after it writes nothing.
func TestDispatchDrainAndClose(t *testing.T) {
	t.Run("drain", func(t *testing.T) {
		c, peer, closes := dialScripted(t, ConnConfig{})
		fs := dispatchAll(t, c, 5*time.Second, "A", "B")
		peer.read()
		peer.read()
		drained := make(chan struct{})
		go func() {
			c.Drain(time.Now().Add(5 * time.Second))
			close(drained)
		}()
		peer.ack(hl7.AA, "B")
		peer.ack(hl7.AA, "A")
		for _, f := range fs {
			if res, err := result(t, f); err != nil || res.Outcome != OutcomeAccepted {
				t.Errorf("%s = %+v, %v; want accepted during the drain", f.ControlID(), res, err)
			}
		}
		<-drained
		if info := closes.next(t); info.CloseReason != CloseDrained {
			t.Errorf("closed for %v, want drained", info.CloseReason)
		}
	})
	t.Run("close", func(t *testing.T) {
		c, peer, _ := dialScripted(t, ConnConfig{})
		fs := dispatchAll(t, c, time.Minute, "A", "B")
		peer.read()
		peer.read()
		var wg sync.WaitGroup
		wg.Go(func() { c.Close() })
		for _, f := range fs {
			var se *SendError
			if _, err := result(t, f); !errors.As(err, &se) || !se.Written || se.Cause != CauseConnectionLost || !errors.Is(err, ErrClosed) {
				t.Errorf("%s = %v; want in doubt, connection lost", f.ControlID(), err)
			}
		}
		wg.Wait()
		var se *SendError
		if _, err := c.Dispatch(context.Background(), hl7Msg("ADT^A01^ADT_A01", "C"), time.Second); !errors.As(err, &se) || se.Written || se.Cause != CauseNotOpen {
			t.Errorf("Dispatch after Close = %v; want not sent", err)
		}
	})
}

// TestDispatchObserved: the observer sees every dispatched message end,
// answered or not.
func TestDispatchObserved(t *testing.T) {
	var mu sync.Mutex
	var outcomes []string
	obs := &Observer{SendDone: func(_ *Conn, res SendResult, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			outcomes = append(outcomes, "error")
			return
		}
		outcomes = append(outcomes, res.Outcome.String())
	}}
	c, peer, _ := dialScripted(t, ConnConfig{Observer: obs})
	fs := dispatchAll(t, c, 300*time.Millisecond, "A", "B")
	peer.read()
	peer.read()
	peer.ack(hl7.AR, "A")
	for _, f := range fs {
		_, _ = result(t, f)
	}
	// The observer may hear of an outcome just after its handle is done.
	var got string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		got = fmt.Sprint(outcomes)
		n := len(outcomes)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if got != "[rejected error]" {
		t.Errorf("observed %v; want [rejected error]", got)
	}
}
