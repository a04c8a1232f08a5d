package outbox

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

var _ Store = (*MemStore)(nil)

// MemStore is a Store in memory: queued messages live as long as the
// process, for tests and for running without a data directory. It keeps
// every message (no retention) and passes outboxtest.Run (without the
// reopen tests). The zero value is ready to use and it is safe for
// concurrent use.
type MemStore struct {
	mu    sync.Mutex
	conns map[string]*memQueue
}

// memQueue is one connection's messages; sequences are dense, so message
// seq is msgs[seq-1].
type memQueue struct {
	msgs []*switchboardv1.Message // stored copies, never handed out
	keys map[string]uint64        // idempotency key -> sequence
}

func memClone(m *switchboardv1.Message) *switchboardv1.Message {
	return proto.Clone(m).(*switchboardv1.Message)
}

// memFinal reports whether a message in state s is done with (delivered or
// failed).
func memFinal(s switchboardv1.MessageState) bool {
	return s == switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED || s == switchboardv1.MessageState_MESSAGE_STATE_FAILED
}

func memNotFound(conn string, seq uint64) error {
	return fmt.Errorf("outbox: message %d of connection %q: %w", seq, conn, ErrNotFound)
}

// Append stores m as the next message of m.ConnectionId; see Store.
func (s *MemStore) Append(ctx context.Context, m *switchboardv1.Message) (*switchboardv1.Message, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	conn := m.GetConnectionId()
	if conn == "" {
		return nil, false, fmt.Errorf("outbox: append: no connection id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[string]*memQueue{}
	}
	q := s.conns[conn]
	if q == nil {
		q = &memQueue{keys: map[string]uint64{}}
		s.conns[conn] = q
	}
	if key := m.GetIdempotencyKey(); key != "" {
		if seq, ok := q.keys[key]; ok {
			return memClone(q.msgs[seq-1]), false, nil
		}
		q.keys[key] = uint64(len(q.msgs) + 1)
	}
	m.Sequence = uint64(len(q.msgs) + 1)
	m.MessageId = "out-" + conn + "-" + strconv.FormatUint(m.Sequence, 10)
	q.msgs = append(q.msgs, memClone(m))
	return m, true, nil
}

// Update stores m's new state; see Store. Its message id and idempotency
// key cannot change. Everything is as durable as the process, so sync
// changes nothing.
func (s *MemStore) Update(ctx context.Context, m *switchboardv1.Message, sync bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.get(m.GetConnectionId(), m.GetSequence())
	if err != nil {
		return err
	}
	if m.GetMessageId() != old.GetMessageId() || m.GetIdempotencyKey() != old.GetIdempotencyKey() {
		return fmt.Errorf("outbox: update of message %q: its message id and idempotency key cannot change", old.GetMessageId())
	}
	s.conns[m.GetConnectionId()].msgs[m.GetSequence()-1] = memClone(m)
	return nil
}

// get returns the stored message. s.mu must be held.
func (s *MemStore) get(conn string, seq uint64) (*switchboardv1.Message, error) {
	q := s.conns[conn]
	if q == nil || seq == 0 || seq > uint64(len(q.msgs)) {
		return nil, memNotFound(conn, seq)
	}
	return q.msgs[seq-1], nil
}

// Get returns the message of connection conn at seq, or an error wrapping
// ErrNotFound.
func (s *MemStore) Get(ctx context.Context, conn string, seq uint64) (*switchboardv1.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get(conn, seq)
	if err != nil {
		return nil, err
	}
	return memClone(m), nil
}

// Pending returns up to n (at least 1) messages of conn that are not final
// with a sequence above after, in sequence order.
func (s *MemStore) Pending(ctx context.Context, conn string, after uint64, n int) ([]*switchboardv1.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.conns[conn]
	if q == nil || after >= uint64(len(q.msgs)) {
		return nil, nil
	}
	var out []*switchboardv1.Message
	for _, m := range q.msgs[after:] {
		if !memFinal(m.GetState()) {
			out = append(out, memClone(m))
			if len(out) == max(n, 1) {
				break
			}
		}
	}
	return out, nil
}

// PendingConnections returns the ids of the connections that have pending
// messages, sorted.
func (s *MemStore) PendingConnections(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for conn, q := range s.conns {
		if slices.ContainsFunc(q.msgs, func(m *switchboardv1.Message) bool { return !memFinal(m.GetState()) }) {
			out = append(out, conn)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Scan returns up to n (at least 1) messages after position (afterConn,
// afterSeq), in (connection id, sequence) order; afterConn "" starts at
// the beginning.
func (s *MemStore) Scan(ctx context.Context, afterConn string, afterSeq uint64, n int) ([]*switchboardv1.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]string, 0, len(s.conns))
	for conn := range s.conns {
		if afterConn == "" || conn >= afterConn {
			conns = append(conns, conn)
		}
	}
	slices.Sort(conns)
	n = max(n, 1)
	var out []*switchboardv1.Message
	for _, conn := range conns {
		msgs := s.conns[conn].msgs
		if conn == afterConn {
			msgs = msgs[min(afterSeq, uint64(len(msgs))):]
		}
		for _, m := range msgs {
			if len(out) == n {
				return out, nil
			}
			out = append(out, memClone(m))
		}
	}
	return out, nil
}
