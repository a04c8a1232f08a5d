package pebblejournal

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/switchboard-dev/switchboard/journal"
)

// ConsumerStore keeps durable consumers (service/delivery's Store) in the
// journal's database: per consumer its state, opaque to the store, and its
// dead letters, under key prefixes of their own. Its writes go through the
// journal's group commit, so a synced Save shares its fsync with records
// and the other stores' writes, and an unsynced one joins the next group
// without waiting for it. While the journal is unavailable writes fail at
// once with its failure (wrapping journal.ErrUnavailable).
//
// Saves are readable as soon as Save returns, synced or not: what a group
// not committed yet holds is kept in memory (staged) until the group
// settles. If the group fails, the consumer reads as it was before, as
// after a crash. It is safe for concurrent use.
type ConsumerStore struct {
	j *Journal

	mu     sync.Mutex
	gen    uint64 // numbers Saves, so a settling group removes only its own staged values
	staged map[string]*stagedConsumer
}

// stagedConsumer is what Saves not settled yet wrote for one consumer.
type stagedConsumer struct {
	state    []byte
	stateGen uint64 // 0: no state staged
	dead     map[uint64]stagedDead
}

type stagedDead struct {
	d   *journal.DeadLetter // nil: deleted
	gen uint64
}

// Consumers returns the consumer store kept in j's database. It is usable
// until j is closed.
func (j *Journal) Consumers() *ConsumerStore { return j.consumers }

// deadLetterV1 starts every stored dead letter: a version byte, then
// uvarints: deliveries, zigzag unix seconds, nanoseconds.
const deadLetterV1 byte = 1

func consumerKey(name string) []byte { return append([]byte{prefixConsumer}, name...) }

func deadLetterValue(d journal.DeadLetter) []byte {
	v := make([]byte, 0, 1+3*binary.MaxVarintLen64)
	v = append(v, deadLetterV1)
	v = binary.AppendUvarint(v, uint64(d.Deliveries))
	v = binary.AppendUvarint(v, protowire.EncodeZigZag(d.Time.Unix()))
	return binary.AppendUvarint(v, uint64(d.Time.Nanosecond()))
}

func decodeDeadLetter(k, v []byte) (journal.DeadLetter, error) {
	bad := fmt.Errorf("malformed dead letter %q", k)
	_, seq, ok := splitConnSeq(k[1:])
	if !ok || len(v) == 0 || v[0] != deadLetterV1 {
		return journal.DeadLetter{}, bad
	}
	v = v[1:]
	var f [3]uint64 // deliveries, zigzag seconds, nanoseconds
	for i := range f {
		x, n := binary.Uvarint(v)
		if n <= 0 {
			return journal.DeadLetter{}, bad
		}
		f[i], v = x, v[n:]
	}
	if len(v) != 0 || f[0] > uint64(^uint32(0)) || f[2] >= uint64(time.Second) {
		return journal.DeadLetter{}, bad
	}
	return journal.DeadLetter{Seq: seq, Deliveries: uint32(f[0]), Time: time.Unix(protowire.DecodeZigZag(f[1]), int64(f[2])).UTC()}, nil
}

// Save replaces name's state and applies the dead letter changes,
// atomically (one batch): first addDead, then delDead. With sync it
// returns once that is durable; without, at once, and the change becomes
// durable with the next group commit (a crash or storage failure before
// then loses it). Either way readers see it as soon as Save returns.
// Names must be non-empty and free of NUL.
func (s *ConsumerStore) Save(ctx context.Context, name string, state []byte, addDead []journal.DeadLetter, delDead []uint64, sync bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkName("consumer", name); err != nil {
		return err
	}
	ops := make([]op, 0, 1+len(addDead)+len(delDead))
	ops = append(ops, op{kind: opSet, key: consumerKey(name), val: bytes.Clone(state)})
	for _, d := range addDead {
		ops = append(ops, op{kind: opSet, key: connSeqKey(prefixDead, name, d.Seq), val: deadLetterValue(d)})
	}
	for _, seq := range delDead {
		ops = append(ops, op{kind: opDelete, key: connSeqKey(prefixDead, name, seq)})
	}
	s.mu.Lock()
	s.gen++
	gen := s.gen
	g, err := s.j.submit(write{ops: ops, epoch: anyEpoch, settled: func(error) { s.settle(name, gen) }})
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("journal: save consumer %q: %w", name, err)
	}
	// Staged before the group can settle: settle waits for s.mu.
	if s.staged == nil {
		s.staged = map[string]*stagedConsumer{}
	}
	st := s.staged[name]
	if st == nil {
		st = &stagedConsumer{dead: map[uint64]stagedDead{}}
		s.staged[name] = st
	}
	st.state, st.stateGen = ops[0].val, gen
	for _, d := range addDead {
		st.dead[d.Seq] = stagedDead{d: &d, gen: gen}
	}
	for _, seq := range delDead {
		st.dead[seq] = stagedDead{gen: gen}
	}
	s.mu.Unlock()
	if !sync {
		return nil
	}
	if err := wait(ctx, g); err != nil {
		return fmt.Errorf("journal: save consumer %q: %w", name, err)
	}
	return nil
}

// settle drops what the Save numbered gen staged for name, unless a later
// Save replaced it: its group committed (readers find it in the database)
// or failed (readers find what was there before).
func (s *ConsumerStore) settle(name string, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.staged[name]
	if st == nil {
		return
	}
	if st.stateGen == gen {
		st.state, st.stateGen = nil, 0
	}
	for seq, d := range st.dead {
		if d.gen == gen {
			delete(st.dead, seq)
		}
	}
	if st.stateGen == 0 && len(st.dead) == 0 {
		delete(s.staged, name)
	}
}

// snapshot returns copies of what is staged: states by name, and name's
// dead letters (all names' states if name is ""). Read before the
// database, so that a group settling in between is found there.
func (s *ConsumerStore) snapshot(name string) (states map[string][]byte, dead map[uint64]*journal.DeadLetter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	states = map[string][]byte{}
	for n, st := range s.staged {
		if st.stateGen != 0 {
			states[n] = st.state
		}
	}
	dead = map[uint64]*journal.DeadLetter{}
	if st := s.staged[name]; st != nil {
		for seq, d := range st.dead {
			dead[seq] = d.d
		}
	}
	return states, dead
}

// Load calls fn for every stored consumer, by name, and stops at the first
// error fn returns. It reads everything first, so fn may call the store.
func (s *ConsumerStore) Load(ctx context.Context, fn func(name string, state []byte) error) error {
	staged, _ := s.snapshot("")
	states := map[string][]byte{}
	err := s.j.iterate(ctx, []byte{prefixConsumer}, func(k, v []byte) error {
		states[string(k[1:])] = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal: load consumers: %w", err)
	}
	for n, v := range staged {
		states[n] = v
	}
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := fn(n, bytes.Clone(states[n])); err != nil {
			return err
		}
	}
	return nil
}

// DeadLetters returns up to n (n <= 0: all) of name's dead letters with a
// sequence above after, by sequence.
func (s *ConsumerStore) DeadLetters(ctx context.Context, name string, after uint64, n int) ([]journal.DeadLetter, error) {
	if err := checkName("consumer", name); err != nil {
		return nil, err
	}
	if after == ^uint64(0) {
		return nil, nil
	}
	_, staged := s.snapshot(name)
	var out []journal.DeadLetter
	from := connSeqKey(prefixDead, name, after+1)
	prefix := nameKey(prefixDead, name)
	err := s.j.view(ctx, func(r pebble.Reader) error {
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: from, UpperBound: prefixEnd(prefix)})
		if err != nil {
			return err
		}
		for ok := it.First(); ok && (n <= 0 || len(out) < n); ok = it.Next() {
			var v []byte
			if v, err = it.ValueAndErr(); err != nil {
				break
			}
			var d journal.DeadLetter
			if d, err = decodeDeadLetter(it.Key(), v); err != nil {
				break
			}
			if _, ok := staged[d.Seq]; !ok {
				out = append(out, d)
			}
		}
		return errors.Join(err, it.Close())
	})
	if err != nil {
		return nil, fmt.Errorf("journal: dead letters of %q: %w", name, err)
	}
	for seq, d := range staged {
		if d != nil && seq > after {
			out = append(out, *d)
		}
	}
	slices.SortFunc(out, func(a, b journal.DeadLetter) int { return cmp.Compare(a.Seq, b.Seq) })
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out, nil
}

// Delete removes name's state and dead letters and returns once that is
// durable. Removing one that does not exist is not an error.
func (s *ConsumerStore) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkName("consumer", name); err != nil {
		return err
	}
	prefix := nameKey(prefixDead, name)
	ops := []op{
		{kind: opDelete, key: consumerKey(name)},
		{kind: opDeleteRange, key: prefix, val: prefixEnd(prefix)},
	}
	s.mu.Lock()
	g, err := s.j.submit(write{ops: ops, epoch: anyEpoch})
	if err == nil {
		delete(s.staged, name) // what earlier Saves staged is deleted too
	}
	s.mu.Unlock()
	if err == nil {
		err = wait(ctx, g)
	}
	if err != nil {
		return fmt.Errorf("journal: delete consumer %q: %w", name, err)
	}
	return nil
}
