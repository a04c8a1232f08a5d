package transport

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// hl7Msg returns an HL7 v2.5 message of type typ (MSH-9) with control id id
// (MSH-10), followed by segs, each ended with CR.
func hl7Msg(typ, id string, segs ...string) []byte {
	b := []byte("MSH|^~\\&|LAB|HOSP|ADT1|HOSP|20261125101500||" + typ + "|" + id + "|P|2.5\r")
	for _, s := range segs {
		b = append(b, s...)
		b = append(b, '\r')
	}
	return b
}

// sizedMsg returns an ADT message with control id id that is exactly size
// bytes long (an OBX segment pads it).
func sizedMsg(id string, size int) []byte {
	m := hl7Msg("ADT^A01^ADT_A01", id, "PID|1||123")
	pad := size - len(m) - len("OBX|1|ED|||\r")
	if pad < 0 {
		panic(fmt.Sprintf("sizedMsg: %d bytes is too small", size))
	}
	m = append(m, "OBX|1|ED|||"...)
	m = append(m, bytes.Repeat([]byte("x"), pad)...)
	return append(m, '\r')
}

// ackOf reads the next frame from p as an HL7 acknowledgement.
func (p *rawPeer) ackOf() hl7.Ack {
	p.t.Helper()
	a, err := hl7.ParseAck(p.mustNext())
	if err != nil {
		p.t.Fatalf("answer is not an HL7 ACK: %v", err)
	}
	return a
}

// closeLog collects the final snapshots of a listener's (or a dialed
// connection's) connections, in the order they close.
type closeLog chan ConnInfo

func newCloseLog() closeLog { return make(closeLog, 256) }

func (cl closeLog) onClose(_ *Conn, info ConnInfo) { cl <- info }

// next returns the next connection to close, waiting at most 10 s.
func (cl closeLog) next(t *testing.T) ConnInfo {
	t.Helper()
	select {
	case info := <-cl:
		return info
	case <-time.After(10 * time.Second):
		t.Fatal("no connection closed within 10 s")
		return ConnInfo{}
	}
}

// localAddr is the address a peer's connection has on the server side.
func (p *rawPeer) localAddr() string { return p.nc.LocalAddr().String() }

// dialFrom dials l from the loopback address src (port chosen by the
// system), skipping the test where src cannot be bound.
func dialFrom(t *testing.T, l *Listener, src string) *rawPeer {
	t.Helper()
	probe, err := net.Listen("tcp", net.JoinHostPort(src, "0"))
	if err != nil {
		t.Skipf("%s cannot be bound here: %v", src, err)
	}
	probe.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { nc.Close() })
	f := mllpFraming.WithDefaults()
	return &rawPeer{t: t, nc: nc, f: f, dec: NewDecoder(nc, f)}
}

// logCounter is a slog.Handler that counts records at Info and above by
// message and adds up their "suppressed" attributes. Loggers derived with
// With share its counts.
type logCounter struct{ s *logCounts }

type logCounts struct {
	mu         sync.Mutex
	lines      map[string]int
	suppressed map[string]int64
	warnings   int // records at Warn and above
}

func newLogCounter() logCounter {
	return logCounter{&logCounts{lines: map[string]int{}, suppressed: map[string]int64{}}}
}

func (h logCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h logCounter) Handle(_ context.Context, r slog.Record) error {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.s.lines[r.Message]++
	if r.Level >= slog.LevelWarn {
		h.s.warnings++
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "suppressed" {
			h.s.suppressed[r.Message] += a.Value.Int64()
		}
		return true
	})
	return nil
}

func (h logCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h logCounter) WithGroup(string) slog.Handler      { return h }

// count returns how many lines with message msg were logged, and the sum
// of their suppressed attributes.
func (h logCounter) count(msg string) (lines int, suppressed int64) {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return h.s.lines[msg], h.s.suppressed[msg]
}

func (h logCounter) warnings() int {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return h.s.warnings
}

// heldBack returns how many lines s has suppressed since it last let one
// through: they are reported by the next line it lets through.
func (s *sampler) heldBack() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.suppressed
}
