package transport

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/switchboard-dev/switchboard/hl7"
)

// TestFailingSinkLogsSampled: with a sink that fails every append, each
// frame is answered AR and counted as a journal error, but the log gets one
// line per sampling interval; the next line says how many it held back.
func TestFailingSinkLogsSampled(t *testing.T) {
	const frames = 200
	const msg = "frame answered negatively"
	logs := newLogCounter()
	opened := make(chan *Conn, 1)
	closed := newCloseLog()
	l := startListener(t, ListenerConfig{Sink: &memSink{fail: errors.New("disk full")}, Logger: slog.New(logs),
		OnOpen: func(c *Conn) { opened <- c }, OnClose: closed.onClose})
	p := dialRaw(t, l, mllpFraming)
	exchange := func() {
		p.send(adt)
		if a := p.ackOf(); a.Code != hl7.AR {
			t.Fatalf("answer %s, want AR", a.Code)
		}
	}
	for range frames {
		exchange()
	}
	c := <-opened
	// An answer is counted once written: the peer may read it first.
	waitUntil(t, func() bool { return c.Info().Counters.AcksSent[AckAR] == frames })
	if k := c.Info().Counters; k.JournalErrors != frames || k.AcksSent[AckAR] != frames {
		t.Errorf("%d journal errors, %d AR sent; want %d of each", k.JournalErrors, k.AcksSent[AckAR], frames)
	}
	if lines, _ := logs.count(msg); lines == 0 || lines*20 > frames {
		t.Errorf("%d lines logged for %d refused frames; want a few", lines, frames)
	}

	// Go on until the next interval lets a second line through.
	sent := frames
	waitUntil(t, func() bool {
		exchange()
		sent++
		lines, _ := logs.count(msg)
		return lines >= 2
	})
	// A frame's line is logged after its answer is written: once the
	// connection has closed, every line is in.
	p.nc.Close()
	closed.next(t)
	lines, suppressed := logs.count(msg)
	t.Logf("%d refused frames, %d log lines, %d suppressed", sent, lines, suppressed)
	if suppressed == 0 {
		t.Error("the second line reports no suppressed lines")
	}
	if got := lines + int(suppressed) + l.logs.negative.heldBack(); got != sent {
		t.Errorf("%d lines + %d suppressed + %d held back = %d, want the %d refused frames", lines, suppressed, l.logs.negative.heldBack(), got, sent)
	}
	if w := logs.warnings(); w != lines {
		t.Errorf("%d warnings or errors logged, want only the %d sampled lines", w, lines)
	}
}
