package observe_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-dev/switchboard/observe"
	"github.com/switchboard-dev/switchboard/transport"
)

// collector keeps what an OTLP exporter sent it.
type collector struct {
	coltrace.UnimplementedTraceServiceServer
	mu   sync.Mutex
	reqs []*coltrace.ExportTraceServiceRequest
}

func (c *collector) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, req)
	return &coltrace.ExportTraceServiceResponse{}, nil
}

// spans returns the names of the spans received, with the service name of
// their resource.
func (c *collector) spans() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, r := range c.reqs {
		for _, rs := range r.GetResourceSpans() {
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out = append(out, service+"/"+s.GetName())
				}
			}
		}
	}
	return out
}

// TestOTLPExport: configured by the environment alone, spans reach an OTLP
// collector over gRPC and over HTTP (a fake one on loopback) by Shutdown.
func TestOTLPExport(t *testing.T) {
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run(protocol, func(t *testing.T) {
			col := &collector{}
			var endpoint string
			if protocol == "grpc" {
				lis, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				gs := grpc.NewServer()
				coltrace.RegisterTraceServiceServer(gs, col)
				go func() { _ = gs.Serve(lis) }()
				defer gs.Stop()
				endpoint = "http://" + lis.Addr().String()
			} else {
				hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					body, _ := io.ReadAll(r.Body)
					req := &coltrace.ExportTraceServiceRequest{}
					if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, req) != nil {
						http.Error(w, "bad request", http.StatusBadRequest)
						return
					}
					_, _ = col.Export(r.Context(), req)
					w.Header().Set("Content-Type", "application/x-protobuf")
					b, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
					_, _ = w.Write(b)
				}))
				defer hs.Close()
				endpoint = hs.URL
			}
			clearTraceEnv(t)
			t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
			t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
			t.Setenv("OTEL_SERVICE_NAME", "switchboard-test")
			tr, err := observe.NewTracing(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			l := listen(t, tr, &flakySink{}, transport.HL7Ack())
			p := traceDialPeer(t, l.Addr().String())
			if ack := p.roundTrip(hl7TypedMessage("ADT^A01^ADT_A01", "OTLP0001")); !strings.Contains(ack, "MSA|AA|") {
				t.Fatalf("ACK %q", ack)
			}
			l.Close() // waits for the connection: its span has ended
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := tr.Shutdown(ctx); err != nil { // flushes
				t.Fatal(err)
			}
			if got := col.spans(); len(got) != 1 || got[0] != "switchboard-test/"+observe.SpanInbound {
				t.Errorf("collector got %q; want [switchboard-test/%s]", got, observe.SpanInbound)
			}
		})
	}
}
