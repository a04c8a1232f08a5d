package transport

import (
	"net"
	"testing"

	"github.com/switchboard-dev/switchboard/hl7"
)

// TestPeerReset: a reset (SO_LINGER 0) in the middle of a frame is a
// framing error like a close there, and the partial frame is dropped; a
// reset between frames is only a reset. Both are reported as such.
func TestPeerReset(t *testing.T) {
	for _, tc := range []struct {
		name          string
		midFrame      bool
		framingErrors int64
		stored        int
	}{
		{name: "mid-frame", midFrame: true, framingErrors: 1},
		{name: "between frames", framingErrors: 0, stored: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &memSink{}
			closed := newCloseLog()
			opened := make(chan *Conn, 1)
			l := startListener(t, ListenerConfig{Sink: sink, OnOpen: func(c *Conn) { opened <- c }, OnClose: closed.onClose})
			p := dialRaw(t, l, mllpFraming)
			c := <-opened
			if tc.midFrame {
				frame := mllpFraming.WithDefaults().AppendFrame(nil, adt)
				if _, err := p.nc.Write(frame[:len(frame)/2]); err != nil {
					t.Fatal(err)
				}
				// Nothing is written before a frame completes: activity is
				// the server reading the partial frame.
				waitUntil(t, func() bool { i := c.Info(); return i.LastActivity.After(i.OpenTime) })
			} else {
				p.send(adt)
				if a := p.ackOf(); a.Code != hl7.AA {
					t.Fatalf("answer %s, want AA", a.Code)
				}
			}
			_ = p.nc.(*net.TCPConn).SetLinger(0)
			p.nc.Close()
			info := closed.next(t)
			if info.CloseReason != ClosePeerReset || info.Counters.FramingErrors != tc.framingErrors {
				t.Errorf("closed for %v with %d framing errors; want peer reset with %d", info.CloseReason, info.Counters.FramingErrors, tc.framingErrors)
			}
			if sink.count() != tc.stored || info.Counters.AcksSent[AckAA] != int64(tc.stored) {
				t.Errorf("%d stored, %d AA; want %d", sink.count(), info.Counters.AcksSent[AckAA], tc.stored)
			}
		})
	}
}
