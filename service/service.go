// Package service is Switchboard's gRPC control plane: it implements
// switchboard.v1.SwitchboardService on top of the registry (the listeners
// and connections callers created, see service/registry), transport (their
// TCP sockets) and journal (the durable log every received frame goes to
// before it is acknowledged). The handlers only translate: requests into
// registry and transport calls, results into the API's messages, and errors
// into status codes, all chosen in errors.go. server.go assembles the gRPC
// server.
//
// The package never logs payload bytes (they are patient data), and every
// string it builds from message bytes is valid UTF-8 (see text in
// convert.go).
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/internal/tlsfiles"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/observe"
	"github.com/switchboard-dev/switchboard/service/cluster"
	"github.com/switchboard-dev/switchboard/service/delivery"
	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// DefaultMaxBufferedBytes is the memory all connections together may hold
// for frames being received when Config.MaxBufferedBytes is zero.
const DefaultMaxBufferedBytes = 256 << 20

// Config configures a Service.
type Config struct {
	// Journal is where received frames are made durable (the embedded
	// pebblejournal.Journal, or any other journal.Journal). Required. The
	// Service uses it but does not close it: close it after Shutdown.
	Journal journal.Journal
	// Logger receives lifecycle and error logs. Nil discards them.
	Logger *slog.Logger
	// MaxBufferedBytes bounds the memory all connections together hold for
	// frames being received (transport.MemoryBudget). Zero:
	// DefaultMaxBufferedBytes.
	MaxBufferedBytes int64
	// Observer receives every connection's events (metrics, traces); nil:
	// none.
	Observer *transport.Observer
	// Events is the event bus WatchEvents streams from (observe.NewBus).
	// The Service feeds it: it joins Events.Observer() before Observer on
	// every connection, hands the registry and the outbox its hooks, and
	// follows the journal's health (observe.Bus.FollowJournal) until
	// Shutdown; do not do those again. Nil: the Service makes a bus of its
	// own (see Service.Events).
	Events *observe.Bus
	// EventBuffer is how many events a WatchEvents stream may have waiting
	// to be sent before it is cut off (WATCHER_TOO_SLOW). Zero:
	// DefaultEventBuffer.
	EventBuffer int
	// InboundSpan, when set, returns the span context of the span that
	// traced the receipt of the frame stored at a journal sequence, or an
	// invalid one (observe.Tracing.InboundSpan): Receive's delivery spans
	// link to it.
	InboundSpan func(seq uint64) trace.SpanContext
	// Outbox stores queued outbound messages (the embedded one shares the
	// journal's database). Nil: queued sends are refused. Like the journal,
	// it is not closed by the Service.
	Outbox outbox.Store
	// State keeps the listeners and outbound connections callers created
	// (desired state), so that Restore brings them back after a restart:
	// the embedded one is pebblejournal.Journal.StateStore. Nil keeps them
	// in memory only.
	State registry.StateStore
	// Consumers keeps durable consumers' positions and dead letters (the
	// embedded one is pebblejournal.Journal.Consumers). Nil keeps them in
	// memory only.
	Consumers delivery.Store
	// Answers records what was answered for the inbound messages of
	// listeners with duplicate suppression, so that a resend gets the first
	// answer again and GetMessage shows it: the embedded one is
	// pebblejournal.Journal.Answers. Nil keeps them in memory (NewMemAnswers)
	// until the process ends.
	Answers AnswerStore
	// TLSProfiles resolves the TLS profiles that listener and connection
	// configs name (tlsfiles.OpenProfiles of serve's --tls-profiles). A
	// profile is resolved when the resource starts, and again when it is
	// restored. Nil: a config naming a profile fails with
	// FAILED_PRECONDITION (TLS_PROFILE_UNAVAILABLE); outbound TLS with no
	// profile (the system's CAs) still works.
	TLSProfiles TLSProfiles
	// AddressPolicy decides which addresses StartListener may bind and
	// Connect may dial, as configured and, through its Control hooks, as
	// resolved at every bind and every (re)connect. Nil: any address.
	AddressPolicy AddressPolicy
	// ConnSlots, when set, caps the connections all listeners hold open
	// together (transport.ConnSlots). Nil: only each listener's own cap.
	ConnSlots *transport.ConnSlots
	// Cluster, when set, makes this Service one instance of a cluster
	// (clustered.go): State, Outbox, Consumers, Answers and the Journal
	// must then be the cluster's shared ones (package jsjournal), and the
	// Outbox fenced by this node's leases. Restore then takes over what has
	// no live owner instead of restoring everything, and NewGRPCServer
	// routes calls to the instance that owns their resource.
	Cluster *cluster.Node
}

// TLSProfiles resolves TLS profile names (*tlsfiles.Profiles).
type TLSProfiles interface {
	Get(name string) (*tlsfiles.Source, error)
}

// AddressPolicy decides which addresses may be bound and dialed. Its
// errors should wrap ErrAddressForbidden (the Service wraps those that do
// not), and say which address and which rule; they become
// PERMISSION_DENIED with reason ADDRESS_FORBIDDEN.
type AddressPolicy interface {
	// CheckListen: before binding (StartListener and restore); address as
	// configured.
	CheckListen(address string) error
	// CheckDial: at Connect and restore, address as configured (host names
	// checked against patterns).
	CheckDial(address string) error
	// ListenControlFor and DialControlFor return the
	// net.ListenConfig.Control and net.Dialer.Control hooks of a listener or
	// connection configured with address: they check the resolved address
	// at every bind and every (re)connect, knowing the name it came from.
	ListenControlFor(configured string) func(network, address string, c syscall.RawConn) error
	DialControlFor(configured string) func(network, address string, c syscall.RawConn) error
}

// ErrAddressForbidden is wrapped by every refusal of the AddressPolicy.
// It is transport's sentinel, so an implementation need not import this
// package: wrap either name.
var ErrAddressForbidden = transport.ErrAddressForbidden

// Service implements switchboardv1.SwitchboardServiceServer.
type Service struct {
	switchboardv1.UnimplementedSwitchboardServiceServer

	log      *slog.Logger
	journal  journal.Journal
	sink     transport.Sink
	budget   *transport.MemoryBudget
	observer *transport.Observer
	events   *observe.Bus
	eventBuf int
	inbound  func(uint64) trace.SpanContext
	reg      *registry.Registry
	outbox   *outbox.Outbox // nil without Config.Outbox (messages.go)
	messages outbox.Store
	// consumers delivers to durable consumers (Receive with a name, Ack).
	consumers *delivery.Manager
	// book pairs deciding consumers' answers with the messages waiting for
	// them, and deciding names those consumers (answers.go).
	book     *answerBook
	deciding sync.Map // consumer name -> true
	answers  AnswerStore
	profiles TLSProfiles
	policy   AddressPolicy
	slots    *transport.ConnSlots

	// In a cluster (clustered.go, reconcile.go): the node, the shared
	// desired state, the listeners on every instance seen in it (touched
	// by reconcile only), and how to stop the reconcile loop.
	node        *cluster.Node
	state       registry.StateStore
	every       map[string]bool
	stopCluster context.CancelFunc

	// bg runs the service's own goroutines (wakeOutboxOnRecovery); Shutdown
	// waits for them after cancel.
	bg sync.WaitGroup

	// ctx ends when Shutdown has drained listeners and connections;
	// Receive streams then end with UNAVAILABLE.
	ctx    context.Context
	cancel context.CancelFunc
}

var _ switchboardv1.SwitchboardServiceServer = (*Service)(nil)

// New returns a Service using cfg.Journal.
func New(cfg Config) (*Service, error) {
	if cfg.Journal == nil {
		return nil, errors.New("service: a journal is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBufferedBytes <= 0 {
		cfg.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if cfg.Events == nil {
		cfg.Events = observe.NewBus(observe.BusConfig{})
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = DefaultEventBuffer
	}
	if cfg.Answers == nil {
		cfg.Answers = NewMemAnswers()
	}
	if cfg.Cluster != nil && cfg.State == nil {
		return nil, errors.New("service: a cluster needs its shared State")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		log:      cfg.Logger,
		journal:  cfg.Journal,
		sink:     journalSink{j: cfg.Journal},
		budget:   transport.NewMemoryBudget(cfg.MaxBufferedBytes),
		observer: observe.Join(cfg.Events.Observer(), cfg.Observer),
		events:   cfg.Events,
		eventBuf: cfg.EventBuffer,
		inbound:  cfg.InboundSpan,
		book:     newAnswerBook(),
		answers:  cfg.Answers,
		profiles: cfg.TLSProfiles,
		policy:   cfg.AddressPolicy,
		slots:    cfg.ConnSlots,
		node:     cfg.Cluster,
		state:    cfg.State,
		every:    map[string]bool{},
		ctx:      ctx,
		cancel:   cancel,
	}
	consumers, err := delivery.Open(ctx, delivery.Config{Journal: cfg.Journal, Store: cfg.Consumers, Logger: cfg.Logger})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("service: load consumers: %w", err)
	}
	s.consumers = consumers
	outboundChanged, outboundReleased, err := s.newOutbox(cfg.Outbox)
	if err != nil {
		cancel()
		consumers.Close()
		return nil, err
	}
	s.reg = registry.New(registry.Config{
		Logger:           cfg.Logger,
		State:            cfg.State,
		ListenerConfig:   s.listenerConfig,
		DialConfig:       s.dialConfig,
		OutboundChanged:  outboundChanged,
		OutboundReleased: outboundReleased,
		Events:           s.events.RegistryHook(),
	})
	if err := s.startOutbox(); err != nil {
		cancel()
		consumers.Close()
		return nil, err
	}
	s.bg.Go(func() { s.events.FollowJournal(s.ctx, s.journal) })
	return s, nil
}

// Events returns the event bus the Service publishes to (Config.Events, or
// its own), for the console.
func (s *Service) Events() *observe.Bus { return s.events }

// Restore brings back the listeners and outbound connections recorded in
// Config.State (see registry.Registry.Restore): call it once, before the
// server reports SERVING. It returns when every listener has been bound or
// is backing off and every outbound connection has had a first, short try;
// the error is the state store's, when it cannot be read.
//
// In a cluster it starts answering calls from the other instances and takes
// over the resources that have no live owner, then keeps doing so until
// Shutdown (reconcile.go).
func (s *Service) Restore(ctx context.Context) error {
	if s.node != nil {
		cctx, cancel := context.WithCancel(s.ctx)
		s.stopCluster = cancel
		return s.startCluster(cctx)
	}
	return s.reg.Restore(ctx)
}

// Budget returns the memory budget shared by all connections.
func (s *Service) Budget() *transport.MemoryBudget { return s.budget }

// Registry returns the service's listeners and connections, for metrics,
// readiness and the admin console: read it, never change resources through
// it (the API does).
func (s *Service) Registry() *registry.Registry { return s.reg }

// Consumers returns the durable consumers, for their figures and for the
// journal's retention floor (delivery.Manager.Floor): read it, never change
// consumers through it (the API does).
func (s *Service) Consumers() *delivery.Manager { return s.consumers }

// Outbox returns the outbox that delivers queued messages, for its
// figures (outbox.Outbox.Stats); nil without Config.Outbox.
func (s *Service) Outbox() *outbox.Outbox { return s.outbox }

// Shutdown stops every listener (in-flight frames are finished and
// acknowledged until ctx's deadline, or DefaultDrainTimeout), lets in-flight
// Sends finish, closes all connections, then ends Receive streams with
// UNAVAILABLE. New resources are refused from the start. It is safe to call
// more than once.
func (s *Service) Shutdown(ctx context.Context) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(transport.DefaultDrainTimeout)
	}
	if s.node != nil && s.stopCluster != nil {
		// Hand everything over at once rather than after a lease TTL.
		s.stopCluster()
		s.releaseAll(ctx, true)
	}
	// Concurrently: the registry's drain waits for the acknowledgements of
	// queued messages in flight, which the outbox records before it stops.
	var wg sync.WaitGroup
	if s.outbox != nil {
		octx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		wg.Go(func() { s.outbox.Close(octx) })
	}
	s.reg.Shutdown(deadline)
	wg.Wait()
	s.cancel()
	s.consumers.Close()
	s.bg.Wait()
}

// Done is closed once Shutdown has drained everything.
func (s *Service) Done() <-chan struct{} { return s.ctx.Done() }

// journalSink makes received frames durable in the journal. A journal
// failure is reported once, through journal.Journal.Health, not per frame.
type journalSink struct{ j journal.Journal }

func (s journalSink) Append(ctx context.Context, m *transport.Message) (uint64, error) {
	return s.j.Append(ctx, s.record(m))
}

// record is the journal record of m. Listeners with duplicate suppression
// add its DedupID (dedupSink, duplicates.go).
func (journalSink) record(m *transport.Message) *journal.Record {
	kind := journal.KindMessage
	if m.Class == transport.FrameAck {
		kind = journal.KindAck
	}
	return &journal.Record{
		Kind:         kind,
		Time:         m.Time,
		ListenerID:   m.ListenerID,
		ConnectionID: m.ConnectionID,
		RemoteAddr:   m.RemoteAddr,
		MessageType:  m.MessageType,
		ControlID:    m.ControlID,
		PeerIdentity: m.PeerIdentity,
		Payload:      m.Payload,
	}
}
