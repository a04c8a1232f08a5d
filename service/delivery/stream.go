package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/switchboard-dev/switchboard/journal"
)

// Stream is one attachment to a consumer: a client receiving its messages.
// Next and Close may be called from different goroutines; Next from one
// at a time.
type Stream struct {
	m          *Manager
	c          *consumer
	stopAtHead bool
	head       uint64 // LastSeq at Attach
	closed     bool   // guarded by c.mu
}

// Batch is what Next returns: deliveries, or a Lost range.
type Batch struct {
	Deliveries []Delivery
	Lost       *Range // records retention's size limit deleted before the consumer got or acked them
}

// Delivery is one message delivered.
type Delivery struct {
	Record      journal.Record
	Count       uint32 // deliveries to this consumer, this one included
	Redelivered bool   // Count > 1, or it was delivered before a restart or a Replay
}

// Range is the sequences First to Last, both included.
type Range struct{ First, Last uint64 }

// readRounds bounds the journal reads one critical section of Next makes
// while every record it reads is filtered out, so acks are not held up by
// a consumer skipping a long stretch.
const readRounds = 8

// Next blocks until it can deliver at least one message (or a Lost range),
// then returns up to maxRecords / maxBytes (at least one). Redeliveries that
// are due come first. Exclusive mode: a stream that is not the active one
// blocks until it becomes active (attach order). It returns ctx's error,
// ErrDeleted when the consumer is deleted, ErrClosed when the manager (or
// this stream) closes, io.EOF for StopAtHead, and journal errors (wrapped).
//
// A message that reaches MaxDeliveries without an ack becomes a dead
// letter when it is next due, durably, before Next returns. A Lost batch
// comes alone: the consumer moved on to the journal's FirstSeq and forgot
// its pending messages and dead letters below it.
func (s *Stream) Next(ctx context.Context, maxRecords, maxBytes int) (Batch, error) {
	maxRecords = max(maxRecords, 1)
	c, m := s.c, s.m
	for {
		if err := ctx.Err(); err != nil {
			return Batch{}, err
		}
		first, err := m.j.FirstSeq(ctx)
		if err != nil {
			return Batch{}, fmt.Errorf("delivery: consumer %q: %w", c.name, err)
		}
		c.mu.Lock()
		var r round
		switch {
		case s.closed || c.closed:
			err = ErrClosed
		case c.deleted:
			err = ErrDeleted
		case c.spec.Mode == ModeExclusive && c.streams[0] != s:
			r.wait = true // not our turn
		default:
			r, err = s.collectLocked(ctx, first, maxRecords, maxBytes)
		}
		wake := c.wake
		c.mu.Unlock()
		if err != nil {
			return Batch{}, err
		}
		if r.changed {
			if err := m.persist(ctx, c, r.sync); err != nil {
				// What was delivered stays delivered: the state is written
				// with the next save. Only a crash before then loses it, and
				// that only makes the messages read as first deliveries.
				m.logger.Warn("delivery: could not save a consumer's state", "consumer", c.name, "err", err)
			}
		}
		switch {
		case len(r.batch.Deliveries) > 0 || r.batch.Lost != nil:
			return r.batch, nil
		case r.eof:
			return Batch{}, io.EOF
		case r.wait:
			if err := s.wait(ctx, wake, r); err != nil {
				return Batch{}, err
			}
		}
	}
}

// round is what one critical section of Next found.
type round struct {
	batch   Batch
	changed bool // the stored form changed: save it
	sync    bool // durably (dead letters came or went)
	eof     bool
	// wait: nothing to do now; wait for wake, and for a record after
	// journalAfter if onJournal, and until due if it is set.
	wait         bool
	onJournal    bool
	journalAfter uint64
	due          time.Time
}

// collectLocked does what Next can do now: report a Lost range, redeliver
// what is due, deliver new records. c.mu must be held; it stays held
// across journal reads (which never wait), so that two streams never take
// the same record.
func (s *Stream) collectLocked(ctx context.Context, first uint64, maxRecords, maxBytes int) (round, error) {
	c, m := s.c, s.m
	var r round
	if lost, dropped := s.m.dropBelowLocked(ctx, c, first); lost != nil || dropped {
		r.batch.Lost, r.changed, r.sync = lost, true, true
		if lost != nil {
			return r, nil
		}
	}
	now := m.now()
	due, nextDue, dead := s.dueLocked(now)
	if dead {
		r.changed, r.sync = true, true
	}
	if len(due) > 0 {
		return s.redeliverLocked(ctx, r, due, now, maxRecords, maxBytes)
	}
	r.due = nextDue
	slots := c.spec.MaxAckPending - len(c.pending)
	switch {
	case s.stopAtHead && c.next > s.head:
		r.eof = true
		return r, nil
	case slots <= 0:
		r.wait = true
		return r, nil
	}
	limit := min(maxRecords, slots)
	if s.stopAtHead {
		limit = int(min(uint64(limit), s.head-c.next+1))
	}
	for range readRounds {
		recs, err := m.j.Read(ctx, c.next, limit, maxBytes)
		var nr *journal.NotRetainedError
		if errors.As(err, &nr) {
			// Retention moved on since first was read.
			lost, _ := m.dropBelowLocked(ctx, c, nr.First)
			r.batch.Lost, r.changed, r.sync = lost, true, true
			return r, nil
		}
		if err != nil {
			return r, fmt.Errorf("delivery: consumer %q: %w", c.name, err)
		}
		if len(recs) == 0 {
			r.wait, r.onJournal, r.journalAfter = true, true, c.next-1
			return r, nil
		}
		for i := range recs {
			rec := &recs[i]
			c.next = rec.Seq + 1
			if !c.spec.Match(rec) {
				continue
			}
			c.pending[rec.Seq] = &pending{count: 1, first: now.UTC(), due: now.Add(c.spec.AckWait), owner: s}
			r.batch.Deliveries = append(r.batch.Deliveries, Delivery{Record: *rec, Count: 1})
		}
		c.changedLocked()
		r.changed = true
		if len(r.batch.Deliveries) > 0 || (s.stopAtHead && c.next > s.head) {
			break
		}
	}
	// Filtered out: go round again (another critical section), or stop
	// at the head.
	return r, nil
}

// dueLocked returns the pending messages due for redelivery now, by
// sequence, and when the next one not due yet will be (zero: none). Those
// that reached MaxDeliveries become dead letters instead (dead reports
// that some did). c.mu must be held.
func (s *Stream) dueLocked(now time.Time) (due []uint64, next time.Time, dead bool) {
	c := s.c
	for seq, p := range c.pending {
		if p.owner != nil && now.Before(p.due) {
			if next.IsZero() || p.due.Before(next) {
				next = p.due
			}
			continue
		}
		if int(p.count) >= c.spec.MaxDeliveries {
			delete(c.pending, seq)
			c.deadAdd = append(c.deadAdd, DeadLetter{Seq: seq, Deliveries: p.count, Time: now.UTC()})
			c.dead++
			if c.deadMin == 0 || seq < c.deadMin {
				c.deadMin = seq
			}
			dead = true
			continue
		}
		due = append(due, seq)
	}
	if dead {
		c.changedLocked()
	}
	slices.Sort(due)
	return due, next, dead
}

// redeliverLocked delivers the due messages again, reading them from the
// journal in runs of consecutive sequences. c.mu must be held.
func (s *Stream) redeliverLocked(ctx context.Context, r round, due []uint64, now time.Time, maxRecords, maxBytes int) (round, error) {
	c, m := s.c, s.m
	size := 0
	for i := 0; i < len(due) && len(r.batch.Deliveries) < maxRecords; {
		j := i + 1
		for j < len(due) && due[j] == due[j-1]+1 && j-i < maxRecords-len(r.batch.Deliveries) {
			j++
		}
		recs, err := m.j.Read(ctx, due[i], j-i, max(maxBytes-size, 1))
		var nr *journal.NotRetainedError
		if errors.As(err, &nr) {
			lost, _ := m.dropBelowLocked(ctx, c, nr.First)
			r.batch, r.changed, r.sync = Batch{Lost: lost}, true, true
			return r, nil
		}
		if err != nil {
			return r, fmt.Errorf("delivery: consumer %q: %w", c.name, err)
		}
		for k := range recs {
			rec := &recs[k]
			if len(r.batch.Deliveries) > 0 && size+len(rec.Payload) > maxBytes {
				return r, nil
			}
			p := c.pending[rec.Seq]
			p.count++
			p.owner, p.due = s, now.Add(c.spec.AckWait)
			c.redeliveries++
			size += len(rec.Payload)
			r.batch.Deliveries = append(r.batch.Deliveries, Delivery{Record: *rec, Count: p.count, Redelivered: p.count > 1 || p.again})
		}
		if len(recs) < j-i {
			break // maxBytes
		}
		i = j
	}
	c.changedLocked()
	r.changed = true
	return r, nil
}

// dropBelowLocked handles retention having deleted records the consumer
// still needed (first is the journal's FirstSeq): it moves Next up to
// first, forgets pending messages below it and returns the Lost range,
// and drops dead letters below first (dropped reports that it did). c.mu
// must be held.
func (m *Manager) dropBelowLocked(ctx context.Context, c *consumer, first uint64) (lost *Range, dropped bool) {
	needed := c.next
	for seq := range c.pending {
		needed = min(needed, seq)
	}
	if first <= needed && (c.deadMin == 0 || first <= c.deadMin) {
		return nil, false
	}
	if first > needed {
		lost = &Range{First: needed, Last: first - 1}
		for seq := range c.pending {
			if seq < first {
				delete(c.pending, seq)
			}
		}
		c.next = max(c.next, first)
		m.logger.Warn("delivery: retention deleted records a consumer had not acknowledged",
			"consumer", c.name, "first_seq", lost.First, "last_seq", lost.Last)
	}
	if c.deadMin != 0 && c.deadMin < first {
		gone := map[uint64]bool{}
		for after := uint64(0); ; {
			d, err := m.store.DeadLetters(ctx, c.name, after, 100)
			if err != nil {
				m.logger.Warn("delivery: could not read dead letters", "consumer", c.name, "err", err)
				break
			}
			for _, l := range d {
				if l.Seq < first {
					gone[l.Seq] = true
				}
			}
			if len(d) == 0 || d[len(d)-1].Seq >= first {
				break
			}
			after = d[len(d)-1].Seq
		}
		for _, l := range c.deadAdd {
			if l.Seq < first {
				gone[l.Seq] = true
			}
		}
		for _, seq := range c.deadDel {
			delete(gone, seq) // going already
		}
		for seq := range gone {
			c.deadDel = append(c.deadDel, seq)
		}
		c.dead = max(c.dead-int64(len(gone)), 0)
		c.deadMin = first
		if c.dead == 0 {
			c.deadMin = 0
		}
		dropped = len(gone) > 0
	}
	c.changedLocked()
	return lost, dropped || lost != nil
}

// wait blocks until something r waits for happens, and returns ctx's error
// if ctx ended, a journal error if Wait failed, else nil (look again).
func (s *Stream) wait(ctx context.Context, wake context.Context, r round) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(wake, cancel)
	defer stop()
	if !r.due.IsZero() {
		t := time.AfterFunc(r.due.Sub(s.m.now()), cancel)
		defer t.Stop()
	}
	if r.onJournal {
		if err := s.m.j.Wait(wctx, r.journalAfter); err != nil && wctx.Err() == nil {
			return fmt.Errorf("delivery: consumer %q: %w", s.c.name, err)
		}
	} else {
		<-wctx.Done()
	}
	return ctx.Err()
}

// Close detaches s; the messages delivered to it and not acked are due for
// redelivery at once (to other streams, or the next one). Next then
// returns ErrClosed. Later calls do nothing.
func (s *Stream) Close() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	c.streams = slices.DeleteFunc(c.streams, func(o *Stream) bool { return o == s })
	for _, p := range c.pending {
		if p.owner == s {
			p.owner = nil
		}
	}
	c.broadcastLocked()
}
