package pebblejournal

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/service/delivery"
)

// agedJournal appends 100 records at t0 and 100 at t0+10m and moves the
// clock to t0+71m: retention by an hour would delete the first hundred.
func agedJournal(t *testing.T) *Journal {
	t.Helper()
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), Options{MaxAge: time.Hour, MaxBytes: -1, clock: clock.now})
	appendN(t, j, 0, 100)
	clock.advance(10 * time.Minute)
	appendN(t, j, 100, 100)
	clock.advance(61 * time.Minute)
	return j
}

// TestRetentionFloorByAge: retention by age never deletes from the floor
// on, and catches up once the floor rises (the mark it stopped at is
// kept); without a floor it cuts as before.
func TestRetentionFloorByAge(t *testing.T) {
	j := agedJournal(t)
	floor := uint64(50)
	j.SetRetentionFloor(func() uint64 { return floor })
	pass(t, j)
	if got := firstSeq(t, j); got != 50 {
		t.Fatalf("FirstSeq with floor 50 = %d, want 50", got)
	}
	floor = 30 // a floor below what is gone changes nothing
	pass(t, j)
	if got := firstSeq(t, j); got != 50 {
		t.Fatalf("FirstSeq with floor 30 = %d, want 50", got)
	}
	floor = 1000 // above the last record: age alone decides
	pass(t, j)
	if got := firstSeq(t, j); got != 101 {
		t.Fatalf("FirstSeq with floor 1000 = %d, want 101", got)
	}
	j.SetRetentionFloor(nil)
	pass(t, j)
	if got := firstSeq(t, j); got != 101 {
		t.Fatalf("FirstSeq without floor = %d, want 101", got)
	}
}

// TestRetentionFloorBySize: the size limit deletes below and above the
// floor alike.
func TestRetentionFloorBySize(t *testing.T) {
	const maxBytes = 256 << 10
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), Options{MaxAge: -1, MaxBytes: maxBytes, clock: clock.now})
	j.SetRetentionFloor(func() uint64 { return 1 })
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 32 {
		for i := range 32 {
			r := testRecord(step*100 + i)
			r.Payload = randomPayload(rng, 1024)
			mustAppend(t, j, r)
		}
		clock.advance(time.Minute)
	}
	if err := j.db.Flush(); err != nil { // the estimate counts flushed data
		t.Fatal(err)
	}
	pass(t, j)
	if got := firstSeq(t, j); got <= 1 {
		t.Fatalf("FirstSeq = %d after a pass over MaxBytes with floor 1: the size limit must cut anyway", got)
	}
}

// TestConsumerKeepsRecords: with a delivery.Manager's Floor, retention by
// age keeps what a consumer has not acknowledged, and deletes it once
// acknowledged.
func TestConsumerKeepsRecords(t *testing.T) {
	ctx := context.Background()
	j := agedJournal(t)
	m, err := delivery.Open(ctx, delivery.Config{Journal: j, Store: j.Consumers()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	j.SetRetentionFloor(m.Floor)
	s, err := m.Attach(ctx, "c", delivery.AttachOptions{Spec: &delivery.Spec{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if b, err := s.Next(ctx, 100, 1<<20); err != nil || len(b.Deliveries) != 100 {
		t.Fatalf("Next = %d deliveries, %v", len(b.Deliveries), err)
	}
	if _, err := m.Ack(ctx, "c", nil, 40, nil); err != nil {
		t.Fatal(err)
	}
	pass(t, j)
	if got := firstSeq(t, j); got != 41 {
		t.Fatalf("FirstSeq = %d, want 41: the consumer has not acked 41..100", got)
	}
	if _, err := m.Ack(ctx, "c", nil, 100, nil); err != nil {
		t.Fatal(err)
	}
	pass(t, j)
	if got := firstSeq(t, j); got != 101 {
		t.Fatalf("FirstSeq after the acks = %d, want 101", got)
	}
}

// TestConsumerLost: when the size limit deletes records a consumer had not
// acknowledged (forgetBefore deletes as retention does), its next Next
// reports them as Lost, and it forgets its pending messages and dead
// letters below FirstSeq.
func TestConsumerLost(t *testing.T) {
	ctx := context.Background()
	j := openJournal(t, t.TempDir(), Options{MaxAge: -1, MaxBytes: -1})
	appendN(t, j, 0, 10)
	m, err := delivery.Open(ctx, delivery.Config{Journal: j, Store: j.Consumers()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	attach := func(name string, spec delivery.Spec) *delivery.Stream {
		s, err := m.Attach(ctx, name, delivery.AttachOptions{Spec: &spec})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	next := func(s *delivery.Stream, n int) delivery.Batch {
		t.Helper()
		b, err := s.Next(ctx, n, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// c has 5..8 and 10 pending.
	c := attach("c", delivery.Spec{})
	if b := next(c, 10); len(b.Deliveries) != 10 {
		t.Fatalf("c got %d deliveries, want 10", len(b.Deliveries))
	}
	if _, err := m.Ack(ctx, "c", []uint64{3, 4, 9}, 2, nil); err != nil {
		t.Fatal(err)
	}
	// d has dead letters 1 and 2 (delivered once each, never acked), and 3
	// and 4 pending.
	d := attach("d", delivery.Spec{MaxDeliveries: 1, AckWait: time.Millisecond, MaxAckPending: 2})
	if b := next(d, 10); len(b.Deliveries) != 2 {
		t.Fatalf("d got %d deliveries, want 2", len(b.Deliveries))
	}
	if b := next(d, 10); len(b.Deliveries) != 2 || b.Deliveries[0].Record.Seq != 3 {
		t.Fatalf("d got %v, want 3 and 4 once 1 and 2 are dead", b.Deliveries)
	}
	if dl, err := m.DeadLetters(ctx, "d", 0, 0); err != nil || len(dl) != 2 {
		t.Fatalf("DeadLetters = %v, %v; want 1 and 2", dl, err)
	}

	if err := j.forgetBefore(8); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		s    *delivery.Stream
		lost delivery.Range
	}{{"c", c, delivery.Range{First: 5, Last: 7}}, {"d", d, delivery.Range{First: 3, Last: 7}}} {
		b := next(tc.s, 10)
		if b.Lost == nil || *b.Lost != tc.lost || len(b.Deliveries) != 0 {
			t.Fatalf("%s: Next after retention = %+v (lost %v); want Lost %v alone", tc.name, b, b.Lost, tc.lost)
		}
		in, err := m.Get(ctx, tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if in.DeadLetters != 0 || in.AckFloor < 7 || in.Next < 8 {
			t.Fatalf("%s: Info after Lost = %+v; want no dead letters, AckFloor and Next past 7", tc.name, in)
		}
		if dl, err := m.DeadLetters(ctx, tc.name, 0, 0); err != nil || len(dl) != 0 {
			t.Fatalf("%s: DeadLetters after Lost = %v, %v; want none", tc.name, dl, err)
		}
	}
	if in, _ := m.Get(ctx, "c"); in.Pending != 2 || in.AckFloor != 7 {
		t.Fatalf("c: Info = %+v; want 8 and 10 pending", in)
	}
}

// TestRetentionAwaitsFloor: a journal reopened after a long stop deletes by
// age in the pass it runs at Open, before any reader could say what it
// needs; with AwaitRetentionFloor that pass waits for the first
// SetRetentionFloor, and then keeps what the floor asks for.
func TestRetentionAwaitsFloor(t *testing.T) {
	for _, await := range []bool{false, true} {
		clock := newFakeClock()
		dir := t.TempDir()
		opts := Options{MaxAge: time.Hour, MaxBytes: -1, clock: clock.now, AwaitRetentionFloor: await}
		j := openJournal(t, dir, opts)
		appendN(t, j, 0, 100)
		clock.advance(10 * time.Minute) // a later time mark dates the first 100
		appendN(t, j, 100, 100)
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		clock.advance(2 * time.Hour) // the stop: everything is older than MaxAge
		j = openJournal(t, dir, opts)
		if !await {
			// The pass at Open deletes the first 100 (what a consumer
			// would lose without the option).
			waitFirst(t, j, 101)
			continue
		}
		if got := j.RetentionStats().Passes; got != 0 || firstSeq(t, j) != 1 {
			t.Fatalf("before SetRetentionFloor: %d passes, FirstSeq %d; want none, 1", got, firstSeq(t, j))
		}
		j.SetRetentionFloor(func() uint64 { return 50 })
		waitFirst(t, j, 50)
	}
}

// waitFirst waits, bounded, for FirstSeq to reach want.
func waitFirst(t *testing.T, j *Journal, want uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); firstSeq(t, j) != want; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("FirstSeq %d; want %d", firstSeq(t, j), want)
		}
	}
}
