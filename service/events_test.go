package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal/journaltest"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal/pebbletest"
	"github.com/switchboard-dev/switchboard/observe"
	"github.com/switchboard-dev/switchboard/service"
)

// Event kinds, short.
const (
	evListenerStarted = switchboardv1.EventKind_EVENT_KIND_LISTENER_STARTED
	evListenerStopped = switchboardv1.EventKind_EVENT_KIND_LISTENER_STOPPED
	evBindFailed      = switchboardv1.EventKind_EVENT_KIND_LISTENER_BIND_FAILED
	evOpened          = switchboardv1.EventKind_EVENT_KIND_CONNECTION_OPENED
	evClosed          = switchboardv1.EventKind_EVENT_KIND_CONNECTION_CLOSED
	evReconnecting    = switchboardv1.EventKind_EVENT_KIND_CONNECTION_RECONNECTING
	evNakSent         = switchboardv1.EventKind_EVENT_KIND_NAK_SENT
	evNakReceived     = switchboardv1.EventKind_EVENT_KIND_NAK_RECEIVED
	evAckMismatch     = switchboardv1.EventKind_EVENT_KIND_ACK_MISMATCH
	evAckTimeout      = switchboardv1.EventKind_EVENT_KIND_ACK_TIMEOUT
	evFramingError    = switchboardv1.EventKind_EVENT_KIND_FRAMING_ERROR
	evJournalFailed   = switchboardv1.EventKind_EVENT_KIND_JOURNAL_FAILED
	evJournalOK       = switchboardv1.EventKind_EVENT_KIND_JOURNAL_RECOVERED
	evRejected        = switchboardv1.EventKind_EVENT_KIND_CONNECTION_REJECTED
	evInDoubt         = switchboardv1.EventKind_EVENT_KIND_MESSAGE_IN_DOUBT
	evFailed          = switchboardv1.EventKind_EVENT_KIND_MESSAGE_FAILED
)

// payloadMarker is in every message the tests send (hl7Message's PID); no
// event may ever hold it.
const payloadMarker = "EVERYMAN"

// watcher reads a WatchEvents stream in the background and checks, for
// every event, that sequences increase and that no payload leaks.
type watcher struct {
	t      *testing.T
	events chan *switchboardv1.Event
	errc   chan error // the stream's end
	last   uint64
}

func (s *server) watch(ctx context.Context, req *switchboardv1.WatchEventsRequest) *watcher {
	s.t.Helper()
	return watchOn(ctx, s.t, s.client, req)
}

func watchOn(ctx context.Context, t *testing.T, client switchboardv1.SwitchboardServiceClient, req *switchboardv1.WatchEventsRequest) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	stream, err := client.WatchEvents(ctx, req)
	if err != nil {
		t.Fatalf("WatchEvents: %v", err)
	}
	// The headers come once the subscription is live.
	if _, err := stream.Header(); err != nil {
		t.Fatalf("WatchEvents header: %v", err)
	}
	w := &watcher{t: t, events: make(chan *switchboardv1.Event, 10000), errc: make(chan error, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				w.errc <- err
				return
			}
			if len(resp.GetEvents()) == 0 {
				w.errc <- errors.New("a response without events")
				return
			}
			for _, e := range resp.GetEvents() {
				w.events <- e
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// next returns the next event (10 s at most), checked.
func (w *watcher) next() *switchboardv1.Event {
	w.t.Helper()
	// The reader queues every event before the stream's end: take those
	// first.
	select {
	case e := <-w.events:
		w.check(e)
		return e
	default:
	}
	select {
	case e := <-w.events:
		w.check(e)
		return e
	case err := <-w.errc:
		w.t.Fatalf("the event stream ended: %v", err)
	case <-time.After(10 * time.Second):
		w.t.Fatal("no event in 10 s")
	}
	return nil
}

func (w *watcher) check(e *switchboardv1.Event) {
	w.t.Helper()
	if e.GetSequence() <= w.last {
		w.t.Errorf("event sequence %d after %d", e.GetSequence(), w.last)
	}
	w.last = e.GetSequence()
	if e.GetTime() == nil || e.GetKind() == 0 {
		w.t.Errorf("event without a time or kind: %v", e)
	}
	if strings.Contains(prototext.Format(e), payloadMarker) {
		w.t.Errorf("event holds payload bytes: %v", e)
	}
}

// until returns the events up to the first of kind (included).
func (w *watcher) until(kind switchboardv1.EventKind) []*switchboardv1.Event {
	w.t.Helper()
	var out []*switchboardv1.Event
	for {
		e := w.next()
		out = append(out, e)
		if e.GetKind() == kind {
			return out
		}
	}
}

// end reads the events left and returns how the stream ended.
func (w *watcher) end() error {
	w.t.Helper()
	for {
		select {
		case e := <-w.events:
			w.check(e)
		case err := <-w.errc:
			return err
		case <-time.After(10 * time.Second):
			w.t.Fatal("the event stream did not end in 10 s")
			return nil
		}
	}
}

// want is what an event must hold: its kind, and every field set here.
type want struct {
	kind                            switchboardv1.EventKind
	listener, conn, remote, control string
	messageID                       string
	reason                          switchboardv1.CloseReason
	ack                             switchboardv1.AckCode
	detail                          string // a substring
	nextAttempt                     bool
}

func (w want) String() string { return fmt.Sprintf("%+v", struct{ want }{w}) }

func (w want) matches(e *switchboardv1.Event) bool {
	return e.GetKind() == w.kind &&
		(w.listener == "" || e.GetListenerId() == w.listener) && (w.conn == "" || e.GetConnectionId() == w.conn) &&
		(w.remote == "" || e.GetRemoteAddress() == w.remote) && (w.control == "" || e.GetControlId() == w.control) &&
		(w.messageID == "" || e.GetMessageId() == w.messageID) &&
		(w.reason == 0 || e.GetCloseReason() == w.reason) && (w.ack == 0 || e.GetAckCode() == w.ack) &&
		strings.Contains(e.GetDetail(), w.detail) && (!w.nextAttempt || e.GetNextAttemptTime() != nil)
}

// expect checks that the next events are wants, in order.
func (w *watcher) expect(wants ...want) []*switchboardv1.Event {
	w.t.Helper()
	var got []*switchboardv1.Event
	for _, x := range wants {
		e := w.next()
		got = append(got, e)
		if !x.matches(e) {
			w.t.Fatalf("event %v\nwant %v", e, x)
		}
	}
	return got
}

// expectSet checks that the next len(wants) events are wants, in any order
// (events from different goroutines, such as a Send's outcome and the
// reconnect loop's next attempt).
func (w *watcher) expectSet(wants ...want) []*switchboardv1.Event {
	w.t.Helper()
	got := make([]*switchboardv1.Event, 0, len(wants))
	left := append([]want(nil), wants...)
	for range wants {
		e := w.next()
		got = append(got, e)
		i := -1
		for j, x := range left {
			if x.matches(e) {
				i = j
				break
			}
		}
		if i < 0 {
			w.t.Fatalf("event %v matches none of %v", e, left)
		}
		left = append(left[:i], left[i+1:]...)
	}
	return got
}

// TestWatchEvents follows a listener, an inbound peer, outbound
// connections and their failures through one unfiltered stream: every
// event arrives in order, with increasing sequences, the right fields and
// never a payload byte.
func TestWatchEvents(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	w := s.watch(ctx, &switchboardv1.WatchEventsRequest{})

	// A listener and a peer.
	l := s.startListener(ctx, "adt", nil)
	w.expect(want{kind: evListenerStarted, listener: "adt", remote: addr(l)})
	p := dialPeer(t, addr(l))
	opened := w.expect(want{kind: evOpened, listener: "adt", remote: p.nc.LocalAddr().String(), detail: "inbound"})[0]
	inbound := opened.GetConnectionId()
	if inbound == "" {
		t.Fatal("CONNECTION_OPENED without a connection id")
	}

	// A message without MSH-10 is answered negatively.
	p.write(mllp.AppendFrame(nil, hl7Message("")))
	a, err := hl7.ParseAck(p.readFrame())
	if err != nil || a.Code == hl7.AA {
		t.Fatalf("answer to a message without MSH-10 = %+v, %v; want a negative ACK", a, err)
	}
	nak := switchboardv1.AckCode(switchboardv1.AckCode_value["ACK_CODE_"+string(a.Code)])
	w.expect(want{kind: evNakSent, listener: "adt", conn: inbound, remote: p.nc.LocalAddr().String(), ack: nak, detail: string(a.Code)})

	// The peer goes away.
	_ = p.nc.Close()
	w.expect(want{kind: evClosed, listener: "adt", conn: inbound, reason: switchboardv1.CloseReason_CLOSE_REASON_PEER_CLOSED})

	// StartListener on a taken port fails, and says so.
	_, err = s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "taken", Config: &switchboardv1.ListenerConfig{Address: addr(l)}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("StartListener on a taken port = %v", err)
	}
	w.expect(want{kind: evBindFailed, listener: "taken", remote: addr(l), detail: "nothing was created"})

	// An outbound connection whose peer rejects the message (AR), then goes
	// away: reconnecting, after the lost session and after each failed
	// connect.
	rejecting := startTestPeer(t, ackWith(hl7.AR, ""))
	s.connectWith(ctx, "lab", &switchboardv1.ConnectionConfig{Address: rejecting.addr(), Reconnect: fastReconnect})
	w.expect(want{kind: evOpened, conn: "lab", remote: rejecting.addr(), detail: "outbound"})
	resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("OUT-1")})
	if err != nil || resp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_REJECTED {
		t.Fatalf("Send to a rejecting peer = %v, %v", resp, err)
	}
	if e := w.expect(want{kind: evNakReceived, conn: "lab", control: "OUT-1", ack: switchboardv1.AckCode_ACK_CODE_AR})[0]; e.GetListenerId() != "" {
		t.Errorf("an outbound connection's event names listener %q", e.GetListenerId())
	}
	rejecting.stop()
	w.expect(want{kind: evClosed, conn: "lab"},
		want{kind: evReconnecting, conn: "lab", remote: rejecting.addr(), detail: "connection lost", nextAttempt: true},
		want{kind: evReconnecting, conn: "lab", remote: rejecting.addr(), detail: "1 failed connects", nextAttempt: true})
	if _, err := s.client.Disconnect(ctx, &switchboardv1.DisconnectRequest{ConnectionId: "lab"}); err != nil {
		t.Fatal(err)
	}
	// The loop may have failed again before Disconnect; a marker tells
	// when nothing more is coming.
	s.startListener(ctx, "marker", nil)
	evs := w.until(evListenerStarted)
	for _, e := range evs[:len(evs)-1] {
		if !(want{kind: evReconnecting, conn: "lab", detail: "failed connects"}).matches(e) {
			t.Errorf("event %v; want lab reconnecting, or the marker", e)
		}
	}
	if e := evs[len(evs)-1]; e.GetListenerId() != "marker" {
		t.Errorf("event %v; want the marker", e)
	}

	// A peer that acknowledges another message: the Send is in doubt, the
	// connection reset.
	other := startTestPeer(t, ackWith(hl7.AA, "SOMEONE-ELSE"))
	s.connectWith(ctx, "mis", &switchboardv1.ConnectionConfig{Address: other.addr(), Reconnect: &switchboardv1.ReconnectPolicy{Disabled: true}})
	w.expect(want{kind: evOpened, conn: "mis"})
	if _, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "mis", Payload: hl7Message("OUT-2")}); errorInfo(err).GetReason() != "IN_DOUBT" {
		t.Fatalf("Send acknowledged for another message = %v; want IN_DOUBT", err)
	}
	// transport closes the connection before the Send returns.
	w.expect(want{kind: evClosed, conn: "mis", reason: switchboardv1.CloseReason_CLOSE_REASON_ACK_MISMATCH},
		want{kind: evAckMismatch, conn: "mis", control: "OUT-2", ack: switchboardv1.AckCode_ACK_CODE_AA, detail: "SOMEONE-ELSE"})

	// A silent peer: the acknowledgement times out.
	silent := startTestPeer(t, func([]byte) []byte { return nil })
	s.connectWith(ctx, "silent", &switchboardv1.ConnectionConfig{Address: silent.addr(), Reconnect: fastReconnect})
	w.expect(want{kind: evOpened, conn: "silent"})
	_, err = s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "silent", Payload: hl7Message("OUT-3"), AckTimeout: durationpbNew(200 * time.Millisecond)})
	if errorInfo(err).GetReason() != "IN_DOUBT" {
		t.Fatalf("Send to a silent peer = %v; want IN_DOUBT", err)
	}
	w.expect(want{kind: evClosed, conn: "silent", reason: switchboardv1.CloseReason_CLOSE_REASON_ACK_TIMEOUT})
	// The Send's outcome, and the reconnect loop (the peer is still there).
	w.expectSet(want{kind: evAckTimeout, conn: "silent", control: "OUT-3", detail: "ack timeout"},
		want{kind: evReconnecting, conn: "silent", detail: "ack timeout", nextAttempt: true},
		want{kind: evOpened, conn: "silent"})
	if _, err := s.client.Disconnect(ctx, &switchboardv1.DisconnectRequest{ConnectionId: "silent"}); err != nil {
		t.Fatal(err)
	}
	w.expect(want{kind: evClosed, conn: "silent", reason: switchboardv1.CloseReason_CLOSE_REASON_CLOSED_LOCALLY})

	// Stopping the listener.
	if _, err := s.client.StopListener(ctx, &switchboardv1.StopListenerRequest{ListenerId: "adt"}); err != nil {
		t.Fatal(err)
	}
	w.expect(want{kind: evListenerStopped, listener: "adt", remote: addr(l), detail: "stopped"})
}

// TestWatchEventsFilters: listener, connection and kind filters each let
// through only theirs, and combine; a listener's filter includes the
// connections it accepted. Framing errors and rejected connections on the
// way.
func TestWatchEventsFilters(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	byListener := s.watch(ctx, &switchboardv1.WatchEventsRequest{ListenerId: "strict"})
	byKind := s.watch(ctx, &switchboardv1.WatchEventsRequest{Kinds: []switchboardv1.EventKind{evRejected, evFramingError}})
	byConn := s.watch(ctx, &switchboardv1.WatchEventsRequest{ConnectionId: "lab"})
	both := s.watch(ctx, &switchboardv1.WatchEventsRequest{ListenerId: "one", Kinds: []switchboardv1.EventKind{evRejected}})

	strict := s.startListener(ctx, "strict", &switchboardv1.ListenerConfig{
		Framing: &switchboardv1.Framing{Kind: &switchboardv1.Framing_Mllp{Mllp: &switchboardv1.MllpFraming{Strict: true}}}})
	one := s.startListener(ctx, "one", &switchboardv1.ListenerConfig{MaxConnections: 1})
	peer := startTestPeer(t, ackWith(hl7.AA, ""))
	s.connectWith(ctx, "lab", &switchboardv1.ConnectionConfig{Address: peer.addr()})

	// Junk before a frame under strict MLLP.
	junk := dialPeer(t, addr(strict))
	junk.write([]byte("hello"))
	junk.expectClosed()
	// A second connection to "one", which takes one.
	dialPeer(t, addr(one))
	dialRejected(t, addr(one))

	byListener.expect(want{kind: evListenerStarted, listener: "strict"},
		want{kind: evOpened, listener: "strict"},
		want{kind: evFramingError, listener: "strict", detail: "bytes outside a frame"},
		want{kind: evClosed, listener: "strict", reason: switchboardv1.CloseReason_CLOSE_REASON_FRAMING_ERROR})
	byKind.expect(want{kind: evFramingError, listener: "strict"},
		want{kind: evRejected, listener: "one", detail: "max connections"})
	both.expect(want{kind: evRejected, listener: "one"})
	byConn.expect(want{kind: evOpened, conn: "lab", remote: peer.addr()})

	// Nothing else came through: a last event each filter takes arrives
	// next.
	if _, err := s.client.Disconnect(ctx, &switchboardv1.DisconnectRequest{ConnectionId: "lab"}); err != nil {
		t.Fatal(err)
	}
	byConn.expect(want{kind: evClosed, conn: "lab", reason: switchboardv1.CloseReason_CLOSE_REASON_CLOSED_LOCALLY})
	dialRejected(t, addr(one))
	for _, w := range []*watcher{both, byKind} {
		if e := w.expect(want{kind: evRejected, listener: "one"})[0]; !strings.HasPrefix(e.GetRemoteAddress(), "127.0.0.1:") {
			t.Errorf("rejected connection's remote address %q", e.GetRemoteAddress())
		}
	}
	if _, err := s.client.StopListener(ctx, &switchboardv1.StopListenerRequest{ListenerId: "strict"}); err != nil {
		t.Fatal(err)
	}
	byListener.expect(want{kind: evListenerStopped, listener: "strict"})

	// Kinds are validated.
	stream, err := s.client.WatchEvents(ctx, &switchboardv1.WatchEventsRequest{Kinds: []switchboardv1.EventKind{99}})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("WatchEvents with an unknown kind = %v, want InvalidArgument", err)
	}
}

// TestWatchEventsReplayRestore: a restarted server whose listener's port is
// taken reports the failed bind (BACKING_OFF, with the next attempt) before
// anyone could watch; replay_recent returns it, then the live events follow
// with no gap and no duplicate: the bind that succeeds once the port is
// free.
func TestWatchEventsReplayRestore(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	fixed := freeAddr(t)
	s := startDurable(t, dir)
	s.startListener(ctx, "adt", &switchboardv1.ListenerConfig{Address: fixed})
	s.stop()

	squatter, err := net.Listen("tcp", fixed)
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	s = startDurable(t, dir)
	if st := getListener(ctx, t, s, "adt").GetStatus(); st.GetState() != switchboardv1.ListenerState_LISTENER_STATE_BACKING_OFF {
		t.Fatalf("listener on a taken port after the restart = %v; want BACKING_OFF", st)
	}
	all := s.watch(ctx, &switchboardv1.WatchEventsRequest{ReplayRecent: true})
	mine := s.watch(ctx, &switchboardv1.WatchEventsRequest{ReplayRecent: true, ListenerId: "adt", Kinds: []switchboardv1.EventKind{evBindFailed, evListenerStarted}})
	fresh := s.watch(ctx, &switchboardv1.WatchEventsRequest{})
	failed := want{kind: evBindFailed, listener: "adt", remote: fixed, detail: "backing off, 1 failed binds", nextAttempt: true}
	replayed := all.expect(failed)[0]
	if got := mine.expect(failed)[0]; got.GetSequence() != replayed.GetSequence() {
		t.Errorf("the filtered replay has sequence %d, the other %d", got.GetSequence(), replayed.GetSequence())
	}

	squatter.Close()
	// The retries go on (more may fail before the port is free), then one
	// binds; the watcher that joined late sees only those.
	for _, w := range []*watcher{all, mine, fresh} {
		evs := w.until(evListenerStarted)
		for _, e := range evs[:len(evs)-1] {
			if !failed.matches(e) && !(want{kind: evBindFailed, listener: "adt", nextAttempt: true}).matches(e) {
				t.Errorf("event before the bind: %v", e)
			}
		}
		if e := evs[len(evs)-1]; !(want{kind: evListenerStarted, listener: "adt", remote: fixed}).matches(e) {
			t.Errorf("bind event %v", e)
		}
	}
	if st := getListener(ctx, t, s, "adt").GetStatus(); st.GetState() != switchboardv1.ListenerState_LISTENER_STATE_LISTENING {
		t.Errorf("listener once its port is free = %v", st)
	}
}

// dialRejected connects to a listener that turns the connection away and
// waits until it has (the reset may even beat the connect).
func dialRejected(t *testing.T, addr string) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) {
			return
		}
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err == nil {
		t.Fatalf("%s sent bytes to a connection it should turn away", addr)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("%s did not turn the connection away", addr)
	}
}

func getListener(ctx context.Context, t *testing.T, s *server, id string) *switchboardv1.Listener {
	t.Helper()
	resp, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: id})
	if err != nil {
		t.Fatalf("GetListener(%s): %v", id, err)
	}
	return resp.GetListener()
}

// TestWatchEventsQueued: a queued message held in doubt, one the peer
// rejected for good, one an operator failed and those of a removed
// connection are events with the message's id and control id (never its
// payload).
func TestWatchEventsQueued(t *testing.T) {
	ctx := testCtx(t)
	s := startOutboxServer(t, t.TempDir())
	w := s.watch(ctx, &switchboardv1.WatchEventsRequest{Kinds: []switchboardv1.EventKind{evInDoubt, evFailed}})

	silent := startTestPeer(t, func([]byte) []byte { return nil })
	s.connectQueued(ctx, "hold", silent.addr(), fastPolicy(func(p *switchboardv1.OutboxPolicy) {
		p.InDoubt = switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_HOLD
	}), 200*time.Millisecond)
	held := s.queue(ctx, "hold", hl7Message("Q-1"), "")
	w.expect(want{kind: evInDoubt, conn: "hold", messageID: held, control: "Q-1", detail: "held until an operator resolves it"})

	fixMe := startTestPeer(t, ackWith(hl7.AE, ""))
	s.connectQueued(ctx, "ae", fixMe.addr(), fastPolicy(nil), time.Second)
	failed := s.queue(ctx, "ae", hl7Message("Q-2"), "")
	w.expect(want{kind: evFailed, conn: "ae", messageID: failed, control: "Q-2", detail: "rejected by the peer (AE)"})

	// An operator fails the held one.
	if _, err := s.client.ResolveMessage(ctx, &switchboardv1.ResolveMessageRequest{MessageId: held, Resolution: switchboardv1.Resolution_RESOLUTION_FAIL}); err != nil {
		t.Fatal(err)
	}
	w.expect(want{kind: evFailed, conn: "hold", messageID: held, control: "Q-1", detail: "failed by an operator"})

	// Removing a connection fails what it still holds.
	q3 := s.queue(ctx, "hold", hl7Message("Q-3"), "")
	q4 := s.queue(ctx, "hold", hl7Message("Q-4"), "")
	w.expect(want{kind: evInDoubt, conn: "hold", messageID: q3, control: "Q-3"})
	s.disconnect(ctx, "hold")
	w.expect(want{kind: evFailed, conn: "hold", messageID: q3, control: "Q-3", detail: "connection removed"},
		want{kind: evFailed, conn: "hold", messageID: q4, control: "Q-4", detail: "connection removed"})
}

// TestWatchEventsJournal: a failing disk is JOURNAL_FAILED (and the peers'
// negative acknowledgements NAK_SENT), its recovery JOURNAL_RECOVERED.
func TestWatchEventsJournal(t *testing.T) {
	ctx := testCtx(t)
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	j, err := pebblejournal.Open(t.TempDir(), pebblejournal.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	s := startServerWith(t, j)
	w := s.watch(ctx, &switchboardv1.WatchEventsRequest{Kinds: []switchboardv1.EventKind{evJournalFailed, evJournalOK, evNakSent}})
	l := s.startListener(ctx, "adt", nil)
	p := dialPeer(t, addr(l))

	fs.FailSyncs.Store(true)
	s.journalBroken = true
	p.write(mllp.AppendFrame(nil, hl7Message("LOST")))
	if a, err := hl7.ParseAck(p.readFrame()); err != nil || a.Code != hl7.AR {
		t.Fatalf("answer while the disk fails = %+v, %v; want AR", a, err)
	}
	w.expectSet(want{kind: evJournalFailed, detail: "unavailable"},
		want{kind: evNakSent, listener: "adt", ack: switchboardv1.AckCode_ACK_CODE_AR})

	fs.FailSyncs.Store(false)
	journaltest.WaitHealthy(t, j)
	w.expect(want{kind: evJournalOK})
}

// TestWatchEventsEndsOnShutdown: at shutdown a watcher gets the events of
// the shutdown itself (connections drained, listeners stopped), then
// UNAVAILABLE, reason SHUTTING_DOWN.
func TestWatchEventsEndsOnShutdown(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "adt", nil)
	dialPeer(t, addr(l))
	w := s.watch(ctx, &switchboardv1.WatchEventsRequest{ListenerId: "adt", Kinds: []switchboardv1.EventKind{evClosed, evListenerStopped}})
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s.svc.Shutdown(sctx)
	w.expect(want{kind: evClosed, listener: "adt", reason: switchboardv1.CloseReason_CLOSE_REASON_DRAINED},
		want{kind: evListenerStopped, listener: "adt", detail: "shutting down"})
	err := w.end()
	if status.Code(err) != codes.Unavailable || errorInfo(err).GetReason() != "SHUTTING_DOWN" {
		t.Errorf("stream at shutdown ended with %v; want UNAVAILABLE SHUTTING_DOWN", err)
	}
}

// TestWatchEventsSlowWatcher: a watcher that never reads is cut off once its
// buffer is full, while the server goes on serving: a peer's messages are
// acknowledged, other watchers get their events, calls are answered. When
// it does read, it gets the events it was given, then RESOURCE_EXHAUSTED,
// reason WATCHER_TOO_SLOW, last_sequence the last one it got.
func TestWatchEventsSlowWatcher(t *testing.T) {
	ctx := testCtx(t)
	j, err := pebblejournal.Open(t.TempDir(), pebblejournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bus := observe.NewBus(observe.BusConfig{})
	s := startServerWith(t, j, func(c *service.Config) { c.Events, c.EventBuffer = bus, 8 })
	// The slow client has its own connection with fixed (minimal) flow
	// control windows, so the server's writes back up soon.
	cc, err := grpc.NewClient(s.cc.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sctx, cancelSlow := context.WithCancel(ctx)
	defer cancelSlow()
	slow, err := switchboardv1.NewSwitchboardServiceClient(cc).WatchEvents(sctx, &switchboardv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Header(); err != nil {
		t.Fatal(err)
	}
	adt := s.startListener(ctx, "adt", nil)
	other := s.watch(ctx, &switchboardv1.WatchEventsRequest{ListenerId: "adt"})

	// A flood of connections turned away (a peer reconnecting in a loop):
	// one event each, until the slow watcher is cut off.
	flood := s.startListener(ctx, "flood", &switchboardv1.ListenerConfig{MaxConnections: 1})
	dialPeer(t, addr(flood)) // takes the one
	for deadline := time.Now().Add(60 * time.Second); bus.Stats().CutOff == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the slow watcher was not cut off; bus %+v", bus.Stats())
		}
		for range 50 {
			dialRejected(t, addr(flood))
		}
	}

	// The server serves: a peer's message is acknowledged, the other
	// watcher sees its connection, calls are answered.
	p := dialPeer(t, addr(adt))
	p.write(mllp.AppendFrame(nil, hl7Message("STILL-ACKED")))
	checkAck(t, hl7Message("STILL-ACKED"), p.readFrame())
	other.expect(want{kind: evOpened, listener: "adt", remote: p.nc.LocalAddr().String()})
	if _, err := s.client.ListListeners(ctx, &switchboardv1.ListListenersRequest{}); err != nil {
		t.Fatal(err)
	}
	if st := bus.Stats(); st.CutOff != 1 || st.Subscribers != 1 {
		t.Errorf("bus %+v; want the slow watcher cut off, the other subscribed", st)
	}

	// Now it reads: what it was given, then the status.
	var last uint64
	for {
		resp, err := slow.Recv()
		if err == nil {
			for _, e := range resp.GetEvents() {
				if e.GetSequence() <= last {
					t.Fatalf("sequence %d after %d", e.GetSequence(), last)
				}
				last = e.GetSequence()
			}
			continue
		}
		if err == io.EOF || status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("slow watcher's stream ended with %v; want RESOURCE_EXHAUSTED", err)
		}
		ei := errorInfo(err)
		if ei.GetReason() != "WATCHER_TOO_SLOW" || ei.GetMetadata()["last_sequence"] != fmt.Sprint(last) || last == 0 {
			t.Errorf("ErrorInfo %v; want WATCHER_TOO_SLOW, last_sequence %d (the last event received)", ei, last)
		}
		break
	}
}
