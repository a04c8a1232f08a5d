package observe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// The event bus behind WatchEvents and the console's recent events: what
// happens to listeners, connections, queued messages and the journal, as
// switchboardv1.Event values. Its sources are transport's Observer (only
// for the rare events: a connection opened or closed, a negative ACK, an
// ACK mismatch or timeout, a framing error, a rejected connection; never
// per frame or per positive ACK), the registry's and the outbox's event
// hooks, and the journal's health. Events never carry payload bytes.

// Defaults of BusConfig and Subscribe.
const (
	// DefaultRecentEvents is how many events the bus keeps for Recent.
	DefaultRecentEvents = 1000
	// DefaultSubscriberBuffer is a subscription's buffer when Subscribe is
	// given none.
	DefaultSubscriberBuffer = 1024
)

// maxDetailBytes bounds the strings an event takes from errors and message
// bytes, so an event stays small.
const maxDetailBytes = 1024

// BusConfig configures a Bus.
type BusConfig struct {
	// Recent is how many of the latest events the bus keeps, for Recent
	// (the console, WatchEvents' replay_recent). Zero: DefaultRecentEvents;
	// negative: none.
	Recent int
}

// Bus publishes events to its subscribers and keeps the most recent ones.
// Publish never blocks and never waits for a subscriber: each subscriber
// has a bounded buffer, and one that falls behind it is cut off (its
// channel closes and Err says so) instead of slowing anything down. It is
// safe for concurrent use. A nil *Bus publishes nothing.
type Bus struct {
	mu        sync.Mutex
	seq       uint64
	ring      []*switchboardv1.Event // the latest events; ring[next] is the oldest once full
	next      int
	full      bool
	subs      []*Subscription
	cutOff    uint64
	published uint64
}

// NewBus returns a Bus. To feed it, pass it to service.Config.Events: the
// Service then joins b.Observer() to the transport Observer of every
// connection, gives the registry and the outbox b.RegistryHook() and
// b.OutboxHook(), and runs b.FollowJournal on its journal until it shuts
// down; WatchEvents streams from it. The console reads b.Recent. Nothing
// else needs starting or stopping: a Bus owns no goroutine.
func NewBus(cfg BusConfig) *Bus {
	n := cfg.Recent
	if n == 0 {
		n = DefaultRecentEvents
	}
	return &Bus{ring: make([]*switchboardv1.Event, max(n, 0))}
}

// Publish gives e its sequence (one more than the last event's, from 1) and
// its time (now, when unset), keeps it among the recent events and hands it
// to every subscriber whose filter takes it. A subscriber whose buffer is
// full is cut off. e is shared with every subscriber from then on: it must
// not be modified after Publish.
func (b *Bus) Publish(e *switchboardv1.Event) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	b.published++
	e.Sequence = b.seq
	if e.Time == nil {
		e.Time = timestamppb.Now() // under the lock: times follow sequences
	}
	if len(b.ring) > 0 {
		b.ring[b.next] = e
		b.next++
		if b.next == len(b.ring) {
			b.next, b.full = 0, true
		}
	}
	for i := 0; i < len(b.subs); {
		s := b.subs[i]
		if s.filter != nil && !s.filter(e) {
			i++
			continue
		}
		select {
		case s.ch <- e:
			s.last = e.Sequence
			i++
		default:
			s.err = &TooSlowError{LastSequence: s.last, Buffer: cap(s.ch)}
			b.cutOff++
			b.drop(i)
		}
	}
}

// drop ends subscription i: it is taken off the list and its channel
// closed. b.mu must be held.
func (b *Bus) drop(i int) {
	s := b.subs[i]
	close(s.ch)
	s.ended = true
	last := len(b.subs) - 1
	b.subs[i] = b.subs[last]
	b.subs[last] = nil
	b.subs = b.subs[:last]
}

// Recent returns the latest n events the bus still keeps that filter takes
// (every event, for a nil filter), oldest first; n <= 0: all of them. The
// events are shared: do not modify them.
func (b *Bus) Recent(n int, filter func(*switchboardv1.Event) bool) []*switchboardv1.Event {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*switchboardv1.Event
	take := func(es []*switchboardv1.Event) {
		for _, e := range es {
			if e != nil && (filter == nil || filter(e)) {
				out = append(out, e)
			}
		}
	}
	if b.full {
		take(b.ring[b.next:])
	}
	take(b.ring[:b.next])
	if n > 0 && len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// Subscribe returns a subscription to the events published from now on
// that filter takes (all of them, for a nil filter), with room for buffer
// events not yet read (buffer <= 0: DefaultSubscriberBuffer). The filter
// runs inside Publish, under the bus's lock: it must be quick and must not
// call the Bus. Close the subscription when done.
func (b *Bus) Subscribe(filter func(*switchboardv1.Event) bool, buffer int) *Subscription {
	if buffer <= 0 {
		buffer = DefaultSubscriberBuffer
	}
	s := &Subscription{b: b, filter: filter, ch: make(chan *switchboardv1.Event, buffer)}
	if b == nil {
		close(s.ch)
		s.ended = true
		return s
	}
	b.mu.Lock()
	b.subs = append(b.subs, s)
	b.mu.Unlock()
	return s
}

// BusStats are a bus's counters.
type BusStats struct {
	// Published counts events published; Sequence is the last one's.
	Published uint64
	// Subscribers is the number of subscriptions open now.
	Subscribers int
	// CutOff counts subscriptions cut off because they fell behind.
	CutOff uint64
}

// Stats returns the bus's counters.
func (b *Bus) Stats() BusStats {
	if b == nil {
		return BusStats{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return BusStats{Published: b.published, Subscribers: len(b.subs), CutOff: b.cutOff}
}

// Subscription is one subscriber's view of a Bus.
type Subscription struct {
	b      *Bus
	filter func(*switchboardv1.Event) bool
	ch     chan *switchboardv1.Event
	// Guarded by b.mu.
	last  uint64 // the sequence of the last event put in ch
	err   error
	ended bool // ch is closed
}

// C delivers the subscription's events in sequence order. It is closed
// when the subscriber is cut off (Err says so), after the events already
// in it, or by Close.
func (s *Subscription) C() <-chan *switchboardv1.Event { return s.ch }

// Err returns a *TooSlowError (ErrTooSlow) once the subscriber has been cut
// off for falling behind, nil otherwise.
func (s *Subscription) Err() error {
	if s.b == nil {
		return nil
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return s.err
}

// Close ends the subscription and closes C. It is safe to call more than
// once, and after the subscriber was cut off.
func (s *Subscription) Close() {
	if s.b == nil {
		return
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.ended {
		return
	}
	for i, o := range s.b.subs {
		if o == s {
			s.b.drop(i)
			return
		}
	}
}

// ErrTooSlow is what a TooSlowError is.
var ErrTooSlow = errors.New("the event subscriber fell behind and was cut off")

// TooSlowError reports a subscriber cut off because its buffer was full
// when an event for it was published.
type TooSlowError struct {
	// LastSequence is the sequence of the last event the subscriber was
	// given (0: none); every later one it would have taken is missed.
	LastSequence uint64
	// Buffer is the subscriber's buffer, in events.
	Buffer int
}

func (e *TooSlowError) Error() string {
	return fmt.Sprintf("the event subscriber fell %d events behind and was cut off after sequence %d", e.Buffer, e.LastSequence)
}

// Is reports whether target is ErrTooSlow.
func (e *TooSlowError) Is(target error) bool { return target == ErrTooSlow }

// Observer returns the transport Observer that turns a connection's rare
// events into Events: opened, closed (with the reason), a negative
// acknowledgement sent (NAK_SENT) or received (NAK_RECEIVED), a Send's
// reply that acknowledges another message or cannot be read
// (ACK_MISMATCH), no acknowledgement in time (ACK_TIMEOUT), a framing
// error, a rejected connection. It sets no FrameReceived, and AckSent and
// SendDone return at once for positive outcomes, so the per-message path
// costs a comparison or two and allocates nothing. Nil for a nil Bus.
func (b *Bus) Observer() *transport.Observer {
	if b == nil {
		return nil
	}
	return &transport.Observer{
		ConnOpened:   b.connOpened,
		AckSent:      b.ackSent,
		SendDone:     b.sendDone,
		FramingError: b.framingError,
		ConnClosed:   b.connClosed,
		ConnRejected: b.connRejected,
	}
}

// connEvent is an event about connection c.
func connEvent(kind switchboardv1.EventKind, c *transport.Conn) *switchboardv1.Event {
	info := c.Info() // rare events only: it takes the connection's lock
	return &switchboardv1.Event{Kind: kind, ListenerId: text(info.ListenerID), ConnectionId: text(info.ID),
		RemoteAddress: text(info.RemoteAddr)}
}

func (b *Bus) connOpened(c *transport.Conn) {
	e := connEvent(switchboardv1.EventKind_EVENT_KIND_CONNECTION_OPENED, c)
	e.Detail = c.Direction().String()
	b.Publish(e)
}

func (b *Bus) connClosed(_ *transport.Conn, info transport.ConnInfo) {
	e := &switchboardv1.Event{Kind: switchboardv1.EventKind_EVENT_KIND_CONNECTION_CLOSED,
		ListenerId: text(info.ListenerID), ConnectionId: text(info.ID), RemoteAddress: text(info.RemoteAddr),
		CloseReason: ProtoCloseReason(info.CloseReason), Detail: info.CloseReason.String()}
	if info.CloseErr != nil {
		e.Detail += ": " + info.CloseErr.Error()
	}
	e.Detail = text(e.Detail)
	b.Publish(e)
}

func (b *Bus) connRejected(listenerID, remoteAddr string, reason transport.RejectReason) {
	b.Publish(&switchboardv1.Event{Kind: switchboardv1.EventKind_EVENT_KIND_CONNECTION_REJECTED,
		ListenerId: text(listenerID), RemoteAddress: text(remoteAddr), Detail: "refused: " + reason.String()})
}

func (b *Bus) framingError(c *transport.Conn, err error) {
	e := connEvent(switchboardv1.EventKind_EVENT_KIND_FRAMING_ERROR, c)
	e.Detail = text(err.Error()) // FrameError and the read loop's errors never hold payload bytes
	b.Publish(e)
}

// ackSent runs for every acknowledgement written to a peer: positive ones
// return at once.
func (b *Bus) ackSent(c *transport.Conn, code transport.AckCode) {
	if code.Positive() {
		return
	}
	e := connEvent(switchboardv1.EventKind_EVENT_KIND_NAK_SENT, c)
	e.AckCode = ProtoAckCode(code)
	e.Detail = "answered " + code.String()
	b.Publish(e)
}

// sendDone runs for every Send and dispatched message: accepted ones (and
// those written under a policy without acknowledgements) return at once.
func (b *Bus) sendDone(c *transport.Conn, res transport.SendResult, err error) {
	if err == nil {
		if res.Outcome != transport.OutcomeRejected {
			return
		}
		e := connEvent(switchboardv1.EventKind_EVENT_KIND_NAK_RECEIVED, c)
		e.AckCode = ProtoAckCode(res.Ack.Code)
		e.ControlId = text(res.SentControlID)
		e.Detail = "the peer answered " + res.Ack.Code.String()
		b.Publish(e)
		return
	}
	var se *transport.SendError
	if !errors.As(err, &se) {
		return // an invalid payload: the caller was told, nothing happened on the wire
	}
	var e *switchboardv1.Event
	switch se.Cause {
	case transport.CauseAckTimeout:
		e = connEvent(switchboardv1.EventKind_EVENT_KIND_ACK_TIMEOUT, c)
		e.Detail = se.Error()
	case transport.CauseAckMismatch, transport.CauseAckUnreadable:
		e = connEvent(switchboardv1.EventKind_EVENT_KIND_ACK_MISMATCH, c)
		e.Detail = se.Error()
		if se.Ack != nil {
			e.AckCode = ProtoAckCode(se.Ack.Code)
			if se.Ack.ControlID != "" {
				e.Detail += "; it acknowledges " + se.Ack.ControlID
			}
		}
	default: // not sent, or the connection was lost: its CONNECTION_CLOSED tells
		return
	}
	e.ControlId = text(se.ControlID)
	e.Detail = text(e.Detail)
	b.Publish(e)
}

// RegistryHook returns the func for registry.Config.Events: it publishes
// LISTENER_STARTED, LISTENER_STOPPED, LISTENER_BIND_FAILED and
// CONNECTION_RECONNECTING. Nil for a nil Bus.
func (b *Bus) RegistryHook() func(registry.Event) {
	if b == nil {
		return nil
	}
	return b.registryEvent
}

func (b *Bus) registryEvent(re registry.Event) {
	e := &switchboardv1.Event{ListenerId: text(re.ListenerID), ConnectionId: text(re.ConnectionID),
		RemoteAddress: text(re.Address)}
	if !re.NextAttempt.IsZero() {
		e.NextAttemptTime = timestamppb.New(re.NextAttempt)
	}
	var detail string
	if re.Err != nil {
		detail = re.Err.Error()
	}
	switch re.Kind {
	case registry.EventListenerStarted:
		e.Kind = switchboardv1.EventKind_EVENT_KIND_LISTENER_STARTED
	case registry.EventListenerStopped:
		e.Kind = switchboardv1.EventKind_EVENT_KIND_LISTENER_STOPPED
		detail = "stopped"
		if re.ShuttingDown {
			detail = "the server is shutting down"
		}
	case registry.EventListenerBindFailed:
		e.Kind = switchboardv1.EventKind_EVENT_KIND_LISTENER_BIND_FAILED
		if re.NextAttempt.IsZero() {
			detail += "; nothing was created"
		} else {
			detail += fmt.Sprintf("; backing off, %d failed binds", re.Failed)
		}
	case registry.EventConnectionReconnecting:
		e.Kind = switchboardv1.EventKind_EVENT_KIND_CONNECTION_RECONNECTING
		if re.Failed > 0 {
			detail += fmt.Sprintf("; %d failed connects", re.Failed)
		}
	default:
		return
	}
	e.Detail = text(detail)
	b.Publish(e)
}

// OutboxHook returns the func for outbox.Config.Events: it publishes
// MESSAGE_IN_DOUBT and MESSAGE_FAILED, with the message's id and control id
// (never its payload). Nil for a nil Bus.
func (b *Bus) OutboxHook() func(outbox.Event) {
	if b == nil {
		return nil
	}
	return b.outboxEvent
}

func (b *Bus) outboxEvent(oe outbox.Event) {
	e := &switchboardv1.Event{ConnectionId: text(oe.ConnectionID), MessageId: text(oe.MessageID),
		ControlId: text(oe.ControlID), Detail: text(oe.Reason)}
	switch oe.Kind {
	case outbox.EventInDoubt:
		e.Kind = switchboardv1.EventKind_EVENT_KIND_MESSAGE_IN_DOUBT
	case outbox.EventFailed:
		e.Kind = switchboardv1.EventKind_EVENT_KIND_MESSAGE_FAILED
	default:
		return
	}
	b.Publish(e)
}

// FollowJournal publishes JOURNAL_FAILED when j's Health turns to a failure
// (at once, when it already failed) and JOURNAL_RECOVERED when it is nil
// again, until ctx ends or j is closed. It blocks: run it in a goroutine of
// its own. (service.New runs it for the journal of its Config when given a
// Bus.)
func (b *Bus) FollowJournal(ctx context.Context, j journal.Journal) {
	failed := false
	for {
		err, changed := j.Health()
		if changed == nil { // closed: there is no next change
			return
		}
		switch {
		case err != nil && !failed:
			b.Publish(&switchboardv1.Event{Kind: switchboardv1.EventKind_EVENT_KIND_JOURNAL_FAILED, Detail: text(err.Error())})
		case err == nil && failed:
			b.Publish(&switchboardv1.Event{Kind: switchboardv1.EventKind_EVENT_KIND_JOURNAL_RECOVERED, Detail: "appends work again"})
		}
		failed = err != nil
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// ProtoCloseReason is the API's value of r (UNSPECIFIED for none): the one
// mapping, which events and the service's resources both use (the
// service's TestEnumMappings checks every transport value has one).
func ProtoCloseReason(r transport.CloseReason) switchboardv1.CloseReason {
	return closeReasons[r]
}

// ProtoAckCode is the API's value of c (UNSPECIFIED when unreadable), for
// events and the service alike.
func ProtoAckCode(c transport.AckCode) switchboardv1.AckCode {
	return protoAckCodes[c]
}

var closeReasons = map[transport.CloseReason]switchboardv1.CloseReason{
	transport.CloseLocal:              switchboardv1.CloseReason_CLOSE_REASON_CLOSED_LOCALLY,
	transport.ClosePeerClosed:         switchboardv1.CloseReason_CLOSE_REASON_PEER_CLOSED,
	transport.ClosePeerClosedMidFrame: switchboardv1.CloseReason_CLOSE_REASON_PEER_CLOSED_MID_FRAME,
	transport.ClosePeerReset:          switchboardv1.CloseReason_CLOSE_REASON_PEER_RESET,
	transport.CloseIdleTimeout:        switchboardv1.CloseReason_CLOSE_REASON_IDLE_TIMEOUT,
	transport.CloseFrameTimeout:       switchboardv1.CloseReason_CLOSE_REASON_FRAME_TIMEOUT,
	transport.CloseFramingError:       switchboardv1.CloseReason_CLOSE_REASON_FRAMING_ERROR,
	transport.CloseFrameTooLarge:      switchboardv1.CloseReason_CLOSE_REASON_FRAME_TOO_LARGE,
	transport.CloseJunkLimit:          switchboardv1.CloseReason_CLOSE_REASON_JUNK_LIMIT,
	transport.CloseMemoryLimit:        switchboardv1.CloseReason_CLOSE_REASON_MEMORY_LIMIT,
	transport.CloseDrained:            switchboardv1.CloseReason_CLOSE_REASON_DRAINED,
	transport.CloseDrainTimeout:       switchboardv1.CloseReason_CLOSE_REASON_DRAIN_TIMEOUT,
	transport.CloseAckTimeout:         switchboardv1.CloseReason_CLOSE_REASON_ACK_TIMEOUT,
	transport.CloseAckMismatch:        switchboardv1.CloseReason_CLOSE_REASON_ACK_MISMATCH,
	transport.CloseSendCancelled:      switchboardv1.CloseReason_CLOSE_REASON_SEND_CANCELLED,
	transport.CloseSendWriteFailed:    switchboardv1.CloseReason_CLOSE_REASON_SEND_WRITE_FAILED,
	transport.CloseAckWriteFailed:     switchboardv1.CloseReason_CLOSE_REASON_ACK_WRITE_FAILED,
	transport.CloseNotStored:          switchboardv1.CloseReason_CLOSE_REASON_NOT_STORED,
	transport.CloseReadError:          switchboardv1.CloseReason_CLOSE_REASON_READ_ERROR,
}

var protoAckCodes = map[transport.AckCode]switchboardv1.AckCode{
	transport.AckAA:       switchboardv1.AckCode_ACK_CODE_AA,
	transport.AckAE:       switchboardv1.AckCode_ACK_CODE_AE,
	transport.AckAR:       switchboardv1.AckCode_ACK_CODE_AR,
	transport.AckCA:       switchboardv1.AckCode_ACK_CODE_CA,
	transport.AckCE:       switchboardv1.AckCode_ACK_CODE_CE,
	transport.AckCR:       switchboardv1.AckCode_ACK_CODE_CR,
	transport.AckByteACK:  switchboardv1.AckCode_ACK_CODE_BYTE_ACK,
	transport.AckByteNAK:  switchboardv1.AckCode_ACK_CODE_BYTE_NAK,
	transport.AckFixedACK: switchboardv1.AckCode_ACK_CODE_FIXED_ACK,
	transport.AckFixedNAK: switchboardv1.AckCode_ACK_CODE_FIXED_NAK,
}

// text makes s fit an event's string field: valid UTF-8 (bytes that are
// not are read as ISO-8859-1, as the API does for strings taken from
// messages) and at most maxDetailBytes, cut at a character boundary.
func text(s string) string {
	if !utf8.ValidString(s) {
		b := make([]byte, 0, min(len(s)+len(s)/2, maxDetailBytes+utf8.UTFMax))
		for i := 0; i < len(s) && len(b) < maxDetailBytes; i++ {
			b = utf8.AppendRune(b, rune(s[i]))
		}
		s = string(b)
	}
	if len(s) > maxDetailBytes {
		n := maxDetailBytes
		for !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return s
}
