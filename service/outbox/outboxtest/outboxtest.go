// Package outboxtest is the conformance suite every outbox.Store backend
// must pass. It is never used by production code.
//
// A backend's test runs it with a function that opens a new, empty store,
// and, if the backend keeps messages across a restart, one that reopens it:
//
//	func TestOutboxConformance(t *testing.T) { outboxtest.Run(t, open, reopen) }
//
// The suite checks what the outbox worker and the messages API rely on, as
// a user of the interface can observe it: sequences per connection, from 1,
// never given out twice (also after a restart); idempotency keys per
// connection (a second Append with a key stores nothing and returns the
// first message, also after a restart); that updates are seen at once,
// synced or not; Pending, PendingConnections and Scan; that unknown
// messages are errors wrapping outbox.ErrNotFound; copies both ways;
// concurrent appenders; cancellation; and, with reopen, that every
// acknowledged Append and synced Update survives a restart.
package outboxtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/service/outbox"
)

// Run runs the suite. open returns a new, empty store for one test (and
// arranges for it to be closed when the test ends). reopen, when not nil,
// closes the storage s is kept in and returns a store opened again on the
// same storage, as after a restart; without it the durability tests are
// skipped (an in-memory store).
func Run(t *testing.T, open func(t *testing.T) outbox.Store, reopen func(t *testing.T, s outbox.Store) outbox.Store) {
	s := suite{open: open, reopen: reopen}
	tests := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"AppendAssigns", s.testAppendAssigns},
		{"Idempotency", s.testIdempotency},
		{"Update", s.testUpdate},
		{"Unknown", s.testUnknown},
		{"Pending", s.testPending},
		{"PendingConnections", s.testPendingConnections},
		{"Scan", s.testScan},
		{"Copies", s.testCopies},
		{"ConcurrentAppend", s.testConcurrentAppend},
		{"ConcurrentIdempotency", s.testConcurrentIdempotency},
		{"Contexts", s.testContexts},
		{"Reopen", s.testReopen},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	open   func(*testing.T) outbox.Store
	reopen func(*testing.T, outbox.Store) outbox.Store
}

// PHIMarker is in every Message payload; it must never show up in logs.
const PHIMarker = "PATIENT^SECRET"

// Message returns a queued outbound message for conn with every field a
// caller sets, numbered i (its control id and payload say which).
func Message(conn string, i int) *switchboardv1.Message {
	return &switchboardv1.Message{
		Direction:    switchboardv1.Direction_DIRECTION_OUTBOUND,
		ConnectionId: conn,
		State:        switchboardv1.MessageState_MESSAGE_STATE_QUEUED,
		Payload:      fmt.Appendf(nil, "MSH|^~\\&|SB|%s|%d\r\x00\xff", PHIMarker, i),
		MessageType:  "ORU^R01",
		ControlId:    fmt.Sprintf("CTL%06d", i),
		CreateTime:   timestamppb.New(time.Date(2026, 3, 1, 12, 0, 0, i, time.UTC)),
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// MustAppend appends m and fails t unless it was stored.
func MustAppend(t testing.TB, s outbox.Store, m *switchboardv1.Message) *switchboardv1.Message {
	t.Helper()
	got, created, err := s.Append(context.Background(), m)
	if err != nil || !created {
		t.Fatalf("Append(%s): created %v, %v", m.GetControlId(), created, err)
	}
	return got
}

// Same fails t unless got and want are equal messages.
func Same(t testing.TB, got, want *switchboardv1.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("message mismatch:\n got %v\nwant %v", got, want)
	}
}

func get(t *testing.T, s outbox.Store, conn string, seq uint64) *switchboardv1.Message {
	t.Helper()
	m, err := s.Get(ctx(t), conn, seq)
	if err != nil {
		t.Fatalf("Get(%s, %d): %v", conn, seq, err)
	}
	return m
}

func update(t *testing.T, s outbox.Store, m *switchboardv1.Message, sync bool) {
	t.Helper()
	if err := s.Update(ctx(t), m, sync); err != nil {
		t.Fatalf("Update(%s, sync %v): %v", m.GetMessageId(), sync, err)
	}
}

// ids returns "conn/seq" for each message.
func ids(ms []*switchboardv1.Message) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, fmt.Sprintf("%s/%d", m.GetConnectionId(), m.GetSequence()))
	}
	return out
}

func sameIDs(t *testing.T, what string, got []*switchboardv1.Message, want ...string) {
	t.Helper()
	if g := ids(got); !slices.Equal(g, want) {
		t.Fatalf("%s = %v, want %v", what, g, want)
	}
}

func withState(m *switchboardv1.Message, s switchboardv1.MessageState) *switchboardv1.Message {
	m = proto.Clone(m).(*switchboardv1.Message)
	m.State = s
	m.UpdateTime = timestamppb.New(time.Date(2026, 3, 1, 13, 0, 0, int(s), time.UTC))
	return m
}

const (
	queued    = switchboardv1.MessageState_MESSAGE_STATE_QUEUED
	sending   = switchboardv1.MessageState_MESSAGE_STATE_SENDING
	awaiting  = switchboardv1.MessageState_MESSAGE_STATE_AWAITING_ACK
	accepted  = switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED
	failed    = switchboardv1.MessageState_MESSAGE_STATE_FAILED
	inDoubt   = switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT
	connA     = "conn-a"
	connB     = "conn-b"
	connAlong = "conn-a-2" // sorts after connA, whose id it extends
)

// testAppendAssigns: sequences count from 1 per connection, message ids
// follow, m is updated, and what Get returns is what was appended.
func (s suite) testAppendAssigns(t *testing.T) {
	st := s.open(t)
	for i, c := range []struct {
		conn string
		seq  uint64
	}{{connA, 1}, {connA, 2}, {connB, 1}, {connA, 3}, {connAlong, 1}, {connB, 2}} {
		m := Message(c.conn, i)
		got := MustAppend(t, st, m)
		if m.GetSequence() != c.seq || got.GetSequence() != c.seq {
			t.Fatalf("append #%d on %s: sequence %d (returned %d), want %d", i, c.conn, m.GetSequence(), got.GetSequence(), c.seq)
		}
		if want := fmt.Sprintf("out-%s-%d", c.conn, c.seq); m.GetMessageId() != want || got.GetMessageId() != want {
			t.Fatalf("append #%d: message id %q (returned %q), want %q", i, m.GetMessageId(), got.GetMessageId(), want)
		}
		Same(t, got, m)
		Same(t, get(t, st, c.conn, c.seq), m)
	}
}

// testIdempotency: a key is per connection; its second Append stores
// nothing (no sequence is used up) and returns the first message as it is
// now.
func (s suite) testIdempotency(t *testing.T) {
	st := s.open(t)
	first := Message(connA, 1)
	first.IdempotencyKey = "key-1"
	MustAppend(t, st, first)
	MustAppend(t, st, Message(connA, 2))

	retry := Message(connA, 99) // a retried call, with different content
	retry.IdempotencyKey = "key-1"
	got, created, err := st.Append(ctx(t), retry)
	if err != nil || created {
		t.Fatalf("second Append with key-1: created %v, %v; want the first message", created, err)
	}
	Same(t, got, first)

	// The first message's state moves on; a retry reports it as it is.
	sent := withState(first, accepted)
	update(t, st, sent, true)
	got, created, err = st.Append(ctx(t), retry)
	if err != nil || created {
		t.Fatalf("third Append with key-1: created %v, %v", created, err)
	}
	Same(t, got, sent)

	other := Message(connB, 3) // the same key on another connection is another message
	other.IdempotencyKey = "key-1"
	if got := MustAppend(t, st, other); got.GetSequence() != 1 {
		t.Fatalf("key-1 on %s got sequence %d, want 1", connB, got.GetSequence())
	}
	if got := MustAppend(t, st, Message(connA, 4)); got.GetSequence() != 3 {
		t.Fatalf("next Append on %s got sequence %d, want 3: the duplicates must use none", connA, got.GetSequence())
	}
}

// testUpdate: Get and Pending see an update as soon as Update returns,
// synced or not, and final states leave Pending.
func (s suite) testUpdate(t *testing.T) {
	st := s.open(t)
	m := MustAppend(t, st, Message(connA, 1))
	for _, c := range []struct {
		state   switchboardv1.MessageState
		sync    bool
		pending bool
	}{
		{sending, false, true},
		{awaiting, false, true},
		{inDoubt, true, true},
		{queued, false, true},
		{accepted, false, false},
		{failed, true, false}, // final to final
		{queued, true, true},  // and back, as an operator might
	} {
		m = withState(m, c.state)
		m.Attempts = append(m.Attempts, &switchboardv1.DeliveryAttempt{Error: c.state.String()})
		update(t, st, m, c.sync)
		Same(t, get(t, st, connA, 1), m)
		p, err := st.Pending(ctx(t), connA, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if c.pending {
			if len(p) != 1 {
				t.Fatalf("Pending after an update to %v = %v, want the message", c.state, ids(p))
			}
			Same(t, p[0], m)
		} else if len(p) != 0 {
			t.Fatalf("Pending after an update to %v = %v, want none", c.state, ids(p))
		}
	}
}

// testUnknown: Get and Update of a message that was never appended fail
// with ErrNotFound, and Update cannot change a message's identity.
func (s suite) testUnknown(t *testing.T) {
	st := s.open(t)
	m := MustAppend(t, st, Message(connA, 1))
	for _, c := range []struct {
		conn string
		seq  uint64
	}{{connA, 0}, {connA, 2}, {connB, 1}, {connAlong, 1}} {
		if _, err := st.Get(ctx(t), c.conn, c.seq); !errors.Is(err, outbox.ErrNotFound) {
			t.Errorf("Get(%s, %d) = %v, want ErrNotFound", c.conn, c.seq, err)
		}
		u := withState(m, accepted)
		u.ConnectionId, u.Sequence = c.conn, c.seq
		if err := st.Update(ctx(t), u, true); !errors.Is(err, outbox.ErrNotFound) {
			t.Errorf("Update(%s, %d) = %v, want ErrNotFound", c.conn, c.seq, err)
		}
	}
	renamed := withState(m, accepted)
	renamed.MessageId = "out-other-1"
	rekeyed := withState(m, accepted)
	rekeyed.IdempotencyKey = "new-key"
	for _, u := range []*switchboardv1.Message{renamed, rekeyed} {
		if err := st.Update(ctx(t), u, true); err == nil {
			t.Errorf("Update changing the message id or idempotency key of %s succeeded", m.GetMessageId())
		}
	}
	Same(t, get(t, st, connA, 1), m)
	if p, err := st.Pending(ctx(t), connB, 0, 10); err != nil || len(p) != 0 {
		t.Fatalf("Pending of a connection without messages = %v, %v", ids(p), err)
	}
}

// testPending: not-final messages after a sequence, in order, at most n,
// of one connection only.
func (s suite) testPending(t *testing.T) {
	st := s.open(t)
	states := []switchboardv1.MessageState{accepted, queued, failed, sending, inDoubt, accepted, queued, awaiting}
	for i, state := range states {
		m := MustAppend(t, st, Message(connA, i))
		if state != queued {
			update(t, st, withState(m, state), i%2 == 0)
		}
		MustAppend(t, st, Message(connAlong, 100+i)) // a neighbour's, never listed
	}
	pending := func(after uint64, n int) []*switchboardv1.Message {
		p, err := st.Pending(ctx(t), connA, after, n)
		if err != nil {
			t.Fatalf("Pending(%d, %d): %v", after, n, err)
		}
		return p
	}
	sameIDs(t, "Pending(0, 100)", pending(0, 100), "conn-a/2", "conn-a/4", "conn-a/5", "conn-a/7", "conn-a/8")
	sameIDs(t, "Pending(0, 2)", pending(0, 2), "conn-a/2", "conn-a/4")
	sameIDs(t, "Pending(4, 2)", pending(4, 2), "conn-a/5", "conn-a/7")
	sameIDs(t, "Pending(5, 100)", pending(5, 100), "conn-a/7", "conn-a/8")
	sameIDs(t, "Pending(8, 100)", pending(8, 100))
	sameIDs(t, "Pending(1000, 100)", pending(1000, 100))
	sameIDs(t, "Pending(0, 0)", pending(0, 0), "conn-a/2") // at least one
	for _, m := range pending(0, 100) {
		Same(t, m, get(t, st, connA, m.GetSequence()))
	}
}

func (s suite) testPendingConnections(t *testing.T) {
	st := s.open(t)
	conns := func() []string {
		c, err := st.PendingConnections(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := conns(); len(c) != 0 {
		t.Fatalf("PendingConnections of an empty store = %v", c)
	}
	done := MustAppend(t, st, Message("z-done", 1))
	update(t, st, withState(done, accepted), true)
	lastDone := MustAppend(t, st, Message("m-last-done", 2)) // pending, then final without sync
	MustAppend(t, st, Message(connB, 3))
	MustAppend(t, st, Message(connA, 4))
	a5 := MustAppend(t, st, Message(connA, 5))
	update(t, st, withState(a5, failed), true)
	MustAppend(t, st, Message(connAlong, 6))
	if c, want := conns(), []string{connA, connAlong, connB, "m-last-done"}; !slices.Equal(c, want) {
		t.Fatalf("PendingConnections = %v, want %v", c, want)
	}
	update(t, st, withState(lastDone, accepted), false)
	update(t, st, withState(done, queued), false) // pending again
	if c, want := conns(), []string{connA, connAlong, connB, "z-done"}; !slices.Equal(c, want) {
		t.Fatalf("PendingConnections after updates = %v, want %v", c, want)
	}
}

// testScan: pages through every message, final ones included, in
// (connection, sequence) order, resuming after the last one returned.
func (s suite) testScan(t *testing.T) {
	st := s.open(t)
	type pos struct {
		conn string
		seq  uint64
	}
	var all []pos
	for i, conn := range []string{connB, connA, connAlong, "a", connA, connB, connA} {
		m := MustAppend(t, st, Message(conn, i))
		if i%3 == 0 {
			update(t, st, withState(m, accepted), i%2 == 0)
		}
		all = append(all, pos{conn, m.GetSequence()})
	}
	slices.SortFunc(all, func(a, b pos) int { return cmp.Or(cmp.Compare(a.conn, b.conn), cmp.Compare(a.seq, b.seq)) })
	var want []string
	for _, p := range all {
		want = append(want, fmt.Sprintf("%s/%d", p.conn, p.seq))
	}
	for _, page := range []int{1, 2, 3, 100} {
		var got []*switchboardv1.Message
		conn, seq := "", uint64(0)
		for range 100 {
			p, err := st.Scan(ctx(t), conn, seq, page)
			if err != nil {
				t.Fatalf("Scan(%q, %d, %d): %v", conn, seq, page, err)
			}
			if len(p) > page {
				t.Fatalf("Scan(%q, %d, %d) returned %d messages", conn, seq, page, len(p))
			}
			if len(p) == 0 {
				break
			}
			got = append(got, p...)
			last := p[len(p)-1]
			conn, seq = last.GetConnectionId(), last.GetSequence()
		}
		sameIDs(t, fmt.Sprintf("Scan in pages of %d", page), got, want...)
		for _, m := range got {
			Same(t, m, get(t, st, m.GetConnectionId(), m.GetSequence()))
		}
	}
	// A position between connections, or past a connection's end.
	p, err := st.Scan(ctx(t), connA, 1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	sameIDs(t, "Scan(conn-a, 1000, 1)", p, connAlong+"/1")
	p, err = st.Scan(ctx(t), "b", 0, 1) // a connection without messages
	if err != nil {
		t.Fatal(err)
	}
	sameIDs(t, "Scan(b, 0, 1)", p, connA+"/1")
	p, err = st.Scan(ctx(t), "d", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	sameIDs(t, "Scan(d, 0, 100)", p)
}

// testCopies: the store keeps its own copies and hands out copies.
func (s suite) testCopies(t *testing.T) {
	st := s.open(t)
	m := Message(connA, 1)
	want := proto.Clone(MustAppend(t, st, m)).(*switchboardv1.Message)
	m.Payload[0] = 'X'
	m.ControlId = "changed"
	Same(t, get(t, st, connA, 1), want)

	got := get(t, st, connA, 1)
	got.Payload[0] = 'Y'
	got.State = failed
	Same(t, get(t, st, connA, 1), want)

	u := withState(want, sending)
	update(t, st, u, false)
	u.Payload[0] = 'Z'
	u.State = accepted
	Same(t, get(t, st, connA, 1), withState(want, sending))
	p, err := st.Pending(ctx(t), connA, 0, 1)
	if err != nil || len(p) != 1 {
		t.Fatalf("Pending = %v, %v", ids(p), err)
	}
	p[0].Payload[0] = 'W'
	Same(t, get(t, st, connA, 1), withState(want, sending))
}

// testConcurrentAppend: appenders on a few connections; each connection's
// sequences are 1..n without a duplicate, each appender's increase, and
// every message reads back.
func (s suite) testConcurrentAppend(t *testing.T) {
	st := s.open(t)
	const writers, each = 32, 20
	conns := []string{connA, connB, connAlong}
	type appended struct {
		conn string
		seq  uint64
		m    *switchboardv1.Message
	}
	got := make([][]appended, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				m := Message(conns[(w+i)%len(conns)], w*each+i)
				if i%2 == 0 {
					m.IdempotencyKey = fmt.Sprintf("w%d-%d", w, i)
				}
				stored, created, err := st.Append(context.Background(), m)
				if err != nil || !created {
					t.Errorf("Append: created %v, %v", created, err)
					return
				}
				got[w] = append(got[w], appended{m.GetConnectionId(), stored.GetSequence(), proto.Clone(m).(*switchboardv1.Message)})
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[string]map[uint64]bool{}
	for w := range writers {
		last := map[string]uint64{}
		for _, a := range got[w] {
			if seen[a.conn] == nil {
				seen[a.conn] = map[uint64]bool{}
			}
			if seen[a.conn][a.seq] {
				t.Fatalf("sequence %d of %s given out twice", a.seq, a.conn)
			}
			seen[a.conn][a.seq] = true
			if a.seq <= last[a.conn] {
				t.Fatalf("writer %d: sequence %d of %s after %d", w, a.seq, a.conn, last[a.conn])
			}
			last[a.conn] = a.seq
			Same(t, get(t, st, a.conn, a.seq), a.m)
		}
	}
	for conn, seqs := range seen {
		for seq := uint64(1); seq <= uint64(len(seqs)); seq++ {
			if !seqs[seq] {
				t.Fatalf("%s: sequence %d missing among %d appends", conn, seq, len(seqs))
			}
		}
	}
}

// testConcurrentIdempotency: racing Appends with one key store one message,
// and every one of them returns it.
func (s suite) testConcurrentIdempotency(t *testing.T) {
	st := s.open(t)
	const racers = 16
	seqs := make([]uint64, racers)
	created := make([]bool, racers)
	var wg sync.WaitGroup
	for r := range racers {
		wg.Go(func() {
			m := Message(connA, r)
			m.IdempotencyKey = "the-key"
			got, c, err := st.Append(context.Background(), m)
			if err != nil {
				t.Errorf("Append: %v", err)
				return
			}
			seqs[r], created[r] = got.GetSequence(), c
		})
	}
	wg.Wait()
	if n := len(slices.DeleteFunc(slices.Clone(created), func(c bool) bool { return !c })); n != 1 {
		t.Fatalf("%d of %d racing Appends with one key created a message, want 1", n, racers)
	}
	for r, seq := range seqs {
		if seq != 1 {
			t.Fatalf("racer %d got sequence %d, want 1", r, seq)
		}
	}
	if got := MustAppend(t, st, Message(connA, 100)); got.GetSequence() != 2 {
		t.Fatalf("next Append got sequence %d, want 2", got.GetSequence())
	}
}

// testContexts: a done context stops every call before it changes
// anything.
func (s suite) testContexts(t *testing.T) {
	st := s.open(t)
	m := MustAppend(t, st, Message(connA, 1))
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := st.Append(done, Message(connA, 2)); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with a done context = %v, want context.Canceled", err)
	}
	for _, sync := range []bool{false, true} {
		if err := st.Update(done, withState(m, accepted), sync); !errors.Is(err, context.Canceled) {
			t.Errorf("Update(sync %v) with a done context = %v, want context.Canceled", sync, err)
		}
	}
	if _, err := st.Get(done, connA, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a done context = %v, want context.Canceled", err)
	}
	if _, err := st.Pending(done, connA, 0, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Pending with a done context = %v, want context.Canceled", err)
	}
	if _, err := st.PendingConnections(done); !errors.Is(err, context.Canceled) {
		t.Errorf("PendingConnections with a done context = %v, want context.Canceled", err)
	}
	if _, err := st.Scan(done, "", 0, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Scan with a done context = %v, want context.Canceled", err)
	}
	Same(t, get(t, st, connA, 1), m)
	if got := MustAppend(t, st, Message(connA, 3)); got.GetSequence() != 2 {
		t.Fatalf("Append after refused calls got sequence %d, want 2", got.GetSequence())
	}
}

// testReopen: after a restart every appended message and synced update is
// there, sequences continue (never given out twice), and idempotency keys
// still find their message.
func (s suite) testReopen(t *testing.T) {
	if s.reopen == nil {
		t.Skip("the backend does not keep messages across a restart")
	}
	st := s.open(t)
	var want []*switchboardv1.Message
	for i := range 10 {
		conn := []string{connA, connB}[i%2]
		m := Message(conn, i)
		if i < 4 {
			m.IdempotencyKey = fmt.Sprintf("key-%d", i)
		}
		m = MustAppend(t, st, m)
		if i%3 == 0 {
			m = withState(m, accepted)
			update(t, st, m, true)
		}
		want = append(want, m)
	}
	st = s.reopen(t, st)
	for _, m := range want {
		Same(t, get(t, st, m.GetConnectionId(), m.GetSequence()), m)
	}
	retry := Message(connA, 99)
	retry.IdempotencyKey = "key-2"
	got, created, err := st.Append(ctx(t), retry)
	if err != nil || created {
		t.Fatalf("Append with a key used before the restart: created %v, %v; want the first message", created, err)
	}
	Same(t, got, want[2])
	if got := MustAppend(t, st, Message(connA, 100)); got.GetSequence() != 6 {
		t.Fatalf("first Append on %s after the restart got sequence %d, want 6", connA, got.GetSequence())
	}
	p, err := st.Pending(ctx(t), connB, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	sameIDs(t, "Pending of conn-b after the restart", p, "conn-b/1", "conn-b/3", "conn-b/4")
	st = s.reopen(t, st)
	if got := MustAppend(t, st, Message(connA, 101)); got.GetSequence() != 7 {
		t.Fatalf("Append after a second restart got sequence %d, want 7", got.GetSequence())
	}
}
