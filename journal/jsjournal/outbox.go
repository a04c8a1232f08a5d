package jsjournal

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
)

// Outbox is the durable outbox (service/outbox's Store) kept in a cluster's
// Bucket, under the key prefix "outbox.", so that whichever instance holds
// a connection's lease sees and continues its queue. It is safe for
// concurrent use.
//
// # Keys
//
// With c = Token(connection id) and s = the sequence as 20 decimal digits:
//
//   - outbox.n.<c>: the last sequence given out (decimal). It is advanced
//     before anything else is written, so a sequence is never given out
//     twice, even when an Append fails half way.
//   - outbox.p.<c>.<s>: the pending index, empty values. Every message that
//     is not final (ACCEPTED or FAILED) has an entry; an entry may also
//     point at a final message or at nothing (below).
//   - outbox.k.<c>.<Token(key)>: idempotency key to sequence (decimal).
//     Keys longer than 192 bytes are stored as outbox.h.<c>.<Token(sha256)>
//     to keep subjects short.
//   - outbox.m.<c>.<s>: the message: a version byte (1) and the message in
//     protobuf wire format (deterministic).
//
// # Crash safety
//
// JetStream has no multi-key transactions, so every change is several
// writes, ordered so that a crash between any two of them loses nothing
// acknowledged and reuses no sequence. The message is always the last
// write of an Append, its commit point: Append writes n, then p (unless the
// message is final already), then k (with a key), then m, and returns once
// every write has its PubAck. A crash before m leaves a burnt sequence (a
// gap: sequences stay increasing but need not be contiguous), and perhaps
// a p or k entry pointing at nothing. Readers tolerate both: Pending skips
// p entries without a message, and Append treats a k entry without a
// message as no entry (and overwrites it). Update writes p before a
// message that becomes pending again, and deletes p only after the message
// is stored final; so a p entry can also point at a final message, and
// Pending and PendingConnections read the message and skip it. Nothing
// deletes such stale entries yet; they cost a read each.
//
// # Durability and visibility
//
// Every write waits for its PubAck, synced or not: Update's sync is always
// honoured (with R3 the PubAck means a quorum has it; durability across a
// node's crash needs sync_interval "always", as for the journal). So an
// Update is visible to every reader, on any instance, once it returns.
// Reads go to the bucket, never to a cache: each message and counter is
// read from the stream's leader ($JS.API.STREAM.MSG.GET, not the direct
// gets KV.Get uses, which any replica answers and which may be behind), so
// an instance that takes a connection over continues its sequence. Listing
// (Pending, PendingConnections, Scan) uses KV.ListKeysFiltered (an ordered
// consumer from the leader) and sorts client side.
//
// # Fencing
//
// Every write about connection c asks fence("connection", c) just before
// it is made: when this instance does not hold the lease, the call fails
// with an error wrapping journal.ErrFenced and writes nothing more; else
// the write carries the Fence, so the server refuses it (journal.ErrFenced
// too) once another instance has taken the lease over. Only the lease
// holder writes a connection's keys, so reading n and writing n+1 is safe
// across instances; within one, a per-connection lock serialises Appends
// and Updates.
//
// # Costs
//
// An Append is one or two leader reads (with a key) and three or four
// writes, each a round trip. Pending lists the connection's pending index
// and reads up to n messages; PendingConnections lists the whole pending
// index and calls Pending once per connection found; Scan lists every
// message key of the outbox (the cost grows with the whole outbox, for
// every page) and reads up to n messages. There is no retention yet:
// messages are never deleted, nor are stale index entries. The lock of
// every connection ever written stays in memory (a few bytes each). Leader
// reads use the default JetStream API prefix ($JS.API), so a JetStream
// domain or custom prefix is not supported yet.
type Outbox struct {
	b     *Bucket
	fence FenceFunc

	mu    sync.Mutex
	locks map[string]chan struct{} // per connection, held by Append and Update
}

// NewOutbox returns the outbox kept in b; fence guards its writes (nil
// guards nothing: one instance, or tests).
func NewOutbox(b *Bucket, fence FenceFunc) *Outbox {
	return &Outbox{b: b, fence: fence, locks: map[string]chan struct{}{}}
}

const (
	outboxPrefix      = "outbox."
	outboxValueV1     = byte(1)
	outboxMaxKeyToken = 192 // idempotency keys longer than this are hashed
)

// errOutboxConnID is wrapped by the error for a connection id the outbox
// refuses, as pebblejournal's outbox refuses it.
var errOutboxConnID = errors.New("must be non-empty and must not contain NUL")

func checkOutboxConn(conn string) error {
	if conn == "" || strings.IndexByte(conn, 0) >= 0 {
		return fmt.Errorf("outbox: connection id %q: %w", conn, errOutboxConnID)
	}
	return nil
}

func outboxSeq(seq uint64) string { return fmt.Sprintf("%020d", seq) }

func outboxCounterKey(conn string) string { return outboxPrefix + "n." + Token(conn) }

func outboxPendingKey(conn string, seq uint64) string {
	return outboxPrefix + "p." + Token(conn) + "." + outboxSeq(seq)
}

func outboxMsgKey(conn string, seq uint64) string {
	return outboxPrefix + "m." + Token(conn) + "." + outboxSeq(seq)
}

func outboxIdemKey(conn, key string) string {
	if len(key) > outboxMaxKeyToken {
		sum := sha256.Sum256([]byte(key))
		return outboxPrefix + "h." + Token(conn) + "." + Token(string(sum[:]))
	}
	return outboxPrefix + "k." + Token(conn) + "." + Token(key)
}

// splitOutboxKey parses "<prefix><Token(conn)>.<seq>".
func splitOutboxKey(prefix, key string) (conn string, seq uint64, ok bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return "", 0, false
	}
	tok, s, ok := strings.Cut(rest, ".")
	if !ok {
		return "", 0, false
	}
	conn, err := FromToken(tok)
	if err != nil {
		return "", 0, false
	}
	seq, err = strconv.ParseUint(s, 10, 64)
	return conn, seq, err == nil && len(s) == 20
}

func outboxMessageID(conn string, seq uint64) string {
	return "out-" + conn + "-" + strconv.FormatUint(seq, 10)
}

func outboxNotFound(conn string, seq uint64) error {
	return fmt.Errorf("outbox: message %d of connection %q: %w", seq, conn, journal.ErrNotFound)
}

// outboxFinal reports whether a message in state s is done with: delivered or
// failed. Everything else is pending.
func outboxFinal(s switchboardv1.MessageState) bool {
	return s == switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED || s == switchboardv1.MessageState_MESSAGE_STATE_FAILED
}

func encodeOutboxMessage(m *switchboardv1.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.MarshalAppend([]byte{outboxValueV1}, m)
}

func decodeOutboxMessage(v []byte) (*switchboardv1.Message, error) {
	if len(v) == 0 || v[0] != outboxValueV1 {
		return nil, errors.New("outbox: malformed message value")
	}
	m := new(switchboardv1.Message)
	if err := proto.Unmarshal(v[1:], m); err != nil {
		return nil, fmt.Errorf("outbox: malformed message value: %w", err)
	}
	return m, nil
}

// lock takes conn's lock, or fails with ctx's error.
func (o *Outbox) lock(ctx context.Context, conn string) (unlock func(), err error) {
	o.mu.Lock()
	l := o.locks[conn]
	if l == nil {
		l = make(chan struct{}, 1)
		o.locks[conn] = l
	}
	o.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// put writes key for conn, guarded by conn's lease.
func (o *Outbox) put(ctx context.Context, conn, key string, value []byte) error {
	f, err := o.fenceFor(conn)
	if err != nil {
		return err
	}
	_, err = o.b.Put(ctx, key, value, f)
	return o.ctxErr(ctx, err)
}

// del deletes key for conn, guarded by conn's lease.
func (o *Outbox) del(ctx context.Context, conn, key string) error {
	f, err := o.fenceFor(conn)
	if err != nil {
		return err
	}
	return o.ctxErr(ctx, o.b.Delete(ctx, key, f))
}

func (o *Outbox) fenceFor(conn string) (Fence, error) {
	if o.fence == nil {
		return Fence{}, nil
	}
	f, ok := o.fence("connection", conn)
	if !ok {
		return Fence{}, fmt.Errorf("outbox: connection %q: %w", conn, journal.ErrFenced)
	}
	return f, nil
}

// ctxErr returns the caller's context error in place of err when the
// context ended, so that callers see context.Canceled or DeadlineExceeded
// rather than an unavailable server.
func (o *Outbox) ctxErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && !errors.Is(err, journal.ErrFenced) {
		return fmt.Errorf("outbox: %w (%v)", ctx.Err(), err)
	}
	return err
}

// errOutboxMissing is returned by get for a key without a value.
var errOutboxMissing = errors.New("no such key")

// get reads key's value from the stream's leader; errOutboxMissing when the key
// was never written or is deleted.
func (o *Outbox) get(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, o.b.Timeout)
	defer cancel()
	req, _ := json.Marshal(map[string]string{"last_by_subj": o.b.Subject(key)})
	subj := "$JS.API.STREAM.MSG.GET.KV_" + o.b.Name
	reply, err := o.b.JS.Conn().RequestWithContext(rctx, subj, req)
	if err != nil {
		return nil, o.ctxErr(ctx, fmt.Errorf("%w: outbox: read %s: %v", journal.ErrUnavailable, key, err))
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message struct {
			Header []byte `json:"hdrs"`
			Data   []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("%w: outbox: read %s: %v", journal.ErrUnavailable, key, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, errOutboxMissing
		}
		return nil, fmt.Errorf("%w: outbox: read %s: %v", journal.ErrUnavailable, key, resp.Error)
	}
	if len(resp.Message.Header) > 0 {
		r := textproto.NewReader(bufio.NewReader(bytes.NewReader(resp.Message.Header)))
		if _, err := r.ReadLine(); err == nil { // NATS/1.0
			h, _ := r.ReadMIMEHeader()
			if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
				return nil, errOutboxMissing
			}
		}
	}
	return resp.Message.Data, nil
}

// getUint64 reads a decimal value; 0 when key is missing.
func (o *Outbox) getUint64(ctx context.Context, key, what, conn string) (uint64, error) {
	v, err := o.get(ctx, key)
	if errors.Is(err, errOutboxMissing) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("outbox: malformed %s of %q", what, conn)
	}
	return n, nil
}

// readMessage reads a message; the error wraps journal.ErrNotFound when
// there is none.
func (o *Outbox) readMessage(ctx context.Context, conn string, seq uint64) (*switchboardv1.Message, error) {
	v, err := o.get(ctx, outboxMsgKey(conn, seq))
	if errors.Is(err, errOutboxMissing) {
		return nil, outboxNotFound(conn, seq)
	}
	if err != nil {
		return nil, err
	}
	return decodeOutboxMessage(v)
}

// list returns the keys matching filter (one subject filter below the
// bucket), complete or with an error.
func (o *Outbox) list(ctx context.Context, filter string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, o.b.Timeout)
	defer cancel()
	kl, err := o.b.KV.ListKeysFiltered(lctx, filter)
	if err != nil {
		return nil, o.ctxErr(ctx, o.b.Err(err))
	}
	var keys []string
	for k := range kl.Keys() { // drained to the end: its goroutine then stops
		keys = append(keys, k)
	}
	// The lister ends its channel early, without an error, when lctx
	// ends: the list is then incomplete.
	if err := lctx.Err(); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("%w: outbox: list %s: %v", journal.ErrUnavailable, filter, err)
	}
	return keys, nil
}

// Append stores m as the next message of m.ConnectionId and returns once
// every write has its PubAck: it sets m.Sequence (1, 2, ... per
// connection, never given out twice; a failed Append may leave a gap) and
// m.MessageId ("out-<connection>-<sequence>"). When m.IdempotencyKey is set
// and a message of the connection already has it, nothing is stored and
// that message is returned, as it is now, with created false. m is not
// retained. On an error m may still be stored.
func (o *Outbox) Append(ctx context.Context, m *switchboardv1.Message) (*switchboardv1.Message, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	conn, key := m.GetConnectionId(), m.GetIdempotencyKey()
	if err := checkOutboxConn(conn); err != nil {
		return nil, false, err
	}
	if _, err := o.fenceFor(conn); err != nil {
		return nil, false, err
	}
	unlock, err := o.lock(ctx, conn)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	if key != "" {
		first, err := o.byKey(ctx, conn, key)
		if err != nil || first != nil {
			return first, false, err
		}
	}
	last, err := o.getUint64(ctx, outboxCounterKey(conn), "sequence counter", conn)
	if err != nil {
		return nil, false, err
	}
	seq := last + 1
	prevSeq, prevID := m.Sequence, m.MessageId
	m.Sequence, m.MessageId = seq, outboxMessageID(conn, seq)
	v, err := encodeOutboxMessage(m)
	if err != nil {
		m.Sequence, m.MessageId = prevSeq, prevID
		return nil, false, fmt.Errorf("outbox: append: %w", err)
	}
	fail := func(err error) (*switchboardv1.Message, bool, error) {
		m.Sequence, m.MessageId = prevSeq, prevID
		return nil, false, err
	}
	sv := []byte(strconv.FormatUint(seq, 10))
	if err := o.put(ctx, conn, outboxCounterKey(conn), sv); err != nil {
		return fail(err)
	}
	if !outboxFinal(m.GetState()) {
		if err := o.put(ctx, conn, outboxPendingKey(conn, seq), nil); err != nil {
			return fail(err)
		}
	}
	if key != "" {
		if err := o.put(ctx, conn, outboxIdemKey(conn, key), sv); err != nil {
			return fail(err)
		}
	}
	if err := o.put(ctx, conn, outboxMsgKey(conn, seq), v); err != nil {
		return fail(err)
	}
	return m, true, nil
}

// byKey returns the message of conn appended with idempotency key key, or
// nil. An index entry whose message is missing (an Append that failed
// before its message was written) counts as none.
func (o *Outbox) byKey(ctx context.Context, conn, key string) (*switchboardv1.Message, error) {
	seq, err := o.getUint64(ctx, outboxIdemKey(conn, key), "idempotency entry", conn)
	if err != nil || seq == 0 {
		return nil, err
	}
	m, err := o.readMessage(ctx, conn, seq)
	if errors.Is(err, journal.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if m.GetIdempotencyKey() != key { // a hashed key's collision: never in practice
		return nil, fmt.Errorf("outbox: idempotency entry of %q points at message %d with another key", conn, seq)
	}
	return m, nil
}

// Update stores m's new state; m must have been appended (same connection
// and sequence; its message id and idempotency key cannot change), else
// the error wraps journal.ErrNotFound. It always returns once the change
// has its PubAck, so sync makes no difference. m is not retained.
func (o *Outbox) Update(ctx context.Context, m *switchboardv1.Message, sync bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	conn, seq := m.GetConnectionId(), m.GetSequence()
	if err := checkOutboxConn(conn); err != nil {
		return err
	}
	if seq == 0 {
		return outboxNotFound(conn, seq)
	}
	if _, err := o.fenceFor(conn); err != nil {
		return err
	}
	unlock, err := o.lock(ctx, conn)
	if err != nil {
		return err
	}
	defer unlock()
	old, err := o.readMessage(ctx, conn, seq)
	if err != nil {
		return err
	}
	if m.GetMessageId() != old.GetMessageId() || m.GetIdempotencyKey() != old.GetIdempotencyKey() {
		return fmt.Errorf("outbox: update of message %q: its message id and idempotency key cannot change", old.GetMessageId())
	}
	v, err := encodeOutboxMessage(m)
	if err != nil {
		return fmt.Errorf("outbox: update: %w", err)
	}
	wasFinal, isFinal := outboxFinal(old.GetState()), outboxFinal(m.GetState())
	// Pending again: the index entry first, so a pending message always
	// has one. Final: the entry goes after the message is stored final.
	if wasFinal && !isFinal {
		if err := o.put(ctx, conn, outboxPendingKey(conn, seq), nil); err != nil {
			return err
		}
	}
	if err := o.put(ctx, conn, outboxMsgKey(conn, seq), v); err != nil {
		return err
	}
	if !wasFinal && isFinal {
		if err := o.del(ctx, conn, outboxPendingKey(conn, seq)); err != nil {
			return err
		}
	}
	return nil
}

// Get returns the message of connection conn at seq; the error wraps
// journal.ErrNotFound when there is none.
func (o *Outbox) Get(ctx context.Context, conn string, seq uint64) (*switchboardv1.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if checkOutboxConn(conn) != nil || seq == 0 {
		return nil, outboxNotFound(conn, seq)
	}
	return o.readMessage(ctx, conn, seq)
}

// Pending returns up to n (at least 1) messages of conn that are not final,
// with a sequence above after, in sequence order. It lists the pending
// index of conn and reads the messages it names, skipping entries without
// a message or with a final one.
func (o *Outbox) Pending(ctx context.Context, conn string, after uint64, n int) ([]*switchboardv1.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkOutboxConn(conn); err != nil {
		return nil, err
	}
	n = max(n, 1)
	prefix := outboxPrefix + "p." + Token(conn) + "."
	keys, err := o.list(ctx, prefix+">")
	if err != nil {
		return nil, fmt.Errorf("outbox: pending: %w", err)
	}
	var seqs []uint64
	for _, k := range keys {
		c, seq, ok := splitOutboxKey(outboxPrefix+"p.", k)
		if !ok || c != conn {
			return nil, fmt.Errorf("outbox: pending: unexpected key %q", k)
		}
		if seq > after {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	var out []*switchboardv1.Message
	for _, seq := range seqs {
		if len(out) == n {
			break
		}
		m, err := o.readMessage(ctx, conn, seq)
		if errors.Is(err, journal.ErrNotFound) {
			continue // an Append that failed before its message
		}
		if err != nil {
			return nil, fmt.Errorf("outbox: pending: %w", err)
		}
		if !outboxFinal(m.GetState()) {
			out = append(out, m)
		}
	}
	return out, nil
}

// PendingConnections returns the ids of the connections with pending
// messages, sorted. It lists the whole pending index, then confirms each
// connection found with Pending (an entry may be stale).
func (o *Outbox) PendingConnections(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	keys, err := o.list(ctx, outboxPrefix+"p.>")
	if err != nil {
		return nil, fmt.Errorf("outbox: pending connections: %w", err)
	}
	seen := map[string]bool{}
	var conns []string
	for _, k := range keys {
		conn, _, ok := splitOutboxKey(outboxPrefix+"p.", k)
		if !ok {
			return nil, fmt.Errorf("outbox: pending connections: unexpected key %q", k)
		}
		if seen[conn] {
			continue
		}
		seen[conn] = true
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
// the beginning. It lists every message key of the outbox.
func (o *Outbox) Scan(ctx context.Context, afterConn string, afterSeq uint64, n int) ([]*switchboardv1.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n = max(n, 1)
	keys, err := o.list(ctx, outboxPrefix+"m.>")
	if err != nil {
		return nil, fmt.Errorf("outbox: scan: %w", err)
	}
	type pos struct {
		conn string
		seq  uint64
	}
	compare := func(a, b pos) int { return cmp.Or(cmp.Compare(a.conn, b.conn), cmp.Compare(a.seq, b.seq)) }
	from := pos{afterConn, afterSeq}
	var ps []pos
	for _, k := range keys {
		conn, seq, ok := splitOutboxKey(outboxPrefix+"m.", k)
		if !ok {
			return nil, fmt.Errorf("outbox: scan: unexpected key %q", k)
		}
		if p := (pos{conn, seq}); afterConn == "" || compare(p, from) > 0 {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, compare)
	var out []*switchboardv1.Message
	for _, p := range ps {
		if len(out) == n {
			break
		}
		m, err := o.readMessage(ctx, p.conn, p.seq)
		if errors.Is(err, journal.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("outbox: scan: %w", err)
		}
		out = append(out, m)
	}
	return out, nil
}
