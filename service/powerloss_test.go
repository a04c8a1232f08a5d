package service_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
)

// The power-loss tests run the whole inbound path (MLLP peers, listener,
// journal) on Pebble's crash-simulating filesystem: MemFS.CrashClone is what
// the disk would hold after a power cut at that instant, everything synced
// and a random share of what was not. kill -9 cannot show a missing fsync,
// since the page cache survives a process crash; this can.

// acked is the set of control ids the peers saw acknowledged with AA.
type acked struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (a *acked) add(id string) {
	a.mu.Lock()
	a.ids[id] = true
	a.mu.Unlock()
}

func (a *acked) snapshot() map[string]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[string]bool, len(a.ids))
	for id := range a.ids {
		m[id] = true
	}
	return m
}

// powerCut runs peers against a server on a crashable disk, cuts the power
// at a random moment and returns what had been acknowledged before the cut
// and the journal reopened from what the disk kept.
func powerCut(t *testing.T, rng *rand.Rand, noSync bool) (map[string]bool, *pebblejournal.Journal) {
	t.Helper()
	ctx := testCtx(t)
	mem := vfs.NewCrashableMem()
	j, err := pebblejournal.Open("/data", pebblejournal.Options{FS: mem, NoSync: noSync})
	if err != nil {
		t.Fatal(err)
	}
	s := startServerWith(t, j)
	l := s.startListener(ctx, "adt", nil)
	acks := &acked{ids: map[string]bool{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Go(func() {
			peer := dialPeer(t, addr(l))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("P%d-%d", p, n)
				if _, err := peer.nc.Write(mllp.AppendFrame(nil, hl7Message(id))); err != nil {
					return
				}
				_ = peer.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				frame, err := peer.dec.Next()
				if err != nil {
					return
				}
				if a, err := hl7.ParseAck(frame); err == nil && a.Code == hl7.AA && a.ControlID == id {
					acks.add(id)
				}
			}
		})
	}
	time.Sleep(time.Duration(20+rng.IntN(200)) * time.Millisecond)
	// The acknowledgements first, then the disk: every one in the snapshot
	// was given before the power went.
	before := acks.snapshot()
	disk := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
	close(stop)
	wg.Wait()
	s.stop()

	restored, err := pebblejournal.Open("/data", pebblejournal.Options{FS: disk})
	if err != nil {
		t.Fatalf("Open after a power cut: %v", err)
	}
	t.Cleanup(func() { _ = restored.Close() })
	return before, restored
}

// stored reads every record of j and returns their control ids; it fails t
// on a gap in the sequence numbers.
func stored(t *testing.T, j *pebblejournal.Journal) map[string]bool {
	t.Helper()
	ctx := context.Background()
	ids := map[string]bool{}
	next := uint64(1)
	for {
		recs, err := j.Read(ctx, next, 1000, 64<<20)
		if err != nil {
			t.Fatalf("Read from %d after a power cut: %v", next, err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if r.Seq != next {
				t.Fatalf("after a power cut: record %d follows %d (a gap)", r.Seq, next-1)
			}
			ids[r.ControlID] = true
			next++
		}
	}
	if last, err := j.LastSeq(ctx); err != nil || last != next-1 {
		t.Fatalf("after a power cut: LastSeq = %d, %v; %d records readable", last, err, next-1)
	}
	return ids
}

// TestPowerLossInbound: every message a peer saw acknowledged before a
// power cut is in the journal after it, and sequences are gap-free.
func TestPowerLossInbound(t *testing.T) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	cuts, ackedTotal := 5, 0
	if testing.Short() {
		cuts = 2
	}
	for range cuts {
		before, j := powerCut(t, rng, false)
		have := stored(t, j)
		for id := range before {
			if !have[id] {
				t.Errorf("message %s was acknowledged before the power cut and is not in the journal after it", id)
			}
		}
		ackedTotal += len(before)
	}
	t.Logf("%d power cuts, %d acknowledged messages checked, none lost", cuts, ackedTotal)
}

// TestPowerLossInboundNoSync is the negative control: without fsync an
// acknowledged message can be lost, and the test must see it, or it could
// not see a loss at all.
func TestPowerLossInboundNoSync(t *testing.T) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	for try := range 10 {
		before, j := powerCut(t, rng, true)
		have := stored(t, j)
		lost := 0
		for id := range before {
			if !have[id] {
				lost++
			}
		}
		if lost > 0 {
			t.Logf("cut %d: %d of %d acknowledged messages lost without fsync", try+1, lost, len(before))
			return
		}
	}
	t.Error("10 power cuts without fsync lost no acknowledged message: the test cannot see a loss")
}
