package delivery

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/switchboard-dev/switchboard/journal"
)

// DeadLetter is a message a consumer gave up on after MaxDeliveries. It is
// journal.DeadLetter, so that storage backends can implement Store without
// importing this package.
type DeadLetter = journal.DeadLetter

// Store persists consumers: each one's state (opaque to the store) and its
// dead letters. *pebblejournal.ConsumerStore keeps them in the journal's
// database; MemStore in memory. deliverytest.Run checks a Store. It is
// safe for concurrent use.
type Store interface {
	// Save replaces name's state and applies the dead letter changes,
	// atomically: first addDead (replacing dead letters of the same
	// sequence), then delDead (sequences that are not dead letters are
	// ignored). sync: return once durable; else return once readable
	// (durable with the next synced write).
	Save(ctx context.Context, name string, state []byte, addDead []DeadLetter, delDead []uint64, sync bool) error
	// Load calls fn for every stored consumer, by name, and stops at the
	// first error fn returns. fn may keep state.
	Load(ctx context.Context, fn func(name string, state []byte) error) error
	// DeadLetters returns up to n (n <= 0: all) of name's dead letters
	// with a sequence above after, by sequence. None for an unknown name.
	DeadLetters(ctx context.Context, name string, after uint64, n int) ([]DeadLetter, error)
	// Delete removes name's state and dead letters; a missing name is not
	// an error.
	Delete(ctx context.Context, name string) error
}

var _ Store = (*MemStore)(nil)

// MemStore is a Store in memory, for tests and for running without a data
// directory. Everything is durable at once (as durable as the process).
// The zero value is ready to use; it is safe for concurrent use.
type MemStore struct {
	mu        sync.Mutex
	consumers map[string]*memConsumer
}

type memConsumer struct {
	state []byte
	dead  map[uint64]DeadLetter
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{} }

// Save replaces name's state and applies the dead letter changes; see Store.
func (s *MemStore) Save(ctx context.Context, name string, state []byte, addDead []DeadLetter, delDead []uint64, _ bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.consumers == nil {
		s.consumers = map[string]*memConsumer{}
	}
	c := s.consumers[name]
	if c == nil {
		c = &memConsumer{dead: map[uint64]DeadLetter{}}
		s.consumers[name] = c
	}
	c.state = bytes.Clone(state)
	for _, d := range addDead {
		c.dead[d.Seq] = d
	}
	for _, seq := range delDead {
		delete(c.dead, seq)
	}
	return nil
}

// Load calls fn for every consumer, by name; see Store.
func (s *MemStore) Load(ctx context.Context, fn func(name string, state []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	type entry struct {
		name  string
		state []byte
	}
	s.mu.Lock()
	all := make([]entry, 0, len(s.consumers))
	for name, c := range s.consumers {
		all = append(all, entry{name, bytes.Clone(c.state)})
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b entry) int { return cmp.Compare(a.name, b.name) })
	for _, e := range all {
		if err := fn(e.name, e.state); err != nil {
			return err
		}
	}
	return nil
}

// DeadLetters returns name's dead letters after a sequence; see Store.
func (s *MemStore) DeadLetters(ctx context.Context, name string, after uint64, n int) ([]DeadLetter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	var out []DeadLetter
	if c := s.consumers[name]; c != nil {
		for seq, d := range c.dead {
			if seq > after {
				out = append(out, d)
			}
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b DeadLetter) int { return cmp.Compare(a.Seq, b.Seq) })
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out, nil
}

// Delete removes name's state and dead letters; see Store.
func (s *MemStore) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.consumers, name)
	return nil
}

// checkName rejects a consumer name no store can key: empty, or holding
// NUL.
func checkName(name string) error {
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("%w: consumer name %q must be non-empty and must not contain NUL", ErrInvalid, name)
	}
	return nil
}
