package registry

import (
	"errors"
	"strings"
	"testing"
	"time"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// eventLog collects what the registry tells Config.Events.
type eventLog chan Event

func (l eventLog) next(t *testing.T) Event {
	t.Helper()
	select {
	case e := <-l:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event in 10 s")
		return Event{}
	}
}

// TestEvents: listeners started (by StartListener and restored, also after
// backing off), failing to bind (a StartListener, which creates nothing,
// and a restored listener, with its next attempt, told before Restore
// returns), stopped (by StopListener and by Shutdown); outbound
// connections reconnecting after a lost session and after each failed
// connect, with the last error and the next attempt.
func TestEvents(t *testing.T) {
	ctx := testCtx(t)
	state := newMemState()
	taken := freeAddr(t)
	recordListeners(t, state, map[string]string{"restored": taken})
	squatter := squat(t, taken)
	events := make(eventLog, 100)
	r := New(Config{
		State:          state,
		ListenerConfig: func(s *switchboardv1.ListenerConfig) transport.ListenerConfig { return listenerCfgFor(s) },
		DialConfig:     func(s *switchboardv1.ConnectionConfig) transport.DialConfig { return dialCfgFor(s) },
		Events:         func(e Event) { events <- e },
	})
	r.rebind = newBackoff(20*time.Millisecond, 100*time.Millisecond)
	shutDown := false
	t.Cleanup(func() {
		if !shutDown {
			r.Shutdown(time.Now())
		}
	})

	if err := r.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	select { // told before Restore returned
	case e := <-events:
		if e.Kind != EventListenerBindFailed || e.ListenerID != "restored" || e.Address != taken ||
			!errors.Is(e.Err, transport.ErrAddrInUse) || e.NextAttempt.IsZero() || e.Failed != 1 {
			t.Errorf("first event %+v; want the restored listener's failed bind, with its next attempt", e)
		}
	default:
		t.Fatal("Restore returned before the failed bind was told")
	}
	squatter.Close()
	for {
		e := events.next(t)
		if e.Kind == EventListenerBindFailed && e.ListenerID == "restored" { // more attempts may fail first
			continue
		}
		if e.Kind != EventListenerStarted || e.ListenerID != "restored" || e.Address != taken {
			t.Fatalf("event %+v; want the restored listener started on %s", e, taken)
		}
		break
	}

	// StartListener: a bind that fails, one that works; StopListener.
	if _, err := r.StartListener(ctx, "dup", spec(taken), listenerCfgFor(spec(taken))); err == nil {
		t.Fatal("StartListener on a taken port worked")
	}
	if e := events.next(t); e.Kind != EventListenerBindFailed || e.ListenerID != "dup" || !e.NextAttempt.IsZero() || e.Err == nil {
		t.Errorf("event %+v; want dup's failed bind, no next attempt", e)
	}
	v, err := r.StartListener(ctx, "new", spec("127.0.0.1:0"), listenerCfgFor(spec("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	if e := events.next(t); e.Kind != EventListenerStarted || e.ListenerID != "new" || e.Address != v.Info.Addr {
		t.Errorf("event %+v; want new started on %s", e, v.Info.Addr)
	}
	if _, err := r.StopListener(ctx, "new", time.Now()); err != nil {
		t.Fatal(err)
	}
	if e := events.next(t); e.Kind != EventListenerStopped || e.ListenerID != "new" || e.Address != v.Info.Addr || e.ShuttingDown {
		t.Errorf("event %+v; want new stopped", e)
	}

	// An outbound connection whose peer goes away.
	peer := startTCPPeer(t)
	if _, err := r.connectSpec(ctx, "lab", fastReconnect(peer.addr)); err != nil {
		t.Fatal(err)
	}
	peer.stop()
	if e := events.next(t); e.Kind != EventConnectionReconnecting || e.ConnectionID != "lab" || e.Address != peer.addr ||
		e.Err == nil || !strings.Contains(e.Err.Error(), "connection lost") || e.NextAttempt.IsZero() || e.Failed != 0 {
		t.Errorf("event %+v; want lab reconnecting after the lost session", e)
	}
	if e := events.next(t); e.Kind != EventConnectionReconnecting || e.ConnectionID != "lab" ||
		!errors.Is(e.Err, transport.ErrConnectFailed) || e.NextAttempt.IsZero() || e.Failed != 1 {
		t.Errorf("event %+v; want lab reconnecting after a failed connect", e)
	}
	if _, err := r.Disconnect(ctx, "lab"); err != nil {
		t.Fatal(err)
	}
	for len(events) > 0 { // more failed connects before the Disconnect
		if e := <-events; e.Kind != EventConnectionReconnecting || e.ConnectionID != "lab" {
			t.Errorf("event %+v; want only lab reconnecting", e)
		}
	}

	r.Shutdown(time.Now())
	shutDown = true
	if e := events.next(t); e.Kind != EventListenerStopped || e.ListenerID != "restored" || !e.ShuttingDown {
		t.Errorf("event %+v; want restored stopped by the shutdown", e)
	}
	if len(events) != 0 {
		t.Errorf("%d events more; first %+v", len(events), <-events)
	}
}
