package pebblejournal

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The power-loss tests run the journal on Pebble's crash-simulating
// filesystem. MemFS.CrashClone is what the disk would hold after a power
// cut at that instant: everything synced, and a random share of what was
// written but not synced (so WAL tails are torn in random places). kill -9
// cannot show a missing fsync, since the page cache survives the process.

const powerDir = "/data"

// ackLog records the appends that returned nil, in any order.
type ackLog struct {
	mu    sync.Mutex
	acked map[uint64]int // seq -> record index
}

func (a *ackLog) add(seq uint64, i int) {
	a.mu.Lock()
	a.acked[seq] = i
	a.mu.Unlock()
}

func (a *ackLog) snapshot() map[uint64]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[uint64]int, len(a.acked))
	for k, v := range a.acked {
		m[k] = v
	}
	return m
}

// load appends from writers goroutines until stop is closed. Every record
// index is unique, so a record found after a cut tells which append wrote
// it.
func load(j *Journal, writers int, next *atomic.Int64, acks *ackLog, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := int(next.Add(1))
				seq, err := j.Append(context.Background(), testRecord(i))
				if err != nil {
					return // closed
				}
				acks.add(seq, i)
			}
		})
	}
	return &wg
}

// cut is one power cut: what was acknowledged before it, and the disk as
// the cut left it.
type cut struct {
	acked map[uint64]int
	disk  *vfs.MemFS
}

// cutPower takes the acknowledgements first and then the clone, so every
// acknowledgement it holds was given before the power went.
func cutPower(mem *vfs.MemFS, acks *ackLog, rng *rand.Rand, unsynced bool) cut {
	c := cut{acked: acks.snapshot()}
	cfg := vfs.CrashCloneCfg{}
	if unsynced {
		cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng}
	}
	c.disk = mem.CrashClone(cfg)
	return c
}

// restore opens the journal on the disk a cut left and reports how many
// acknowledged records are missing; it fails t on anything else wrong:
// a record that differs from what was appended, a gap, or a journal that
// does not open.
func restore(t *testing.T, c cut) (j *Journal, missing int) {
	t.Helper()
	j, err := Open(powerDir, Options{FS: c.disk})
	if err != nil {
		t.Fatalf("Open after a power cut: %v", err)
	}
	recs := readAll(t, j, 1) // fails on a gap
	if got := lastSeq(t, j); got != uint64(len(recs)) {
		t.Fatalf("after a power cut: LastSeq %d but %d records readable", got, len(recs))
	}
	for _, r := range recs {
		var i int
		if _, err := fmt.Sscanf(r.ControlID, "CTL%d", &i); err != nil {
			t.Fatalf("record %d after a power cut is none of the appended ones: %+v", r.Seq, r)
		}
		want := testRecord(i)
		want.Seq = r.Seq
		sameRecord(t, &r, want)
		if a, ok := c.acked[r.Seq]; ok && a != i {
			t.Fatalf("record %d after a power cut is append %d, but append %d was acknowledged with it", r.Seq, i, a)
		}
	}
	for seq := range c.acked {
		if seq > uint64(len(recs)) {
			missing++
		}
	}
	return j, missing
}

// powerLossRun opens a journal on a crashable disk, appends from 16
// writers, cuts power cuts times at random moments, and checks each cut.
// After each check it appends more to the journal restored from the cut
// and cuts power again, so a crash soon after a restart is covered too.
// powerStats sums up power-loss runs.
type powerStats struct {
	cuts    int // power cuts
	acked   int // distinct appends acknowledged before some cut
	checked int // acknowledged records looked for after a cut, summed over cuts
	missing int // of those, not found
}

func (s *powerStats) add(o powerStats) {
	s.cuts += o.cuts
	s.acked += o.acked
	s.checked += o.checked
	s.missing += o.missing
}

// check counts what restoring cut c found.
func (s *powerStats) check(t *testing.T, c cut) *Journal {
	j, lost := restore(t, c)
	s.cuts++
	s.checked += len(c.acked)
	s.missing += lost
	return j
}

func powerLossRun(t *testing.T, rng *rand.Rand, opts Options, cuts int) (st powerStats) {
	mem := vfs.NewCrashableMem()
	opts.FS = mem
	j, err := Open(powerDir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Int64
	acks := &ackLog{acked: map[uint64]int{}}
	stop := make(chan struct{})
	wg := load(j, 16, &next, acks, stop)
	var taken []cut
	for range cuts {
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		taken = append(taken, cutPower(mem, acks, rng, !opts.NoSync))
	}
	close(stop)
	wg.Wait()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if len(taken) > 0 {
		st.acked = len(taken[len(taken)-1].acked)
	}

	for _, c := range taken {
		j := st.check(t, c)

		// Power fails again soon after the restart, under load.
		mem := c.disk
		acks := &ackLog{acked: c.acked}
		if opts.NoSync {
			acks.acked = map[uint64]int{}
			for seq, i := range c.acked {
				if seq <= j.lastSeq.Load() {
					acks.acked[seq] = i // only what survived is expected to survive again
				}
			}
		}
		before := len(acks.acked)
		stop := make(chan struct{})
		wg := load(j, 4, &next, acks, stop)
		time.Sleep(time.Duration(rng.IntN(1000)) * time.Microsecond)
		again := cutPower(mem, acks, rng, !opts.NoSync)
		close(stop)
		wg.Wait()
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		st.acked += len(again.acked) - before
		if err := st.check(t, again).Close(); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// TestPowerLoss: every record whose Append returned nil before the power
// went is there afterwards, with its content, and sequences run 1..last
// without a gap, over many random cuts under concurrent load.
func TestPowerLoss(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	budget := 2 * time.Second
	if testing.Short() {
		budget = 300 * time.Millisecond
	}
	var st powerStats
	runs := 0
	for start := time.Now(); time.Since(start) < budget || runs < 3; runs++ {
		st.add(powerLossRun(t, rng, Options{}, 4))
	}
	t.Logf("seed %d: %d runs, %d power cuts, %d acknowledged appends, %d checks of an acknowledged record after a cut, %d missing",
		seed, runs, st.cuts, st.acked, st.checked, st.missing)
	if st.missing > 0 {
		t.Fatalf("seed %d: %d acknowledged records lost to power cuts", seed, st.missing)
	}
	if st.checked == 0 {
		t.Fatal("no record was acknowledged before a cut; the test checked nothing")
	}
}

// TestPowerLossNoSync is the negative control: without fsync, acknowledged
// records are lost to a power cut, so TestPowerLoss can see a loss.
func TestPowerLossNoSync(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 2))
	var st powerStats
	for runs := 0; runs < 3 && st.missing == 0; runs++ {
		st.add(powerLossRun(t, rng, Options{NoSync: true}, 2))
	}
	t.Logf("seed %d, NoSync: %d power cuts, %d acknowledged appends, %d checks, %d missing", seed, st.cuts, st.acked, st.checked, st.missing)
	if st.missing == 0 {
		t.Fatalf("seed %d: no acknowledged record was lost without fsync; the power-loss test cannot see a loss", seed)
	}
}
