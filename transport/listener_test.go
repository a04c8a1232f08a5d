package transport

import (
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/switchboard-dev/switchboard/hl7"
)

// flood is a set of peers that connect from one address, never send, and
// reconnect at once when the listener turns them away.
type flood struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startFlood(t *testing.T, addr string, peers int) *flood {
	fl := &flood{stop: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	for range peers {
		fl.wg.Go(func() {
			for {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					select {
					case <-fl.stop:
						return
					default:
						continue
					}
				}
				if !fl.hold(nc) {
					return
				}
				// Blocks until the listener resets the connection or the
				// flood ends.
				_, _ = nc.Read(make([]byte, 1))
				fl.release(nc)
			}
		})
	}
	t.Cleanup(fl.end)
	return fl
}

// hold registers nc, or closes it and reports false when the flood ended.
func (fl *flood) hold(nc net.Conn) bool {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	select {
	case <-fl.stop:
		nc.Close()
		return false
	default:
	}
	fl.conns[nc] = struct{}{}
	return true
}

func (fl *flood) release(nc net.Conn) {
	fl.mu.Lock()
	delete(fl.conns, nc)
	fl.mu.Unlock()
	nc.Close()
}

// end stops the flood and closes its connections (idempotent).
func (fl *flood) end() {
	fl.mu.Lock()
	select {
	case <-fl.stop:
	default:
		close(fl.stop)
		for nc := range fl.conns {
			nc.Close()
		}
	}
	fl.mu.Unlock()
	fl.wg.Wait()
}

// TestConnectionFloodFromOneSource: silent peers from 127.0.0.1 that hold
// their connections and reconnect when turned away get at most the
// per-source share of a listener's slots, so a sender from another address
// still gets in and is acknowledged. The rejections are all counted but
// logged sampled: the lines logged, the suppressed counts they carry and
// the count held back for the next line add up to the rejections.
func TestConnectionFloodFromOneSource(t *testing.T) {
	const maxConns, perSource = 20, 10 // the default per-source limit is half
	logs := newLogCounter()
	sink := &memSink{}
	l, err := Listen(t.Context(), ListenerConfig{Address: "127.0.0.1:0", MaxConnections: maxConns, Sink: sink, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fl := startFlood(t, l.Addr().String(), 2*maxConns)
	// Two lines take a sampling interval: the second reports what the
	// first held back.
	const msg = "connection limit reached; closing new connection"
	waitUntil(t, func() bool { lines, _ := logs.count(msg); return lines >= 2 && l.Info().Open >= perSource })

	p := dialFrom(t, l, "127.0.0.2")
	p.send(adt)
	if a := p.ackOf(); a.Code != hl7.AA {
		t.Errorf("sender from another address: %s, want AA", a.Code)
	}
	fl.end()
	p.nc.Close()
	l.Close() // no more rejections once the accept loop has ended

	info := l.Info()
	rejections := info.Rejected + info.SourceRejected
	if info.Open != 0 || info.Rejected != 0 || sink.count() != 1 {
		t.Errorf("%d open, %d rejected at MaxConnections, %d stored; want 0, 0, 1: the flood must not fill the listener", info.Open, info.Rejected, sink.count())
	}
	lines, suppressed := logs.count(msg)
	t.Logf("%d rejections, %d log lines, %d suppressed", rejections, lines, suppressed)
	if suppressed == 0 || int64(lines)*20 > rejections {
		t.Errorf("%d log lines for %d rejections; want a few", lines, rejections)
	}
	if got := int64(lines) + suppressed + int64(l.logs.rejected.heldBack()); got != rejections {
		t.Errorf("%d lines + %d suppressed + %d held back = %d, want the %d rejections", lines, suppressed, l.logs.rejected.heldBack(), got, rejections)
	}
	if w := logs.warnings(); w > lines+2 {
		t.Errorf("%d warnings logged, %d of them rejections; the flood logged more than it should", w, lines)
	}
}

// TestListenerTotalsSurviveClose: a listener's totals add up its
// connections' counters and keep those of connections that closed.
func TestListenerTotalsSurviveClose(t *testing.T) {
	closed := newCloseLog()
	l := startListener(t, ListenerConfig{Sink: &memSink{}, OnClose: closed.onClose})
	exchange := func(frames int) {
		p := dialRaw(t, l, mllpFraming)
		for range frames {
			p.send(adt)
			p.ackOf()
		}
		p.nc.Close()
		closed.next(t)
	}
	counted := func(frames int64) bool {
		k := l.Info().Totals
		return k.FramesIn == frames && k.FramesOut == frames && k.AcksSent[AckAA] == frames && k.BytesIn == frames*int64(len(adt))
	}
	check := func(frames int64) {
		t.Helper()
		if k := l.Info().Totals; !counted(frames) {
			t.Errorf("totals: %d frames in, %d out, %d AA, %d bytes in; want %d frames of %d bytes, each acknowledged",
				k.FramesIn, k.FramesOut, k.AcksSent[AckAA], k.BytesIn, frames, len(adt))
		}
	}
	exchange(2)
	exchange(3)
	check(5)

	p := dialRaw(t, l, mllpFraming) // an open connection adds to them
	p.send(adt)
	p.ackOf()
	// An answer is counted once written: the peer may read it first.
	waitUntil(t, func() bool { return counted(6) })
	p.nc.Close()
	closed.next(t)
	// OnClose runs just before the listener forgets the connection.
	waitUntil(t, func() bool { return l.Info().Open == 0 })
	check(6)
	if info := l.Info(); info.Accepted != 3 {
		t.Errorf("%d accepted, want 3", info.Accepted)
	}
}
