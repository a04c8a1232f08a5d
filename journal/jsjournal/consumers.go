package jsjournal

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/journal"
)

// ConsumerStore keeps durable consumers (service/delivery's Store) in the
// cluster's Bucket: per consumer its state, opaque to the store, at
// consumer.<Token(name)>, and each dead letter at
// dead.<Token(name)>.<seq as 20 decimal digits>. It passes
// deliverytest.Run as pebblejournal's does. Names are tokens, so a name
// that prefixes another shares no key with it.
//
// A dead letter's value is pebblejournal's encoding: a version byte (1),
// then uvarints: deliveries, zigzag unix seconds, nanoseconds.
//
// Every write waits for its PubAck, synced or not: a Save that returned is
// on the stream's quorum, and readable by every instance. The store keeps
// no cache. Deletions purge the keys' subjects from the bucket's stream
// instead of writing delete markers, which a bucket of history 1 keeps for
// ever: every dead letter is deleted some day, and nobody watches these
// keys, so a deleted one leaves nothing behind.
//
// While NATS cannot be reached, calls fail with an error wrapping
// journal.ErrUnavailable; a write that failed so may still take effect
// later (its request may be sent on reconnect). It is safe for concurrent
// use; two instances saving the same consumer at once are not fenced here
// (the delivery manager runs a consumer on one instance).
type ConsumerStore struct {
	b *Bucket

	mu     sync.Mutex
	stream jetstream.Stream // the bucket's stream, once looked up
}

// NewConsumerStore returns the consumer store kept in b.
func NewConsumerStore(b *Bucket) *ConsumerStore { return &ConsumerStore{b: b} }

const (
	consumerPrefix = "consumer."
	deadPrefix     = "dead."
	deadLetterV1   = byte(1)
)

func consumerKey(name string) string { return consumerPrefix + Token(name) }

func deadKey(name string, seq uint64) string {
	return fmt.Sprintf("%s%s.%020d", deadPrefix, Token(name), seq)
}

func deadLetterValue(d journal.DeadLetter) []byte {
	v := make([]byte, 0, 1+3*binary.MaxVarintLen64)
	v = append(v, deadLetterV1)
	v = binary.AppendUvarint(v, uint64(d.Deliveries))
	v = binary.AppendVarint(v, d.Time.Unix()) // zigzag, as protowire's
	return binary.AppendUvarint(v, uint64(d.Time.Nanosecond()))
}

func decodeDeadLetter(key string, v []byte) (journal.DeadLetter, error) {
	bad := fmt.Errorf("malformed dead letter %q", key)
	i := strings.LastIndexByte(key, '.')
	seq, err := strconv.ParseUint(key[i+1:], 10, 64)
	if err != nil || len(v) == 0 || v[0] != deadLetterV1 {
		return journal.DeadLetter{}, bad
	}
	v = v[1:]
	deliveries, n := binary.Uvarint(v)
	if n <= 0 || deliveries > uint64(^uint32(0)) {
		return journal.DeadLetter{}, bad
	}
	v = v[n:]
	sec, n := binary.Varint(v)
	if n <= 0 {
		return journal.DeadLetter{}, bad
	}
	v = v[n:]
	nsec, n := binary.Uvarint(v)
	if n <= 0 || n != len(v) || nsec >= uint64(time.Second) {
		return journal.DeadLetter{}, bad
	}
	return journal.DeadLetter{Seq: seq, Deliveries: uint32(deliveries), Time: time.Unix(sec, int64(nsec)).UTC()}, nil
}

// Save replaces name's state and applies the dead letter changes: first
// addDead, then delDead. It returns once all of it is durable, sync or not
// (an unsynced Save costs the same round trips as a synced one).
//
// A bucket has no transaction over several keys, so Save writes one key
// at a time, in an order that never loses a dead letter: first the added
// dead letters (those delDead does not delete again), then the state,
// then the deletions. A Save that fails (or a crash) in between leaves a
// prefix of that: dead letters the old state does not know of yet, which
// is harmless (the consumer delivers those messages again from its old
// position, and a dead letter written again replaces its key), or the new
// state with dead letters it meant to delete, which read as if the
// deletions had not been asked for. The caller sees the error, and saving
// again completes it.
func (s *ConsumerStore) Save(ctx context.Context, name string, state []byte, addDead []journal.DeadLetter, delDead []uint64, sync bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkName("consumer", name); err != nil {
		return err
	}
	deleted := make(map[uint64]bool, len(delDead))
	for _, seq := range delDead {
		deleted[seq] = true
	}
	for _, d := range addDead {
		if deleted[d.Seq] {
			continue
		}
		if _, err := s.b.Put(ctx, deadKey(name, d.Seq), deadLetterValue(d), Fence{}); err != nil {
			return fmt.Errorf("jsjournal: save consumer %q: %w", name, err)
		}
	}
	if _, err := s.b.Put(ctx, consumerKey(name), state, Fence{}); err != nil {
		return fmt.Errorf("jsjournal: save consumer %q: %w", name, err)
	}
	for _, seq := range delDead {
		if err := s.purge(ctx, deadKey(name, seq)); err != nil {
			return fmt.Errorf("jsjournal: save consumer %q: %w", name, err)
		}
	}
	return nil
}

// Load calls fn for every stored consumer, by name, and stops at the first
// error fn returns. It reads everything first, so fn may call the store.
func (s *ConsumerStore) Load(ctx context.Context, fn func(name string, state []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := s.b.scan(ctx, consumerPrefix+"*")
	if err != nil {
		return fmt.Errorf("jsjournal: load consumers: %w", err)
	}
	type consumer struct {
		name  string
		state []byte
	}
	all := make([]consumer, 0, len(entries))
	for _, e := range entries {
		name, err := FromToken(strings.TrimPrefix(e.Key(), consumerPrefix))
		if err != nil {
			return fmt.Errorf("jsjournal: load consumers: malformed key %q", e.Key())
		}
		all = append(all, consumer{name, slices.Clone(e.Value())})
	}
	slices.SortFunc(all, func(a, b consumer) int { return strings.Compare(a.name, b.name) })
	for _, c := range all {
		if err := fn(c.name, c.state); err != nil {
			return err
		}
	}
	return nil
}

// DeadLetters returns up to n (n <= 0: all) of name's dead letters with a
// sequence above after, by sequence. It reads all of name's dead letters
// (they are few: a consumer keeps a bounded number).
func (s *ConsumerStore) DeadLetters(ctx context.Context, name string, after uint64, n int) ([]journal.DeadLetter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkName("consumer", name); err != nil {
		return nil, err
	}
	if after == ^uint64(0) {
		return nil, nil
	}
	entries, err := s.b.scan(ctx, deadPrefix+Token(name)+".*")
	if err != nil {
		return nil, fmt.Errorf("jsjournal: dead letters of %q: %w", name, err)
	}
	var out []journal.DeadLetter
	for _, e := range entries {
		d, err := decodeDeadLetter(e.Key(), e.Value())
		if err != nil {
			return nil, fmt.Errorf("jsjournal: dead letters of %q: %w", name, err)
		}
		if d.Seq > after {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b journal.DeadLetter) int { return cmp.Compare(a.Seq, b.Seq) })
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out, nil
}

// Delete removes name's state and dead letters and returns once that is
// durable. Removing one that does not exist is not an error. It purges
// all the dead letters at once first, then the state: a Delete that fails
// in between leaves the consumer there without dead letters, for Delete to
// be tried again, never dead letters of a consumer that is gone (which a
// new consumer of the same name would find).
func (s *ConsumerStore) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkName("consumer", name); err != nil {
		return err
	}
	if err := s.purge(ctx, deadPrefix+Token(name)+".*"); err != nil {
		return fmt.Errorf("jsjournal: delete consumer %q: %w", name, err)
	}
	if err := s.purge(ctx, consumerKey(name)); err != nil {
		return fmt.Errorf("jsjournal: delete consumer %q: %w", name, err)
	}
	return nil
}

// purge removes every message on the subjects of the keys filter matches
// (a key, or a pattern of keys), and returns once the stream applied that.
func (s *ConsumerStore) purge(ctx context.Context, filter string) error {
	ctx, cancel := context.WithTimeout(ctx, s.b.Timeout)
	defer cancel()
	s.mu.Lock()
	st := s.stream
	s.mu.Unlock()
	if st == nil {
		var err error
		if st, err = s.b.JS.Stream(ctx, "KV_"+s.b.Name); err != nil {
			return s.b.Err(err)
		}
		s.mu.Lock()
		s.stream = st
		s.mu.Unlock()
	}
	return s.b.Err(st.Purge(ctx, jetstream.WithPurgeSubject(s.b.Subject(filter))))
}
