package jsjournal

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/internal/natstest"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/journaltest"
)

// openClustered opens an R3 journal through node, retrying while the
// cluster elects its first leaders (bounded). check is its CheckInterval.
func openClustered(t *testing.T, node *natstest.Server, check time.Duration) *Journal {
	t.Helper()
	opts := testOptions(node.URL(), "cluster")
	opts.Replicas = 3
	opts.CheckInterval = check
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, err := Open(context.Background(), opts)
		if err == nil {
			t.Cleanup(func() { _ = j.Close() })
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("Open on the cluster: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCluster: an R3 stream on three nodes. Records appended through one
// node are readable through another; with one node down appends go on;
// with two down (no quorum) appends fail and Health says so; once a node
// is back the journal recovers by itself, and what was acknowledged is
// all there, gap-free.
func TestCluster(t *testing.T) {
	t.Parallel() // mostly waits for elections, as TestConformanceCluster does
	nodes := natstest.Cluster(t)
	j1 := openClustered(t, nodes[0], 500*time.Millisecond)
	acked := map[uint64]*journal.Record{}
	appendAcked := func(j *Journal, i int) {
		t.Helper()
		r := journaltest.Message(i)
		acked[journaltest.MustAppend(t, j, r)] = r
	}
	for i := range 20 {
		appendAcked(j1, i)
	}
	// j2 has no health check, whose probes also learn the last sequence:
	// its Wait can only be woken by its ordered consumer.
	j2 := openClustered(t, nodes[1], -1)
	idle := openClustered(t, nodes[0], 500*time.Millisecond) // never appends: only its health check sees the loss
	if got := journaltest.ReadAll(t, j2, 1); len(got) != 20 {
		t.Fatalf("read %d records through another node, want 20", len(got))
	}

	// Stop a node that is neither the stream's leader nor j1's.
	info, err := j1.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	leader := info.Cluster.Leader
	t.Logf("stream leader %s", leader)
	first, second := nodes[1], nodes[2]
	if leader == "n2" {
		first, second = nodes[2], nodes[1]
	}
	first.Stop()
	for i := 20; i < 30; i++ {
		appendAcked(j1, i)
	}
	if err, _ := j1.Health(); err != nil {
		t.Fatalf("Health with one node down = %v, want nil", err)
	}

	// Quorum lost: appends fail, never succeed, and Health says so.
	second.Stop()
	start := time.Now()
	_, changed := j1.Health()
	if _, err := j1.Append(context.Background(), journaltest.Message(100)); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("Append without quorum = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Append without quorum took %v to fail", d)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("Health's channel did not signal the failure")
	}
	if err, _ := j1.Health(); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("Health without quorum = %v, want ErrUnavailable", err)
	}
	waitUnhealthy(t, idle, 10*time.Second)
	if _, err := j1.Append(context.Background(), journaltest.Message(101)); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("Append while unavailable = %v, want ErrUnavailable", err)
	}

	// One node back: quorum again, the journal recovers by itself.
	second.Restart()
	journaltest.WaitHealthy(t, j1)
	t.Logf("recovered %v after the quorum was lost", time.Since(start))
	last := journaltest.LastSeq(t, j1)
	r := journaltest.Message(200)
	seq := journaltest.MustAppend(t, j1, r)
	if seq != last+1 {
		t.Fatalf("first Append after recovery got %d, want %d", seq, last+1)
	}
	acked[seq] = r
	journaltest.WaitHealthy(t, idle)

	// j2's connection went with its node (whichever stopped); its
	// ordered consumer follows the stream again, so Wait wakes for j1's
	// records.
	journaltest.WaitHealthy(t, j2) // its recovery probe is done
	waited := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { waited <- j2.Wait(ctx, seq+5) }()
	for i := 201; i < 210; i++ {
		appendAcked(j1, i)
	}
	if err := <-waited; err != nil {
		t.Fatalf("Wait through another node across the outage: %v", err)
	}
	first.Restart()

	// Through the other node: every acknowledged record, gap-free (an
	// append that failed may be there too, with its own sequence).
	recs := journaltest.ReadAll(t, j2, 1)
	if got := journaltest.LastSeq(t, j2); uint64(len(recs)) != got {
		t.Fatalf("read %d records, LastSeq %d", len(recs), got)
	}
	for s, want := range acked {
		if s > uint64(len(recs)) {
			t.Fatalf("acknowledged record %d missing (read %d)", s, len(recs))
		}
		want.Seq = s
		journaltest.CheckRecord(t, &recs[s-1], want)
	}
	if st := j1.Stats(); st.Failures == 0 || st.Recoveries == 0 || st.Refused < 2 {
		t.Fatalf("Stats = %+v; want a failure, a recovery and the refused appends", st)
	}
}

// waitUnhealthy fails t unless j's Health reports ErrUnavailable within d.
func waitUnhealthy(t *testing.T, j *Journal, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		err, changed := j.Health()
		if errors.Is(err, journal.ErrUnavailable) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("Health = %v after %v, want ErrUnavailable", err, d)
		}
	}
}

// clusterBackend runs the conformance suite on R3 streams of one
// three-node cluster, a stream per store. It has no Faults (TestCluster
// breaks the cluster instead).
type clusterBackend struct {
	nodes []*natstest.Server
	n     int
}

func (b *clusterBackend) NewStore(t *testing.T) string {
	b.n++
	return fmt.Sprintf("r3-%d", b.n)
}

func (b *clusterBackend) Open(t *testing.T, store string) (journal.Journal, error) {
	opts := testOptions(b.nodes[b.n%3].URL(), store) // spread the journals over the nodes
	opts.Replicas = 3
	return Open(context.Background(), opts)
}

func (b *clusterBackend) Forget(t *testing.T, j journal.Journal, seq uint64) {
	if err := j.(*Journal).DeleteBefore(context.Background(), seq); err != nil {
		t.Fatal(err)
	}
}

// TestConformanceCluster: the conformance suite on replicated streams,
// where commits need a quorum, reads and appends go through different
// nodes, and racing appends of one id meet the leader's checks of
// proposals still in flight.
func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	nodes := natstest.Cluster(t)
	openClustered(t, nodes[0], -1) // waits for the cluster's first leaders
	journaltest.Run(t, &clusterBackend{nodes: nodes})
}
