package transport

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// slowSink is a memSink whose appends take a while, like a disk under load.
type slowSink struct {
	memSink
	delay time.Duration
}

func (s *slowSink) Append(ctx context.Context, m *Message) (uint64, error) {
	time.Sleep(s.delay)
	return s.memSink.Append(ctx, m)
}

// TestFrameTimeoutPerFrame: the frame timeout bounds each frame, not a
// backlog. A peer that pipelines frames faster than the sink stores them
// keeps the server reading in the middle of the next frame, read after
// read; as long as every frame completes, that must not count as one frame
// taking forever.
func TestFrameTimeoutPerFrame(t *testing.T) {
	const frames = 400
	closed := newCloseLog()
	// Appends of 3 ms keep a backlog of over a second: several frame
	// timeouts.
	sink := &slowSink{delay: 3 * time.Millisecond}
	l := startListener(t, ListenerConfig{Conn: ConnConfig{FrameTimeout: 300 * time.Millisecond}, Sink: sink, OnClose: closed.onClose})
	p := dialRaw(t, l, mllpFraming)
	// 303-byte frames do not divide the 4 KiB read buffer, so while the
	// backlog lasts every read ends inside a frame.
	var stream []byte
	for range frames {
		stream = mllpFraming.WithDefaults().AppendFrame(stream, sizedMsg("MSG-1", 300))
	}
	if _, err := p.nc.Write(stream); err != nil {
		t.Fatal(err)
	}
	for i := range frames {
		f, err := p.next()
		if err != nil {
			p.nc.Close()
			info := closed.next(t)
			t.Fatalf("after %d answers: %v; the server closed for %v", i, err, info.CloseReason)
		}
		if a, err := hl7.ParseAck(f); err != nil || a.Code != hl7.AA {
			t.Fatalf("answer %d: %+v, %v; want AA", i, a, err)
		}
	}
	if sink.count() != frames {
		t.Errorf("sink holds %d, want %d", sink.count(), frames)
	}
}

// TestIdleTimeoutAfterAnswer: the idle time runs from when a frame was
// answered, not from when it arrived. A peer waits for the answer before
// sending more, so a Sink slower than the idle timeout must not have the
// connection closed as idle the moment it has been answered.
func TestIdleTimeoutAfterAnswer(t *testing.T) {
	const idle = 300 * time.Millisecond
	closed := newCloseLog()
	sink := &slowSink{delay: 2 * idle}
	l := startListener(t, ListenerConfig{Conn: ConnConfig{IdleTimeout: idle}, Sink: sink, OnClose: closed.onClose})
	p := dialRaw(t, l, mllpFraming)
	for i := range 2 {
		p.send(adt)
		f, err := p.next()
		if err != nil {
			p.nc.Close()
			t.Fatalf("answer %d: %v; the server closed for %v", i, err, closed.next(t).CloseReason)
		}
		if a, err := hl7.ParseAck(f); err != nil || a.Code != hl7.AA {
			t.Fatalf("answer %d: %+v, %v; want AA", i, a, err)
		}
	}
	// Left alone, it is closed as idle all the same.
	if info := closed.next(t); info.CloseReason != CloseIdleTimeout || sink.count() != 2 {
		t.Errorf("closed for %v with %d stored; want idle timeout, 2", info.CloseReason, sink.count())
	}
}
