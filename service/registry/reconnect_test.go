package registry

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// stateLog polls connection id's state and keeps every distinct state it
// saw, in order, until stopped.
type stateLog struct {
	mu     sync.Mutex
	states []ConnState
	stop   chan struct{}
	done   chan struct{}
}

func watchStates(r *Registry, id string) *stateLog {
	w := &stateLog{stop: make(chan struct{}), done: make(chan struct{}), states: []ConnState{connState(r, id)}}
	go func() {
		defer close(w.done)
		for {
			s := connState(r, id)
			w.mu.Lock()
			if n := len(w.states); n == 0 || w.states[n-1] != s {
				w.states = append(w.states, s)
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return w
}

func (w *stateLog) end(r *Registry, id string) []ConnState {
	close(w.stop)
	<-w.done
	if s := connState(r, id); w.states[len(w.states)-1] != s {
		w.states = append(w.states, s)
	}
	return w.states
}

// TestReconnectAfterPeerRestart: a peer that goes away and comes back gets
// the connection back by itself; meanwhile the connection shows BACKING_OFF
// with the last error, the next attempt's time and the failed connects,
// and CONNECTING during each attempt.
func TestReconnectAfterPeerRestart(t *testing.T) {
	ctx := testCtx(t)
	r := newRegistry(t)
	// Loopback connects take microseconds; slow them down so that polling
	// sees CONNECTING.
	r.dial = func(ctx context.Context, cfg transport.DialConfig) (*transport.Conn, error) {
		time.Sleep(10 * time.Millisecond)
		return transport.Dial(ctx, cfg)
	}
	peer := startTCPPeer(t)
	if _, err := r.connectSpec(ctx, "c", fastReconnect(peer.addr)); err != nil {
		t.Fatal(err)
	}
	w := watchStates(r, "c")
	peer.stop()
	waitUntil(t, func() bool {
		v, _ := r.Connection("c")
		return v.State == ConnBackingOff && v.FailedConnects >= 2
	})
	v, _ := r.Connection("c")
	if !errors.Is(v.LastError, transport.ErrConnectFailed) || v.NextAttempt.IsZero() || v.Info.CloseReason == 0 {
		t.Errorf("connection while the peer is away = %+v; want the connect error, a next attempt, the last close reason", v)
	}
	peer.start()
	waitUntil(t, func() bool { return connState(r, "c") == ConnOpen })
	states := w.end(r, "c")
	v, _ = r.Connection("c")
	if v.Reconnects != 1 || v.FailedConnects != 0 || v.LastError != nil || !v.NextAttempt.IsZero() || v.Info.State != transport.StateOpen {
		t.Errorf("connection once the peer is back = %+v", v)
	}
	// Open, then backing off and connecting in turn, then open again.
	if len(states) < 4 || states[0] != ConnOpen || states[1] != ConnBackingOff || !slices.Contains(states, ConnConnecting) ||
		states[len(states)-1] != ConnOpen || slices.Contains(states, ConnClosed) {
		t.Errorf("states seen: %v", states)
	}
}

// hl7Msg is a minimal HL7 message with control id id.
func hl7Msg(id string) []byte {
	return []byte("MSH|^~\\&|SND|FAC|RCV|FAC|20260101120000||ADT^A01|" + id + "|P|2.5\rPID|1||42\r")
}

// TestReconnectAfterAckTimeout: a connection reset because a Send got no
// acknowledgement in time comes back by itself, on a new session.
func TestReconnectAfterAckTimeout(t *testing.T) {
	ctx := testCtx(t)
	r := newRegistry(t)
	peer := startTCPPeer(t) // reads and never answers
	s := fastReconnect(peer.addr)
	s.AckTimeout = durationpb.New(50 * time.Millisecond)
	v, err := r.connectSpec(ctx, "c", s)
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.Conn("c")
	if err != nil {
		t.Fatal(err)
	}
	var se *transport.SendError
	if _, err := c.Send(ctx, hl7Msg("M1"), 0); !errors.As(err, &se) || se.Cause != transport.CauseAckTimeout {
		t.Fatalf("Send to a silent peer = %v, want an ACK timeout", err)
	}
	waitUntil(t, func() bool {
		v, _ := r.Connection("c")
		return v.State == ConnOpen && v.Reconnects == 1
	})
	next, _ := r.Conn("c")
	if next == c || peer.acceptedCount() != 2 {
		t.Errorf("after the reset: session %p (was %p), peer accepted %d; want a new session", next, c, peer.acceptedCount())
	}
	if v2, _ := r.Connection("c"); v2.Info.OpenTime.Equal(v.Info.OpenTime) {
		t.Errorf("the view still shows the old session")
	}
}

// TestWaitOpen: WaitOpen waits through BACKING_OFF and CONNECTING and
// returns the new open session; when its context ends first it says the
// connection is not open; once the connection is removed it says not found.
// Conn, which does not wait, says the connection is reconnecting.
func TestWaitOpen(t *testing.T) {
	ctx := testCtx(t)
	r := newRegistry(t)
	peer := startTCPPeer(t)
	if _, err := r.connectSpec(ctx, "c", fastReconnect(peer.addr)); err != nil {
		t.Fatal(err)
	}
	old, err := r.WaitOpen(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	peer.stop()
	waitUntil(t, func() bool { return connState(r, "c") == ConnBackingOff })
	if _, err := r.Conn("c"); !errors.Is(err, ErrReconnecting) {
		t.Errorf("Conn while backing off = %v, want ErrReconnecting", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = r.WaitOpen(short, "c")
	cancel()
	if !errors.Is(err, ErrNotOpen) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, transport.ErrConnectFailed) {
		t.Errorf("WaitOpen past its deadline = %v; want not open, deadline exceeded, the connect error", err)
	}

	got := make(chan error, 1)
	go func() {
		c, err := r.WaitOpen(ctx, "c")
		if err == nil && (c == old || c.State() != transport.StateOpen) {
			err = errors.New("not a new open session")
		}
		got <- err
	}()
	time.Sleep(50 * time.Millisecond) // a few attempts fail while it waits
	peer.start()
	if err := <-got; err != nil {
		t.Errorf("WaitOpen across the reconnect = %v", err)
	}

	peer.stop()
	waitUntil(t, func() bool { return connState(r, "c") == ConnBackingOff })
	go func() {
		_, err := r.WaitOpen(ctx, "c")
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if _, err := r.Disconnect(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; !errors.Is(err, ErrNotFound) {
		t.Errorf("WaitOpen on a removed connection = %v, want ErrNotFound", err)
	}
}

// TestReconnectDisabled: with reconnection disabled a lost connection
// stays CLOSED (Conn says so and does not offer to wait) until Connect
// opens it again; a Connect whose redial fails reports the error and
// keeps the resource.
func TestReconnectDisabled(t *testing.T) {
	ctx := testCtx(t)
	r := newRegistry(t)
	peer := startTCPPeer(t)
	s := &switchboardv1.ConnectionConfig{Address: peer.addr, Reconnect: &switchboardv1.ReconnectPolicy{Disabled: true}}
	if _, err := r.connectSpec(ctx, "c", s); err != nil {
		t.Fatal(err)
	}
	peer.stop()
	waitUntil(t, func() bool { return connState(r, "c") == ConnClosed })
	if _, err := r.Conn("c"); !errors.Is(err, ErrNotOpen) || errors.Is(err, ErrReconnecting) {
		t.Errorf("Conn on a closed connection that does not reconnect = %v, want ErrNotOpen", err)
	}
	if _, err := r.connectSpec(ctx, "c", s); !errors.Is(err, transport.ErrConnectFailed) {
		t.Errorf("Connect while the peer is away = %v, want the connect error", err)
	}
	if v, err := r.Connection("c"); err != nil || v.State != ConnClosed || v.FailedConnects != 1 {
		t.Errorf("after the failed redial = %+v, %v; want it kept, closed", v, err)
	}
	peer.start()
	before := peer.acceptedCount()
	time.Sleep(1100 * time.Millisecond) // past the default initial delay: nothing reconnects by itself
	if n := peer.acceptedCount(); n != before || connState(r, "c") != ConnClosed {
		t.Errorf("peer accepted %d more, state %v; want no reconnect", n-before, connState(r, "c"))
	}
	if v, err := r.connectSpec(ctx, "c", s); err != nil || v.State != ConnOpen {
		t.Errorf("Connect once the peer is back = %v, %v; want open", v.State, err)
	}
}

// TestConnectTriesNow: Connect with the same spec on a connection that
// backs off tries at once instead of waiting for the next attempt.
func TestConnectTriesNow(t *testing.T) {
	ctx := testCtx(t)
	r := newRegistry(t)
	peer := startTCPPeer(t)
	s := &switchboardv1.ConnectionConfig{Address: peer.addr, Reconnect: &switchboardv1.ReconnectPolicy{InitialDelay: durationpb.New(time.Hour)}}
	if _, err := r.connectSpec(ctx, "c", s); err != nil {
		t.Fatal(err)
	}
	peer.stop()
	waitUntil(t, func() bool { return connState(r, "c") == ConnBackingOff })
	if v, _ := r.Connection("c"); time.Until(v.NextAttempt) < 30*time.Minute {
		t.Errorf("next attempt in %v, want about an hour", time.Until(v.NextAttempt))
	}
	v, err := r.connectSpec(ctx, "c", s)
	if err != nil || v.State != ConnBackingOff || v.FailedConnects != 1 {
		t.Errorf("Connect while the peer is away = %+v, %v; want the resource, backing off after one more failure", v, err)
	}
	peer.start()
	if v, err := r.connectSpec(ctx, "c", s); err != nil || v.State != ConnOpen {
		t.Errorf("Connect once the peer is back = %v, %v; want open at once", v.State, err)
	}
}

// TestDisconnectStopsReconnecting: Disconnect of a connection that is
// reconnecting (its dial stuck) ends the dial and the loop before it
// returns: no goroutine is left.
func TestDisconnectStopsReconnecting(t *testing.T) {
	ctx := testCtx(t)
	before := goleak.IgnoreCurrent()
	r := New(Config{})
	peer := startTCPPeer(t)
	entered := make(chan struct{}, 1)
	var stuck sync.Mutex // held: dials hang until their context ends
	r.dial = func(ctx context.Context, cfg transport.DialConfig) (*transport.Conn, error) {
		if !stuck.TryLock() {
			entered <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		}
		defer stuck.Unlock()
		return transport.Dial(ctx, cfg)
	}
	if _, err := r.connectSpec(ctx, "c", fastReconnect(peer.addr)); err != nil {
		t.Fatal(err)
	}
	stuck.Lock()
	peer.stop()
	<-entered
	if s := connState(r, "c"); s != ConnConnecting {
		t.Errorf("state during the stuck dial = %v, want connecting", s)
	}
	v, err := r.Disconnect(ctx, "c")
	if err != nil || v.State != ConnClosed {
		t.Errorf("Disconnect = %+v, %v", v, err)
	}
	if _, err := r.Connection("c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Connection after Disconnect = %v", err)
	}
	goleak.VerifyNone(t, before)
	stuck.Unlock()
	r.Shutdown(time.Now())
}

// TestSlowReconnectStallsNothing: while one connection's redial is stuck
// (a peer that never answers the SYN), other connections connect, a
// listener starts and accepts, lists answer.
func TestSlowReconnectStallsNothing(t *testing.T) {
	ctx := testCtx(t)
	r := newRegistry(t)
	slowPeer, fastPeer := startTCPPeer(t), startTCPPeer(t)
	entered := make(chan struct{})
	var once sync.Once
	r.dial = func(ctx context.Context, cfg transport.DialConfig) (*transport.Conn, error) {
		if cfg.ID == "slow" && connState(r, "slow") == ConnConnecting {
			once.Do(func() { close(entered) })
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return transport.Dial(ctx, cfg)
	}
	if _, err := r.connectSpec(ctx, "slow", fastReconnect(slowPeer.addr)); err != nil {
		t.Fatal(err)
	}
	slowPeer.stop()
	<-entered
	if _, err := r.connectSpec(ctx, "fast", fastReconnect(fastPeer.addr)); err != nil {
		t.Errorf("Connect while another redial is stuck: %v", err)
	}
	lv, err := r.StartListener(ctx, "l", spec("127.0.0.1:0"), listenerCfg())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", lv.Info.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitUntil(t, func() bool {
		vs, _ := r.Connections(ConnFilter{ListenerID: "l"}, "", 10)
		return len(vs) == 1
	})
	if vs, _ := r.Connections(ConnFilter{Direction: transport.Outbound}, "", 10); len(vs) != 2 {
		t.Errorf("outbound connections listed: %d, want 2", len(vs))
	}
}

// TestShutdownStopsRetries: Shutdown ends reconnect loops (one stuck in a
// dial, one backing off) and bind retries, and leaves every connection
// CLOSED; TestMain's goleak checks nothing is left running.
func TestShutdownStopsRetries(t *testing.T) {
	ctx := testCtx(t)
	state := newMemState()
	taken := freeAddr(t)
	recordListeners(t, state, map[string]string{"l": taken})
	squat(t, taken)

	r := durableRegistry(t, state, nil)
	if err := r.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	peer := startTCPPeer(t)
	entered := make(chan struct{})
	r.dial = func(ctx context.Context, cfg transport.DialConfig) (*transport.Conn, error) {
		if cfg.ID == "stuck" && connState(r, "stuck") == ConnConnecting {
			close(entered)
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return transport.Dial(ctx, cfg)
	}
	for _, id := range []string{"stuck", "backoff"} {
		if _, err := r.connectSpec(ctx, id, fastReconnect(peer.addr)); err != nil {
			t.Fatal(err)
		}
	}
	peer.stop()
	<-entered
	waitUntil(t, func() bool { return connState(r, "backoff") == ConnBackingOff })
	r.Shutdown(time.Now().Add(time.Second))
	for _, id := range []string{"stuck", "backoff"} {
		if s := connState(r, id); s != ConnClosed {
			t.Errorf("%s after Shutdown is %v, want closed", id, s)
		}
	}
}
