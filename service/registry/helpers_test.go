package registry

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// memState is the package's MemState with writes that can be made to fail
// (fail), and readers for the tests' checks.
type memState struct {
	MemState
	mu        sync.Mutex
	putErr    error
	deleteErr error
}

type storedResource struct {
	spec    []byte
	created time.Time
}

func newMemState() *memState { return &memState{} }

func (s *memState) PutResource(ctx context.Context, typ, id string, spec []byte, created time.Time) error {
	s.mu.Lock()
	err := s.putErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.MemState.PutResource(ctx, typ, id, spec, created)
}

func (s *memState) DeleteResource(ctx context.Context, typ, id string) error {
	s.mu.Lock()
	err := s.deleteErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.MemState.DeleteResource(ctx, typ, id)
}

// all returns what the store holds, by type and id.
func (s *memState) all() map[[2]string]storedResource {
	m := map[[2]string]storedResource{}
	_ = s.Resources(context.Background(), func(typ, id string, spec []byte, created time.Time) error {
		m[[2]string{typ, id}] = storedResource{slices.Clone(spec), created}
		return nil
	})
	return m
}

func (s *memState) ids(typ string) []string {
	var ids []string
	for k := range s.all() {
		if k[0] == typ {
			ids = append(ids, k[1])
		}
	}
	slices.Sort(ids)
	return ids
}

func (s *memState) fail(put, del error) {
	s.mu.Lock()
	s.putErr, s.deleteErr = put, del
	s.mu.Unlock()
}

// durableRegistry returns a registry on state with the test builders and
// short bind retries; Shutdown runs at cleanup. changes, when not nil,
// receives every OutboundChanged call.
func durableRegistry(t *testing.T, state StateStore, changes chan<- string) *Registry {
	t.Helper()
	cfg := Config{
		State:          state,
		ListenerConfig: func(s *switchboardv1.ListenerConfig) transport.ListenerConfig { return listenerCfgFor(s) },
		DialConfig:     func(s *switchboardv1.ConnectionConfig) transport.DialConfig { return dialCfgFor(s) },
	}
	if changes != nil {
		cfg.OutboundChanged = func(id string, _ *switchboardv1.ConnectionConfig, removed bool) {
			if removed {
				id = "-" + id
			}
			changes <- id
		}
		cfg.OutboundReleased = func(id string) { changes <- "~" + id }
	}
	r := New(cfg)
	r.rebind = newBackoff(20*time.Millisecond, 100*time.Millisecond)
	t.Cleanup(func() { r.Shutdown(time.Now()) })
	return r
}

func listenerCfgFor(s *switchboardv1.ListenerConfig) transport.ListenerConfig {
	return transport.ListenerConfig{Address: s.GetAddress(), Sink: nopSink{}}
}

func dialCfgFor(s *switchboardv1.ConnectionConfig) transport.DialConfig {
	return transport.DialConfig{Address: s.GetAddress(), Sink: nopSink{},
		Conn: transport.ConnConfig{AckTimeout: s.GetAckTimeout().AsDuration()}}
}

// fastReconnect is a connection spec that reconnects within milliseconds.
func fastReconnect(addr string) *switchboardv1.ConnectionConfig {
	return &switchboardv1.ConnectionConfig{Address: addr, Reconnect: &switchboardv1.ReconnectPolicy{
		InitialDelay: durationpb.New(20 * time.Millisecond), MaxDelay: durationpb.New(100 * time.Millisecond)}}
}

func (r *Registry) connectSpec(ctx context.Context, id string, spec *switchboardv1.ConnectionConfig) (ConnectionView, error) {
	return r.Connect(ctx, id, spec, dialCfgFor(spec))
}

// tcpPeer is a TCP server that accepts connections and holds them open
// (reading and discarding what they send) until it is stopped; it can be
// started again on the same address, as a peer that restarts.
type tcpPeer struct {
	t     *testing.T
	addr  string
	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
	// accepted counts connections accepted, over every start.
	accepted int
}

func startTCPPeer(t *testing.T) *tcpPeer {
	t.Helper()
	p := &tcpPeer{t: t, addr: "127.0.0.1:0"}
	p.start()
	t.Cleanup(p.stop)
	return p
}

// start listens on the peer's address (the same one after the first start).
func (p *tcpPeer) start() {
	p.t.Helper()
	var ln net.Listener
	var err error
	// The port was just ours; on a busy machine it may take a moment to
	// be bindable again.
	waitUntil(p.t, func() bool {
		ln, err = net.Listen("tcp", p.addr)
		return err == nil
	})
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.ln != ln { // stopped meanwhile: stop closed the others already
				p.mu.Unlock()
				nc.Close()
				return
			}
			p.conns = append(p.conns, nc)
			p.accepted++
			p.mu.Unlock()
			p.wg.Go(func() {
				buf := make([]byte, 4096)
				for {
					if _, err := nc.Read(buf); err != nil {
						return
					}
				}
			})
		}
	})
}

// stop closes the listener and every connection, as a peer that goes away.
func (p *tcpPeer) stop() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, nc := range p.conns {
		nc.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *tcpPeer) acceptedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// connState returns the state of connection id, or 0 when it is gone.
func connState(r *Registry, id string) ConnState {
	v, err := r.Connection(id)
	if err != nil {
		return 0
	}
	return v.State
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var errInjected = errors.New("injected state store failure")
