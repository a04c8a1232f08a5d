package pebblejournal

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service/outbox/outboxtest"
)

// The power-loss tests run the journal on Pebble's crash-simulating
// filesystem. MemFS.CrashClone is what the disk would hold after a power
// cut at that instant: everything synced, and a random share of what was
// written but not synced (so WAL tails are torn in random places). kill -9
// cannot show a missing fsync, since the page cache survives the process.

const powerDir = "/data"

// ackLog records the writes that returned nil, in any order: journal
// appends, outbox appends and desired-state puts.
type ackLog struct {
	mu     sync.Mutex
	acked  map[uint64]int // seq -> record index
	outbox map[msgID]int  // message -> record index
	state  map[string]int // resource id -> the newest version acknowledged
}

func newAckLog() *ackLog {
	return &ackLog{acked: map[uint64]int{}, outbox: map[msgID]int{}, state: map[string]int{}}
}

func (a *ackLog) add(seq uint64, i int) {
	a.mu.Lock()
	a.acked[seq] = i
	a.mu.Unlock()
}

// addMessage records an acknowledged outbox Append; a sequence given out
// twice is a failure.
func (a *ackLog) addMessage(id msgID, i int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if prev, ok := a.outbox[id]; ok {
		return fmt.Errorf("outbox message %s/%d acknowledged for appends %d and %d", id.conn, id.seq, prev, i)
	}
	a.outbox[id] = i
	return nil
}

func (a *ackLog) addState(id string, version int) {
	a.mu.Lock()
	a.state[id] = version
	a.mu.Unlock()
}

func (a *ackLog) snapshot() *ackLog {
	a.mu.Lock()
	defer a.mu.Unlock()
	return &ackLog{acked: maps.Clone(a.acked), outbox: maps.Clone(a.outbox), state: maps.Clone(a.state)}
}

// load appends from writers goroutines until stop is closed. Every record
// index is unique, so a record found after a cut tells which append wrote
// it. With stores, as many goroutines again append to the outbox (on four
// connections, every other message with an idempotency key) and put
// desired state (each its own resource, with a growing version).
func load(j *Journal, writers int, stores bool, next *atomic.Int64, acks *ackLog, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	loop := func(write func() error) {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if write() != nil {
					return // closed
				}
			}
		})
	}
	for range writers {
		loop(func() error {
			i := int(next.Add(1))
			seq, err := j.Append(context.Background(), testRecord(i))
			if err == nil {
				acks.add(seq, i)
			}
			return err
		})
	}
	if !stores {
		return &wg
	}
	for w := range writers {
		if w%2 == 0 {
			loop(func() error {
				i := int(next.Add(1))
				m := outboxtest.Message(fmt.Sprint("c", i%4), i)
				if i%2 == 0 {
					m.IdempotencyKey = fmt.Sprint("k", i)
				}
				if _, _, err := j.Outbox().Append(context.Background(), m); err != nil {
					return err
				}
				if err := acks.addMessage(msgID{m.GetConnectionId(), m.GetSequence()}, i); err != nil {
					panic(err) // a sequence given out twice: stop the test loudly
				}
				return nil
			})
			continue
		}
		id := fmt.Sprint("r", w)
		loop(func() error {
			// Versions grow across restarts too, so a later put, acknowledged
			// or not, never looks older than an acknowledged one.
			version := int(next.Add(1))
			if err := j.StateStore().PutResource(context.Background(), "listener", id, []byte(fmt.Sprint(version)), time.Unix(int64(version), 0)); err != nil {
				return err
			}
			acks.addState(id, version)
			return nil
		})
	}
	return &wg
}

// cut is one power cut: what was acknowledged before it, and the disk as
// the cut left it.
type cut struct {
	acked  map[uint64]int
	stores *ackLog // the stores' acknowledgements
	disk   *vfs.MemFS
}

// cutPower takes the acknowledgements first and then the clone, so every
// acknowledgement it holds was given before the power went.
func cutPower(mem *vfs.MemFS, acks *ackLog, rng *rand.Rand, unsynced bool) cut {
	snap := acks.snapshot()
	c := cut{acked: snap.acked, stores: snap}
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
	return j, missing + restoredStores(t, j, c.stores)
}

// restoredStores reports how many acknowledged outbox appends and state
// puts are missing after a cut, and fails t on anything else wrong: a
// message that differs from what was appended, a resource with a version
// never put, or an outbox sequence given out again after the restart.
func restoredStores(t *testing.T, j *Journal, acks *ackLog) (missing int) {
	t.Helper()
	ctx := context.Background()
	last := map[string]uint64{}
	for id, i := range acks.outbox {
		m, err := j.Outbox().Get(ctx, id.conn, id.seq)
		if errors.Is(err, journal.ErrNotFound) {
			missing++
			continue
		}
		if err != nil {
			t.Fatalf("outbox Get after a power cut: %v", err)
		}
		// Its sequence counter was written in the same batch, so it is
		// there too.
		last[id.conn] = max(last[id.conn], id.seq)
		want := outboxtest.Message(id.conn, i)
		if i%2 == 0 {
			want.IdempotencyKey = fmt.Sprint("k", i)
		}
		want.Sequence, want.MessageId = id.seq, messageID(id.conn, id.seq)
		outboxtest.Same(t, m, want)
	}
	stored := map[string]int{}
	err := j.StateStore().Resources(ctx, func(typ, id string, spec []byte, created time.Time) error {
		v, err := strconv.Atoi(string(spec))
		if err != nil || created.Unix() != int64(v) {
			return fmt.Errorf("resource %s after a power cut: spec %q, created %v", id, spec, created)
		}
		stored[id] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, v := range acks.state {
		if stored[id] < v {
			missing++
		}
	}
	// The next message of every connection comes after every one stored.
	// (Probing here changes the restored disk, which the caller then
	// loads and cuts again: harmless, the probe is acknowledged like any
	// other append.)
	for conn, seq := range last {
		m := outboxtest.Message(conn, -1)
		if _, _, err := j.Outbox().Append(ctx, m); err != nil {
			t.Fatal(err)
		}
		if m.GetSequence() <= seq {
			t.Fatalf("after a power cut, %s gave out sequence %d again (acknowledged up to %d)", conn, m.GetSequence(), seq)
		}
		acks.outbox[msgID{conn, m.GetSequence()}] = -1
	}
	return missing
}

// powerLossRun opens a journal on a crashable disk, appends from 16
// writers, cuts power cuts times at random moments, and checks each cut.
// After each check it appends more to the journal restored from the cut
// and cuts power again, so a crash soon after a restart is covered too.
// powerStats sums up power-loss runs.
type powerStats struct {
	cuts    int // power cuts
	acked   int // distinct appends acknowledged before some cut
	checked int // acknowledged writes (records, outbox messages, resources) looked for after a cut, summed over cuts
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
	s.checked += len(c.acked) + len(c.stores.outbox) + len(c.stores.state)
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
	acks := newAckLog()
	stop := make(chan struct{})
	wg := load(j, 16, !opts.NoSync, &next, acks, stop)
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
		acks := c.stores
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
		wg := load(j, 4, !opts.NoSync, &next, acks, stop)
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
// without a gap, over many random cuts under concurrent load; so is every
// acknowledged outbox Append (and its sequence is not given out again) and
// every PutResource that returned nil.
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
	t.Logf("seed %d: %d runs, %d power cuts, %d acknowledged appends, %d checks of an acknowledged write after a cut, %d missing",
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

// TestPowerLossStoresNoSync is the negative control for the stores: without
// fsync, acknowledged outbox appends and state puts are lost to a power
// cut, so TestPowerLoss can see such a loss.
func TestPowerLossStoresNoSync(t *testing.T) {
	mem := vfs.NewCrashableMem()
	j, err := Open(powerDir, Options{FS: mem, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Int64
	acks := newAckLog()
	stop := make(chan struct{})
	wg := load(j, 4, true, &next, acks, stop)
	for len(acks.snapshot().outbox) < 50 || len(acks.snapshot().state) < 2 {
		time.Sleep(time.Millisecond)
	}
	c := cutPower(mem, acks, nil, false) // keeps nothing unsynced
	close(stop)
	wg.Wait()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	c.acked = map[uint64]int{} // the journal's own loss is TestPowerLossNoSync's
	j, missing := restore(t, c)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("NoSync: %d outbox appends and %d resources acknowledged, %d missing", len(c.stores.outbox), len(c.stores.state), missing)
	if missing == 0 {
		t.Fatal("no acknowledged outbox append or state put was lost without fsync; the power-loss test cannot see a loss")
	}
}
