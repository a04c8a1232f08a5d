package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-dev/switchboard/hl7"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// memSink keeps appended messages in memory; fail makes Append fail. The
// real journal is exercised by the service tests; here the sink is the
// seam the fault is injected at.
type memSink struct {
	mu   sync.Mutex
	msgs []Message
	fail error
}

func (s *memSink) Append(_ context.Context, m *Message) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	c := *m
	c.Payload = bytes.Clone(m.Payload)
	s.msgs = append(s.msgs, c)
	return uint64(len(s.msgs)), nil
}

func (s *memSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

func (s *memSink) failWith(err error) {
	s.mu.Lock()
	s.fail = err
	s.mu.Unlock()
}

func startListener(t *testing.T, cfg ListenerConfig) *Listener {
	t.Helper()
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	l, err := Listen(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

type rawPeer struct {
	t   *testing.T
	nc  net.Conn
	f   Framing
	dec *Decoder
}

func dialRaw(t *testing.T, l *Listener, f Framing) *rawPeer {
	t.Helper()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	f = f.WithDefaults()
	return &rawPeer{t: t, nc: nc, f: f, dec: NewDecoder(nc, f)}
}

func (p *rawPeer) send(payload []byte) {
	p.t.Helper()
	if _, err := p.nc.Write(p.f.AppendFrame(nil, payload)); err != nil {
		p.t.Fatal(err)
	}
}

// next returns the next frame, or an error (io.EOF etc.) within 5 s.
func (p *rawPeer) next() ([]byte, error) {
	_ = p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := p.dec.Next()
	return bytes.Clone(f), err
}

func (p *rawPeer) mustNext() []byte {
	p.t.Helper()
	f, err := p.next()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	return f
}

// closedByServer asserts the server closes the connection without sending
// anything more.
func (p *rawPeer) closedByServer() {
	p.t.Helper()
	f, err := p.next()
	var ne net.Error
	switch {
	case err == nil:
		p.t.Fatalf("got frame %q, want the connection closed", f)
	case errors.As(err, &ne) && ne.Timeout():
		p.t.Fatal("connection still open after 5 s")
	}
}

var (
	mllpFraming = Framing{Kind: FramingMLLP}
	adt         = []byte("MSH|^~\\&|ADT1|HOSP|LAB|HOSP|20261125101500||ADT^A01^ADT_A01|MSG00001|P|2.5\rPID|1||123\r")
	enhanced    = []byte("MSH|^~\\&|ADT1|HOSP|LAB|HOSP|20261125101500||ADT^A01^ADT_A01|ENH-1|P|2.5|||AL|NE\rPID|1||123\r")
	enhancedNE  = []byte("MSH|^~\\&|ADT1|HOSP|LAB|HOSP|20261125101500||ADT^A01^ADT_A01|ENH-2|P|2.5|||NE|NE\rPID|1||123\r")
	enhancedER  = []byte("MSH|^~\\&|ADT1|HOSP|LAB|HOSP|20261125101500||ADT^A01^ADT_A01|ENH-3|P|2.5|||ER|NE\rPID|1||123\r")
)

// TestNeverPositiveWhenNotStored: for every policy, a frame the sink fails
// to store never gets a positive acknowledgement.
func TestNeverPositiveWhenNotStored(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ack     AckPolicy
		framing Framing
		msg     []byte
		want    []byte // nil: the connection is closed with no answer
		wantHL7 hl7.AckCode
	}{
		{name: "hl7 original", ack: HL7Ack(), msg: adt, wantHL7: hl7.AR},
		{name: "hl7 enhanced", ack: HL7Ack(), msg: enhanced, wantHL7: hl7.CR},
		{name: "hl7 enhanced ER", ack: HL7Ack(), msg: enhancedER, wantHL7: hl7.CR},
		{name: "single byte", ack: SingleByteAck(), framing: Framing{Kind: FramingLengthPrefix}, msg: adt, want: []byte{0x15}},
		{name: "mllp commit", ack: MLLPCommitAck(), msg: adt, want: []byte{0x15}},
		{name: "fixed with nak", ack: FixedAck([]byte("OK"), []byte("NO")), framing: Framing{Kind: FramingDelimiter, Delimiter: []byte("\n")}, msg: []byte("hello"), want: []byte("NO")},
		{name: "fixed without nak", ack: FixedAck([]byte("OK"), nil), msg: []byte("hello")},
		{name: "none", ack: NoAck(), msg: []byte("hello")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.framing.Kind == 0 {
				tc.framing = mllpFraming
			}
			sink := &memSink{}
			l := startListener(t, ListenerConfig{Conn: ConnConfig{Framing: tc.framing, Ack: tc.ack}, Sink: sink})
			p := dialRaw(t, l, tc.framing)
			// First a stored frame gets a positive answer (or none)...
			p.send(tc.msg)
			switch {
			case tc.ack.Name() == "none", bytes.Equal(tc.msg, enhancedER): // no answer to a stored frame
				waitUntil(t, func() bool { return sink.count() == 1 })
			default:
				if got := p.mustNext(); tc.wantHL7 == "" && bytes.Equal(got, tc.want) {
					t.Fatalf("positive answer %q equals the negative one", got)
				}
			}
			// ...then the sink fails.
			sink.failWith(errors.New("disk on fire"))
			p.send(tc.msg)
			switch {
			case tc.wantHL7 != "":
				a, err := hl7.ParseAck(p.mustNext())
				if err != nil || a.Code != tc.wantHL7 {
					t.Fatalf("answer %+v, %v; want %s", a, err, tc.wantHL7)
				}
			case tc.want != nil:
				if got := p.mustNext(); !bytes.Equal(got, tc.want) {
					t.Fatalf("answer %q, want %q", got, tc.want)
				}
			default:
				p.closedByServer()
			}
			if sink.count() != 1 {
				t.Errorf("sink holds %d, want 1", sink.count())
			}
		})
	}
}

// TestEnhancedAcceptAckTypes: MSH-15 NE gets no accept ACK; ER only on
// error; AL always.
func TestEnhancedAcceptAckTypes(t *testing.T) {
	sink := &memSink{}
	l := startListener(t, ListenerConfig{Sink: sink})
	p := dialRaw(t, l, mllpFraming)
	p.send(enhancedNE) // NE: no answer
	p.send(enhancedER) // ER and stored: no answer
	p.send(enhanced)   // AL: CA
	a, err := hl7.ParseAck(p.mustNext())
	if err != nil || a.Code != hl7.CA || a.ControlID != "ENH-1" {
		t.Fatalf("first answer %+v, %v; want CA for ENH-1 (NE and ER got none)", a, err)
	}
	if sink.count() != 3 {
		t.Errorf("sink holds %d, want 3", sink.count())
	}
}

// TestOtherFramings: each framing carries messages and byte ACKs both ways.
func TestOtherFramings(t *testing.T) {
	for _, f := range []Framing{
		{Kind: FramingLengthPrefix},
		{Kind: FramingDelimiter, Delimiter: []byte("\r\n")},
		{Kind: FramingStartEnd, Start: []byte{0x02}, End: []byte{0x03}},
		{Kind: FramingMLLP, Strict: true},
	} {
		t.Run(f.String(), func(t *testing.T) {
			sink := &memSink{}
			l := startListener(t, ListenerConfig{Conn: ConnConfig{Framing: f, Ack: SingleByteAck()}, Sink: sink})
			p := dialRaw(t, l, f)
			for i := range 3 {
				p.send(fmt.Appendf(nil, "message %d", i))
				if got := p.mustNext(); !bytes.Equal(got, []byte{0x06}) {
					t.Fatalf("answer %q, want 0x06", got)
				}
			}
			if sink.count() != 3 || string(sink.msgs[2].Payload) != "message 2" {
				t.Errorf("sink = %d messages", sink.count())
			}
		})
	}
}

// TestStrictMLLPViolationCloses: junk before 0x0B under strict framing is
// a violation: the connection closes and it is counted.
func TestStrictMLLPViolationCloses(t *testing.T) {
	sink := &memSink{}
	var closed = make(chan ConnInfo, 1)
	l := startListener(t, ListenerConfig{Conn: ConnConfig{Framing: Framing{Kind: FramingMLLP, Strict: true}}, Sink: sink,
		OnClose: func(_ *Conn, info ConnInfo) { closed <- info }})
	p := dialRaw(t, l, mllpFraming)
	if _, err := p.nc.Write([]byte("junk")); err != nil {
		t.Fatal(err)
	}
	p.closedByServer()
	if info := <-closed; info.Counters.FramingErrors != 1 {
		t.Errorf("framing errors = %d, want 1", info.Counters.FramingErrors)
	}
}

// TestTimeouts: an idle connection is closed after the idle timeout; a
// frame that never completes is closed after the frame timeout even though
// bytes keep trickling in.
func TestTimeouts(t *testing.T) {
	sink := &memSink{}
	reasons := make(chan CloseReason, 2)
	l := startListener(t, ListenerConfig{
		Conn:    ConnConfig{IdleTimeout: 300 * time.Millisecond, FrameTimeout: 400 * time.Millisecond},
		Sink:    sink,
		OnClose: func(_ *Conn, info ConnInfo) { reasons <- info.CloseReason },
	})
	idle := dialRaw(t, l, mllpFraming)
	idle.closedByServer()
	if r := <-reasons; r != CloseIdleTimeout {
		t.Errorf("idle connection closed for %q", r)
	}

	slow := dialRaw(t, l, mllpFraming)
	frame := mllpFraming.WithDefaults().AppendFrame(nil, adt)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // a byte every 50 ms: never idle, never done
		for _, b := range frame[:len(frame)-2] {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := slow.nc.Write([]byte{b}); err != nil {
				return
			}
		}
	})
	slow.closedByServer()
	close(stop)
	wg.Wait()
	if r := <-reasons; r != CloseFrameTimeout {
		t.Errorf("slow sender closed for %q, want frame timeout", r)
	}
	if sink.count() != 0 {
		t.Errorf("partial frame reached the sink")
	}
}

// TestDrainCompletesFrame: Stop lets a frame in progress finish and be
// acknowledged before closing; idle connections close at once.
func TestDrainCompletesFrame(t *testing.T) {
	sink := &memSink{}
	l := startListener(t, ListenerConfig{Sink: sink})
	p := dialRaw(t, l, mllpFraming)
	frame := mllpFraming.WithDefaults().AppendFrame(nil, adt)
	if _, err := p.nc.Write(frame[:10]); err != nil {
		t.Fatal(err)
	}
	// Wait until the server has read the partial frame.
	waitUntil(t, func() bool {
		var c *Conn
		l.mu.Lock()
		for k := range l.conns {
			c = k
		}
		l.mu.Unlock()
		return c != nil && c.Info().LastActivity.After(c.Info().OpenTime)
	})
	stopped := make(chan struct{})
	go func() { l.Stop(time.Now().Add(5 * time.Second)); close(stopped) }()
	waitUntil(t, func() bool { // the connection is draining; the peer is still mid-frame
		l.mu.Lock()
		defer l.mu.Unlock()
		for c := range l.conns {
			return c.draining.Load()
		}
		return false
	})
	if _, err := p.nc.Write(frame[10:]); err != nil {
		t.Fatal(err)
	}
	a, err := hl7.ParseAck(p.mustNext())
	if err != nil || a.Code != hl7.AA {
		t.Fatalf("answer during drain = %+v, %v", a, err)
	}
	p.closedByServer()
	<-stopped
	if sink.count() != 1 {
		t.Errorf("sink holds %d, want 1", sink.count())
	}
}

// TestUnsolicitedAck: an HL7 ACK with no Send waiting is journaled but never
// answered; batches get a batch acknowledgement.
func TestUnsolicitedAckAndBatch(t *testing.T) {
	sink := &memSink{}
	l := startListener(t, ListenerConfig{Sink: sink})
	p := dialRaw(t, l, mllpFraming)
	h, _ := hl7.ParseHeader(adt)
	p.send(hl7.AppendAck(nil, h, hl7.AckRequest{Code: hl7.AA, ControlID: "X1", Time: time.Now()}))
	batch := []byte("FHS|^~\\&|A|F|B|G|20261125||||FILE-1\rBHS|^~\\&|A|F|B|G|20261125||||BATCH-1\r" +
		"MSH|^~\\&|A|F|B|G|20261125||ADT^A01^ADT_A01|B-1|P|2.5\rPID|1\rMSH|^~\\&|A|F|B|G|20261125||ADT^A01^ADT_A01|B-2|P|2.5\rPID|2\rBTS|2\rFTS|1\r")
	p.send(batch)
	got := p.mustNext() // the first answer is the batch's: the ACK got none
	if !bytes.HasPrefix(got, []byte("FHS|")) || bytes.Count(got, []byte("\rMSA|AA|B-")) != 2 {
		t.Errorf("batch answer = %q", got)
	}
	if sink.count() != 2 {
		t.Errorf("sink holds %d, want 2", sink.count())
	}
}

// TestSendPolicies: what Send reports under byte, fixed and none policies.
func TestSendPolicies(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ack   AckPolicy
		reply []byte
		want  Outcome
	}{
		{"byte ack", SingleByteAck(), []byte{0x06}, OutcomeAccepted},
		{"byte nak", SingleByteAck(), []byte{0x15}, OutcomeRejected},
		{"commit ack", MLLPCommitAck(), []byte{0x06}, OutcomeAccepted},
		{"fixed ack", FixedAck([]byte("OK"), []byte("NO")), []byte("OK"), OutcomeAccepted},
		{"fixed nak", FixedAck([]byte("OK"), []byte("NO")), []byte("NO"), OutcomeRejected},
		{"none", NoAck(), nil, OutcomeWritten},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			peerDone := make(chan []byte, 1)
			go func() {
				nc, err := ln.Accept()
				if err != nil {
					peerDone <- nil
					return
				}
				defer nc.Close()
				d := NewDecoder(nc, mllpFraming.WithDefaults())
				msg, err := d.Next()
				if err == nil && tc.reply != nil {
					_, _ = nc.Write(mllpFraming.WithDefaults().AppendFrame(nil, tc.reply))
				}
				peerDone <- bytes.Clone(msg)
				_, _ = io.Copy(io.Discard, nc)
			}()
			c, err := Dial(context.Background(), DialConfig{ID: "o", Address: ln.Addr().String(), Conn: ConnConfig{Ack: tc.ack}, Sink: &memSink{}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			res, err := c.Send(context.Background(), []byte("payload"), time.Second)
			if err != nil || res.Outcome != tc.want {
				t.Fatalf("Send = %+v, %v; want %v", res, err, tc.want)
			}
			if got := <-peerDone; string(got) != "payload" {
				t.Errorf("peer got %q", got)
			}
		})
	}
}

// TestCloseWhileBusy: closing a connection with a Send waiting and a
// listener with connections returns promptly, fails the Send as in doubt,
// and leaves no goroutine behind (goleak checks at exit).
func TestCloseWhileBusy(t *testing.T) {
	sink := &memSink{}
	l := startListener(t, ListenerConfig{Conn: ConnConfig{Ack: NoAck()}, Sink: sink})
	c, err := Dial(context.Background(), DialConfig{ID: "o", Address: l.Addr().String(), Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Send(context.Background(), adt, time.Minute)
		errc <- err
	}()
	waitUntil(t, func() bool { return sink.count() == 1 }) // stored; never answered
	c.Close()
	var se *SendError
	if err := <-errc; !errors.As(err, &se) || !se.Written || !errors.Is(err, ErrClosed) {
		t.Errorf("Send during Close = %v, want in-doubt ErrClosed", err)
	}
	if _, err := c.Send(context.Background(), adt, time.Second); !errors.As(err, &se) || se.Written {
		t.Errorf("Send after Close = %v, want not-sent error", err)
	}
	l.Close()
}

// waitUntil polls cond for up to 5 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
	}
}

func TestCheckPayload(t *testing.T) {
	for _, tc := range []struct {
		f  Framing
		p  string
		ok bool
	}{
		{Framing{Kind: FramingMLLP}, "abc", true},
		{Framing{Kind: FramingMLLP}, "a\x1cb", false},
		{Framing{Kind: FramingMLLP}, "a\x0bb", false},
		{Framing{Kind: FramingDelimiter, Delimiter: []byte("\r\n")}, "a\rb", true},
		{Framing{Kind: FramingDelimiter, Delimiter: []byte("\r\n")}, "a\r\nb", false},
		{Framing{Kind: FramingDelimiter, Delimiter: []byte("abab")}, "xxab", false}, // "xxab"+"abab" reads as "xx" first
		{Framing{Kind: FramingStartEnd, Start: []byte{2}, End: []byte{3}}, "a\x02", false},
		{Framing{Kind: FramingLengthPrefix}, "\x0b\x1c anything", true},
	} {
		if err := tc.f.CheckPayload([]byte(tc.p)); (err == nil) != tc.ok {
			t.Errorf("%v.CheckPayload(%q) = %v, want ok=%v", tc.f, tc.p, err, tc.ok)
		}
	}
}

// TestKeepalive: accepted and dialed connections carry TCP keepalive with
// the configured period; a negative period turns it off.
func TestKeepalive(t *testing.T) {
	for _, tc := range []struct {
		period time.Duration
		on     bool
	}{{45 * time.Second, true}, {-1, false}} {
		opened := make(chan *Conn, 1)
		l := startListener(t, ListenerConfig{Conn: ConnConfig{Keepalive: tc.period}, Sink: &memSink{}, OnOpen: func(c *Conn) { opened <- c }})
		out, err := Dial(context.Background(), DialConfig{ID: "o", Address: l.Addr().String(), Conn: ConnConfig{Keepalive: tc.period}, Sink: &memSink{}})
		if err != nil {
			t.Fatal(err)
		}
		in := <-opened
		for _, c := range []*Conn{in, out} {
			on, idle := keepaliveOf(t, c.nc)
			if on != tc.on || (tc.on && idle != int(tc.period.Seconds())) {
				t.Errorf("%s connection: keepalive %v idle %ds, want %v %v", c.dir, on, idle, tc.on, tc.period)
			}
		}
		out.Close()
		l.Close()
	}
}

// TestPeerResetMidFrame: a frame cut off by the peer closing (or resetting)
// is never stored or acknowledged, and is counted.
func TestPeerResetMidFrame(t *testing.T) {
	for _, reset := range []bool{false, true} {
		sink := &memSink{}
		closed := make(chan ConnInfo, 1)
		l := startListener(t, ListenerConfig{Sink: sink, OnClose: func(_ *Conn, info ConnInfo) { closed <- info }})
		p := dialRaw(t, l, mllpFraming)
		frame := mllpFraming.WithDefaults().AppendFrame(nil, adt)
		if _, err := p.nc.Write(frame[:len(frame)/2]); err != nil {
			t.Fatal(err)
		}
		if reset {
			_ = p.nc.(*net.TCPConn).SetLinger(0)
		}
		p.nc.Close()
		info := <-closed
		if sink.count() != 0 || info.Counters.AcksSent[AckAA] != 0 {
			t.Errorf("reset=%v: %d stored, %d AA sent; want none", reset, sink.count(), info.Counters.AcksSent[AckAA])
		}
		if !reset && info.Counters.FramingErrors != 1 {
			t.Errorf("close mid-frame: framing errors = %d, want 1", info.Counters.FramingErrors)
		}
		l.Close()
	}
}
