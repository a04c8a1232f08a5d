package journaltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/journal"
)

// holds fails t unless j holds exactly n records, each Message(index(seq)).
func holds(t *testing.T, j journal.Journal, n int, index func(seq uint64) int) {
	t.Helper()
	if got := LastSeq(t, j); got != uint64(n) {
		t.Fatalf("LastSeq = %d, want %d", got, n)
	}
	recs := ReadAll(t, j, 1)
	if len(recs) != n {
		t.Fatalf("read %d records, want %d", len(recs), n)
	}
	for _, r := range recs {
		want := Message(index(r.Seq))
		want.Seq = r.Seq
		CheckRecord(t, &r, want)
	}
}

// testRoundTrip: every field survives, whatever the bytes, and Read hands
// out copies.
func testRoundTrip(t *testing.T, b Backend) {
	j := open(t, b, b.NewStore(t))
	big := make([]byte, 270<<10)
	for i := range big {
		big[i] = byte(i*7 + i>>8)
	}
	binary := []byte{0x0b, 0x00, 0xff, 0xfe, 0xc3, 0x28, 0x1c, 0x0d}
	recs := []*journal.Record{
		{
			Kind:         journal.KindMessage,
			Time:         time.Date(2024, 2, 29, 23, 59, 59, 123456789, time.FixedZone("CET", 3600)),
			InstanceID:   "sb-1",
			ListenerID:   "listener-a",
			ConnectionID: "conn-1",
			RemoteAddr:   "[2001:db8::1]:2575",
			MessageType:  "ORU^R01^ORU_R01",
			ControlID:    "MSG00001",
			PeerIdentity: "spiffe://hospital.example/lab",
			Payload:      binary,
		},
		{Kind: journal.KindAck, Time: time.Unix(0, 1), ListenerID: "b", ControlID: "\xe9", Payload: []byte{}},
		{Kind: journal.KindMessage, Payload: big, ControlID: "big"},
		{Kind: journal.KindMessage}, // every other field empty, zero time
	}
	for i, r := range recs {
		if seq := MustAppend(t, j, r); seq != uint64(i+1) || r.Seq != seq {
			t.Fatalf("Append #%d: seq %d, r.Seq %d; want %d", i, seq, r.Seq, i+1)
		}
	}
	if got := LastSeq(t, j); got != uint64(len(recs)) {
		t.Fatalf("LastSeq = %d, want %d", got, len(recs))
	}
	got := ReadAll(t, j, 1)
	if len(got) != len(recs) {
		t.Fatalf("read %d records, want %d", len(got), len(recs))
	}
	for i := range recs {
		CheckRecord(t, &got[i], recs[i])
	}

	// Payloads are copies: scribbling on one must not change the store.
	got[0].Payload[0] = 'X'
	again, err := j.Read(context.Background(), 1, 1, 0)
	if err != nil || len(again) != 1 || !bytes.Equal(again[0].Payload, binary) {
		t.Fatalf("re-read after modifying a returned payload: %v %+v", err, again)
	}
}

// testInvalidRecord: a record without a kind is refused and not stored.
func testInvalidRecord(t *testing.T, b Backend) {
	j := open(t, b, b.NewStore(t))
	r := Message(1)
	r.Kind = journal.KindUnspecified
	if _, err := j.Append(context.Background(), r); !errors.Is(err, journal.ErrInvalidRecord) {
		t.Fatalf("Append without a kind = %v, want ErrInvalidRecord", err)
	}
	if got := LastSeq(t, j); got != 0 {
		t.Fatalf("LastSeq after a refused record = %d, want 0", got)
	}
	if err, _ := j.Health(); err != nil {
		t.Fatalf("Health after a refused record = %v, want nil", err)
	}
}

func testEmpty(t *testing.T, b Backend) {
	j := open(t, b, b.NewStore(t))
	if got := LastSeq(t, j); got != 0 {
		t.Fatalf("LastSeq of a new journal = %d, want 0", got)
	}
	if got := FirstSeq(t, j); got != 1 {
		t.Fatalf("FirstSeq of a new journal = %d, want 1", got)
	}
	for _, from := range []uint64{0, 1, 2} {
		if recs, err := j.Read(context.Background(), from, 10, 1<<20); err != nil || len(recs) != 0 {
			t.Fatalf("Read(%d) of a new journal = %v, %v; want nothing", from, recs, err)
		}
	}
}

// testConcurrentAppend: many writers; every sequence is used once, each
// writer's are increasing, and every record reads back with its content.
func testConcurrentAppend(t *testing.T, b Backend) {
	const writers, perWriter = 32, 50
	j := open(t, b, b.NewStore(t))
	seqs := make([][]uint64, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				seq, err := j.Append(context.Background(), Message(w*perWriter+i))
				if err != nil {
					t.Errorf("writer %d: Append: %v", w, err)
					return
				}
				seqs[w] = append(seqs[w], seq)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	const total = writers * perWriter
	owner := make([]int, total+1) // seq -> record index + 1
	for w := range writers {
		for i, seq := range seqs[w] {
			if seq < 1 || seq > total || owner[seq] != 0 {
				t.Fatalf("writer %d got seq %d: out of range or duplicate", w, seq)
			}
			if i > 0 && seq <= seqs[w][i-1] {
				t.Fatalf("writer %d: seq %d after %d", w, seq, seqs[w][i-1])
			}
			owner[seq] = w*perWriter + i + 1
		}
	}
	holds(t, j, total, func(seq uint64) int { return owner[seq] - 1 })
	if got := FirstSeq(t, j); got != 1 {
		t.Fatalf("FirstSeq = %d, want 1: nothing was deleted", got)
	}
	st := j.Stats()
	if st.Appends != total || st.Records != total || st.Commits == 0 || st.Commits > st.Records || st.Refused != 0 {
		t.Fatalf("Stats = %+v; want %d appends and records in 1..%[2]d commits, none refused", st, total)
	}
}

// testRestart: what was appended survives Close and a reopen, and numbering
// continues after it.
func testRestart(t *testing.T, b Backend) {
	const n = 50
	store := b.NewStore(t)
	j, err := b.Open(t, store)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		MustAppend(t, j, Message(i))
	}
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := j.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	j = open(t, b, store)
	holds(t, j, n, func(seq uint64) int { return int(seq) - 1 })
	if seq := MustAppend(t, j, Message(n)); seq != n+1 {
		t.Fatalf("first Append after reopen got seq %d, want %d", seq, n+1)
	}
}

func testWait(t *testing.T, b Backend) {
	t.Run("existing", func(t *testing.T) {
		j := open(t, b, b.NewStore(t))
		MustAppend(t, j, Message(0))
		if err := j.Wait(context.Background(), 0); err != nil {
			t.Fatalf("Wait for an existing record: %v", err)
		}
	})
	t.Run("append", func(t *testing.T) {
		j := open(t, b, b.NewStore(t))
		MustAppend(t, j, Message(0))
		errc := make(chan error, 1)
		go func() { errc <- j.Wait(context.Background(), 1) }()
		MustAppend(t, j, Message(1))
		if err := <-errc; err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if got := LastSeq(t, j); got != 2 {
			t.Fatalf("Wait returned with LastSeq %d, want 2", got)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		j := open(t, b, b.NewStore(t))
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- j.Wait(ctx, 0) }()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait after cancel = %v, want context.Canceled", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		j := open(t, b, b.NewStore(t))
		errc := make(chan error, 1)
		go func() { errc <- j.Wait(context.Background(), 0) }()
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, journal.ErrClosed) {
			t.Fatalf("Wait after Close = %v, want ErrClosed", err)
		}
	})
}

func testReadPaging(t *testing.T, b Backend) {
	j := open(t, b, b.NewStore(t))
	sizes := []int{100, 100, 100, 5000, 100, 0, 100}
	for i, n := range sizes {
		MustAppend(t, j, &journal.Record{Kind: journal.KindMessage, ControlID: fmt.Sprint(i), Payload: bytes.Repeat([]byte{byte(i)}, n)})
	}
	cases := []struct {
		from       uint64
		maxRecords int
		maxBytes   int
		want       []uint64
	}{
		{1, 2, 1 << 20, []uint64{1, 2}},
		{1, 100, 250, []uint64{1, 2}},
		{1, 100, 300, []uint64{1, 2, 3}},
		{4, 100, 1000, []uint64{4}},        // bigger than maxBytes, still returned
		{3, 100, 1000, []uint64{3}},        // stops before the big one
		{5, 100, 100, []uint64{5, 6}},      // empty payload fits
		{6, 100, 0, []uint64{6}},           // the next one would exceed 0 bytes
		{1, 0, 1 << 20, []uint64{1}},       // non-positive maxRecords reads one
		{7, 100, 1 << 20, []uint64{7}},     // last record
		{8, 100, 1 << 20, nil},             // past the end
		{0, 3, 1 << 20, []uint64{1, 2, 3}}, // 0 means from the start
	}
	for _, c := range cases {
		recs, err := j.Read(context.Background(), c.from, c.maxRecords, c.maxBytes)
		if err != nil {
			t.Fatalf("Read(%d, %d, %d): %v", c.from, c.maxRecords, c.maxBytes, err)
		}
		var got []uint64
		for _, r := range recs {
			got = append(got, r.Seq)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("Read(%d, %d, %d) = %v, want %v", c.from, c.maxRecords, c.maxBytes, got, c.want)
		}
	}
}

// testContexts: a done context stops every call before it does anything.
func testContexts(t *testing.T, b Backend) {
	j := open(t, b, b.NewStore(t))
	MustAppend(t, j, Message(0))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := j.Append(ctx, Message(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a done context = %v, want context.Canceled", err)
	}
	if got := LastSeq(t, j); got != 1 {
		t.Fatalf("a record was committed for an already-cancelled Append (LastSeq %d)", got)
	}
	if _, err := j.LastSeq(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("LastSeq with a done context = %v, want context.Canceled", err)
	}
	if _, err := j.FirstSeq(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("FirstSeq with a done context = %v, want context.Canceled", err)
	}
	if _, err := j.Read(ctx, 1, 10, 1<<20); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read with a done context = %v, want context.Canceled", err)
	}
	if err := j.Wait(ctx, 0); err != nil {
		t.Fatalf("Wait for an existing record with a done context = %v, want nil", err)
	}
	if err := j.Wait(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a done context = %v, want context.Canceled", err)
	}
}

// testClose: after Close every call says so, and Close is idempotent.
func testClose(t *testing.T, b Backend) {
	j := open(t, b, b.NewStore(t))
	MustAppend(t, j, Message(0))
	_, changed := j.Health()
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Close did not signal Health watchers")
	}
	ctx := context.Background()
	if _, err := j.Append(ctx, Message(1)); !errors.Is(err, journal.ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	if _, err := j.Read(ctx, 1, 10, 1<<20); !errors.Is(err, journal.ErrClosed) {
		t.Errorf("Read after Close = %v, want ErrClosed", err)
	}
	if _, err := j.LastSeq(ctx); !errors.Is(err, journal.ErrClosed) {
		t.Errorf("LastSeq after Close = %v, want ErrClosed", err)
	}
	if _, err := j.FirstSeq(ctx); !errors.Is(err, journal.ErrClosed) {
		t.Errorf("FirstSeq after Close = %v, want ErrClosed", err)
	}
	if err := j.Wait(ctx, 0); !errors.Is(err, journal.ErrClosed) {
		t.Errorf("Wait after Close = %v, want ErrClosed", err)
	}
	if err, ch := j.Health(); !errors.Is(err, journal.ErrClosed) || ch != nil {
		t.Errorf("Health after Close = %v, %v; want ErrClosed, nil", err, ch)
	}
	if err := j.Close(); err != nil {
		t.Errorf("second Close = %v, want nil like the first", err)
	}
}

// testHealth: a working journal is healthy, and its change channel stays
// open while nothing changes.
func testHealth(t *testing.T, b Backend) {
	j := open(t, b, b.NewStore(t))
	MustAppend(t, j, Message(0))
	err, changed := j.Health()
	if err != nil || changed == nil {
		t.Fatalf("Health of a working journal = %v, %v; want nil and a channel", err, changed)
	}
	select {
	case <-changed:
		t.Fatal("Health's channel closed while nothing changed")
	default:
	}
	if st := j.Stats(); st.Failures != 0 || st.Recoveries != 0 {
		t.Fatalf("Stats of a working journal = %+v, want no failures", st)
	}
}

// testFailureAndRecovery, for backends that implement Faults: while storage
// fails, appends fail with ErrUnavailable (none succeeds for a record that
// was not committed), Health says so, and Wait keeps waiting; once storage
// works again the journal recovers by itself, numbering continues without
// a gap, and everything acknowledged is there.
func testFailureAndRecovery(t *testing.T, b Backend) {
	f, ok := b.(Faults)
	if !ok {
		t.Skip("the backend cannot inject faults")
	}
	store := b.NewStore(t)
	j := open(t, b, store)
	acked := map[uint64]*journal.Record{}
	for i := range 20 {
		r := Message(i)
		acked[MustAppend(t, j, r)] = r
	}
	waited := make(chan error, 1)
	go func() { waited <- j.Wait(context.Background(), 20) }()

	_, changed := j.Health()
	f.Break(t, store)
	var (
		mu      sync.Mutex
		refused int
		wg      sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			for i := range 10 {
				r := Message(100 + w*10 + i)
				seq, err := j.Append(context.Background(), r)
				mu.Lock()
				if err == nil {
					// A backend may take a moment to notice; what it
					// acknowledged must still be there at the end.
					acked[seq] = r
				} else if errors.Is(err, journal.ErrUnavailable) {
					refused++
				} else {
					t.Errorf("Append while storage fails = %v, want ErrUnavailable", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if refused == 0 {
		t.Fatal("no Append failed while storage was broken")
	}
	select {
	case <-changed:
	case <-time.After(20 * time.Second):
		t.Fatal("Health's channel did not signal the failure")
	}
	herr, changed := j.Health()
	if !errors.Is(herr, journal.ErrUnavailable) {
		t.Fatalf("Health while storage fails = %v, want ErrUnavailable", herr)
	}
	if _, err := j.Append(context.Background(), Message(999)); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("Append while unavailable = %v, want ErrUnavailable", err)
	}
	refused++
	if st := j.Stats(); st.Refused != uint64(refused) || st.Failures != 1 {
		t.Fatalf("Stats = %+v; want %d refused and 1 failure", st, refused)
	}
	select {
	case err := <-waited:
		t.Fatalf("Wait ended with %v during a storage failure; it must keep waiting", err)
	default:
	}

	f.Repair(t, store)
	select {
	case <-changed:
	case <-time.After(20 * time.Second):
		t.Fatal("Health's channel did not signal the recovery")
	}
	WaitHealthy(t, j)
	last := LastSeq(t, j)
	r := Message(1000)
	seq := MustAppend(t, j, r)
	if seq != last+1 {
		t.Fatalf("first Append after recovery got seq %d, want %d", seq, last+1)
	}
	acked[seq] = r
	if err := <-waited; err != nil {
		t.Fatalf("Wait across the failure = %v, want nil once records arrive", err)
	}
	recs := ReadAll(t, j, 1)
	if uint64(len(recs)) != seq {
		t.Fatalf("read %d records after recovery, want %d (gap-free up to %d)", len(recs), seq, seq)
	}
	for s, want := range acked {
		want.Seq = s
		CheckRecord(t, &recs[s-1], want)
	}
	if st := j.Stats(); st.Recoveries != 1 || st.Failures != 1 {
		t.Fatalf("Stats after recovery = %+v; want 1 failure and 1 recovery", st)
	}
}

// testRetention, for backends that implement Retention: once records
// before first are deleted, FirstSeq says so, Read of an older sequence
// fails with a NotRetainedError naming first, Read from 0 starts at first,
// and the rest is there without a gap; numbering continues after the last
// record, also after a restart.
func testRetention(t *testing.T, b Backend) {
	r, ok := b.(Retention)
	if !ok {
		t.Skip("the backend keeps every record")
	}
	const n, first = 50, 21
	store := b.NewStore(t)
	j, err := b.Open(t, store)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		MustAppend(t, j, Message(i))
	}
	r.Forget(t, j, first)
	check := func(j journal.Journal, last uint64) {
		t.Helper()
		if got := FirstSeq(t, j); got != first {
			t.Fatalf("FirstSeq = %d, want %d", got, first)
		}
		if got := LastSeq(t, j); got != last {
			t.Fatalf("LastSeq = %d, want %d", got, last)
		}
		for _, from := range []uint64{1, first - 1} {
			_, err := j.Read(context.Background(), from, 10, 1<<20)
			var nr *journal.NotRetainedError
			if !errors.Is(err, journal.ErrNotRetained) || !errors.As(err, &nr) || nr.First != first || nr.From != from {
				t.Fatalf("Read(%d) of a deleted record = %v; want a NotRetainedError from %d naming %d", from, err, from, first)
			}
		}
		recs, err := j.Read(context.Background(), 0, 5, 1<<20)
		if err != nil || len(recs) == 0 || recs[0].Seq != first {
			t.Fatalf("Read(0) = %d records, %v; want them from %d", len(recs), err, first)
		}
		recs = ReadAll(t, j, first) // fails on a gap
		if uint64(len(recs)) != last-first+1 {
			t.Fatalf("read %d records from %d, want %d", len(recs), first, last-first+1)
		}
		for _, rec := range recs[:n-first+1] {
			want := Message(int(rec.Seq) - 1)
			want.Seq = rec.Seq
			CheckRecord(t, &rec, want)
		}
	}
	check(j, n)
	if seq := MustAppend(t, j, Message(n)); seq != n+1 {
		t.Fatalf("Append after deletion got seq %d, want %d", seq, n+1)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, b, store)
	check(j, n+1)
	if seq := MustAppend(t, j, Message(n+1)); seq != n+2 {
		t.Fatalf("Append after a restart got seq %d, want %d", seq, n+2)
	}
}
