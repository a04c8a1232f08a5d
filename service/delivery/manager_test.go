package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service/delivery"
)

// env is a real journal in a temporary directory and a Manager on it,
// keeping consumers in the journal's database.
type env struct {
	t   *testing.T
	dir string
	j   *pebblejournal.Journal
	m   *delivery.Manager
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	e.t.Helper()
	j, err := pebblejournal.Open(e.dir, pebblejournal.Options{MaxAge: -1, MaxBytes: -1})
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := delivery.Open(context.Background(), delivery.Config{Journal: j, Store: j.Consumers()})
	if err != nil {
		_ = j.Close()
		e.t.Fatal(err)
	}
	e.j, e.m = j, m
}

func (e *env) close() {
	if e.m != nil {
		e.m.Close()
		_ = e.j.Close()
		e.m, e.j = nil, nil
	}
}

// restart closes the Manager and the journal and opens both again.
func (e *env) restart() {
	e.t.Helper()
	e.close()
	e.open()
}

// append stores n records, alternating listeners "a" and "b".
func (e *env) append(n int) {
	e.t.Helper()
	for range n {
		last, _ := e.j.LastSeq(context.Background())
		r := &journal.Record{Kind: journal.KindMessage, ListenerID: []string{"a", "b"}[last%2], ConnectionID: "conn",
			Time: time.Now(), Payload: fmt.Appendf(nil, "MSH|record %d", last+1)}
		if _, err := e.j.Append(context.Background(), r); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) attach(name string, o delivery.AttachOptions) *delivery.Stream {
	e.t.Helper()
	s, err := e.m.Attach(ctx(e.t), name, o)
	if err != nil {
		e.t.Fatalf("Attach(%q): %v", name, err)
	}
	e.t.Cleanup(s.Close)
	return s
}

func (e *env) info(name string) delivery.Info {
	e.t.Helper()
	in, err := e.m.Get(ctx(e.t), name)
	if err != nil {
		e.t.Fatalf("Get(%q): %v", name, err)
	}
	return in
}

func (e *env) ack(name string, seqs []uint64, through uint64, naks []uint64) {
	e.t.Helper()
	if _, err := e.m.Ack(ctx(e.t), name, seqs, through, naks); err != nil {
		e.t.Fatalf("Ack(%q, %v, %d, %v): %v", name, seqs, through, naks, err)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func next(t *testing.T, s *delivery.Stream, n int) delivery.Batch {
	t.Helper()
	b, err := s.Next(ctx(t), n, 1<<20)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return b
}

func seqs(b delivery.Batch) []uint64 {
	var out []uint64
	for _, d := range b.Deliveries {
		out = append(out, d.Record.Seq)
	}
	return out
}

func want(t *testing.T, what string, got []uint64, want ...uint64) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// nextAsync runs Next in a goroutine; the result arrives on the channel.
type result struct {
	b   delivery.Batch
	err error
}

func nextAsync(c context.Context, s *delivery.Stream, n int) <-chan result {
	ch := make(chan result, 1)
	go func() {
		b, err := s.Next(c, n, 1<<20)
		ch <- result{b, err}
	}()
	return ch
}

// TestStartAndFilters: a new consumer starts at Start; filters skip
// records without delivering them (Next still moves past them); "only new"
// starts after the head.
func TestStartAndFilters(t *testing.T) {
	e := newEnv(t)
	e.append(10) // odd seqs on "a", even on "b"
	s := e.attach("a-only", delivery.AttachOptions{Spec: &delivery.Spec{ListenerIDs: []string{"a"}}, Start: 4})
	want(t, "a-only", seqs(next(t, s, 100)), 5, 7, 9)
	if in := e.info("a-only"); in.Next != 11 || in.Pending != 3 || in.Backlog != 0 || in.AckFloor != 4 {
		t.Fatalf("Info = %+v; want Next 11, 3 pending, no backlog, AckFloor 4", in)
	}
	kinds := e.attach("acks", delivery.AttachOptions{Spec: &delivery.Spec{Kinds: []journal.Kind{journal.KindAck}}})
	newOnly := e.attach("new", delivery.AttachOptions{Spec: &delivery.Spec{}, Start: 11})
	r := nextAsync(ctx(t), newOnly, 100)
	e.append(2)
	got := <-r
	news := seqs(got.b)
	for len(news) < 2 {
		news = append(news, seqs(next(t, newOnly, 100))...)
	}
	want(t, "only new", news, 11, 12)
	if _, err := e.j.Append(ctx(t), &journal.Record{Kind: journal.KindAck, Payload: []byte("MSH|ack")}); err != nil {
		t.Fatal(err)
	}
	want(t, "acks", seqs(next(t, kinds, 100)), 13)
	all := e.attach("all", delivery.AttachOptions{Spec: &delivery.Spec{}})
	if b := next(t, all, 5); len(b.Deliveries) != 5 || b.Deliveries[0].Record.Seq != 1 || b.Deliveries[0].Count != 1 || b.Deliveries[0].Redelivered {
		t.Fatalf("Start 0 = %+v; want 1..5, first deliveries", b)
	}
	if string(e.attachOrFail(t, "all").Record.Payload) != "MSH|record 6" {
		t.Fatal("payload not delivered as stored")
	}
}

func (e *env) attachOrFail(t *testing.T, name string) delivery.Delivery {
	t.Helper()
	s := e.attach(name, delivery.AttachOptions{})
	b := next(t, s, 1)
	if len(b.Deliveries) != 1 {
		t.Fatalf("Next = %+v", b)
	}
	return b.Deliveries[0]
}

// TestAttachErrors: unknown consumers, conflicting specs, bad names.
func TestAttachErrors(t *testing.T) {
	e := newEnv(t)
	if _, err := e.m.Attach(ctx(t), "nobody", delivery.AttachOptions{}); !errors.Is(err, delivery.ErrNotFound) {
		t.Errorf("Attach without a Spec to an unknown consumer = %v, want ErrNotFound", err)
	}
	e.attach("c", delivery.AttachOptions{Spec: &delivery.Spec{ListenerIDs: []string{"b", "a", "a"}}})
	e.attach("c", delivery.AttachOptions{Spec: &delivery.Spec{ListenerIDs: []string{"a", "b"}, AckWait: delivery.DefaultAckWait}})
	e.attach("c", delivery.AttachOptions{})
	if _, err := e.m.Attach(ctx(t), "c", delivery.AttachOptions{Spec: &delivery.Spec{Mode: delivery.ModeExclusive}}); !errors.Is(err, delivery.ErrConflict) {
		t.Errorf("Attach with another Spec = %v, want ErrConflict", err)
	}
	for _, name := range []string{"", "a\x00b"} {
		if _, err := e.m.Attach(ctx(t), name, delivery.AttachOptions{Spec: &delivery.Spec{}}); !errors.Is(err, delivery.ErrInvalid) {
			t.Errorf("Attach(%q) = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := e.m.Attach(ctx(t), "neg", delivery.AttachOptions{Spec: &delivery.Spec{AckWait: -1}}); !errors.Is(err, delivery.ErrInvalid) {
		t.Errorf("Attach with a negative AckWait = %v, want ErrInvalid", err)
	}
	if n := e.m.Attached("c"); n != 3 {
		t.Errorf("Attached = %d, want 3", n)
	}
	if in := e.info("c"); in.Streams != 3 || !slices.Equal(in.Spec.ListenerIDs, []string{"a", "b"}) || in.Spec.MaxAckPending != delivery.DefaultMaxAckPending {
		t.Errorf("Info = %+v", in)
	}
}

// TestShared: streams of a shared consumer each get different messages,
// and together no more than MaxAckPending unacknowledged.
func TestShared(t *testing.T) {
	e := newEnv(t)
	e.append(20)
	spec := &delivery.Spec{MaxAckPending: 5}
	s1 := e.attach("c", delivery.AttachOptions{Spec: spec})
	s2 := e.attach("c", delivery.AttachOptions{Spec: spec})
	want(t, "s1", seqs(next(t, s1, 3)), 1, 2, 3)
	want(t, "s2", seqs(next(t, s2, 10)), 4, 5) // the two slots left
	r := nextAsync(ctx(t), s1, 10)             // waits for a slot
	e.ack("c", []uint64{4, 1}, 0, nil)
	got := <-r
	want(t, "s1 after two acks", seqs(got.b), 6, 7)
	e.ack("c", nil, 7, nil)
	want(t, "s2 after acking through 7", seqs(next(t, s2, 100)), 8, 9, 10, 11, 12)
	if in := e.info("c"); in.Pending != 5 || in.AckFloor != 7 || in.Backlog != 8 {
		t.Fatalf("Info = %+v; want 5 pending, AckFloor 7, backlog 8", in)
	}
}

// TestExclusive: only the first stream gets messages; when it closes, the
// next in attach order takes over, starting with what the first left
// unacknowledged.
func TestExclusive(t *testing.T) {
	e := newEnv(t)
	e.append(5)
	spec := &delivery.Spec{Mode: delivery.ModeExclusive}
	s1 := e.attach("c", delivery.AttachOptions{Spec: spec})
	s2 := e.attach("c", delivery.AttachOptions{Spec: spec})
	s3 := e.attach("c", delivery.AttachOptions{Spec: spec})
	r2 := nextAsync(ctx(t), s2, 10)
	c3, cancel3 := context.WithCancel(ctx(t))
	r3 := nextAsync(c3, s3, 10)
	want(t, "active stream", seqs(next(t, s1, 3)), 1, 2, 3)
	e.ack("c", []uint64{2}, 0, nil)
	s1.Close()
	got := <-r2
	want(t, "second stream after the first closed", seqs(got.b), 1, 3)
	for _, d := range got.b.Deliveries {
		if !d.Redelivered || d.Count != 2 {
			t.Fatalf("taken over: %+v; want redelivered, count 2", d)
		}
	}
	want(t, "second stream, new records", seqs(next(t, s2, 10)), 4, 5)
	cancel3()
	if res := <-r3; !errors.Is(res.err, context.Canceled) || len(res.b.Deliveries) != 0 {
		t.Fatalf("third stream got %+v, %v; want nothing until cancelled", res.b, res.err)
	}
	if _, err := s1.Next(ctx(t), 1, 1); !errors.Is(err, delivery.ErrClosed) {
		t.Fatalf("Next on a closed stream = %v, want ErrClosed", err)
	}
}

// TestRedelivery: Close releases at once; ack-wait expiry redelivers with
// the count going up; after MaxDeliveries the message is a dead letter,
// listed by DeadLetters, and Replay puts it back with its count reset.
func TestRedelivery(t *testing.T) {
	e := newEnv(t)
	e.append(1)
	s1 := e.attach("hold", delivery.AttachOptions{Spec: &delivery.Spec{AckWait: time.Hour}})
	want(t, "first stream", seqs(next(t, s1, 1)), 1)
	s2 := e.attach("hold", delivery.AttachOptions{})
	s1.Close()
	if d := next(t, s2, 1).Deliveries[0]; d.Count != 2 || !d.Redelivered {
		t.Fatalf("after Close: %+v; want count 2, redelivered", d)
	}

	s := e.attach("c", delivery.AttachOptions{Spec: &delivery.Spec{AckWait: 10 * time.Millisecond, MaxDeliveries: 3}})
	for count := uint32(1); count <= 3; count++ {
		d := next(t, s, 10).Deliveries
		if len(d) != 1 || d[0].Record.Seq != 1 || d[0].Count != count || d[0].Redelivered != (count > 1) {
			t.Fatalf("delivery %d: %+v", count, d)
		}
	}
	r := nextAsync(ctx(t), s, 10) // 1 becomes a dead letter, then nothing
	for e.info("c").DeadLetters != 1 {
		time.Sleep(time.Millisecond)
	}
	e.append(1)
	if res := <-r; res.err != nil || !slices.Equal(seqs(res.b), []uint64{2}) {
		t.Fatalf("Next after the dead letter = %v, %v; want 2", seqs(res.b), res.err)
	}
	e.ack("c", []uint64{2}, 0, nil)
	dl, err := e.m.DeadLetters(ctx(t), "c", 0, 0)
	if err != nil || len(dl) != 1 || dl[0].Seq != 1 || dl[0].Deliveries != 3 || dl[0].Time.IsZero() {
		t.Fatalf("DeadLetters = %+v, %v; want 1, after 3 deliveries", dl, err)
	}
	if in := e.info("c"); in.DeadLetters != 1 || in.Pending != 0 || in.AckFloor != 2 || in.Redeliveries != 2 {
		t.Fatalf("Info = %+v; want 1 dead letter, none pending, AckFloor 2, 2 redeliveries", in)
	}
	if n, err := e.m.Replay(ctx(t), "c", []uint64{1, 2, 99}); err != nil || n != 1 {
		t.Fatalf("Replay = %d, %v; want 1", n, err)
	}
	if d := next(t, s, 10).Deliveries; len(d) != 1 || d[0].Record.Seq != 1 || d[0].Count != 1 || !d[0].Redelivered {
		t.Fatalf("after Replay: %+v; want 1, count 1, redelivered", d)
	}
	if dl, _ := e.m.DeadLetters(ctx(t), "c", 0, 0); len(dl) != 0 {
		t.Fatalf("DeadLetters after Replay = %v", dl)
	}
	if in := e.info("c"); in.DeadLetters != 0 || in.Pending != 1 {
		t.Fatalf("Info after Replay = %+v", in)
	}
}

// TestAck: individual acks, through (cumulative), naks; ErrNotDelivered
// applies nothing; acking twice is a no-op.
func TestAck(t *testing.T) {
	e := newEnv(t)
	e.append(10)
	s := e.attach("c", delivery.AttachOptions{Spec: &delivery.Spec{}})
	want(t, "first batch", seqs(next(t, s, 8)), span(1, 8)...)
	in, err := e.m.Ack(ctx(t), "c", []uint64{2, 7}, 0, nil)
	if err != nil || in.Pending != 6 || in.AckFloor != 0 {
		t.Fatalf("Ack 2, 7 = %+v, %v", in, err)
	}
	if in, err = e.m.Ack(ctx(t), "c", nil, 4, nil); err != nil || in.Pending != 3 || in.AckFloor != 4 {
		t.Fatalf("Ack through 4 = %+v, %v; want 5, 6, 8 pending", in, err)
	}
	for _, bad := range []struct {
		seqs, naks []uint64
		through    uint64
	}{
		{seqs: []uint64{5, 9}},  // 9 was never delivered
		{naks: []uint64{6, 10}}, // nor 10
		{seqs: []uint64{0}},
		{seqs: []uint64{5}, through: 9},
	} {
		if _, err := e.m.Ack(ctx(t), "c", bad.seqs, bad.through, bad.naks); !errors.Is(err, delivery.ErrNotDelivered) {
			t.Fatalf("Ack(%v, %d, %v) = %v, want ErrNotDelivered", bad.seqs, bad.through, bad.naks, err)
		}
	}
	if in := e.info("c"); in.Pending != 3 {
		t.Fatalf("a refused Ack applied something: %+v", in)
	}
	e.ack("c", []uint64{1, 2, 7}, 3, nil) // all acked already
	e.ack("c", []uint64{5}, 0, []uint64{8, 5, 3})
	b := next(t, s, 10)
	want(t, "after a nak", seqs(b), 8)
	if !b.Deliveries[0].Redelivered || b.Deliveries[0].Count != 2 {
		t.Fatalf("nak'ed message: %+v", b.Deliveries[0])
	}
	want(t, "then new ones", seqs(next(t, s, 10)), 9, 10)
	if _, err := e.m.Ack(ctx(t), "nobody", nil, 1, nil); !errors.Is(err, delivery.ErrNotFound) {
		t.Fatalf("Ack of an unknown consumer = %v", err)
	}
}

// TestRestart: after the Manager and the journal are closed and opened
// again, a new stream gets exactly the unacknowledged messages, marked
// redelivered, then new records; dead letters and Info survive.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	e.append(6)
	spec := &delivery.Spec{MaxDeliveries: 1, AckWait: time.Millisecond, MaxAckPending: 1}
	s := e.attach("dead", delivery.AttachOptions{Spec: spec})
	want(t, "dead", seqs(next(t, s, 1)), 1)
	want(t, "dead", seqs(next(t, s, 1)), 2) // 1 expired: a dead letter
	e.ack("dead", []uint64{2}, 0, nil)
	s = e.attach("c", delivery.AttachOptions{Spec: &delivery.Spec{ListenerIDs: []string{"a"}}})
	want(t, "c", seqs(next(t, s, 100)), 1, 3, 5)
	e.ack("c", []uint64{3}, 0, nil)

	e.restart()
	s = e.attach("c", delivery.AttachOptions{})
	b := next(t, s, 100)
	want(t, "after restart", seqs(b), 1, 5)
	for _, d := range b.Deliveries {
		if !d.Redelivered || d.Count != 2 {
			t.Fatalf("after restart: %+v; want redelivered, count 2", d)
		}
	}
	r := nextAsync(ctx(t), s, 100)
	e.append(2)
	res := <-r
	want(t, "new after restart", seqs(res.b)[:1], 7)
	if res.b.Deliveries[0].Redelivered {
		t.Fatal("a new record counts as redelivered")
	}
	if dl, err := e.m.DeadLetters(ctx(t), "dead", 0, 0); err != nil || len(dl) != 1 || dl[0].Seq != 1 {
		t.Fatalf("dead letters after restart = %v, %v", dl, err)
	}
	in := e.info("dead")
	if in.DeadLetters != 1 || in.Next != 3 || in.Spec.MaxDeliveries != 1 || in.Created.IsZero() {
		t.Fatalf("Info after restart = %+v", in)
	}
	if infos, err := e.m.List(ctx(t)); err != nil || len(infos) != 2 || infos[0].Name != "c" || infos[1].Name != "dead" {
		t.Fatalf("List = %+v, %v", infos, err)
	}
}

// TestStopAtHead: Next returns io.EOF once everything up to the head at
// Attach was delivered or filtered out, and nothing is due.
func TestStopAtHead(t *testing.T) {
	e := newEnv(t)
	e.append(7)
	s := e.attach("c", delivery.AttachOptions{Spec: &delivery.Spec{ListenerIDs: []string{"a"}}, StopAtHead: true})
	e.append(2) // after Attach: not delivered
	var got []uint64
	for {
		b, err := s.Next(ctx(t), 2, 1<<20)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, seqs(b)...)
	}
	want(t, "up to the head", got, 1, 3, 5, 7)
	if _, err := s.Next(ctx(t), 2, 1<<20); err != io.EOF {
		t.Fatalf("Next again = %v, want io.EOF", err)
	}
	e.ack("c", nil, 0, []uint64{5})
	want(t, "a nak'ed message is due", seqs(next(t, s, 10)), 5)
	if _, err := s.Next(ctx(t), 2, 1<<20); err != io.EOF {
		t.Fatalf("Next after the redelivery = %v, want io.EOF", err)
	}
	empty := e.attach("empty", delivery.AttachOptions{Spec: &delivery.Spec{}, Start: 100, StopAtHead: true})
	if _, err := empty.Next(ctx(t), 2, 1<<20); err != io.EOF {
		t.Fatalf("Next starting after the head = %v, want io.EOF", err)
	}
}

// TestMaxBytes: Next returns at least one record however large, and no
// more than maxBytes of payload otherwise; redeliveries too.
func TestMaxBytes(t *testing.T) {
	e := newEnv(t)
	e.append(6) // payloads of 14 bytes
	s := e.attach("c", delivery.AttachOptions{Spec: &delivery.Spec{}})
	b, err := s.Next(ctx(t), 10, 30)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "30 bytes", seqs(b), 1, 2)
	if b, err = s.Next(ctx(t), 10, 1); err != nil {
		t.Fatal(err)
	}
	want(t, "1 byte", seqs(b), 3)
	e.ack("c", nil, 0, []uint64{1, 2, 3})
	if b, err = s.Next(ctx(t), 10, 30); err != nil {
		t.Fatal(err)
	}
	want(t, "redelivered, 30 bytes", seqs(b), 1, 2)
}

// TestDelete: streams get ErrDeleted, the consumer is gone with its dead
// letters, and the name can be used again.
func TestDelete(t *testing.T) {
	e := newEnv(t)
	e.append(2)
	s := e.attach("c", delivery.AttachOptions{Spec: &delivery.Spec{MaxDeliveries: 1, AckWait: time.Millisecond, MaxAckPending: 1}})
	want(t, "c", seqs(next(t, s, 1)), 1)
	want(t, "c", seqs(next(t, s, 1)), 2) // 1 is a dead letter
	r := nextAsync(ctx(t), s, 1)         // 2 becomes one too, then it waits
	for e.info("c").DeadLetters != 2 {
		time.Sleep(time.Millisecond)
	}
	if err := e.m.Delete(ctx(t), "c"); err != nil {
		t.Fatal(err)
	}
	if res := <-r; !errors.Is(res.err, delivery.ErrDeleted) {
		t.Fatalf("blocked Next after Delete = %v, want ErrDeleted", res.err)
	}
	if _, err := s.Next(ctx(t), 1, 1); !errors.Is(err, delivery.ErrDeleted) {
		t.Fatalf("Next after Delete = %v, want ErrDeleted", err)
	}
	if _, err := e.m.Get(ctx(t), "c"); !errors.Is(err, delivery.ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := e.m.Delete(ctx(t), "c"); !errors.Is(err, delivery.ErrNotFound) {
		t.Fatalf("Delete again = %v, want ErrNotFound", err)
	}
	if dl, err := e.j.Consumers().DeadLetters(ctx(t), "c", 0, 0); err != nil || len(dl) != 0 {
		t.Fatalf("the store still holds dead letters: %v, %v", dl, err)
	}
	e.restart()
	if _, err := e.m.Get(ctx(t), "c"); !errors.Is(err, delivery.ErrNotFound) {
		t.Fatalf("Get after Delete and a restart = %v, want ErrNotFound", err)
	}
	s = e.attach("c", delivery.AttachOptions{Spec: &delivery.Spec{}})
	want(t, "recreated", seqs(next(t, s, 10)), 1, 2)
}

// TestClose: every blocked Next returns ErrClosed (TestMain checks that
// no goroutine is left).
func TestClose(t *testing.T) {
	e := newEnv(t)
	e.append(1)
	waiting := e.attach("tail", delivery.AttachOptions{Spec: &delivery.Spec{}, Start: 2})
	full := e.attach("full", delivery.AttachOptions{Spec: &delivery.Spec{MaxAckPending: 1}})
	want(t, "full", seqs(next(t, full, 1)), 1)
	first := e.attach("excl", delivery.AttachOptions{Spec: &delivery.Spec{Mode: delivery.ModeExclusive}, Start: 2})
	second := e.attach("excl", delivery.AttachOptions{})
	var rs []<-chan result
	for _, s := range []*delivery.Stream{waiting, full, first, second} {
		rs = append(rs, nextAsync(ctx(t), s, 1))
	}
	e.m.Close()
	for i, r := range rs {
		if res := <-r; !errors.Is(res.err, delivery.ErrClosed) {
			t.Errorf("stream %d: Next after Close = %v, want ErrClosed", i, res.err)
		}
	}
	if _, err := e.m.Attach(ctx(t), "tail", delivery.AttachOptions{}); !errors.Is(err, delivery.ErrClosed) {
		t.Errorf("Attach after Close = %v", err)
	}
	e.m.Close()
}

// TestConcurrent: several streams, acks from another goroutine and
// appends going on: every record is delivered and acked, none is
// delivered to two streams at once (run with -race).
func TestConcurrent(t *testing.T) {
	e := newEnv(t)
	const total, streams = 600, 3
	spec := &delivery.Spec{MaxAckPending: 50}
	c := ctx(t)
	acks := make(chan []uint64, 100)
	var (
		mu        sync.Mutex
		delivered = map[uint64]int{}
		wg        sync.WaitGroup
		errs      = make(chan error, streams+2)
	)
	wg.Add(1)
	go func() { // appender
		defer wg.Done()
		for i := range total {
			r := &journal.Record{Kind: journal.KindMessage, Payload: fmt.Appendf(nil, "MSH|%d", i)}
			if _, err := e.j.Append(c, r); err != nil {
				errs <- err
				return
			}
		}
	}()
	done := make(chan struct{})
	wg.Add(1)
	go func() { // acker
		defer wg.Done()
		for {
			select {
			case s := <-acks:
				if _, err := e.m.Ack(c, "c", s, 0, nil); err != nil {
					errs <- err
					return
				}
			case <-done:
				return
			}
		}
	}()
	for range streams {
		s := e.attach("c", delivery.AttachOptions{Spec: spec})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				b, err := s.Next(c, 7, 1<<20)
				if err != nil {
					if !errors.Is(err, delivery.ErrClosed) {
						errs <- err
					}
					return
				}
				mu.Lock()
				for _, d := range b.Deliveries {
					delivered[d.Record.Seq]++
				}
				mu.Unlock()
				acks <- seqs(b)
			}
		}()
	}
	for {
		in := e.info("c")
		if in.AckFloor == total {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.m.Close()
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(delivered) != total {
		t.Fatalf("%d records delivered, want %d", len(delivered), total)
	}
	for seq, n := range delivered {
		if n != 1 {
			t.Fatalf("record %d delivered %d times (AckWait is 30 s: never twice)", seq, n)
		}
	}
}

// TestFloor: the smallest sequence some consumer still needs.
func TestFloor(t *testing.T) {
	e := newEnv(t)
	if f := e.m.Floor(); f != ^uint64(0) {
		t.Fatalf("Floor without consumers = %d", f)
	}
	e.append(10)
	s := e.attach("c", delivery.AttachOptions{Spec: &delivery.Spec{}, Start: 3})
	if f := e.m.Floor(); f != 3 {
		t.Fatalf("Floor of a new consumer at 3 = %d", f)
	}
	next(t, s, 5) // 3..7
	e.ack("c", []uint64{3, 5}, 0, nil)
	if f := e.m.Floor(); f != 4 {
		t.Fatalf("Floor with 4 pending = %d", f)
	}
	e.ack("c", nil, 7, nil)
	if f := e.m.Floor(); f != 8 {
		t.Fatalf("Floor with nothing pending = %d, want Next (8)", f)
	}
	e.attach("d", delivery.AttachOptions{Spec: &delivery.Spec{}, Start: 11})
	if f := e.m.Floor(); f != 8 {
		t.Fatalf("Floor of two consumers = %d", f)
	}
}
