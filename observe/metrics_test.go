package observe

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-dev/switchboard/transport"
)

type nopSink struct{}

func (nopSink) Append(context.Context, *transport.Message) (uint64, error) { return 1, nil }

// connPair returns the two ends of a real loopback connection: the
// inbound one, accepted by listener "adt", and the outbound one, dialed as
// connection "lab". Neither reports to an Observer; the tests call the
// Metrics' own.
func connPair(t testing.TB) (in, out *transport.Conn) {
	t.Helper()
	opened := make(chan *transport.Conn, 1)
	l, err := transport.Listen(context.Background(), transport.ListenerConfig{ID: "adt", Address: "127.0.0.1:0", Sink: nopSink{},
		OnOpen: func(c *transport.Conn) { opened <- c }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	out, err = transport.Dial(context.Background(), transport.DialConfig{ID: "lab", Address: l.Addr().String(), Sink: nopSink{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = out.Close() })
	return <-opened, out
}

func newTestMetrics(t testing.TB) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// TestObserverPerMessage: what the Observer does per message allocates
// nothing. Frames and acknowledgements cost it nothing at all (their
// counts are read from the connection at scrape time), and an
// acknowledged Send is one observation on a histogram child cached when
// the connection opened.
func TestObserverPerMessage(t *testing.T) {
	m, _ := newTestMetrics(t)
	obs := m.Observer()
	if obs.FrameReceived != nil || obs.AckSent != nil {
		t.Error("the metrics Observer has per-frame callbacks; the counts come from the connections")
	}
	in, out := connPair(t)
	obs.ConnOpened(in)
	obs.ConnOpened(out)
	res := transport.SendResult{Outcome: transport.OutcomeAccepted, RoundTrip: time.Millisecond}
	if n := testing.AllocsPerRun(1000, func() {
		obs.SendDone(out, res, nil)
		obs.SendDone(in, res, nil)
	}); n != 0 {
		t.Errorf("SendDone allocates %v times per call; want 0", n)
	}
}

// BenchmarkObserverMessage is the Observer's work for one message each
// way: a frame received and acknowledged (inbound), and a Send
// acknowledged (outbound). Run with -benchmem: 0 allocs/op.
func BenchmarkObserverMessage(b *testing.B) {
	m, _ := newTestMetrics(b)
	obs := m.Observer()
	in, out := connPair(b)
	obs.ConnOpened(in)
	obs.ConnOpened(out)
	frame := &transport.Frame{Payload: []byte("MSH|^~\\&|A|B|C|D|20261125||ADT^A01|1|P|2.5\r"), Seq: 1}
	res := transport.SendResult{Outcome: transport.OutcomeAccepted, RoundTrip: time.Millisecond}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if f := obs.FrameReceived; f != nil {
				f(in, frame, transport.FrameMessage)
			}
			if f := obs.AckSent; f != nil {
				f(in, transport.AckAA)
			}
			obs.SendDone(out, res, nil)
		}
	})
}

// BenchmarkScrape is one /metrics collection with 64 open connections.
func BenchmarkScrape(b *testing.B) {
	m, reg := newTestMetrics(b)
	obs := m.Observer()
	for range 32 {
		in, out := connPair(b)
		obs.ConnOpened(in)
		obs.ConnOpened(out)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

func TestFramingKind(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&transport.FrameError{Err: transport.ErrFrameTooLarge}, "frame_too_large"},
		{&transport.FrameError{Err: transport.ErrNoMemory}, "memory_limit"},
		{&transport.FrameError{Err: transport.ErrTooMuchJunk}, "junk_limit"},
		{&transport.FrameError{Err: transport.ErrJunk}, "junk"},
		{&transport.FrameError{Err: transport.ErrMissingTrailer}, "missing_trailer"},
		{&transport.FrameError{Err: transport.ErrNestedStart}, "nested_start"},
		{&transport.FrameError{Err: errors.New("bad length")}, "invalid_frame"},
		{errors.New("frame not completed within 30s"), ""},
	} {
		if got := framingKind(tc.err); got != tc.want {
			t.Errorf("framingKind(%v) = %q; want %q", tc.err, got, tc.want)
		}
	}
	if got := closeReasonLabel(transport.ClosePeerClosedMidFrame); got != "peer_closed_mid_frame" {
		t.Errorf("close reason label %q", got)
	}
	if got := rejectReasonLabel(transport.RejectPerSource); got != "max_connections_per_source" {
		t.Errorf("reject reason label %q", got)
	}
	for _, r := range transport.CloseReasons() {
		if l := closeReasonLabel(r); l == "unknown" || l == "" {
			t.Errorf("close reason %v has no label", r)
		}
	}
}

// TestConnectionsCountedOnce: a connection's counters are in its group
// while it is open and after it closed, never twice; an in-doubt Send
// reported after the close is counted on the group.
func TestConnectionsCountedOnce(t *testing.T) {
	m, reg := newTestMetrics(t)
	obs := m.Observer()
	in, out := connPair(t)
	obs.ConnOpened(in)
	obs.ConnOpened(out)
	if _, err := out.Send(t.Context(), []byte("MSH|^~\\&|A|B|C|D|20261125||ADT^A01|X1|P|2.5\r"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	frames := func() string {
		return gathered(t, reg, "switchboard_frames_received_total", "inbound", "adt", "")
	}
	before := frames()
	if before != "1" {
		t.Fatalf("frames received while open = %s; want 1", before)
	}
	_ = in.Close()
	obs.ConnClosed(in, in.Info())
	if got := frames(); got != before {
		t.Errorf("frames received after close = %s; want %s", got, before)
	}
	obs.SendDone(in, transport.SendResult{}, &transport.SendError{Written: true, Cause: transport.CauseConnectionLost})
	if got := gathered(t, reg, "switchboard_sends_in_doubt_total", "adt", ""); got != "1" {
		t.Errorf("in doubt after close = %s; want 1", got)
	}
	if got := gathered(t, reg, "switchboard_connections_open", "inbound", "adt", ""); got != "0" {
		t.Errorf("open after close = %s; want 0", got)
	}
}

// gathered returns, as text, the value of the series of family name whose
// label values are the given ones (in any order); "absent" when none is.
func gathered(t *testing.T, reg *prometheus.Registry, name string, values ...string) string {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, mt := range f.GetMetric() {
			got := map[string]bool{}
			for _, lp := range mt.GetLabel() {
				got[lp.GetValue()] = true
			}
			if len(mt.GetLabel()) != len(values) {
				continue
			}
			for _, v := range values {
				if !got[v] {
					continue next
				}
			}
			switch {
			case mt.GetCounter() != nil:
				return fmt.Sprint(mt.GetCounter().GetValue())
			case mt.GetGauge() != nil:
				return fmt.Sprint(mt.GetGauge().GetValue())
			}
		}
	}
	return "absent"
}

// TestAdminMux: pprof only when enabled, no /metrics without a gatherer,
// and /readyz with no checks configured is ready.
func TestAdminMux(t *testing.T) {
	_, reg := newTestMetrics(t)
	for _, tc := range []struct {
		cfg           AdminConfig
		pprof, metric int
	}{
		{AdminConfig{Gatherer: reg}, http.StatusNotFound, http.StatusOK},
		{AdminConfig{Gatherer: reg, Pprof: true}, http.StatusOK, http.StatusOK},
		{AdminConfig{}, http.StatusNotFound, http.StatusNotFound},
	} {
		srv := httptest.NewServer(AdminMux(tc.cfg))
		for path, want := range map[string]int{"/debug/pprof/": tc.pprof, "/metrics": tc.metric, "/healthz": http.StatusOK, "/readyz": http.StatusOK} {
			resp, err := srv.Client().Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("pprof %v, gatherer %v: GET %s = %d; want %d", tc.cfg.Pprof, tc.cfg.Gatherer != nil, path, resp.StatusCode, want)
			}
		}
		srv.Client().CloseIdleConnections()
		srv.Close()
	}
}
