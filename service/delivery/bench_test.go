package delivery_test

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service/delivery"
)

const (
	benchBatch   = 100
	benchPayload = 1 << 10
)

// benchJournal returns a journal holding n records of 1 KiB, appended by
// concurrent writers so that group commit makes setup quick.
func benchJournal(b *testing.B, n int) *pebblejournal.Journal {
	b.Helper()
	j, err := pebblejournal.Open(b.TempDir(), pebblejournal.Options{MaxAge: -1, MaxBytes: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = j.Close() })
	payload := make([]byte, benchPayload)
	_, _ = rand.Read(payload)
	const writers = 64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				r := &journal.Record{Kind: journal.KindMessage, ListenerID: "l", ConnectionID: "c", Payload: payload}
				if _, err := j.Append(context.Background(), r); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return j
}

// BenchmarkConsumerAck: a durable consumer on a real pebblejournal
// delivers batches of 100 records of 1 KiB, each acked (through the last
// one, durably) before the next Next. Compare BenchmarkJournalRead.
func BenchmarkConsumerAck(b *testing.B) {
	j := benchJournal(b, b.N)
	ctx := context.Background()
	m, err := delivery.Open(ctx, delivery.Config{Journal: j, Store: j.Consumers()})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	s, err := m.Attach(ctx, "bench", delivery.AttachOptions{Spec: &delivery.Spec{}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.ResetTimer()
	for got := 0; got < b.N; {
		batch, err := s.Next(ctx, benchBatch, 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		last := batch.Deliveries[len(batch.Deliveries)-1].Record.Seq
		if _, err := m.Ack(ctx, "bench", nil, last, nil); err != nil {
			b.Fatal(err)
		}
		got += len(batch.Deliveries)
	}
}

// BenchmarkJournalRead: the same records read anonymously, in the same
// batches, with journal.Read: what a consumer costs on top.
func BenchmarkJournalRead(b *testing.B) {
	j := benchJournal(b, b.N)
	ctx := context.Background()
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.ResetTimer()
	for from := uint64(1); from <= uint64(b.N); {
		recs, err := j.Read(ctx, from, benchBatch, 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		from = recs[len(recs)-1].Seq + 1
	}
}
