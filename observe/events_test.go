package observe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

func ev(kind switchboardv1.EventKind, conn string) *switchboardv1.Event {
	return &switchboardv1.Event{Kind: kind, ConnectionId: conn}
}

func seqs(es []*switchboardv1.Event) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.GetSequence()
	}
	return out
}

// TestBusSequenceAndRecent: sequences count from 1, times are set, and the
// ring keeps the latest events, oldest first, filtered and cut to n.
func TestBusSequenceAndRecent(t *testing.T) {
	b := NewBus(BusConfig{Recent: 3})
	if got := b.Recent(0, nil); len(got) != 0 {
		t.Fatalf("Recent of an empty bus = %v", got)
	}
	before := time.Now()
	for i := range 5 {
		b.Publish(ev(switchboardv1.EventKind_EVENT_KIND_CONNECTION_OPENED, fmt.Sprint("c-", i%2)))
	}
	all := b.Recent(0, nil)
	if got := fmt.Sprint(seqs(all)); got != "[3 4 5]" {
		t.Fatalf("Recent = %s, want [3 4 5]", got)
	}
	for _, e := range all {
		if e.GetTime().AsTime().Before(before.Add(-time.Second)) || e.GetTime() == nil {
			t.Errorf("event %d has time %v", e.GetSequence(), e.GetTime())
		}
	}
	if got := fmt.Sprint(seqs(b.Recent(2, nil))); got != "[4 5]" {
		t.Errorf("Recent(2) = %s, want [4 5]", got)
	}
	c0 := func(e *switchboardv1.Event) bool { return e.GetConnectionId() == "c-0" }
	if got := fmt.Sprint(seqs(b.Recent(0, c0))); got != "[3 5]" {
		t.Errorf("Recent(c-0) = %s, want [3 5]", got)
	}
	// A preset time is kept.
	at := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	e := ev(switchboardv1.EventKind_EVENT_KIND_JOURNAL_FAILED, "")
	e.Time = timestamp(at)
	b.Publish(e)
	if e.GetSequence() != 6 || !e.GetTime().AsTime().Equal(at) {
		t.Errorf("event = %v, want sequence 6 at %v", e, at)
	}
	if st := b.Stats(); st.Published != 6 || st.Subscribers != 0 || st.CutOff != 0 {
		t.Errorf("Stats = %+v", st)
	}

	if n := len(NewBus(BusConfig{}).ring); n != DefaultRecentEvents {
		t.Errorf("default ring %d, want %d", n, DefaultRecentEvents)
	}
	none := NewBus(BusConfig{Recent: -1})
	none.Publish(ev(switchboardv1.EventKind_EVENT_KIND_JOURNAL_FAILED, ""))
	if got := none.Recent(0, nil); len(got) != 0 {
		t.Errorf("a bus keeping none has %v", got)
	}
}

// TestBusSubscribe: a subscriber gets the events its filter takes, published
// after it subscribed, in order; Close ends it without an error.
func TestBusSubscribe(t *testing.T) {
	b := NewBus(BusConfig{})
	b.Publish(ev(switchboardv1.EventKind_EVENT_KIND_CONNECTION_OPENED, "early"))
	all := b.Subscribe(nil, 0)
	lab := b.Subscribe(func(e *switchboardv1.Event) bool { return e.GetConnectionId() == "lab" }, 0)
	if cap(all.ch) != DefaultSubscriberBuffer {
		t.Errorf("default buffer %d, want %d", cap(all.ch), DefaultSubscriberBuffer)
	}
	for _, c := range []string{"lab", "adt", "lab"} {
		b.Publish(ev(switchboardv1.EventKind_EVENT_KIND_CONNECTION_OPENED, c))
	}
	if got := fmt.Sprint(seqs(drain(all))); got != "[2 3 4]" {
		t.Errorf("all got %s, want [2 3 4]", got)
	}
	if got := fmt.Sprint(seqs(drain(lab))); got != "[2 4]" {
		t.Errorf("lab got %s, want [2 4]", got)
	}
	if st := b.Stats(); st.Subscribers != 2 {
		t.Errorf("Subscribers = %d, want 2", st.Subscribers)
	}
	lab.Close()
	lab.Close()
	if _, ok := <-lab.C(); ok || lab.Err() != nil {
		t.Errorf("closed subscription: channel open %v, Err %v", ok, lab.Err())
	}
	b.Publish(ev(switchboardv1.EventKind_EVENT_KIND_CONNECTION_OPENED, "lab"))
	if got := fmt.Sprint(seqs(drain(all))); got != "[5]" {
		t.Errorf("all got %s, want [5]", got)
	}
	all.Close()
	if st := b.Stats(); st.Subscribers != 0 || st.CutOff != 0 {
		t.Errorf("Stats = %+v after Close", st)
	}
}

// drain returns the events waiting in s.
func drain(s *Subscription) []*switchboardv1.Event {
	var out []*switchboardv1.Event
	for {
		select {
		case e, ok := <-s.C():
			if !ok {
				return out
			}
			out = append(out, e)
		default:
			return out
		}
	}
}

// TestBusSlowSubscriber: a subscriber that does not read is cut off when its
// buffer is full; Publish never blocks on it, it keeps the events it was
// given, and Err names the last one. The others go on getting everything.
func TestBusSlowSubscriber(t *testing.T) {
	b := NewBus(BusConfig{})
	slow := b.Subscribe(nil, 2)
	fast := b.Subscribe(nil, 100)
	done := make(chan struct{})
	go func() { // Publish must return although nobody reads slow
		defer close(done)
		for range 5 {
			b.Publish(ev(switchboardv1.EventKind_EVENT_KIND_CONNECTION_OPENED, "c"))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked on a slow subscriber")
	}
	if got := fmt.Sprint(seqs(drain(slow))); got != "[1 2]" {
		t.Errorf("slow got %s, want [1 2]", got)
	}
	if _, ok := <-slow.C(); ok {
		t.Error("a cut-off subscription's channel is open")
	}
	var tse *TooSlowError
	if err := slow.Err(); !errors.As(err, &tse) || !errors.Is(err, ErrTooSlow) || tse.LastSequence != 2 || tse.Buffer != 2 {
		t.Errorf("Err = %v, want TooSlowError after sequence 2, buffer 2", err)
	} else if !strings.Contains(err.Error(), "after sequence 2") {
		t.Errorf("Err text %q", err)
	}
	slow.Close() // harmless after the cut
	if got := fmt.Sprint(seqs(drain(fast))); got != "[1 2 3 4 5]" {
		t.Errorf("fast got %s", got)
	}
	if st := b.Stats(); st.Subscribers != 1 || st.CutOff != 1 || st.Published != 5 {
		t.Errorf("Stats = %+v", st)
	}
	fast.Close()
}

// TestBusConcurrent: publishers and subscribers at once (for the race
// detector): every subscriber sees increasing sequences.
func TestBusConcurrent(t *testing.T) {
	b := NewBus(BusConfig{Recent: 16})
	var wg sync.WaitGroup
	subs := make([]*Subscription, 4)
	for i := range subs {
		subs[i] = b.Subscribe(nil, 4000)
	}
	for range 4 {
		wg.Go(func() {
			for range 500 {
				b.Publish(ev(switchboardv1.EventKind_EVENT_KIND_CONNECTION_OPENED, "c"))
				_ = b.Recent(3, nil)
			}
		})
	}
	wg.Wait()
	for _, s := range subs {
		var last uint64
		for _, e := range drain(s) {
			if e.GetSequence() <= last {
				t.Fatalf("sequence %d after %d", e.GetSequence(), last)
			}
			last = e.GetSequence()
		}
		if last != 2000 {
			t.Errorf("last sequence %d, want 2000", last)
		}
		s.Close()
	}
}

// TestPublishAllocs: Publish allocates nothing beyond the event (and its
// time, when unset), whatever the number of subscribers.
func TestPublishAllocs(t *testing.T) {
	b := NewBus(BusConfig{Recent: 10})
	subs := []*Subscription{b.Subscribe(nil, 1000), b.Subscribe(func(e *switchboardv1.Event) bool { return e.GetConnectionId() == "x" }, 1000)}
	e := ev(switchboardv1.EventKind_EVENT_KIND_CONNECTION_OPENED, "c")
	e.Time = timestamp(time.Now())
	if n := testing.AllocsPerRun(100, func() { b.Publish(e) }); n != 0 {
		t.Errorf("Publish allocates %v times per event", n)
	}
	for _, s := range subs {
		s.Close()
	}
}

// TestObserverHotPath: the Observer has no per-frame callback, and a
// positive ACK sent, an accepted Send and a Send under a policy without
// ACKs cost nothing and publish nothing.
func TestObserverHotPath(t *testing.T) {
	b := NewBus(BusConfig{})
	obs := b.Observer()
	if obs.FrameReceived != nil {
		t.Error("the bus observes every frame")
	}
	for _, code := range []transport.AckCode{transport.AckAA, transport.AckCA, transport.AckByteACK, transport.AckFixedACK} {
		if n := testing.AllocsPerRun(100, func() { obs.AckSent(nil, code) }); n != 0 {
			t.Errorf("AckSent(%v) allocates %v", code, n)
		}
	}
	for _, o := range []transport.Outcome{transport.OutcomeAccepted, transport.OutcomeWritten} {
		res := transport.SendResult{Outcome: o, Ack: transport.PeerAck{Code: transport.AckAA}}
		if n := testing.AllocsPerRun(100, func() { obs.SendDone(nil, res, nil) }); n != 0 {
			t.Errorf("SendDone(%v) allocates %v", o, n)
		}
	}
	if st := b.Stats(); st.Published != 0 {
		t.Errorf("published %d events for positive outcomes", st.Published)
	}
	if (*Bus)(nil).Observer() != nil || (*Bus)(nil).RegistryHook() != nil || (*Bus)(nil).OutboxHook() != nil {
		t.Error("a nil Bus has hooks")
	}
}

// TestObserverConnEvents: closed (with reason and cause) and rejected
// connections, which need no live connection.
func TestObserverConnEvents(t *testing.T) {
	b := NewBus(BusConfig{})
	obs := b.Observer()
	obs.ConnClosed(nil, transport.ConnInfo{ID: "c-1", ListenerID: "adt", RemoteAddr: "127.0.0.1:4000",
		CloseReason: transport.CloseFrameTooLarge, CloseErr: errors.New("frame exceeds the maximum size")})
	obs.ConnRejected("adt", "127.0.0.1:4001", transport.RejectPerSource)
	got := b.Recent(0, nil)
	want := []*switchboardv1.Event{
		{Sequence: 1, Kind: switchboardv1.EventKind_EVENT_KIND_CONNECTION_CLOSED, ListenerId: "adt", ConnectionId: "c-1",
			RemoteAddress: "127.0.0.1:4000", CloseReason: switchboardv1.CloseReason_CLOSE_REASON_FRAME_TOO_LARGE,
			Detail: "frame too large: frame exceeds the maximum size"},
		{Sequence: 2, Kind: switchboardv1.EventKind_EVENT_KIND_CONNECTION_REJECTED, ListenerId: "adt",
			RemoteAddress: "127.0.0.1:4001", Detail: "refused: max connections per source"},
	}
	checkEvents(t, got, want)
}

// checkEvents compares events without their times (which must be set).
func checkEvents(t *testing.T, got, want []*switchboardv1.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range got {
		g := proto.CloneOf(got[i])
		if g.Time == nil {
			t.Errorf("event %d has no time", i)
		}
		g.Time = nil
		if w := want[i]; !proto.Equal(g, w) {
			t.Errorf("event %d:\n got %v\nwant %v", i, g, w)
		}
	}
}

// TestRegistryAndOutboxHooks: what the registry and the outbox report
// becomes events with the right kinds and fields.
func TestRegistryAndOutboxHooks(t *testing.T) {
	b := NewBus(BusConfig{})
	reg, ob := b.RegistryHook(), b.OutboxHook()
	next := time.Date(2026, 12, 1, 3, 0, 1, 0, time.UTC)
	reg(registry.Event{Kind: registry.EventListenerStarted, ListenerID: "adt", Address: "127.0.0.1:2575"})
	reg(registry.Event{Kind: registry.EventListenerBindFailed, ListenerID: "adt", Address: "127.0.0.1:2575",
		Err: errors.New("address already in use")})
	reg(registry.Event{Kind: registry.EventListenerBindFailed, ListenerID: "adt", Address: "127.0.0.1:2575",
		Err: errors.New("address already in use"), NextAttempt: next, Failed: 2})
	reg(registry.Event{Kind: registry.EventListenerStopped, ListenerID: "adt", Address: "127.0.0.1:2575"})
	reg(registry.Event{Kind: registry.EventListenerStopped, ListenerID: "adt", ShuttingDown: true})
	reg(registry.Event{Kind: registry.EventConnectionReconnecting, ConnectionID: "lab", Address: "10.0.0.1:2575",
		Err: errors.New("connection lost: peer closed"), NextAttempt: next})
	reg(registry.Event{Kind: registry.EventConnectionReconnecting, ConnectionID: "lab", Address: "10.0.0.1:2575",
		Err: errors.New("could not connect"), NextAttempt: next, Failed: 3})
	ob(outbox.Event{Kind: outbox.EventInDoubt, ConnectionID: "lab", MessageID: "out-lab-1", ControlID: "M\xfc1", Reason: "in doubt: ack timeout"})
	ob(outbox.Event{Kind: outbox.EventFailed, ConnectionID: "lab", MessageID: "out-lab-2", ControlID: "M2", Reason: "rejected by the peer (AE)"})
	ts := timestamp(next)
	checkEvents(t, b.Recent(0, nil), []*switchboardv1.Event{
		{Sequence: 1, Kind: switchboardv1.EventKind_EVENT_KIND_LISTENER_STARTED, ListenerId: "adt", RemoteAddress: "127.0.0.1:2575"},
		{Sequence: 2, Kind: switchboardv1.EventKind_EVENT_KIND_LISTENER_BIND_FAILED, ListenerId: "adt", RemoteAddress: "127.0.0.1:2575",
			Detail: "address already in use; nothing was created"},
		{Sequence: 3, Kind: switchboardv1.EventKind_EVENT_KIND_LISTENER_BIND_FAILED, ListenerId: "adt", RemoteAddress: "127.0.0.1:2575",
			Detail: "address already in use; backing off, 2 failed binds", NextAttemptTime: ts},
		{Sequence: 4, Kind: switchboardv1.EventKind_EVENT_KIND_LISTENER_STOPPED, ListenerId: "adt", RemoteAddress: "127.0.0.1:2575", Detail: "stopped"},
		{Sequence: 5, Kind: switchboardv1.EventKind_EVENT_KIND_LISTENER_STOPPED, ListenerId: "adt", Detail: "the server is shutting down"},
		{Sequence: 6, Kind: switchboardv1.EventKind_EVENT_KIND_CONNECTION_RECONNECTING, ConnectionId: "lab", RemoteAddress: "10.0.0.1:2575",
			Detail: "connection lost: peer closed", NextAttemptTime: ts},
		{Sequence: 7, Kind: switchboardv1.EventKind_EVENT_KIND_CONNECTION_RECONNECTING, ConnectionId: "lab", RemoteAddress: "10.0.0.1:2575",
			Detail: "could not connect; 3 failed connects", NextAttemptTime: ts},
		{Sequence: 8, Kind: switchboardv1.EventKind_EVENT_KIND_MESSAGE_IN_DOUBT, ConnectionId: "lab", MessageId: "out-lab-1",
			ControlId: "M\u00fc1", Detail: "in doubt: ack timeout"},
		{Sequence: 9, Kind: switchboardv1.EventKind_EVENT_KIND_MESSAGE_FAILED, ConnectionId: "lab", MessageId: "out-lab-2",
			ControlId: "M2", Detail: "rejected by the peer (AE)"},
	})
	// Every kind of the registry and the outbox has its event.
	for _, k := range registry.EventKinds() {
		before := b.Stats().Published
		reg(registry.Event{Kind: k})
		if b.Stats().Published != before+1 {
			t.Errorf("registry %v publishes nothing", k)
		}
	}
	for _, k := range outbox.EventKinds() {
		before := b.Stats().Published
		ob(outbox.Event{Kind: k})
		if b.Stats().Published != before+1 {
			t.Errorf("outbox %v publishes nothing", k)
		}
	}
}

// healthJournal is a journal whose Health the test sets.
type healthJournal struct {
	journal.Journal // only Health is called
	mu              sync.Mutex
	err             error
	changed         chan struct{}
	closed          bool
}

func (j *healthJournal) Health() (error, <-chan struct{}) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return journal.ErrClosed, nil
	}
	return j.err, j.changed
}

func (j *healthJournal) set(err error, closed bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.err, j.closed = err, closed
	close(j.changed)
	j.changed = make(chan struct{})
}

// TestFollowJournal: a failure and a recovery each publish one event; the
// loop ends when the journal closes (closing is not a failure) or ctx ends.
func TestFollowJournal(t *testing.T) {
	b := NewBus(BusConfig{})
	sub := b.Subscribe(nil, 10)
	defer sub.Close()
	j := &healthJournal{changed: make(chan struct{})}
	done := make(chan struct{})
	go func() { defer close(done); b.FollowJournal(context.Background(), j) }()
	next := func() *switchboardv1.Event {
		t.Helper()
		select {
		case e := <-sub.C():
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
			return nil
		}
	}
	j.set(fmt.Errorf("%w: sync: no space left on device", journal.ErrUnavailable), false)
	if e := next(); e.GetKind() != switchboardv1.EventKind_EVENT_KIND_JOURNAL_FAILED ||
		e.GetDetail() != "journal: unavailable: sync: no space left on device" {
		t.Errorf("event %v, want JOURNAL_FAILED with the cause", e)
	}
	j.set(nil, false)
	if e := next(); e.GetKind() != switchboardv1.EventKind_EVENT_KIND_JOURNAL_RECOVERED {
		t.Errorf("event %v, want JOURNAL_RECOVERED", e)
	}
	j.set(nil, true)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("FollowJournal goes on after Close")
	}
	if got := drain(sub); len(got) != 0 {
		t.Errorf("events after Close: %v", got)
	}

	// Failed already when followed; ctx ends it.
	j = &healthJournal{changed: make(chan struct{}), err: journal.ErrUnavailable}
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() { defer close(done); b.FollowJournal(ctx, j) }()
	if e := next(); e.GetKind() != switchboardv1.EventKind_EVENT_KIND_JOURNAL_FAILED {
		t.Errorf("event %v, want JOURNAL_FAILED", e)
	}
	cancel()
	<-done
}

// TestText: strings from message bytes become valid UTF-8 (Latin-1) and
// long ones are cut at a character boundary.
func TestText(t *testing.T) {
	if got := text("M\xfcLLER"); got != "M\u00fcLLER" {
		t.Errorf("text = %q", got)
	}
	long := strings.Repeat("\u00e9", maxDetailBytes) // 2 bytes each
	if got := text(long); len(got) > maxDetailBytes || !utf8.ValidString(got) || len(got) < maxDetailBytes-1 {
		t.Errorf("text of %d bytes = %d bytes, valid %v", len(long), len(got), utf8.ValidString(got))
	}
	if got := text(strings.Repeat("\xff", 3*maxDetailBytes)); len(got) > maxDetailBytes+utf8.UTFMax || !utf8.ValidString(got) {
		t.Errorf("text of invalid bytes = %d bytes", len(got))
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
