package service_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// server is a real Switchboard: a journal in a temp dir, the Service, and a
// gRPC server on loopback with the production interceptors.
type server struct {
	t      *testing.T
	j      *pebblejournal.Journal
	svc    *service.Service
	gs     *grpc.Server
	cc     *grpc.ClientConn
	client switchboardv1.SwitchboardServiceClient
	once   bool
	// journalBroken: the test broke the journal, so Close may report it.
	journalBroken bool
}

func startServer(t *testing.T, dir string) *server {
	t.Helper()
	j, err := pebblejournal.Open(dir, pebblejournal.Options{})
	if err != nil {
		t.Fatalf("journal.Open: %v", err)
	}
	return startServerWith(t, j)
}

func startServerWith(t *testing.T, j *pebblejournal.Journal, opts ...func(*service.Config)) *server {
	t.Helper()
	// The journal's own stores, as serve uses them, so that consumers and
	// answers survive a restart on the same directory.
	cfg := service.Config{Journal: j, Consumers: j.Consumers(), Answers: j.Answers()}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := service.New(cfg)
	if err != nil {
		t.Fatalf("service.New: %v", err)
	}
	gs, _, err := service.NewGRPCServer(svc, service.ServerOptions{})
	if err != nil {
		t.Fatalf("NewGRPCServer: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(service.MaxMessageBytes), grpc.MaxCallSendMsgSize(service.MaxMessageBytes)))
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, j: j, svc: svc, gs: gs, cc: cc, client: switchboardv1.NewSwitchboardServiceClient(cc)}
	t.Cleanup(s.stop)
	return s
}

// stop shuts the server down the way `switchboard serve` does.
func (s *server) stop() {
	if s.once {
		return
	}
	s.once = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.svc.Shutdown(ctx)
	s.gs.Stop()
	_ = s.cc.Close()
	if err := s.j.Close(); err != nil && !s.journalBroken {
		s.t.Errorf("journal.Close: %v", err)
	}
}

// lastSeq is the journal's last sequence number.
func (s *server) lastSeq() uint64 {
	s.t.Helper()
	seq, err := s.j.LastSeq(context.Background())
	if err != nil {
		s.t.Fatalf("journal LastSeq: %v", err)
	}
	return seq
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startListener starts an MLLP/HL7 listener on a free loopback port.
func (s *server) startListener(ctx context.Context, id string, cfg *switchboardv1.ListenerConfig) *switchboardv1.Listener {
	s.t.Helper()
	if cfg == nil {
		cfg = &switchboardv1.ListenerConfig{}
	}
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	resp, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: id, Config: cfg})
	if err != nil {
		s.t.Fatalf("StartListener: %v", err)
	}
	return resp.GetListener()
}

// addr returns a listener's bound address.
func addr(l *switchboardv1.Listener) string { return l.GetStatus().GetBoundAddress() }

// ackCount returns the count for code in a counter list.
func ackCount(counts []*switchboardv1.AckCount, code switchboardv1.AckCode) int64 {
	for _, c := range counts {
		if c.GetCode() == code {
			return c.GetCount()
		}
	}
	return 0
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "hl7", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var mllp = transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()

// peer is a raw TCP client speaking MLLP to a listener.
type peer struct {
	t   *testing.T
	nc  net.Conn
	dec *transport.Decoder
}

func dialPeer(t *testing.T, addr string) *peer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &peer{t: t, nc: nc, dec: transport.NewDecoder(nc, mllp)}
}

func (p *peer) write(b []byte) {
	p.t.Helper()
	if _, err := p.nc.Write(b); err != nil {
		p.t.Fatalf("peer write: %v", err)
	}
}

// readFrame returns the next frame (copied), failing the test after 10 s.
func (p *peer) readFrame() []byte {
	p.t.Helper()
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := p.dec.Next()
	if err != nil {
		p.t.Fatalf("peer read: %v", err)
	}
	return bytes.Clone(f)
}

// expectClosed waits for the server to close the connection.
func (p *peer) expectClosed() {
	p.t.Helper()
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, err := p.dec.Next()
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			p.t.Fatalf("connection still open")
		}
		return
	}
}

// testPeer is a raw TCP server that answers each MLLP frame via answer
// (nil: stay silent). It records what it received.
type testPeer struct {
	ln       net.Listener
	received chan []byte
	done     chan struct{}
	stopped  sync.Once
	conns    chan net.Conn
}

func startTestPeer(t *testing.T, answer func(msg []byte) []byte) *testPeer {
	t.Helper()
	return startTestPeerOn(t, "127.0.0.1:0", answer)
}

// startTestPeerOn starts a testPeer on addr, such as the address of one
// that stopped (a peer that comes back).
func startTestPeerOn(t *testing.T, addr string, answer func(msg []byte) []byte) *testPeer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPeer{ln: ln, received: make(chan []byte, 100), done: make(chan struct{}), conns: make(chan net.Conn, 16)}
	go func() {
		defer close(p.done)
		var open []net.Conn
		defer func() {
			for _, c := range open {
				_ = c.Close()
			}
		}()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			open = append(open, nc)
			p.conns <- nc
			go func() {
				dec := transport.NewDecoder(nc, mllp)
				for {
					msg, err := dec.Next()
					if err != nil {
						return
					}
					p.received <- bytes.Clone(msg)
					if reply := answer(msg); reply != nil {
						if _, err := nc.Write(mllp.AppendFrame(nil, reply)); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	t.Cleanup(p.stop)
	return p
}

// stop closes the listener and every connection, as a peer that goes away.
func (p *testPeer) stop() {
	p.stopped.Do(func() {
		_ = p.ln.Close()
		<-p.done
		// Reader goroutines end when their connections close above.
		for len(p.conns) > 0 {
			_ = (<-p.conns).Close()
		}
	})
}

func (p *testPeer) addr() string { return p.ln.Addr().String() }

// ackWith builds an HL7 ACK with the given code for msg; MSA-2 is
// msg's MSH-10 unless controlID overrides it.
func ackWith(code hl7.AckCode, controlID string) func([]byte) []byte {
	return func(msg []byte) []byte {
		h, _ := hl7.ParseHeader(msg)
		if controlID != "" {
			h.ControlID = controlID
		}
		return hl7.AppendAck(nil, h, hl7.AckRequest{Code: code, ControlID: "PEER-1", Time: time.Now(), Text: "peer says " + string(code)})
	}
}
