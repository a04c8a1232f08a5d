// Package service is Switchboard's gRPC control plane: it implements
// switchboard.v1.SwitchboardService on top of transport (TCP listeners and
// connections) and journal (the durable log every received frame goes to
// before it is acknowledged), keeps the registry of live listeners and
// connections, maps domain errors to status codes in one place (errors.go)
// and assembles the gRPC server (server.go).
//
// Listeners and connections outlive the RPC that created them: they belong
// to the Service, and Shutdown drains and closes them. The package never
// logs payload bytes.
package service

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/transport"
)

// Config configures a Service.
type Config struct {
	// Journal is where received frames are made durable (the embedded
	// pebblejournal.Journal, or any other journal.Journal). Required. The
	// Service uses it but does not close it: close it after Shutdown.
	Journal journal.Journal
	// Logger receives lifecycle and error logs. Nil discards them.
	Logger *slog.Logger
}

// Service implements switchboardv1.SwitchboardServiceServer.
type Service struct {
	switchboardv1.UnimplementedSwitchboardServiceServer

	log     *slog.Logger
	journal journal.Journal
	sink    transport.Sink

	mu        sync.Mutex
	listeners map[string]*listenerEntry
	conns     map[string]*connEntry
	dialing   map[string]bool // connection ids reserved by Connect calls in progress
	closing   bool

	// done is closed when Shutdown has drained listeners and connections;
	// Receive streams then end with UNAVAILABLE.
	done chan struct{}
}

var _ switchboardv1.SwitchboardServiceServer = (*Service)(nil)

type listenerEntry struct {
	l       *transport.Listener
	config  *switchboardv1.ListenerConfig
	started time.Time
}

type connEntry struct {
	c      *transport.Conn
	config *switchboardv1.ConnectionConfig // outbound only
}

// New returns a Service using cfg.Journal.
func New(cfg Config) (*Service, error) {
	if cfg.Journal == nil {
		return nil, errors.New("service: a journal is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{
		log:       cfg.Logger,
		journal:   cfg.Journal,
		sink:      journalSink{j: cfg.Journal},
		listeners: make(map[string]*listenerEntry),
		conns:     make(map[string]*connEntry),
		dialing:   make(map[string]bool),
		done:      make(chan struct{}),
	}, nil
}

// Shutdown stops every listener (in-flight frames are finished and
// acknowledged until ctx's deadline), lets in-flight Sends finish, closes
// all connections, then ends Receive streams with UNAVAILABLE. New calls are
// refused from the start. It is safe to call more than once.
func (s *Service) Shutdown(ctx context.Context) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		<-s.done
		return
	}
	s.closing = true
	listeners := make([]*transport.Listener, 0, len(s.listeners))
	for _, e := range s.listeners {
		listeners = append(listeners, e.l)
	}
	conns := make([]*transport.Conn, 0, len(s.conns))
	for _, e := range s.conns {
		conns = append(conns, e.c)
	}
	s.mu.Unlock()

	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultDrainTimeout)
	}
	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Go(func() { l.Stop(deadline) })
	}
	for _, c := range conns {
		wg.Go(func() { c.Drain(deadline) })
	}
	wg.Wait()
	close(s.done)
	s.log.Info("service stopped", "listeners", len(listeners), "connections", len(conns))
}

// register adds a connection to the registry (transport's OnOpen hook).
func (s *Service) register(c *transport.Conn) {
	s.mu.Lock()
	s.conns[c.ID()] = &connEntry{c: c}
	s.mu.Unlock()
}

// forget removes a closed connection (transport's OnClose hook).
func (s *Service) forget(c *transport.Conn) {
	s.mu.Lock()
	if e, ok := s.conns[c.ID()]; ok && e.c == c {
		delete(s.conns, c.ID())
	}
	s.mu.Unlock()
}

func (s *Service) conn(id string) (*connEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.conns[id]
	if !ok {
		return nil, notFound("connection", id)
	}
	return e, nil
}

func (s *Service) listener(id string) (*listenerEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.listeners[id]
	if !ok {
		return nil, notFound("listener", id)
	}
	return e, nil
}

// journalSink makes received frames durable in the journal. Health reports
// a journal failure once (the caller watches journal.Journal.Health), so
// nothing here repeats it per frame.
type journalSink struct {
	j journal.Journal
}

func (s journalSink) Append(ctx context.Context, m *transport.Message) (uint64, error) {
	return s.j.Append(ctx, &journal.Record{
		Kind:         journal.KindMessage,
		Time:         m.Time,
		ListenerID:   m.ListenerID,
		ConnectionID: m.ConnectionID,
		RemoteAddr:   m.RemoteAddr,
		MessageType:  m.MessageType,
		ControlID:    m.ControlID,
		Payload:      m.Payload,
	})
}
