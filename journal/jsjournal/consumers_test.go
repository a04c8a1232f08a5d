package jsjournal

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/internal/natstest"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service/delivery"
	"github.com/switchboard-dev/switchboard/service/delivery/deliverytest"
)

func TestConsumerStoreConformance(t *testing.T) {
	sb := newStoresBackend(t, func(b *Bucket) any { return NewConsumerStore(b) })
	deliverytest.Run(t,
		func(t *testing.T) delivery.Store { return sb.open(t).(*ConsumerStore) },
		func(t *testing.T, s delivery.Store) delivery.Store { return sb.reopen(t, s).(*ConsumerStore) })
}

// TestConsumerStoreKeys: the keys are the documented ones, and the dead
// letter encoding round-trips any time; a bad name is refused.
func TestConsumerStoreKeys(t *testing.T) {
	srv := natstest.Start(t, server.Options{})
	_, b := storesBucket(t, srv.URL(), "consumer-keys")
	s := NewConsumerStore(b)
	ctx := t.Context()
	d := journal.DeadLetter{Seq: 42, Deliveries: 7, Time: time.Date(1960, 1, 2, 3, 4, 5, 6, time.UTC)}
	if err := s.Save(ctx, "a.b", []byte("st"), []journal.DeadLetter{d}, nil, false); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"consumer." + Token("a.b"), "dead." + Token("a.b") + ".00000000000000000042"} {
		if _, err := b.KV.Get(ctx, key); err != nil {
			t.Errorf("Get(%q): %v", key, err)
		}
	}
	got, err := s.DeadLetters(ctx, "a.b", 0, 0)
	if err != nil || len(got) != 1 || got[0].Seq != d.Seq || got[0].Deliveries != d.Deliveries || !got[0].Time.Equal(d.Time) {
		t.Fatalf("DeadLetters = %v, %v; want %v", got, err, d)
	}
	// Deletions leave nothing behind, not even delete markers.
	left := func(filter string) map[string]uint64 {
		t.Helper()
		st, err := b.JS.Stream(ctx, "KV_"+b.Name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(b.Subject(filter)))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects
	}
	e := journal.DeadLetter{Seq: 43, Deliveries: 1}
	if err := s.Save(ctx, "a.b", []byte("st2"), []journal.DeadLetter{e}, []uint64{42}, true); err != nil {
		t.Fatal(err)
	}
	if got := left("dead.>"); len(got) != 1 || got[b.Subject(deadKey("a.b", 43))] != 1 {
		t.Fatalf("after deleting dead letter 42, the stream holds %v", got)
	}
	if err := s.Save(ctx, "other", []byte("o"), []journal.DeadLetter{e}, nil, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "a.b"); err != nil {
		t.Fatal(err)
	}
	if got := left(">"); len(got) != 2 || got[b.Subject(consumerKey("other"))] != 1 || got[b.Subject(deadKey("other", 43))] != 1 {
		t.Fatalf("after Delete, the stream holds %v; want only the other consumer's keys", got)
	}
	for _, name := range []string{"", "a\x00b"} {
		if err := s.Save(ctx, name, nil, nil, nil, true); !errors.Is(err, errBadName) {
			t.Errorf("Save(%q) = %v, want a bad-name error", name, err)
		}
		if err := s.Delete(ctx, name); !errors.Is(err, errBadName) {
			t.Errorf("Delete(%q) = %v, want a bad-name error", name, err)
		}
	}
}

// TestConsumerStoreUnavailable: without a server, a Save fails with
// journal.ErrUnavailable within its timeout; after a restart the store
// works again, with every acknowledged Save there.
func TestConsumerStoreUnavailable(t *testing.T) {
	srv := natstest.Start(t, server.Options{})
	_, b := storesBucket(t, srv.URL(), "consumer-down")
	b.Timeout = time.Second
	s := NewConsumerStore(b)
	ctx := t.Context()
	dl := func(seq uint64) journal.DeadLetter {
		return journal.DeadLetter{Seq: seq, Deliveries: 3, Time: time.Unix(int64(seq), 0).UTC()}
	}
	if err := s.Save(ctx, "c", []byte("before"), []journal.DeadLetter{dl(1)}, nil, true); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	start := time.Now()
	if err := s.Save(ctx, "c", []byte("during"), nil, []uint64{1}, true); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("Save without a server = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Save without a server took %v", d)
	}
	if _, err := s.DeadLetters(ctx, "c", 0, 0); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("DeadLetters without a server = %v, want ErrUnavailable", err)
	}
	srv.Restart()
	storesEventually(t, "Save after the restart", func() error {
		return s.Save(ctx, "d", []byte("after"), []journal.DeadLetter{dl(2)}, nil, true)
	})
	var states []string
	if err := s.Load(ctx, func(name string, state []byte) error {
		states = append(states, name+"="+string(state))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// c's failed Save may have landed after the reconnect (its publish was
	// buffered), but only its state: Save gave up before its deletion, so
	// the acknowledged dead letter stays.
	if !slices.Equal(states, []string{"c=before", "d=after"}) && !slices.Equal(states, []string{"c=during", "d=after"}) {
		t.Fatalf("Load after the restart = %q", states)
	}
	for name, seq := range map[string]uint64{"c": 1, "d": 2} {
		if got, err := s.DeadLetters(ctx, name, 0, 0); err != nil || len(got) != 1 || got[0].Seq != seq {
			t.Fatalf("DeadLetters(%q) after the restart = %v, %v; want seq %d", name, got, err, seq)
		}
	}
}
