package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// ErrNotInDoubt: Resolve on a message that is not held in doubt.
var ErrNotInDoubt = errors.New("is not held in doubt")

// TypeMessage is the registry.ResourceError type of errors about a message.
// Errors about messages and connections are *registry.ResourceError, so
// they read and map like the registry's: registry.ErrNotFound for a message
// or connection that does not exist, ErrNotInDoubt, and
// registry.ErrShuttingDown once Close has begun.
const TypeMessage = "message"

// Sessions gives the outbox the open session of an outbound connection;
// *registry.Registry implements it. WaitOpen waits while the connection is
// being opened or reconnected, until ctx ends.
type Sessions interface {
	WaitOpen(ctx context.Context, id string) (*transport.Conn, error)
}

// SessionsFunc adapts a function to Sessions.
type SessionsFunc func(ctx context.Context, id string) (*transport.Conn, error)

// WaitOpen calls f.
func (f SessionsFunc) WaitOpen(ctx context.Context, id string) (*transport.Conn, error) {
	return f(ctx, id)
}

// Clock tells the time and waits; the outbox takes attempt times and retry
// delays from it. (Acknowledgement timeouts are transport's, on the system
// clock.)
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config configures an Outbox.
type Config struct {
	// Store keeps the messages. Required.
	Store Store
	// Sessions opens the connections' sessions. Required.
	Sessions Sessions
	// PeerAck records an acknowledgement in a message (the API's
	// conversion, which keeps its strings valid UTF-8). Required.
	PeerAck func(*transport.PeerAck) *switchboardv1.PeerAck
	// Logger receives delivery logs (ids, control ids and sizes, never
	// payloads); nil discards them.
	Logger *slog.Logger
	// Clock is the time source; nil: the system clock.
	Clock Clock
	// Events, when set, is told of messages held in doubt and of messages
	// failed (events.go), once that state is stored, for event streams and
	// consoles. It is called on the goroutine that stored it (a worker's,
	// ResolveMessage's, Disconnect's), possibly with one of the Outbox's
	// locks held: it must be quick, must not block and must not call the
	// Outbox.
	Events func(Event)
}

// Validate reports whether cfg is usable.
func (cfg Config) Validate() error {
	if cfg.Store == nil || cfg.Sessions == nil || cfg.PeerAck == nil {
		return errors.New("outbox: Store, Sessions and PeerAck are required")
	}
	return nil
}

// Outbox delivers queued messages: one worker goroutine per outbound
// connection, owned by the Outbox, started when the connection is created
// (ConnectionChanged) and stopped when it is removed or the Outbox closes.
// It is safe for concurrent use.
type Outbox struct {
	store    Store
	sessions Sessions
	peerAck  func(*transport.PeerAck) *switchboardv1.PeerAck
	log      *slog.Logger
	clock    Clock
	events   func(Event)

	// closing ends when Close begins: no attempt starts after it, and idle
	// workers return. stop ends when Close gives up waiting for
	// acknowledgements: every worker returns at once.
	closing     context.Context
	cancelClose context.CancelFunc
	stop        context.Context
	cancelStop  context.CancelFunc
	wg          sync.WaitGroup

	// hookMu serializes ConnectionChanged, Start and Close, so a
	// connection removed and created again never has two workers.
	hookMu sync.Mutex
	// resolveMu serializes the changes made outside workers: ResolveMessage
	// and the failing of a removed connection's messages.
	resolveMu sync.Mutex

	mu      sync.Mutex
	workers map[string]*worker // every outbound connection known
	started bool
	closed  bool
}

// New returns an Outbox whose workers start with Start.
func New(cfg Config) (*Outbox, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	o := &Outbox{
		store:    cfg.Store,
		sessions: cfg.Sessions,
		peerAck:  cfg.PeerAck,
		log:      cfg.Logger,
		clock:    cfg.Clock,
		events:   cfg.Events,
		workers:  make(map[string]*worker),
	}
	o.closing, o.cancelClose = context.WithCancel(context.Background())
	o.stop, o.cancelStop = context.WithCancel(context.Background())
	return o, nil
}

// Start starts the workers of the connections known so far (ConnectionChanged
// may be called before Start, while the registry restores its connections)
// and of any created later. Messages still pending for a connection that
// does not exist are kept as they are (logged): they are delivered if a
// connection with that id is created again, and failed when it is removed.
func (o *Outbox) Start(ctx context.Context) error {
	o.hookMu.Lock()
	defer o.hookMu.Unlock()
	ids, err := o.store.PendingConnections(ctx)
	if err != nil {
		return fmt.Errorf("outbox: pending connections: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.started {
		return nil
	}
	o.started = true
	for _, id := range ids {
		if o.workers[id] == nil {
			o.log.Warn("queued messages for a connection that does not exist; kept until it is created again or removed", "connection_id", id)
		}
	}
	for _, w := range o.workers {
		o.startWorker(w)
	}
	return nil
}

// ConnectionChanged is the registry's OutboundChanged hook: it starts the
// worker of a connection that was created and, for one that was removed,
// stops it and fails the messages still pending ("connection removed")
// before it returns.
func (o *Outbox) ConnectionChanged(id string, spec *switchboardv1.ConnectionConfig, removed bool) {
	o.hookMu.Lock()
	defer o.hookMu.Unlock()
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	w := o.workers[id]
	if !removed {
		if w == nil {
			w = o.newWorker(id, spec)
			o.workers[id] = w
			if o.started {
				o.startWorker(w)
			}
		}
		o.mu.Unlock()
		return
	}
	delete(o.workers, id)
	o.mu.Unlock()
	if w != nil {
		w.halt()
	}
	if err := o.failRemoved(context.Background(), id); err != nil {
		o.log.Error("removed connection: could not fail its queued messages", "connection_id", id, "err", err)
	}
}

// ConnectionReleased is the registry's OutboundReleased hook: the
// connection stopped here but stays (in a cluster another instance takes
// it over, with its queue). Its worker stops; its messages stay as they
// are: queued, or in flight and so in doubt for the next owner's worker,
// as after a restart.
func (o *Outbox) ConnectionReleased(id string) {
	o.hookMu.Lock()
	defer o.hookMu.Unlock()
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	w := o.workers[id]
	delete(o.workers, id)
	o.mu.Unlock()
	if w != nil {
		w.halt()
	}
}

// startWorker runs w's goroutine. o.mu must be held.
func (o *Outbox) startWorker(w *worker) {
	w.running = true
	o.wg.Go(w.run)
}

// Enqueue stores m (Payload, MessageType, ControlId, IdempotencyKey set by
// the caller) as the next message of connection m.ConnectionId and returns
// it once it is durable, with its id and sequence. When the connection
// already has a message with m.IdempotencyKey, nothing is stored and that
// message is returned with created false; either way the connection's
// worker looks at its queue again, so the message is delivered if it is
// not yet.
func (o *Outbox) Enqueue(ctx context.Context, m *switchboardv1.Message) (stored *switchboardv1.Message, created bool, err error) {
	o.mu.Lock()
	w, closed := o.workers[m.GetConnectionId()], o.closed
	o.mu.Unlock()
	noConn := &registry.ResourceError{Type: registry.TypeConnection, ID: m.GetConnectionId(), Err: registry.ErrNotFound}
	switch {
	case closed:
		return nil, false, registry.ErrShuttingDown
	case w == nil:
		return nil, false, noConn
	}
	// Held across the append, so a removal waits for it and fails the
	// message too, instead of leaving it queued for nobody.
	w.appendMu.RLock()
	defer w.appendMu.RUnlock()
	if w.removed {
		return nil, false, noConn
	}
	now := timestamppb.New(o.clock.Now())
	m.Direction = switchboardv1.Direction_DIRECTION_OUTBOUND
	m.State = switchboardv1.MessageState_MESSAGE_STATE_QUEUED
	m.CreateTime, m.UpdateTime = now, now
	stored, created, err = o.store.Append(ctx, m)
	if err != nil {
		return nil, false, err
	}
	// Also when the key found a message already stored: the worker may
	// never have seen it. An Append that failed (its fsync did) may have
	// reached the disk anyway and be back after the store recovered, with
	// nobody to tell the worker; the client's retry with the key finds it.
	w.wake()
	if created {
		if w.counted.Load() {
			w.queued.Add(1)
		}
		o.log.Debug("message queued", "connection_id", w.id, "message_id", stored.GetMessageId(),
			"control_id", stored.GetControlId(), "bytes", len(m.GetPayload()))
	} else if !bytes.Equal(stored.GetPayload(), m.GetPayload()) {
		o.log.Warn("idempotency key used again with another payload; the first message stands",
			"connection_id", w.id, "message_id", stored.GetMessageId())
	}
	return stored, created, nil
}

// Queued returns how many messages of connection id are not yet delivered
// or failed; false until its worker has counted them (at its start).
func (o *Outbox) Queued(id string) (int64, bool) {
	o.mu.Lock()
	w := o.workers[id]
	o.mu.Unlock()
	if w == nil || !w.counted.Load() {
		return 0, false
	}
	return w.queued.Load(), true
}

func isFinal(s switchboardv1.MessageState) bool {
	return s == switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED || s == switchboardv1.MessageState_MESSAGE_STATE_FAILED
}

// WakeAll makes every worker look at its queue again: after the store
// recovered from a failure, messages whose append failed may be there
// after all (the write can reach the disk even though its sync failed).
func (o *Outbox) WakeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range o.workers {
		w.recount.Store(true) // those messages were never counted
		w.wake()
	}
}

// Resolve settles a message held in doubt: RESEND queues it again (due at
// once; it keeps its place at the head of the queue), MARK_ACCEPTED and FAIL
// make it final. Any other state is ErrNotInDoubt.
func (o *Outbox) Resolve(ctx context.Context, connID string, seq uint64, r switchboardv1.Resolution) (*switchboardv1.Message, error) {
	o.resolveMu.Lock()
	defer o.resolveMu.Unlock()
	id := MessageID(connID, seq)
	m, err := o.store.Get(ctx, connID, seq)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, &registry.ResourceError{Type: TypeMessage, ID: id, Err: registry.ErrNotFound}
	case err != nil:
		return nil, err
	case m.GetState() != switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT:
		return nil, &registry.ResourceError{Type: TypeMessage, ID: id, Err: fmt.Errorf("%w (it is %s)", ErrNotInDoubt, stateName(m.GetState()))}
	}
	if err := resolve(m, r); err != nil {
		return nil, err
	}
	m.UpdateTime = timestamppb.New(o.clock.Now())
	if err := o.store.Update(ctx, m, true); err != nil {
		return nil, err
	}
	o.log.Info("message in doubt resolved", "connection_id", connID, "message_id", id, "control_id", m.GetControlId(),
		"resolution", r.String())
	if m.GetState() == switchboardv1.MessageState_MESSAGE_STATE_FAILED {
		o.event(EventFailed, m)
	}
	o.mu.Lock()
	w := o.workers[connID]
	o.mu.Unlock()
	if w != nil && w.counted.Load() {
		w.stats.inDoubt.Add(-1) // it was held in doubt
		if isFinal(m.GetState()) {
			w.queued.Add(-1)
		}
	}
	if w != nil && m.GetState() == switchboardv1.MessageState_MESSAGE_STATE_FAILED {
		w.stats.failed.Add(1)
	}
	if w != nil {
		w.wake()
	}
	return m, nil
}

// resolve applies an operator's resolution to a message held in doubt.
func resolve(m *switchboardv1.Message, r switchboardv1.Resolution) error {
	switch r {
	case switchboardv1.Resolution_RESOLUTION_RESEND:
		m.State, m.Failure, m.NextAttemptTime = switchboardv1.MessageState_MESSAGE_STATE_QUEUED, "", nil
	case switchboardv1.Resolution_RESOLUTION_MARK_ACCEPTED:
		m.State, m.Failure = switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED, ""
	case switchboardv1.Resolution_RESOLUTION_FAIL:
		m.State, m.Failure = switchboardv1.MessageState_MESSAGE_STATE_FAILED, "failed by an operator; it was "+m.GetFailure()
	default:
		return fmt.Errorf("outbox: unknown resolution %v", r)
	}
	return nil
}

// failRemoved fails every pending message of a removed connection.
func (o *Outbox) failRemoved(ctx context.Context, connID string) error {
	o.resolveMu.Lock()
	defer o.resolveMu.Unlock()
	var after uint64
	n := 0
	for {
		ms, err := o.store.Pending(ctx, connID, after, 100)
		if err != nil {
			return err
		}
		if len(ms) == 0 {
			break
		}
		for i, m := range ms {
			after = m.GetSequence()
			now := timestamppb.New(o.clock.Now())
			why := "connection removed"
			if st := m.GetState(); st == switchboardv1.MessageState_MESSAGE_STATE_SENDING || st == switchboardv1.MessageState_MESSAGE_STATE_AWAITING_ACK {
				why = "connection removed during an attempt (in doubt: it may have been written)"
				endAttempt(m, now, &outcome{result: switchboardv1.AttemptResult_ATTEMPT_RESULT_IN_DOUBT, err: "connection removed"}, nil)
			}
			m.State, m.Failure, m.UpdateTime, m.NextAttemptTime = switchboardv1.MessageState_MESSAGE_STATE_FAILED, why, now, nil
			// One synced write per page: the store commits in order, so
			// the last one's makes the page durable.
			if err := o.store.Update(ctx, m, i == len(ms)-1); err != nil {
				return err
			}
			n++
		}
		for _, m := range ms { // the page is durable
			o.event(EventFailed, m)
		}
	}
	if n > 0 {
		o.log.Warn("connection removed; its queued messages failed", "connection_id", connID, "messages", n)
	}
	return nil
}

// Close stops the outbox: no attempt starts any more, the acknowledgements
// of messages in flight are awaited and recorded until ctx ends (those
// still missing then are in doubt at the next start), and every worker has
// returned when Close does. Later calls return at once.
func (o *Outbox) Close(ctx context.Context) {
	o.hookMu.Lock()
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.hookMu.Unlock()
	o.cancelClose()
	stop := context.AfterFunc(ctx, o.cancelStop)
	o.wg.Wait()
	stop()
	o.cancelStop()
}

func stateName(s switchboardv1.MessageState) string {
	return strings.TrimPrefix(s.String(), "MESSAGE_STATE_")
}
