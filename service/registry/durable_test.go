package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// TestDesiredStateRecorded: StartListener and Connect record the resource
// (its spec, marshalled deterministically, and its creation time) before
// they return; StopListener and Disconnect delete it.
func TestDesiredStateRecorded(t *testing.T) {
	ctx := testCtx(t)
	state := newMemState()
	r := durableRegistry(t, state, nil)
	peer := startTCPPeer(t)

	ls := &switchboardv1.ListenerConfig{Address: "127.0.0.1:0", MaxConnections: 7}
	lv, err := r.StartListener(ctx, "adt", ls, listenerCfgFor(ls))
	if err != nil {
		t.Fatal(err)
	}
	cs := fastReconnect(peer.addr)
	if _, err := r.connectSpec(ctx, "lab", cs); err != nil {
		t.Fatal(err)
	}
	for typ, spec := range map[string]proto.Message{TypeListener: ls, TypeConnection: cs} {
		id := map[string]string{TypeListener: "adt", TypeConnection: "lab"}[typ]
		got, ok := state.all()[[2]string{typ, id}]
		want, _ := proto.MarshalOptions{Deterministic: true}.Marshal(spec)
		if !ok || string(got.spec) != string(want) || got.created.IsZero() {
			t.Errorf("stored %s %s = %v, %v; want its spec and a creation time", typ, id, got, ok)
		}
	}
	if got := state.all()[[2]string{TypeListener, "adt"}].created; !got.Equal(lv.Created) {
		t.Errorf("stored creation time %v, listener says %v", got, lv.Created)
	}
	if _, err := r.StopListener(ctx, "adt", time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Disconnect(ctx, "lab"); err != nil {
		t.Fatal(err)
	}
	if l, c := state.ids(TypeListener), state.ids(TypeConnection); len(l)+len(c) != 0 {
		t.Errorf("after StopListener and Disconnect the store holds %v %v", l, c)
	}
}

// TestStateWriteFailure: when the resource cannot be recorded the call
// fails and nothing is left: the port is free again and the peer's
// connection is closed. When it cannot be deleted, StopListener and
// Disconnect fail and the resource keeps running.
func TestStateWriteFailure(t *testing.T) {
	ctx := testCtx(t)
	state := newMemState()
	r := durableRegistry(t, state, nil)
	peer := startTCPPeer(t)
	addr := freeAddr(t)

	state.fail(errInjected, nil)
	ls := spec(addr)
	if _, err := r.StartListener(ctx, "l", ls, listenerCfgFor(ls)); !errors.Is(err, errInjected) {
		t.Errorf("StartListener with a failing store = %v, want the store's error", err)
	}
	if _, err := r.Listener("l"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Listener after a failed record = %v, want ErrNotFound", err)
	}
	if ln, err := net.Listen("tcp", addr); err != nil {
		t.Errorf("the address of the failed listener is still bound: %v", err)
	} else {
		ln.Close()
	}
	if _, err := r.connectSpec(ctx, "c", fastReconnect(peer.addr)); !errors.Is(err, errInjected) {
		t.Errorf("Connect with a failing store = %v, want the store's error", err)
	}
	if _, err := r.Connection("c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Connection after a failed record = %v, want ErrNotFound", err)
	}

	state.fail(nil, errInjected)
	if _, err := r.StartListener(ctx, "l", ls, listenerCfgFor(ls)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.connectSpec(ctx, "c", fastReconnect(peer.addr)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.StopListener(ctx, "l", time.Now()); !errors.Is(err, errInjected) {
		t.Errorf("StopListener with a failing store = %v, want the store's error", err)
	}
	if _, err := r.Disconnect(ctx, "c"); !errors.Is(err, errInjected) {
		t.Errorf("Disconnect with a failing store = %v, want the store's error", err)
	}
	if v, err := r.Listener("l"); err != nil || v.State != ListenerListening {
		t.Errorf("listener after a failed stop = %v, %v; want it listening", v.State, err)
	}
	if nc, err := net.Dial("tcp", addr); err != nil {
		t.Errorf("listener after a failed stop does not accept: %v", err)
	} else {
		nc.Close()
	}
	if connState(r, "c") != ConnOpen {
		t.Errorf("connection after a failed Disconnect is %v, want open", connState(r, "c"))
	}
	state.fail(nil, nil)
	if _, err := r.StopListener(ctx, "l", time.Now()); err != nil {
		t.Errorf("StopListener once the store works = %v", err)
	}
	if _, err := r.Disconnect(ctx, "c"); err != nil {
		t.Errorf("Disconnect once the store works = %v", err)
	}
}

// TestRestore: a new registry on the same state brings back the listeners
// (same id, same address when it was fixed, same creation time) and the
// outbound connections (open by the time Restore returns, the peer being
// reachable), and tells OutboundChanged.
func TestRestore(t *testing.T) {
	ctx := testCtx(t)
	state := newMemState()
	peer := startTCPPeer(t)
	fixed := freeAddr(t)

	first := New(Config{State: state})
	fixedSpec, anySpec, connSpec := spec(fixed), spec("127.0.0.1:0"), fastReconnect(peer.addr)
	lv, err := first.StartListener(ctx, "fixed", fixedSpec, listenerCfgFor(fixedSpec))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.StartListener(ctx, "any", anySpec, listenerCfgFor(anySpec)); err != nil {
		t.Fatal(err)
	}
	if _, err := first.connectSpec(ctx, "lab", connSpec); err != nil {
		t.Fatal(err)
	}
	first.Shutdown(time.Now())

	changes := make(chan string, 10)
	r := durableRegistry(t, state, changes)
	if err := r.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := r.Listener("fixed")
	if err != nil || got.State != ListenerListening || got.Info.Addr != fixed || !got.Created.Equal(lv.Created) || !proto.Equal(got.Spec, fixedSpec) {
		t.Errorf("restored listener = %+v, %v; want it listening on %s, created %v", got, err, fixed, lv.Created)
	}
	if v, err := r.Listener("any"); err != nil || v.State != ListenerListening {
		t.Errorf("restored listener on port 0 = %+v, %v", v, err)
	}
	c, err := r.Connection("lab")
	if err != nil || c.State != ConnOpen || !proto.Equal(c.Spec, connSpec) || c.Reconnects != 0 {
		t.Errorf("restored connection = %+v, %v; want it open", c, err)
	}
	if id := <-changes; id != "lab" {
		t.Errorf("OutboundChanged(%s), want lab", id)
	}
	if _, err := r.Disconnect(ctx, "lab"); err != nil {
		t.Fatal(err)
	}
	if id := <-changes; id != "-lab" {
		t.Errorf("OutboundChanged(%s), want lab removed", id)
	}
}

// TestRestoreManyResources restores 100 listeners and 100 outbound
// connections, all of them up when Restore returns, and logs how long it
// took (the suite asserts no timing).
func TestRestoreManyResources(t *testing.T) {
	ctx := testCtx(t)
	state, peer := manyResources(t, 100, 100)
	r := durableRegistry(t, state, nil)
	began := time.Now()
	if err := r.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Restore of 100 listeners and 100 connections: %v", time.Since(began))
	ls, _ := r.Listeners("", 1000)
	cs, _ := r.Connections(ConnFilter{Direction: transport.Outbound}, "", 1000)
	if len(ls) != 100 || len(cs) != 100 {
		t.Fatalf("restored %d listeners, %d connections; want 100 each", len(ls), len(cs))
	}
	for _, v := range ls {
		if v.State != ListenerListening {
			t.Errorf("listener %s is %v", v.ID, v.State)
		}
	}
	waitUntil(t, func() bool { return peer.acceptedCount() >= 200 }) // the first 100 and the restored 100
	for _, v := range cs {
		if v.State != ConnOpen {
			t.Errorf("connection %s is %v (%v)", v.ID, v.State, v.LastError)
		}
	}
}

// manyResources records nl listeners on free ports and nc connections to a
// peer, as a server that ran before would have.
func manyResources(t *testing.T, nl, nc int) (*memState, *tcpPeer) {
	ctx := testCtx(t)
	state := newMemState()
	peer := startTCPPeer(t)
	r := New(Config{State: state})
	for i := range nl {
		s := spec("127.0.0.1:0")
		if _, err := r.StartListener(ctx, fmt.Sprintf("l-%03d", i), s, listenerCfgFor(s)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range nc {
		if _, err := r.connectSpec(ctx, fmt.Sprintf("c-%03d", i), fastReconnect(peer.addr)); err != nil {
			t.Fatal(err)
		}
	}
	r.Shutdown(time.Now())
	return state, peer
}

// TestRestoreListenerBackingOff: a restored listener whose port is taken is
// listed BACKING_OFF with the error and the next attempt's time, does not
// keep the others from starting, and binds by itself once the port is free.
// One that backs off can be stopped.
func TestRestoreListenerBackingOff(t *testing.T) {
	ctx := testCtx(t)
	state := newMemState()
	taken, other, never := freeAddr(t), freeAddr(t), freeAddr(t)
	recordListeners(t, state, map[string]string{"taken": taken, "other": other, "never": never})
	squatter := squat(t, taken)
	squat(t, never)

	r := durableRegistry(t, state, nil)
	if err := r.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := r.Listener("taken")
	if err != nil || v.State != ListenerBackingOff || !errors.Is(v.LastError, transport.ErrAddrInUse) || v.NextAttempt.IsZero() {
		t.Fatalf("listener on a taken port = %+v, %v; want BACKING_OFF, address in use, a next attempt", v, err)
	}
	if v, _ := r.Listener("other"); v.State != ListenerListening || v.Info.Addr != other {
		t.Errorf("the other listener = %+v; want it listening", v)
	}
	squatter.Close()
	waitUntil(t, func() bool {
		v, _ := r.Listener("taken")
		return v.State == ListenerListening
	})
	if v, _ := r.Listener("taken"); v.Info.Addr != taken || v.LastError != nil {
		t.Errorf("listener once its port was free = %+v", v)
	}
	if nc, err := net.Dial("tcp", taken); err != nil {
		t.Errorf("the rebound listener does not accept: %v", err)
	} else {
		nc.Close()
	}
	v, err = r.StopListener(ctx, "never", time.Now())
	if err != nil || v.State != ListenerStopped {
		t.Errorf("StopListener of a listener backing off = %+v, %v", v, err)
	}
	if ids := state.ids(TypeListener); !slices.Equal(ids, []string{"other", "taken"}) {
		t.Errorf("stored listeners after the stop = %v", ids)
	}
}

// TestStartListenerRetriesBackingOff: StartListener with the same spec on
// a listener that backs off tries to bind at once, so an operator who
// freed the port need not wait for the next attempt.
func TestStartListenerRetriesBackingOff(t *testing.T) {
	ctx := testCtx(t)
	state := newMemState()
	taken := freeAddr(t)
	s := spec(taken)
	recordListeners(t, state, map[string]string{"l": taken})
	squatter := squat(t, taken)
	r := durableRegistry(t, state, nil)
	r.rebind = newBackoff(time.Hour, time.Hour)
	if err := r.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := r.StartListener(ctx, "l", s, listenerCfgFor(s)); err != nil || v.State != ListenerBackingOff {
		t.Errorf("StartListener while the port is taken = %v, %v; want the listener, backing off", v.State, err)
	}
	squatter.Close()
	if v, err := r.StartListener(ctx, "l", s, listenerCfgFor(s)); err != nil || v.State != ListenerListening {
		t.Errorf("StartListener once the port is free = %v (%v), %v; want it listening", v.State, v.LastError, err)
	}
}

// TestRestoreDoesNotWaitForPeers: a restored connection whose peer does not
// answer (its dial hangs) holds Restore up only for restoreWait, is listed
// CONNECTING meanwhile, and does not keep the other connection from
// opening.
func TestRestoreDoesNotWaitForPeers(t *testing.T) {
	ctx := testCtx(t)
	state := newMemState()
	peer := startTCPPeer(t)
	first := New(Config{State: state})
	for _, id := range []string{"hangs", "ok"} {
		if _, err := first.connectSpec(ctx, id, fastReconnect(peer.addr)); err != nil {
			t.Fatal(err)
		}
	}
	first.Shutdown(time.Now())

	r := durableRegistry(t, state, nil)
	r.restoreWait = 100 * time.Millisecond
	release := make(chan struct{})
	defer close(release)
	r.dial = func(ctx context.Context, cfg transport.DialConfig) (*transport.Conn, error) {
		if cfg.ID == "hangs" {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, fmt.Errorf("%w: peer never answered", transport.ErrConnectTimeout)
		}
		return transport.Dial(ctx, cfg)
	}
	if err := r.Restore(ctx); err != nil { // returns while the dial still hangs
		t.Fatal(err)
	}
	if s := connState(r, "hangs"); s != ConnConnecting {
		t.Errorf("connection whose peer does not answer is %v, want connecting", s)
	}
	if s := connState(r, "ok"); s != ConnOpen {
		t.Errorf("the other connection is %v, want open", s)
	}
}

// recordListeners records listeners (id: address) in state, as a server
// that ran before would have left them.
func recordListeners(t *testing.T, state *memState, addrs map[string]string) {
	t.Helper()
	r := New(Config{State: state})
	defer r.Shutdown(time.Now())
	for id, a := range addrs {
		s := spec(a)
		if _, err := r.StartListener(testCtx(t), id, s, listenerCfgFor(s)); err != nil {
			t.Fatal(err)
		}
	}
}

// squat binds addr, so that a listener cannot, until the test ends or the
// returned listener is closed.
func squat(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}
