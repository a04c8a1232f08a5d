package pebblejournal

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
)

// Outbox is the durable outbox (service/outbox's Store) kept in the
// journal's database: per connection, an ordered queue of
// *switchboardv1.Message values and their delivery state, under key
// prefixes of its own. Its writes go through the journal's group commit,
// so an Append shares its fsync with records and other appends; an
// unsynced Update joins the next group without waiting for it. While the
// journal is unavailable every write fails at once with its failure
// (wrapping journal.ErrUnavailable), and works again after it recovers. It
// is safe for concurrent use.
//
// Besides the messages it keeps three indexes, written in the same batch
// as the message: pending messages (so Pending and PendingConnections never
// read delivered history), final messages by the time they became final
// (so retention finds what is old without reading messages), and
// idempotency keys. And per connection the last sequence given out, so
// that a sequence is never given out twice, even after retention deleted
// every message of the connection.
//
// Updates are visible to readers as soon as Update returns, synced or not:
// the newest state of a message whose write is not committed yet is kept in
// memory (staged) until its group settles. If the group fails, the message
// reads as it was before, as after a crash.
type Outbox struct {
	j *Journal

	mu        sync.Mutex
	epoch     uint64                // j.epoch the fields below are valid for
	next      map[string]uint64     // connection -> last sequence given out, once read
	staged    map[msgID]*staged     // updates not settled yet
	appending map[idemID]*appending // appends with an idempotency key, not settled yet
	deleting  map[string][]seqRange // retention's deletions not settled yet, by connection
	// touched counts updates of final messages, so that retention, which
	// plans its deletions without the lock, knows when a plan may be stale.
	touched uint64
}

type msgID struct {
	conn string
	seq  uint64
}

type idemID struct{ conn, key string }

// staged is the newest state of a message whose update is not committed.
type staged struct {
	m       *switchboardv1.Message // never modified; readers get clones
	finalAt int64
}

// appending is an append with an idempotency key whose group has not
// settled: a second Append with the key waits for it.
type appending struct {
	m *switchboardv1.Message // as stored; never modified
	g *group
}

// seqRange is the sequences [from, to).
type seqRange struct{ from, to uint64 }

func newOutbox(j *Journal) *Outbox {
	return &Outbox{j: j}
}

// Outbox returns the outbox kept in j's database. It is usable until j is
// closed.
func (j *Journal) Outbox() *Outbox { return j.outbox }

// Stored outbox values start with a version byte and the time the message
// became final (uvarint unix nanoseconds, 0 while it is not), which Update
// needs to find its final index entry; then the message in protobuf wire
// format (deterministic).
const outboxValueV1 byte = 1

func encodeMessage(m *switchboardv1.Message, finalAt int64) ([]byte, error) {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+proto.Size(m))
	b = append(b, outboxValueV1)
	b = binary.AppendUvarint(b, uint64(finalAt))
	return proto.MarshalOptions{Deterministic: true}.MarshalAppend(b, m)
}

func decodeMessage(v []byte) (*switchboardv1.Message, int64, error) {
	if len(v) == 0 || v[0] != outboxValueV1 {
		return nil, 0, errors.New("malformed outbox value")
	}
	finalAt, n := binary.Uvarint(v[1:])
	if n <= 0 {
		return nil, 0, errors.New("malformed outbox value")
	}
	m := new(switchboardv1.Message)
	if err := proto.Unmarshal(v[1+n:], m); err != nil {
		return nil, 0, fmt.Errorf("malformed outbox value: %w", err)
	}
	return m, int64(finalAt), nil
}

// final reports whether a message in state s is done with: delivered or
// failed. Everything else is pending.
func final(s switchboardv1.MessageState) bool {
	return s == switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED || s == switchboardv1.MessageState_MESSAGE_STATE_FAILED
}

func finalKey(finalAt int64, conn string, seq uint64) []byte {
	k := make([]byte, 0, 1+8+len(conn)+1+8)
	k = append(k, prefixOutFinal)
	k = binary.BigEndian.AppendUint64(k, uint64(finalAt))
	k = append(k, conn...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// finalValue is a final index entry's value: the message's stored size
// (for MaxBytes) and its idempotency key (so retention can delete it
// without reading the message).
func finalValue(size int, key string) []byte {
	return append(binary.AppendUvarint(nil, uint64(size)), key...)
}

func seqKey(conn string) []byte { return append([]byte{prefixOutSeq}, conn...) }

func idemKey(conn, key string) []byte { return append(nameKey(prefixOutIdem, conn), key...) }

func messageID(conn string, seq uint64) string {
	return "out-" + conn + "-" + strconv.FormatUint(seq, 10)
}

func notFound(conn string, seq uint64) error {
	return fmt.Errorf("outbox: message %d of connection %q: %w", seq, conn, journal.ErrNotFound)
}

// resync drops what o cached about the database when a failure came since
// it was read: the failed writes may or may not have reached the disk.
// Settle callbacks of those writes may still run later; they only remove
// entries that are still theirs. o.mu must be held.
func (o *Outbox) resync() {
	if e := o.j.epoch.Load(); e != o.epoch || o.next == nil {
		o.epoch = e
		o.next = map[string]uint64{}
		o.staged = map[msgID]*staged{}
		o.appending = map[idemID]*appending{}
		o.deleting = map[string][]seqRange{}
	}
}

// Append stores m as the next message of m.ConnectionId and returns once it
// is durable: it sets m.Sequence (1, 2, ... per connection, never given out
// twice) and m.MessageId ("out-<connection>-<sequence>"). When
// m.IdempotencyKey is set and a message of the connection already has it,
// nothing is stored and that message is returned with created false; the
// keys of messages retention deleted are forgotten with them. m is not
// retained.
//
// If ctx ends first, Append returns its error, and m may still be stored.
func (o *Outbox) Append(ctx context.Context, m *switchboardv1.Message) (*switchboardv1.Message, bool, error) {
	for {
		stored, created, err := o.append(ctx, m)
		if err != errEpoch {
			return stored, created, err
		}
	}
}

func (o *Outbox) append(ctx context.Context, m *switchboardv1.Message) (*switchboardv1.Message, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	conn, key := m.GetConnectionId(), m.GetIdempotencyKey()
	if err := checkName("outbox: connection id", conn); err != nil {
		return nil, false, err
	}
	o.mu.Lock()
	o.resync()
	if key != "" {
		if a := o.appending[idemID{conn, key}]; a != nil {
			o.mu.Unlock()
			if err := wait(ctx, a.g); err != nil {
				return nil, false, err
			}
			return proto.Clone(a.m).(*switchboardv1.Message), false, nil
		}
		first, err := o.byKeyLocked(ctx, conn, key)
		if err != nil || first != nil {
			o.mu.Unlock()
			return first, false, err
		}
	}
	seq, err := o.nextSeqLocked(ctx, conn)
	if err != nil {
		o.mu.Unlock()
		return nil, false, err
	}
	m.Sequence, m.MessageId = seq, messageID(conn, seq)
	var finalAt int64
	if final(m.GetState()) {
		finalAt = o.j.now().UnixNano()
	}
	v, err := encodeMessage(m, finalAt)
	if err != nil {
		o.mu.Unlock()
		return nil, false, fmt.Errorf("outbox: append: %w", err)
	}
	var sv [8]byte
	binary.BigEndian.PutUint64(sv[:], seq)
	ops := []op{
		{kind: opSet, key: connSeqKey(prefixOutMsg, conn, seq), val: v},
		{kind: opSet, key: seqKey(conn), val: sv[:]},
	}
	if finalAt == 0 {
		ops = append(ops, op{kind: opSet, key: connSeqKey(prefixOutPending, conn, seq)})
	} else {
		ops = append(ops, op{kind: opSet, key: finalKey(finalAt, conn, seq), val: finalValue(len(v), key)})
	}
	var settled func(error)
	var a *appending
	if key != "" {
		ops = append(ops, op{kind: opSet, key: idemKey(conn, key), val: sv[:]})
		a = &appending{m: proto.Clone(m).(*switchboardv1.Message)}
		id := idemID{conn, key}
		settled = func(error) {
			o.mu.Lock()
			if o.appending[id] == a {
				delete(o.appending, id)
			}
			o.mu.Unlock()
		}
	}
	g, err := o.j.submit(write{ops: ops, settled: settled, epoch: o.epoch})
	if err != nil {
		o.mu.Unlock()
		return nil, false, err
	}
	o.next[conn] = seq
	if a != nil {
		a.g = g
		o.appending[idemID{conn, key}] = a
	}
	o.mu.Unlock()
	if err := wait(ctx, g); err != nil {
		return nil, false, err
	}
	return m, true, nil
}

// nextSeqLocked returns the sequence the next message of conn gets. o.mu
// must be held.
func (o *Outbox) nextSeqLocked(ctx context.Context, conn string) (uint64, error) {
	last, ok := o.next[conn]
	if !ok {
		var err error
		if last, err = o.readUint64(ctx, seqKey(conn), "sequence counter", conn); err != nil {
			return 0, err
		}
	}
	return last + 1, nil
}

// byKeyLocked returns the message of conn stored with idempotency key key,
// or nil. o.mu must be held.
func (o *Outbox) byKeyLocked(ctx context.Context, conn, key string) (*switchboardv1.Message, error) {
	seq, err := o.readUint64(ctx, idemKey(conn, key), "idempotency entry", conn)
	if err != nil || seq == 0 {
		return nil, err
	}
	m, _, err := o.currentLocked(ctx, conn, seq)
	if errors.Is(err, journal.ErrNotFound) {
		return nil, nil // cannot happen: the key goes with its message
	}
	return m, err
}

// readUint64 reads a committed 8-byte big-endian value (what names it in
// an error); 0 when key is absent.
func (o *Outbox) readUint64(ctx context.Context, key []byte, what, conn string) (uint64, error) {
	var n uint64
	err := o.j.view(ctx, func(db pebble.Reader) error {
		v, closer, err := db.Get(key)
		if errors.Is(err, pebble.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		defer closer.Close()
		if len(v) != 8 {
			return fmt.Errorf("outbox: malformed %s of %q", what, conn)
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, err
}

// currentLocked returns the newest state of a message: staged, else
// committed. The result must not be modified. o.mu must be held.
func (o *Outbox) currentLocked(ctx context.Context, conn string, seq uint64) (*switchboardv1.Message, int64, error) {
	if st := o.staged[msgID{conn, seq}]; st != nil {
		return st.m, st.finalAt, nil
	}
	return o.j.readMessage(ctx, conn, seq)
}

// readMessage reads a committed message.
func (j *Journal) readMessage(ctx context.Context, conn string, seq uint64) (*switchboardv1.Message, int64, error) {
	var (
		m       *switchboardv1.Message
		finalAt int64
	)
	err := j.view(ctx, func(db pebble.Reader) error {
		v, closer, err := db.Get(connSeqKey(prefixOutMsg, conn, seq))
		if errors.Is(err, pebble.ErrNotFound) {
			return notFound(conn, seq)
		}
		if err != nil {
			return err
		}
		defer closer.Close()
		m, finalAt, err = decodeMessage(v)
		return err
	})
	return m, finalAt, err
}

// Update stores m's new state; m must have been appended (same connection
// and sequence; its message id and idempotency key cannot change), else
// the error wraps journal.ErrNotFound. With sync it returns once the change
// is durable; without, it returns at once, and the change becomes durable
// with the next group commit (a crash or storage failure before then
// loses it: the message then reads as before). Either way readers see the
// change as soon as Update returns. m is not retained.
func (o *Outbox) Update(ctx context.Context, m *switchboardv1.Message, sync bool) error {
	for {
		g, err := o.update(ctx, m)
		if err == errEpoch {
			continue
		}
		if err != nil || !sync {
			return err
		}
		return wait(ctx, g)
	}
}

func (o *Outbox) update(ctx context.Context, m *switchboardv1.Message) (*group, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn, seq := m.GetConnectionId(), m.GetSequence()
	if err := checkName("outbox: connection id", conn); err != nil {
		return nil, err
	}
	if seq == 0 {
		return nil, notFound(conn, seq)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.resync()
	for _, r := range o.deleting[conn] {
		if seq >= r.from && seq < r.to {
			return nil, notFound(conn, seq) // retention is deleting it
		}
	}
	old, finalAt, err := o.currentLocked(ctx, conn, seq)
	if err != nil {
		return nil, err
	}
	if m.GetMessageId() != old.GetMessageId() || m.GetIdempotencyKey() != old.GetIdempotencyKey() {
		return nil, fmt.Errorf("outbox: update of message %q: its message id and idempotency key cannot change", old.GetMessageId())
	}
	wasFinal, isFinal := final(old.GetState()), final(m.GetState())
	if wasFinal {
		o.touched++
	}
	oldFinalAt := finalAt
	switch {
	case !wasFinal && isFinal:
		finalAt = o.j.now().UnixNano()
	case wasFinal && !isFinal:
		finalAt = 0
	}
	v, err := encodeMessage(m, finalAt)
	if err != nil {
		return nil, fmt.Errorf("outbox: update: %w", err)
	}
	// The indexes change only with finality (the final index's value also
	// with the size), so the worker's steps between queued and awaiting
	// ACK write the message alone.
	ops := []op{{kind: opSet, key: connSeqKey(prefixOutMsg, conn, seq), val: v}}
	switch {
	case !wasFinal && isFinal:
		ops = append(ops, op{kind: opDelete, key: connSeqKey(prefixOutPending, conn, seq)})
	case wasFinal && !isFinal:
		ops = append(ops, op{kind: opDelete, key: finalKey(oldFinalAt, conn, seq)},
			op{kind: opSet, key: connSeqKey(prefixOutPending, conn, seq)})
	}
	if isFinal {
		ops = append(ops, op{kind: opSet, key: finalKey(finalAt, conn, seq), val: finalValue(len(v), m.GetIdempotencyKey())})
	}
	st := &staged{m: proto.Clone(m).(*switchboardv1.Message), finalAt: finalAt}
	id := msgID{conn, seq}
	g, err := o.j.submit(write{ops: ops, epoch: o.epoch, settled: func(error) {
		o.mu.Lock()
		if o.staged[id] == st {
			delete(o.staged, id)
		}
		o.mu.Unlock()
	}})
	if err != nil {
		return nil, err
	}
	o.staged[id] = st
	return g, nil
}

// Get returns the message of connection conn at seq; the error wraps
// journal.ErrNotFound when there is none.
func (o *Outbox) Get(ctx context.Context, conn string, seq uint64) (*switchboardv1.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o.mu.Lock()
	o.resync()
	st := o.staged[msgID{conn, seq}]
	o.mu.Unlock()
	if st != nil {
		return proto.Clone(st.m).(*switchboardv1.Message), nil
	}
	// Read after looking at staged: an update staged after that look is
	// not seen, as if this Get came first; one committed meanwhile is.
	m, _, err := o.j.readMessage(ctx, conn, seq)
	return m, err
}

// stagedSnapshot returns the staged messages of conn (all connections if
// conn is "") with a sequence above after, in (connection, sequence)
// order.
func (o *Outbox) stagedSnapshot(conn string, after uint64) []*switchboardv1.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.resync()
	var out []*switchboardv1.Message
	for id, st := range o.staged {
		if (conn == "" || id.conn == conn) && id.seq > after {
			out = append(out, st.m)
		}
	}
	slices.SortFunc(out, compareMessages)
	return out
}

func compareMessages(a, b *switchboardv1.Message) int {
	return cmp.Or(cmp.Compare(a.GetConnectionId(), b.GetConnectionId()), cmp.Compare(a.GetSequence(), b.GetSequence()))
}

// Pending returns up to n (at least 1) messages of conn that are not final,
// with a sequence above after, in sequence order. It reads the pending
// index, never the delivered history.
func (o *Outbox) Pending(ctx context.Context, conn string, after uint64, n int) ([]*switchboardv1.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkName("outbox: connection id", conn); err != nil {
		return nil, err
	}
	staged := o.stagedSnapshot(conn, after)
	n = max(n, 1)
	var out []*switchboardv1.Message
	emit := func(m *switchboardv1.Message) bool {
		if !final(m.GetState()) {
			out = append(out, proto.Clone(m).(*switchboardv1.Message))
		}
		return len(out) < n
	}
	err := o.j.view(ctx, func(db pebble.Reader) error {
		pit, err := db.NewIter(&pebble.IterOptions{
			LowerBound: connSeqKey(prefixOutPending, conn, after+1),
			UpperBound: prefixEnd(nameKey(prefixOutPending, conn)),
		})
		if err != nil {
			return err
		}
		mit, err := db.NewIter(&pebble.IterOptions{
			LowerBound: connSeqKey(prefixOutMsg, conn, after+1),
			UpperBound: prefixEnd(nameKey(prefixOutMsg, conn)),
		})
		if err != nil {
			return errors.Join(err, pit.Close())
		}
		more := true
		for ok := pit.First(); ok && more && err == nil; ok = pit.Next() {
			_, seq, _ := splitConnSeq(pit.Key()[1:])
			for len(staged) > 0 && staged[0].GetSequence() < seq && more {
				more = emit(staged[0]) // staged pending again, not in the committed index
				staged = staged[1:]
			}
			if !more {
				break
			}
			if len(staged) > 0 && staged[0].GetSequence() == seq {
				more = emit(staged[0])
				staged = staged[1:]
				continue
			}
			if !mit.SeekGE(connSeqKey(prefixOutMsg, conn, seq)) || !bytes.Equal(mit.Key(), connSeqKey(prefixOutMsg, conn, seq)) {
				err = fmt.Errorf("outbox: pending message %d of %q is missing", seq, conn)
				break
			}
			var v []byte
			if v, err = mit.ValueAndErr(); err != nil {
				break
			}
			var m *switchboardv1.Message
			if m, _, err = decodeMessage(v); err != nil {
				break
			}
			out = append(out, m)
			more = len(out) < n
		}
		for len(staged) > 0 && more && err == nil {
			more = emit(staged[0])
			staged = staged[1:]
		}
		return errors.Join(err, pit.Close(), mit.Close())
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: pending: %w", err)
	}
	return out, nil
}

// PendingConnections returns the ids of the connections with pending
// messages, sorted. It visits one index entry per connection.
func (o *Outbox) PendingConnections(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	staged := map[string]bool{}
	for _, m := range o.stagedSnapshot("", 0) {
		staged[m.GetConnectionId()] = true
	}
	var conns []string
	err := o.j.view(ctx, func(db pebble.Reader) error {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixOutPending}, UpperBound: []byte{prefixOutPending + 1}})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; {
			conn, _, valid := splitConnSeq(it.Key()[1:])
			if !valid {
				err = fmt.Errorf("outbox: unexpected key %q", it.Key())
				break
			}
			if !staged[conn] {
				conns = append(conns, conn)
			}
			ok = it.SeekGE(prefixEnd(nameKey(prefixOutPending, conn)))
		}
		return errors.Join(err, it.Close())
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: pending connections: %w", err)
	}
	// Staged updates may have made a connection's messages final, or one
	// pending again: ask those connections one by one (there are few).
	for conn := range staged {
		p, err := o.Pending(ctx, conn, 0, 1)
		if err != nil {
			return nil, err
		}
		if len(p) > 0 {
			conns = append(conns, conn)
		}
	}
	slices.Sort(conns)
	return conns, nil
}

// Scan returns up to n (at least 1) messages after position (afterConn,
// afterSeq), in (connection id, sequence) order; afterConn "" starts at
// the beginning.
func (o *Outbox) Scan(ctx context.Context, afterConn string, afterSeq uint64, n int) ([]*switchboardv1.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	staged := map[msgID]*switchboardv1.Message{}
	for _, m := range o.stagedSnapshot("", 0) {
		staged[msgID{m.GetConnectionId(), m.GetSequence()}] = m
	}
	n = max(n, 1)
	lower := []byte{prefixOutMsg}
	if afterConn != "" {
		if afterSeq == ^uint64(0) {
			lower = prefixEnd(nameKey(prefixOutMsg, afterConn))
		} else {
			lower = connSeqKey(prefixOutMsg, afterConn, afterSeq+1)
		}
	}
	var out []*switchboardv1.Message
	err := o.j.view(ctx, func(db pebble.Reader) error {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{prefixOutMsg + 1}})
		if err != nil {
			return err
		}
		for ok := it.First(); ok && len(out) < n; ok = it.Next() {
			conn, seq, valid := splitConnSeq(it.Key()[1:])
			if !valid {
				err = fmt.Errorf("outbox: unexpected key %q", it.Key())
				break
			}
			if m := staged[msgID{conn, seq}]; m != nil {
				out = append(out, proto.Clone(m).(*switchboardv1.Message))
				continue
			}
			var v []byte
			if v, err = it.ValueAndErr(); err != nil {
				break
			}
			var m *switchboardv1.Message
			if m, _, err = decodeMessage(v); err != nil {
				break
			}
			out = append(out, m)
		}
		return errors.Join(err, it.Close())
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: scan: %w", err)
	}
	return out, nil
}
