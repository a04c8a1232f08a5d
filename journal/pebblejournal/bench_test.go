package pebblejournal

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
)

// Run with, for example:
//
//	go test -run '^$' -bench . -benchmem -benchtime 2s ./journal/pebblejournal/

// benchCases runs fn for every payload size and writer count measured.
func benchCases(b *testing.B, fn func(b *testing.B, payloadSize, writers int)) {
	for _, size := range []int{260, 1024} {
		for _, writers := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("payload=%d/writers=%d", size, writers), func(b *testing.B) {
				fn(b, size, writers)
			})
		}
	}
}

func benchRecord(payloadSize int) journal.Record {
	p := make([]byte, payloadSize)
	for i := range p {
		p[i] = byte('A' + i%26)
	}
	return journal.Record{
		Kind:         journal.KindMessage,
		Time:         time.Now(),
		ListenerID:   "listener-1",
		ConnectionID: "conn-12345",
		RemoteAddr:   "10.20.30.40:51234",
		MessageType:  "ADT^A01",
		ControlID:    "MSG000123456",
		Payload:      p,
	}
}

// runWriters runs b.N operations spread over the given number of goroutines
// and reports the aggregate rate. op gets the writer's index.
func runWriters(b *testing.B, writers int, op func(w int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := op(w); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
}

func BenchmarkAppend(b *testing.B) {
	benchCases(b, func(b *testing.B, size, writers int) {
		l, err := Open(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		recs := make([]journal.Record, writers) // one each: Append sets r.Seq
		for i := range recs {
			recs[i] = benchRecord(size)
		}
		ctx := context.Background()
		runWriters(b, writers, func(w int) error {
			_, err := l.Append(ctx, &recs[w])
			return err
		})
		st := l.Stats()
		b.ReportMetric(float64(st.Records)/float64(max(st.Commits, 1)), "records/commit")
	})
}

// BenchmarkPebbleSyncedSet is the baseline: the same values written with one
// synced DB.Set each on an identically configured bare Pebble, which does its
// own WAL group commit across concurrent writers.
func BenchmarkPebbleSyncedSet(b *testing.B) {
	benchCases(b, func(b *testing.B, size, writers int) {
		db, err := pebble.Open(b.TempDir(), pebbleOptions(vfs.Default, &events{logger: slog.New(slog.DiscardHandler)}))
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		rec := benchRecord(size)
		value := journal.AppendRecord(nil, &rec)
		var seq atomic.Uint64
		keys := make([][]byte, writers)
		runWriters(b, writers, func(w int) error {
			keys[w] = recordKey(keys[w][:0], seq.Add(1))
			return db.Set(keys[w], value, pebble.Sync)
		})
	})
}

func BenchmarkRead(b *testing.B) {
	const stored = 50_000
	l, err := Open(b.TempDir(), Options{NoSync: true}) // fast setup only
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			r := benchRecord(1024)
			for range stored / 16 {
				if _, err := l.Append(context.Background(), &r); err != nil {
					b.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	last := l.lastSeq.Load()

	b.ResetTimer()
	start := time.Now()
	from, n := uint64(1), 0
	for n < b.N {
		recs, err := l.Read(context.Background(), from, 1000, 4<<20)
		if err != nil {
			b.Fatal(err)
		}
		n += len(recs)
		from = recs[len(recs)-1].Seq + 1
		if from > last {
			from = 1
		}
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
}

func benchMessage(payloadSize, w int) *switchboardv1.Message {
	r := benchRecord(payloadSize)
	return &switchboardv1.Message{
		Direction:    switchboardv1.Direction_DIRECTION_OUTBOUND,
		ConnectionId: fmt.Sprintf("conn-%02d", w),
		State:        switchboardv1.MessageState_MESSAGE_STATE_QUEUED,
		Payload:      r.Payload,
		MessageType:  r.MessageType,
		ControlId:    r.ControlID,
	}
}

// BenchmarkOutboxAppend: queued messages alone, each writer on its own
// connection (as 64 callers over 64 connections).
func BenchmarkOutboxAppend(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("payload=1024/writers=%d", writers), func(b *testing.B) {
			j, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			ob := j.Outbox()
			ctx := context.Background()
			runWriters(b, writers, func(w int) error {
				_, _, err := ob.Append(ctx, benchMessage(1024, w))
				return err
			})
			st := j.Stats()
			b.ReportMetric(float64(b.N)/float64(max(st.Commits, 1)), "writes/commit")
		})
	}
}

// BenchmarkMixed: every writer alternates a journal record and an outbox
// message of the same size, as a server that receives and queues at once
// does. shared is this package (both in one group commit); separate is
// what a store beside the journal would do without it: its own synced
// Pebble commit per write on the same database (Pebble's WAL still groups
// concurrent syncs).
func BenchmarkMixed(b *testing.B) {
	for _, mode := range []string{"shared", "separate"} {
		for _, writers := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%s/payload=1024/writers=%d", mode, writers), func(b *testing.B) {
				j, err := Open(b.TempDir(), Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer j.Close()
				ob := j.Outbox()
				ctx := context.Background()
				recs := make([]journal.Record, writers)
				for i := range recs {
					recs[i] = benchRecord(1024)
				}
				var seq atomic.Uint64
				n := make([]int, writers)
				runWriters(b, writers, func(w int) error {
					n[w]++
					if n[w]%2 == 0 {
						_, err := j.Append(ctx, &recs[w])
						return err
					}
					m := benchMessage(1024, w)
					if mode == "shared" {
						_, _, err := ob.Append(ctx, m)
						return err
					}
					m.Sequence = seq.Add(1)
					v, err := encodeMessage(m, 0)
					if err != nil {
						return err
					}
					batch := j.db.NewBatch()
					defer batch.Close()
					_ = batch.Set(connSeqKey(prefixOutMsg, m.GetConnectionId(), m.GetSequence()), v, nil)
					_ = batch.Set(connSeqKey(prefixOutPending, m.GetConnectionId(), m.GetSequence()), nil, nil)
					_ = batch.Set(seqKey(m.GetConnectionId()), v[:8], nil)
					return batch.Commit(pebble.Sync)
				})
			})
		}
	}
}

// BenchmarkAppendRetention: journal appends with and without retention
// deleting behind them, in the same run. With retention on, a goroutine
// runs a pass every 10 ms, each with the clock two hours on (MaxAge one
// hour), so every pass range-deletes everything up to the newest time
// mark: 6000 times as many passes as a server's one a minute, each
// deleting what arrived since the last, and Pebble flushing and compacting
// the deletions away meanwhile.
func BenchmarkAppendRetention(b *testing.B) {
	for _, retention := range []bool{false, true} {
		for _, writers := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("retention=%v/payload=1024/writers=%d", retention, writers), func(b *testing.B) {
				clock := newFakeClock()
				j, err := Open(b.TempDir(), Options{MaxAge: time.Hour, MaxBytes: -1, clock: clock.now})
				if err != nil {
					b.Fatal(err)
				}
				defer j.Close()
				ctx := context.Background()
				var fill sync.WaitGroup // something to delete from the start
				for range 64 {
					fill.Go(func() {
						r := benchRecord(1024)
						for range 20_000 / 64 {
							if _, err := j.Append(ctx, &r); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				fill.Wait()
				stop := make(chan struct{})
				var wg sync.WaitGroup
				if retention {
					wg.Go(func() {
						for {
							select {
							case <-stop:
								return
							default:
							}
							clock.advance(2 * time.Hour)
							if _, err := j.retain(); err != nil {
								b.Error(err)
								return
							}
							time.Sleep(10 * time.Millisecond)
						}
					})
				}
				recs := make([]journal.Record, writers)
				for i := range recs {
					recs[i] = benchRecord(1024)
				}
				runWriters(b, writers, func(w int) error {
					_, err := j.Append(ctx, &recs[w])
					return err
				})
				close(stop)
				wg.Wait()
				st := j.RetentionStats()
				b.ReportMetric(float64(st.Records), "deleted")
				b.ReportMetric(float64(st.Passes), "passes")
			})
		}
	}
}

// BenchmarkAppendDedup compares parallel appends with and without a
// DedupID (every id new, as for a peer that does not resend): the cost of
// duplicate suppression is one index read and two more keys per record.
// NoSync shows the CPU cost alone, without the fsync that hides it.
//
//	go test -run '^$' -bench AppendDedup -benchtime 2s ./journal/pebblejournal/
func BenchmarkAppendDedup(b *testing.B) {
	for _, nosync := range []bool{false, true} {
		for _, writers := range []int{1, 8, 64} {
			for _, dedup := range []bool{false, true} {
				b.Run(fmt.Sprintf("nosync=%v/writers=%d/dedup=%v", nosync, writers, dedup), func(b *testing.B) {
					benchAppendDedup(b, nosync, writers, dedup)
				})
			}
		}
	}
}

func benchAppendDedup(b *testing.B, nosync bool, writers int, dedup bool) {
	l, err := Open(b.TempDir(), Options{NoSync: nosync})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	recs := make([]journal.Record, writers)
	for i := range recs {
		recs[i] = benchRecord(260)
	}
	var n atomic.Uint64
	ctx := context.Background()
	runWriters(b, writers, func(w int) error {
		r := &recs[w]
		if dedup {
			r.DedupID = fmt.Sprintf("listener-1\x00APP|FAC\x00MSG%012d", n.Add(1))
			r.DedupWindow = time.Hour
		}
		_, err := l.Append(ctx, r)
		return err
	})
}
