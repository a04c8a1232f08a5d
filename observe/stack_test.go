package observe_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/observe"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/transport"
)

// stack is a real Switchboard wired the way `serve` wires it: a journal in
// a temp dir with the commit hook, the Service with the metrics' Observer,
// the gRPC server with their interceptors on loopback, and the admin mux on
// a real HTTP server.
type stack struct {
	t      *testing.T
	j      *pebblejournal.Journal
	svc    *service.Service
	gs     *grpc.Server
	cc     *grpc.ClientConn
	client switchboardv1.SwitchboardServiceClient
	life   *observe.Lifecycle
	admin  *httptest.Server
	done   bool
}

func startStack(t *testing.T, dir string, jopts pebblejournal.Options) *stack {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := observe.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	jopts.OnCommit = m.JournalCommitted
	j, err := pebblejournal.Open(dir, jopts)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Config{Journal: j, State: j.StateStore(), Outbox: j.Outbox(), Observer: observe.Join(m.Observer())})
	if err != nil {
		t.Fatal(err)
	}
	unary, stream := m.GRPCInterceptors()
	gs, _, err := service.NewGRPCServer(svc, service.ServerOptions{
		OuterUnaryInterceptors: []grpc.UnaryServerInterceptor{unary}, OuterStreamInterceptors: []grpc.StreamServerInterceptor{stream}})
	if err != nil {
		t.Fatal(err)
	}
	m.InitializeGRPC(gs)
	m.SetSources(observe.Sources{Journal: j, Resources: svc.Registry(), Outbox: svc.Outbox()})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, j: j, svc: svc, gs: gs, cc: cc, client: switchboardv1.NewSwitchboardServiceClient(cc), life: &observe.Lifecycle{}}
	s.admin = httptest.NewServer(observe.AdminMux(observe.AdminConfig{Gatherer: reg, Journal: j, Resources: svc.Registry(), Lifecycle: s.life}))
	t.Cleanup(s.stop)
	return s
}

func (s *stack) stop() {
	if s.done {
		return
	}
	s.done = true
	s.admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.svc.Shutdown(ctx)
	s.gs.Stop()
	_ = s.cc.Close()
	_ = s.j.Close()
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// get returns the status and body of GET path on the admin address.
func (s *stack) get(path string) (int, string) {
	s.t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(s.admin.URL + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// scrape reads /metrics over HTTP.
func (s *stack) scrape() families {
	s.t.Helper()
	code, body := s.get("/metrics")
	if code != http.StatusOK {
		s.t.Fatalf("/metrics = %d %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		s.t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

type families map[string]*dto.MetricFamily

// value is the value of the series of family name whose labels include
// every pair in labels ("k=v,k=v"); a histogram's sample count. ok is false
// when there is no such series.
func (f families) value(name, labels string) (v float64, ok bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
	want := map[string]string{}
	for _, kv := range strings.Split(labels, ",") {
		if k, v, found := strings.Cut(kv, "="); found {
			want[k] = v
		}
	}
	for _, m := range fam.GetMetric() {
		n := 0
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
				n++
			}
		}
		if n != len(want) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// expect is one series and the value it must reach.
type expect struct {
	name, labels string
	want         float64
	atLeast      bool // want is a lower bound
}

func (e expect) String() string { return fmt.Sprintf("%s{%s}", e.name, e.labels) }

// waitMetrics scrapes until every expectation holds (the figures follow
// the acknowledgements by a moment) and returns the last scrape.
func (s *stack) waitMetrics(ctx context.Context, what string, es ...expect) families {
	s.t.Helper()
	var fams families
	var missing []string
	for {
		fams, missing = s.scrape(), nil
		for _, e := range es {
			v, ok := fams.value(e.name, e.labels)
			if !ok || (!e.atLeast && v != e.want) || (e.atLeast && v < e.want) {
				missing = append(missing, fmt.Sprintf("%s = %v (present %v), want %v", e, v, ok, e.want))
			}
		}
		if len(missing) == 0 {
			return fams
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("%s: metrics never showed:\n%s", what, strings.Join(missing, "\n"))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

var mllp = transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()

func hl7Message(controlID string) []byte {
	return []byte("MSH|^~\\&|ADT1|HOSP|LAB|HOSP|20261125101500||ADT^A01^ADT_A01|" + controlID + "|P|2.5\rPID|1||PATID1234^^^HOSP^MR||EVERYMAN^ADAM\r")
}

// peer is an MLLP client.
type peer struct {
	t   *testing.T
	nc  net.Conn
	dec *transport.Decoder
}

func dialPeer(t *testing.T, addr string) *peer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &peer{t: t, nc: nc, dec: transport.NewDecoder(nc, mllp)}
}

// send writes a message and checks its AA.
func (p *peer) send(controlID string) {
	p.t.Helper()
	if _, err := p.nc.Write(mllp.AppendFrame(nil, hl7Message(controlID))); err != nil {
		p.t.Fatal(err)
	}
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack, err := p.dec.Next()
	if err != nil {
		p.t.Fatalf("no ACK for %s: %v", controlID, err)
	}
	if a, err := hl7.ParseAck(ack); err != nil || a.Code != hl7.AA || a.ControlID != controlID {
		p.t.Fatalf("ACK for %s = %+v, %v", controlID, a, err)
	}
}

func (p *peer) port() string {
	_, port, _ := net.SplitHostPort(p.nc.LocalAddr().String())
	return port
}

// labelValues returns every value of every label of the switchboard_
// families (name: label -> values), and every label value of every family.
func labelValues(fams families) (byLabel map[string]map[string]bool, all []string) {
	byLabel = map[string]map[string]bool{}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				all = append(all, lp.GetValue())
				if !strings.HasPrefix(name, "switchboard_") {
					continue
				}
				if byLabel[lp.GetName()] == nil {
					byLabel[lp.GetName()] = map[string]bool{}
				}
				byLabel[lp.GetName()][lp.GetValue()] = true
			}
		}
	}
	return byLabel, all
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
