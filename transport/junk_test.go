package transport

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// TestJunkIsNotActivity: a peer trickling one junk byte every 100 ms is
// closed by a 300 ms idle timeout long before it runs out of junk: bytes
// outside frames never start a frame, so they must not keep the
// connection alive.
func TestJunkIsNotActivity(t *testing.T) {
	const junkBytes = 100 // 10 s of junk
	closed := newCloseLog()
	l := startListener(t, ListenerConfig{Conn: ConnConfig{IdleTimeout: 300 * time.Millisecond}, Sink: &memSink{}, OnClose: closed.onClose})
	p := dialRaw(t, l, mllpFraming)

	stop := make(chan struct{})
	var sent int
	var wg sync.WaitGroup
	wg.Go(func() {
		for sent < junkBytes {
			if _, err := p.nc.Write([]byte{'x'}); err != nil {
				return // closed by the server
			}
			sent++
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	info := closed.next(t)
	close(stop)
	wg.Wait()
	if info.CloseReason != CloseIdleTimeout {
		t.Errorf("closed for %v, want idle timeout", info.CloseReason)
	}
	if sent == junkBytes {
		t.Errorf("all %d junk bytes were accepted before the idle timeout closed the connection", sent)
	}
	if info.Counters.JunkBytes == 0 || info.Counters.JunkBytes > int64(sent) {
		t.Errorf("junk bytes counted %d, sent %d", info.Counters.JunkBytes, sent)
	}
}

// TestJunkLimit: more than MaxJunkBytes bytes in a row outside frames close
// the connection as a framing error, counting exactly the bytes up to the
// first one over the limit; junk between frames that never reaches the
// limit in a row (a LF after every frame) is only counted.
func TestJunkLimit(t *testing.T) {
	const limit = 100
	f := Framing{Kind: FramingMLLP, MaxJunkBytes: limit}

	t.Run("in a row", func(t *testing.T) {
		closed := newCloseLog()
		sink := &memSink{}
		l := startListener(t, ListenerConfig{Conn: ConnConfig{Framing: f}, Sink: sink, OnClose: closed.onClose})
		p := dialRaw(t, l, f)
		p.send(adt)
		if a := p.ackOf(); a.Code != hl7.AA {
			t.Fatalf("frame before the junk: %s", a.Code)
		}
		if _, err := p.nc.Write(bytes.Repeat([]byte("x"), 10*limit)); err != nil {
			t.Fatal(err)
		}
		p.closedByServer()
		info := closed.next(t)
		if info.CloseReason != CloseJunkLimit || info.Counters.FramingErrors != 1 || info.Counters.JunkBytes != limit+1 {
			t.Errorf("closed for %v with %d framing errors, %d junk bytes; want junk limit, 1, %d",
				info.CloseReason, info.Counters.FramingErrors, info.Counters.JunkBytes, limit+1)
		}
		if sink.count() != 1 {
			t.Errorf("sink holds %d, want 1", sink.count())
		}
	})

	t.Run("between frames", func(t *testing.T) {
		const frames, batch = 3 * limit, 50
		closed := newCloseLog()
		sink := &memSink{}
		l := startListener(t, ListenerConfig{Conn: ConnConfig{Framing: f}, Sink: sink, OnClose: closed.onClose})
		p := dialRaw(t, l, f)
		var b []byte
		for range batch {
			b = append(f.WithDefaults().AppendFrame(b, adt), '\n')
		}
		for range frames / batch {
			if _, err := p.nc.Write(b); err != nil {
				t.Fatal(err)
			}
			for range batch {
				if a := p.ackOf(); a.Code != hl7.AA {
					t.Fatalf("answer %s, want AA", a.Code)
				}
			}
		}
		p.nc.Close()
		info := closed.next(t)
		if info.CloseReason != ClosePeerClosed || info.Counters.FramingErrors != 0 || info.Counters.JunkBytes != frames {
			t.Errorf("closed for %v with %d framing errors, %d junk bytes; want peer closed, 0, %d",
				info.CloseReason, info.Counters.FramingErrors, info.Counters.JunkBytes, frames)
		}
		if sink.count() != frames {
			t.Errorf("sink holds %d, want %d", sink.count(), frames)
		}
	})
}

// TestJunkVisibleBeforeFrame: junk is counted in the connection's info as
// it arrives, not only once a frame completes.
func TestJunkVisibleBeforeFrame(t *testing.T) {
	opened := make(chan *Conn, 1)
	l := startListener(t, ListenerConfig{Sink: &memSink{}, OnOpen: func(c *Conn) { opened <- c }})
	p := dialRaw(t, l, mllpFraming)
	if _, err := p.nc.Write(bytes.Repeat([]byte("x"), 500)); err != nil {
		t.Fatal(err)
	}
	c := <-opened
	waitUntil(t, func() bool { return c.Info().Counters.JunkBytes == 500 })
	if k := c.Info().Counters; k.FramesIn != 0 {
		t.Errorf("%d frames in, want 0", k.FramesIn)
	}
}

// TestDecoderJunkLimit: under every lenient framing and however the stream
// is split into reads, junk over MaxJunkBytes in a row ends decoding with
// ErrTooMuchJunk at the first byte over the limit, after the frames before
// it; junk broken up by frames never reaches the limit.
func TestDecoderJunkLimit(t *testing.T) {
	const limit = 4
	for _, tc := range []struct {
		name   string
		f      Framing
		stream string
		frames int   // frames before the junk that is over the limit
		junk   int64 // junk bytes counted, the one over the limit included
		overAt int64 // offset of the first byte over the limit
	}{
		// 0x0B starts a frame; everything else outside one is junk.
		{name: "mllp", f: Framing{Kind: FramingMLLP}, stream: "xxxx\x0bA\x1c\rxxxx\x0bB\x1c\rxxxxx\x0bC\x1c\r", frames: 2, junk: 13, overAt: 20},
		// Empty frames of a delimiter framing are junk, one byte each here.
		{name: "delimiter", f: Framing{Kind: FramingDelimiter, Delimiter: []byte("\n")}, stream: "\n\n\n\nA\n\n\n\n\n\nB\n", frames: 1, junk: 9, overAt: 10},
		// A two-byte delimiter is cut at the first byte over the limit.
		{name: "delimiter crlf", f: Framing{Kind: FramingDelimiter, Delimiter: []byte("\r\n")}, stream: "A\r\n\r\n\r\n\r\nB\r\n", frames: 1, junk: 5, overAt: 7},
		{name: "start-end", f: Framing{Kind: FramingStartEnd, Start: []byte("<<"), End: []byte(">>")}, stream: "x<x<<A>>x<x<x<<B>>", frames: 1, junk: 8, overAt: 12},
	} {
		tc.f.MaxJunkBytes = limit
		for name, r := range readers([]byte(tc.stream)) {
			got := decodeAll(t, NewDecoder(r, tc.f))
			var fe *FrameError
			if !errors.As(got.err, &fe) || fe.Err != ErrTooMuchJunk || fe.Offset != tc.overAt {
				t.Errorf("%s/%s: error %v, want ErrTooMuchJunk at offset %d", tc.name, name, got.err, tc.overAt)
			}
			if len(got.frames) != tc.frames || got.stats.JunkBytes != tc.junk {
				t.Errorf("%s/%s: %d frames, %d junk bytes; want %d, %d", tc.name, name, len(got.frames), got.stats.JunkBytes, tc.frames, tc.junk)
			}
		}
	}
}
