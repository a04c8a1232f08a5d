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

	"github.com/switchboard-dev/switchboard/journal"
)

// Run with, for example:
//
//	go test -run '^$' -bench . -benchmem -benchtime 2s ./journal/

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
