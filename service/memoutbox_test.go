package service_test

import (
	"context"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/service/outbox"
)

// memOutbox is a small in-memory outbox.Store for these tests, until the
// storage branch lands outbox.MemStore, the Pebble store and the
// conformance suite. It models durability the way the Store interface
// promises it: Append and Update with sync are durable, an Update without
// sync is not, and crash returns the store a restarted server would find.
type memOutbox struct {
	mu      sync.Mutex
	msgs    map[string][]*switchboardv1.Message // what the server sees; by connection, index = sequence - 1
	durable map[string][]*switchboardv1.Message // what survives a crash
	fail    error                               // returned by every call while set
	// onUpdate, when set, sees every Update (a copy), for tests that check
	// what was durable when.
	onUpdate func(m *switchboardv1.Message, sync bool)
}

var _ outbox.Store = (*memOutbox)(nil)

func newMemOutbox() *memOutbox {
	return &memOutbox{msgs: map[string][]*switchboardv1.Message{}, durable: map[string][]*switchboardv1.Message{}}
}

func (s *memOutbox) Append(_ context.Context, m *switchboardv1.Message) (*switchboardv1.Message, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, false, s.fail
	}
	conn := m.GetConnectionId()
	if k := m.GetIdempotencyKey(); k != "" {
		for _, old := range s.msgs[conn] {
			if old.GetIdempotencyKey() == k {
				return proto.CloneOf(old), false, nil
			}
		}
	}
	m.Sequence = uint64(len(s.msgs[conn]) + 1)
	m.MessageId = outbox.MessageID(conn, m.Sequence)
	s.msgs[conn] = append(s.msgs[conn], proto.CloneOf(m))
	s.durable[conn] = append(s.durable[conn], proto.CloneOf(m))
	return proto.CloneOf(m), true, nil
}

func (s *memOutbox) Update(_ context.Context, m *switchboardv1.Message, sync bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	conn, i := m.GetConnectionId(), int(m.GetSequence())-1
	if i < 0 || i >= len(s.msgs[conn]) {
		return outbox.ErrNotFound
	}
	s.msgs[conn][i] = proto.CloneOf(m)
	if sync {
		s.durable[conn][i] = proto.CloneOf(m)
	}
	if s.onUpdate != nil {
		s.onUpdate(proto.CloneOf(m), sync)
	}
	return nil
}

func (s *memOutbox) Get(_ context.Context, connID string, seq uint64) (*switchboardv1.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	ms := s.msgs[connID]
	if seq == 0 || seq > uint64(len(ms)) {
		return nil, outbox.ErrNotFound
	}
	return proto.CloneOf(ms[seq-1]), nil
}

func final(m *switchboardv1.Message) bool {
	st := m.GetState()
	return st == switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED || st == switchboardv1.MessageState_MESSAGE_STATE_FAILED
}

func (s *memOutbox) Pending(_ context.Context, connID string, after uint64, n int) ([]*switchboardv1.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	var out []*switchboardv1.Message
	for _, m := range s.msgs[connID] {
		if m.GetSequence() > after && !final(m) && len(out) < n {
			out = append(out, proto.CloneOf(m))
		}
	}
	return out, nil
}

func (s *memOutbox) PendingConnections(context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	var ids []string
	for id, ms := range s.msgs {
		if slices.ContainsFunc(ms, func(m *switchboardv1.Message) bool { return !final(m) }) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

func (s *memOutbox) Scan(_ context.Context, afterConn string, afterSeq uint64, n int) ([]*switchboardv1.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	var ids []string
	for id := range s.msgs {
		if id >= afterConn {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []*switchboardv1.Message
	for _, id := range ids {
		for _, m := range s.msgs[id] {
			if (id > afterConn || m.GetSequence() > afterSeq) && len(out) < n {
				out = append(out, proto.CloneOf(m))
			}
		}
	}
	return out, nil
}

// crash returns the store as a server restarted after a crash finds it:
// only what was durable.
func (s *memOutbox) crash() *memOutbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := newMemOutbox()
	for id, ms := range s.durable {
		for _, m := range ms {
			c.msgs[id] = append(c.msgs[id], proto.CloneOf(m))
			c.durable[id] = append(c.durable[id], proto.CloneOf(m))
		}
	}
	return c
}

// durableState is the state of a message that would survive a crash.
func (s *memOutbox) durableState(connID string, seq uint64) switchboardv1.MessageState {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := s.durable[connID]
	if seq == 0 || seq > uint64(len(ms)) {
		return switchboardv1.MessageState_MESSAGE_STATE_UNSPECIFIED
	}
	return ms[seq-1].GetState()
}

func (s *memOutbox) failWith(err error) {
	s.mu.Lock()
	s.fail = err
	s.mu.Unlock()
}
