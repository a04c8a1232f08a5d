package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// eventLog records an Observer's callbacks as readable lines.
type eventLog struct {
	mu     sync.Mutex
	conns  map[*Conn]bool
	events []string
}

func (e *eventLog) add(c *Conn, format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c != nil {
		e.conns[c] = true
	}
	e.events = append(e.events, fmt.Sprintf(format, args...))
}

func (e *eventLog) snapshot() ([]string, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.events), len(e.conns)
}

func (e *eventLog) has(event string) bool {
	events, _ := e.snapshot()
	return slices.Contains(events, event)
}

func (e *eventLog) observer() *Observer {
	return &Observer{
		ConnOpened: func(c *Conn) { e.add(c, "opened %s %s", c.Direction(), c.ListenerID()) },
		FrameReceived: func(c *Conn, in *Frame, class FrameClass) {
			e.add(c, "frame %v seq=%d id=%s", class, in.Seq, in.Header.ControlID)
		},
		AckSent: func(c *Conn, code AckCode) { e.add(c, "ack sent %v", code) },
		FrameAnswered: func(c *Conn, in *Frame, code AckCode, err error) {
			e.add(c, "answered seq=%d code=%v err=%v", in.Seq, code, err)
		},
		SendDone: func(c *Conn, res SendResult, err error) {
			e.add(c, "send done %v for %s, err=%v", res.Outcome, res.Ack.ControlID, err)
		},
		FramingError: func(c *Conn, err error) {
			e.add(c, "framing error, junk limit: %v", errors.Is(err, ErrTooMuchJunk))
		},
		ConnClosed: func(c *Conn, info ConnInfo) {
			e.add(c, "closed %v frames_in=%d", info.CloseReason, info.Counters.FramesIn)
		},
		ConnRejected: func(listenerID, remote string, reason RejectReason) {
			host, _, _ := net.SplitHostPort(remote)
			e.add(nil, "rejected %s from %s: %v", listenerID, host, reason)
		},
	}
}

// TestObserverEvents: every callback fires, with the connection and what
// happened, for a connection that sends a frame, is sent a message and
// acknowledges it, then trips the junk limit; and for a connection the
// listener turns away.
func TestObserverEvents(t *testing.T) {
	ev := &eventLog{conns: map[*Conn]bool{}}
	f := Framing{Kind: FramingMLLP, MaxJunkBytes: 16}
	opened := make(chan *Conn, 1)
	l := startListener(t, ListenerConfig{ID: "in", MaxConnections: 1, Sink: &memSink{},
		Conn:   ConnConfig{Framing: f, Observer: ev.observer()},
		OnOpen: func(c *Conn) { opened <- c }})
	p := dialRaw(t, l, f)
	p.send(adt)
	p.ackOf()
	c := <-opened

	// A message sent to the peer, acknowledged.
	out := hl7Msg("ORM^O01^ORM_O01", "OUT-1", "PID|1||123")
	sent := make(chan error, 1)
	go func() {
		_, err := c.Send(context.Background(), out, 5*time.Second)
		sent <- err
	}()
	if got := p.mustNext(); !bytes.Equal(got, out) {
		t.Fatalf("peer got %q", got)
	}
	p.send(hl7.AppendAck(nil, mustHeader(t, out), hl7.AckRequest{Code: hl7.AA, ControlID: "PEER-ACK-1", Time: time.Now()}))
	if err := <-sent; err != nil {
		t.Fatal(err)
	}

	// The only slot is taken: a second connection is turned away (so fast
	// that the dial itself may see the reset).
	if nc, err := net.Dial("tcp", l.Addr().String()); err == nil {
		defer nc.Close()
	}
	rejected := fmt.Sprintf("rejected in from 127.0.0.1: %v", RejectMaxConnections)
	waitUntil(t, func() bool { return ev.has(rejected) })

	if _, err := p.nc.Write(bytes.Repeat([]byte("x"), 17)); err != nil {
		t.Fatal(err)
	}
	<-c.Done()

	events, conns := ev.snapshot()
	// The read loop's events come in order; the Send's and the listener's
	// run on their own goroutines.
	var loop []string
	for _, e := range events {
		if e != rejected && e != "send done accepted for OUT-1, err=<nil>" {
			loop = append(loop, e)
		}
	}
	want := []string{
		"opened inbound in",
		"frame message seq=1 id=MSG00001",
		"ack sent AA",
		"answered seq=1 code=AA err=<nil>",
		"frame reply seq=0 id=PEER-ACK-1",
		"framing error, junk limit: true",
		"closed junk limit frames_in=2",
	}
	if !slices.Equal(loop, want) || len(events) != len(want)+2 || conns != 1 {
		t.Errorf("events for %d connections:\n%q\nwant for 1 connection, besides the send and the rejection:\n%q", conns, events, want)
	}
}
