package jsjournal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/internal/natstest"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/outbox/outboxtest"
)

var _ outbox.Store = (*Outbox)(nil)

// TestOutboxConformance runs the outbox suite on one in-process server:
// every store is a bucket of its own, and reopening closes the store's
// connection and opens the same bucket on a new one, as another process
// (or instance) would.
func TestOutboxConformance(t *testing.T) {
	ts := natstest.Start(t, server.Options{})
	var (
		mu    sync.Mutex
		n     int
		conns = map[*Outbox]*nats.Conn{}
		names = map[*Outbox]string{}
	)
	openNamed := func(t *testing.T, name string) outbox.Store {
		nc, b := btOpenBucket(t, ts.URL(), name, 1)
		o := NewOutbox(b, nil)
		mu.Lock()
		conns[o], names[o] = nc, name
		mu.Unlock()
		return o
	}
	open := func(t *testing.T) outbox.Store {
		mu.Lock()
		n++
		name := fmt.Sprintf("outbox%d", n)
		mu.Unlock()
		return openNamed(t, name)
	}
	reopen := func(t *testing.T, s outbox.Store) outbox.Store {
		mu.Lock()
		nc, name := conns[s.(*Outbox)], names[s.(*Outbox)]
		mu.Unlock()
		nc.Close()
		return openNamed(t, name)
	}
	outboxtest.Run(t, open, reopen)
}

// leaseFence is a FenceFunc for one lease key whose revision the test
// sets; revision 0 means the lease is not held.
type leaseFence struct {
	key string
	rev atomic.Uint64
}

func (l *leaseFence) fence(typ, id string) (Fence, bool) {
	r := l.rev.Load()
	if typ != "connection" || r == 0 || l.key != "lease.connection."+Token(id) {
		return Fence{}, false
	}
	return Fence{LeaseKey: l.key, Revision: r}, true
}

func obCtx(t *testing.T) context.Context { return btCtx(t) }

// TestOutboxFencing: instance A holds a connection's lease and appends;
// instance B takes the lease over. A's writes are then refused with
// ErrFenced and change nothing, while B sees everything A had appended
// and continues the sequence without reusing one.
func TestOutboxFencing(t *testing.T) {
	ts := natstest.Start(t, server.Options{})
	_, ba := btOpenBucket(t, ts.URL(), "shared", 1)
	_, bb := btOpenBucket(t, ts.URL(), "shared", 1)
	const conn = "conn.fenced"
	lease := "lease.connection." + Token(conn)
	fa := &leaseFence{key: lease}
	fb := &leaseFence{key: lease}
	a, b := NewOutbox(ba, fa.fence), NewOutbox(bb, fb.fence)
	ctx := obCtx(t)

	// Without the lease A writes nothing.
	if _, _, err := a.Append(ctx, outboxtest.Message(conn, 0)); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("Append without the lease = %v, want ErrFenced", err)
	}
	rev, err := ba.Put(ctx, lease, []byte("a"), Fence{})
	if err != nil {
		t.Fatal(err)
	}
	fa.rev.Store(rev)

	var appended []*switchboardv1.Message
	for i := range 4 {
		m := outboxtest.Message(conn, i)
		if i == 1 {
			m.IdempotencyKey = "key-1"
		}
		got := outboxtest.MustAppend(t, a, m)
		if got.GetSequence() != uint64(i+1) {
			t.Fatalf("A's append #%d got sequence %d", i, got.GetSequence())
		}
		appended = append(appended, proto.Clone(got).(*switchboardv1.Message))
	}
	sent := proto.Clone(appended[0]).(*switchboardv1.Message)
	sent.State = switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED
	if err := a.Update(ctx, sent, true); err != nil {
		t.Fatal(err)
	}
	appended[0] = sent

	// B takes over.
	rev, err = bb.Put(ctx, lease, []byte("b"), Fence{})
	if err != nil {
		t.Fatal(err)
	}
	fb.rev.Store(rev)

	// A still thinks it holds the lease: the server refuses its writes.
	if _, _, err := a.Append(ctx, outboxtest.Message(conn, 10)); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("A's Append after the takeover = %v, want ErrFenced", err)
	}
	stale := proto.Clone(appended[2]).(*switchboardv1.Message)
	stale.State = switchboardv1.MessageState_MESSAGE_STATE_FAILED
	for _, sync := range []bool{false, true} {
		if err := a.Update(ctx, stale, sync); !errors.Is(err, journal.ErrFenced) {
			t.Fatalf("A's Update(sync %v) after the takeover = %v, want ErrFenced", sync, err)
		}
	}
	// And once A knows it lost the lease, it does not even try.
	fa.rev.Store(0)
	if _, _, err := a.Append(ctx, outboxtest.Message(conn, 11)); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("A's Append without the lease = %v, want ErrFenced", err)
	}

	// B sees everything A had appended, as A left it.
	all, err := b.Scan(ctx, "", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(appended) {
		t.Fatalf("B scans %d messages, want %d", len(all), len(appended))
	}
	for i, m := range all {
		outboxtest.Same(t, m, appended[i])
	}
	p, err := b.Pending(ctx, conn, 0, 100)
	if err != nil || len(p) != 3 || p[0].GetSequence() != 2 {
		t.Fatalf("B's Pending = %v, %v; want sequences 2, 3, 4", p, err)
	}
	retry := outboxtest.Message(conn, 99)
	retry.IdempotencyKey = "key-1"
	got, created, err := b.Append(ctx, retry)
	if err != nil || created {
		t.Fatalf("B's Append with A's key: created %v, %v", created, err)
	}
	outboxtest.Same(t, got, appended[1])
	// B continues the sequence; A's refused appends used none.
	if got := outboxtest.MustAppend(t, b, outboxtest.Message(conn, 20)); got.GetSequence() != 5 {
		t.Fatalf("B's first Append got sequence %d, want 5", got.GetSequence())
	}
	final := proto.Clone(appended[2]).(*switchboardv1.Message)
	final.State = switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED
	if err := b.Update(ctx, final, true); err != nil {
		t.Fatalf("B's Update of A's message: %v", err)
	}
	if got, err := a.Get(ctx, conn, 3); err != nil {
		t.Fatal(err)
	} else {
		outboxtest.Same(t, got, final) // A reads the bucket too
	}
}

// TestOutboxUnavailable: with the server down Append fails, bounded, with
// an error wrapping journal.ErrUnavailable; after the server restarts,
// everything acknowledged is there and sequences continue.
func TestOutboxUnavailable(t *testing.T) {
	ts := natstest.Start(t, server.Options{})
	nc, b := btOpenBucket(t, ts.URL(), "down", 1)
	o := NewOutbox(b, nil)
	var acked []*switchboardv1.Message
	for i := range 6 {
		m := outboxtest.Message([]string{"conn-a", "conn.b"}[i%2], i)
		if i < 2 {
			m.IdempotencyKey = fmt.Sprintf("key-%d", i)
		}
		m = outboxtest.MustAppend(t, o, m)
		if i == 2 {
			m = proto.Clone(m).(*switchboardv1.Message)
			m.State = switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED
			if err := o.Update(obCtx(t), m, true); err != nil {
				t.Fatal(err)
			}
		}
		acked = append(acked, m)
	}

	ts.Stop()
	for _, call := range []struct {
		name string
		fn   func(context.Context) error
	}{
		{"Append", func(ctx context.Context) error {
			_, _, err := o.Append(ctx, outboxtest.Message("conn-a", 50))
			return err
		}},
		{"Update", func(ctx context.Context) error { return o.Update(ctx, acked[0], true) }},
		{"Get", func(ctx context.Context) error { _, err := o.Get(ctx, "conn-a", 1); return err }},
		{"Pending", func(ctx context.Context) error { _, err := o.Pending(ctx, "conn-a", 0, 10); return err }},
		{"Scan", func(ctx context.Context) error { _, err := o.Scan(ctx, "", 0, 10); return err }},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		start := time.Now()
		err := call.fn(ctx)
		cancel()
		if !errors.Is(err, journal.ErrUnavailable) {
			t.Fatalf("%s with the server down = %v, want ErrUnavailable", call.name, err)
		}
		if d := time.Since(start); d > 2*b.Timeout+time.Second {
			t.Fatalf("%s with the server down took %v", call.name, d)
		}
	}

	ts.Restart()
	deadline := time.Now().Add(20 * time.Second)
	for !nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect after the restart")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var next *switchboardv1.Message
	for {
		m, created, err := o.Append(obCtx(t), outboxtest.Message("conn-a", 60))
		if err == nil && created {
			next = m
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Append after the restart: created %v, %v", created, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if next.GetSequence() != 4 {
		t.Fatalf("Append on conn-a after the restart got sequence %d, want 4", next.GetSequence())
	}
	for _, m := range acked {
		got, err := o.Get(obCtx(t), m.GetConnectionId(), m.GetSequence())
		if err != nil {
			t.Fatalf("Get(%s, %d) after the restart: %v", m.GetConnectionId(), m.GetSequence(), err)
		}
		outboxtest.Same(t, got, m)
	}
	retry := outboxtest.Message("conn.b", 70)
	retry.IdempotencyKey = "key-1"
	got, created, err := o.Append(obCtx(t), retry)
	if err != nil || created {
		t.Fatalf("Append with a key from before the restart: created %v, %v", created, err)
	}
	outboxtest.Same(t, got, acked[1])
}

// TestOutboxBadInput: ids a key cannot hold, messages that cannot be
// encoded and unknown sequences get clear errors and store nothing; ids
// with the characters subjects reserve, and long idempotency keys, work.
func TestOutboxBadInput(t *testing.T) {
	ts := natstest.Start(t, server.Options{})
	_, b := btOpenBucket(t, ts.URL(), "bad", 1)
	o := NewOutbox(b, nil)
	ctx := obCtx(t)

	for _, conn := range []string{"", "a\x00b"} {
		_, _, err := o.Append(ctx, outboxtest.Message(conn, 1))
		if err == nil || !strings.Contains(err.Error(), "connection id") {
			t.Errorf("Append on connection %q = %v, want an error naming the connection id", conn, err)
		}
		m := outboxtest.Message(conn, 1)
		m.Sequence = 1
		if err := o.Update(ctx, m, true); err == nil || !strings.Contains(err.Error(), "connection id") {
			t.Errorf("Update on connection %q = %v, want an error naming the connection id", conn, err)
		}
		if _, err := o.Pending(ctx, conn, 0, 1); err == nil || !strings.Contains(err.Error(), "connection id") {
			t.Errorf("Pending of connection %q = %v, want an error naming the connection id", conn, err)
		}
		if _, err := o.Get(ctx, conn, 1); !errors.Is(err, journal.ErrNotFound) {
			t.Errorf("Get on connection %q = %v, want ErrNotFound", conn, err)
		}
	}
	if _, _, err := o.Append(ctx, nil); err == nil {
		t.Error("Append(nil) succeeded")
	}
	bad := outboxtest.Message("conn-a", 1)
	bad.ControlId = "\xff" // not UTF-8: proto refuses it
	if _, _, err := o.Append(ctx, bad); err == nil || !strings.Contains(err.Error(), "outbox: append") {
		t.Errorf("Append of a message proto cannot encode = %v", err)
	}
	if bad.GetSequence() != 0 || bad.GetMessageId() != "" {
		t.Errorf("a refused Append set sequence %d, id %q", bad.GetSequence(), bad.GetMessageId())
	}
	if all, err := o.Scan(ctx, "", 0, 100); err != nil || len(all) != 0 {
		t.Fatalf("Scan after refused appends = %d messages, %v", len(all), err)
	}

	// Ids with '.', '*', '>', spaces and unicode, in id order, not token
	// order; a long idempotency key is hashed and still found.
	conns := []string{"*", ">", "a.b", "a.b.>", "z z", "ünï.cødé"}
	long := strings.Repeat("k.*>", 300)
	for i := len(conns) - 1; i >= 0; i-- {
		m := outboxtest.Message(conns[i], i)
		m.IdempotencyKey = long
		if got := outboxtest.MustAppend(t, o, m); got.GetSequence() != 1 || got.GetMessageId() != "out-"+conns[i]+"-1" {
			t.Fatalf("Append on %q = %d %q", conns[i], got.GetSequence(), got.GetMessageId())
		}
		again := outboxtest.Message(conns[i], 100)
		again.IdempotencyKey = long
		if got, created, err := o.Append(ctx, again); err != nil || created || got.GetControlId() != m.GetControlId() {
			t.Fatalf("second Append with the long key on %q: created %v, %v", conns[i], created, err)
		}
	}
	all, err := o.Scan(ctx, "", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range all {
		got = append(got, m.GetConnectionId())
	}
	if fmt.Sprint(got) != fmt.Sprint(conns) {
		t.Fatalf("Scan order %q, want %q", got, conns)
	}
	pc, err := o.PendingConnections(ctx)
	if err != nil || fmt.Sprint(pc) != fmt.Sprint(conns) {
		t.Fatalf("PendingConnections = %q, %v; want %q", pc, err, conns)
	}
	if _, err := o.Get(ctx, "a.b", 2); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Get of an unknown sequence = %v, want ErrNotFound", err)
	}
}

// TestOutboxCrashWindows: what a crash between an Append's or an Update's
// writes leaves behind is tolerated. A burnt sequence (n advanced, its
// pending and idempotency entries written, no message) is never given out
// again, is not pending, and its key does not count; a pending entry of a
// message that became final does not make it pending.
func TestOutboxCrashWindows(t *testing.T) {
	ts := natstest.Start(t, server.Options{})
	_, b := btOpenBucket(t, ts.URL(), "crash", 1)
	o := NewOutbox(b, nil)
	ctx := obCtx(t)
	const conn = "conn.crash"
	first := outboxtest.MustAppend(t, o, outboxtest.Message(conn, 1))

	// An Append of sequence 2 with key "k" that crashed before its message.
	for _, kv := range []struct{ key, val string }{
		{outboxCounterKey(conn), "2"},
		{outboxPendingKey(conn, 2), ""},
		{outboxIdemKey(conn, "k"), "2"},
	} {
		if _, err := b.Put(ctx, kv.key, []byte(kv.val), Fence{}); err != nil {
			t.Fatal(err)
		}
	}
	// An Update of message 1 to ACCEPTED that crashed before deleting its
	// pending entry.
	done := proto.Clone(first).(*switchboardv1.Message)
	done.State = switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED
	v, err := encodeOutboxMessage(done)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, outboxMsgKey(conn, 1), v, Fence{}); err != nil {
		t.Fatal(err)
	}

	if p, err := o.Pending(ctx, conn, 0, 10); err != nil || len(p) != 0 {
		t.Fatalf("Pending = %d messages, %v; want none", len(p), err)
	}
	if pc, err := o.PendingConnections(ctx); err != nil || len(pc) != 0 {
		t.Fatalf("PendingConnections = %q, %v; want none", pc, err)
	}
	if _, err := o.Get(ctx, conn, 2); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Get of the burnt sequence = %v, want ErrNotFound", err)
	}
	retry := outboxtest.Message(conn, 2)
	retry.IdempotencyKey = "k"
	got, created, err := o.Append(ctx, retry)
	if err != nil || !created || got.GetSequence() != 3 {
		t.Fatalf("retried Append = sequence %d, created %v, %v; want a new message 3", got.GetSequence(), created, err)
	}
	again := outboxtest.Message(conn, 3)
	again.IdempotencyKey = "k"
	if got, created, err := o.Append(ctx, again); err != nil || created || got.GetSequence() != 3 {
		t.Fatalf("Append with the key again = sequence %d, created %v, %v; want message 3", got.GetSequence(), created, err)
	}
	p, err := o.Pending(ctx, conn, 0, 10)
	if err != nil || len(p) != 1 || p[0].GetSequence() != 3 {
		t.Fatalf("Pending = %v, %v; want message 3", p, err)
	}
	all, err := o.Scan(ctx, "", 0, 10)
	if err != nil || len(all) != 2 {
		t.Fatalf("Scan = %d messages, %v; want 1 and 3", len(all), err)
	}
	outboxtest.Same(t, all[0], done)
}

// TestOutboxCluster: an R3 bucket on three nodes. An instance connected to
// another node reads every message another one appended as soon as its
// Append returns (reads go to the stream's leader, never to a replica that
// may be behind), and continues the sequence.
func TestOutboxCluster(t *testing.T) {
	nodes := natstest.Cluster(t)
	_, ba := btOpenBucket(t, nodes[0].URL(), "cluster", 3)
	_, bb := btOpenBucket(t, nodes[2].URL(), "cluster", 3)
	a, b := NewOutbox(ba, nil), NewOutbox(bb, nil)
	ctx := obCtx(t)
	const conn = "conn.r3"
	for i := range 20 {
		m := outboxtest.MustAppend(t, a, outboxtest.Message(conn, i))
		got, err := b.Get(ctx, conn, m.GetSequence())
		if err != nil {
			t.Fatalf("Get(%d) through another node: %v", m.GetSequence(), err)
		}
		outboxtest.Same(t, got, m)
		u := proto.Clone(m).(*switchboardv1.Message)
		u.State = switchboardv1.MessageState_MESSAGE_STATE_SENDING
		if err := a.Update(ctx, u, false); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Get(ctx, conn, m.GetSequence()); err != nil || got.GetState() != u.GetState() {
			t.Fatalf("Get(%d) after an Update through another node: %v, %v", m.GetSequence(), got.GetState(), err)
		}
	}
	if got := outboxtest.MustAppend(t, b, outboxtest.Message(conn, 20)); got.GetSequence() != 21 {
		t.Fatalf("Append through another node got sequence %d, want 21", got.GetSequence())
	}
	if p, err := a.Pending(ctx, conn, 0, 100); err != nil || len(p) != 21 {
		t.Fatalf("Pending = %d messages, %v; want 21", len(p), err)
	}
}
