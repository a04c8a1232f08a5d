package registry

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// nopSink stores nothing and says every frame is durable.
type nopSink struct{}

func (nopSink) Append(context.Context, *transport.Message) (uint64, error) { return 1, nil }

func listenerCfg() transport.ListenerConfig {
	return transport.ListenerConfig{Address: "127.0.0.1:0", Sink: nopSink{}}
}

func spec(addr string) *switchboardv1.ListenerConfig {
	return &switchboardv1.ListenerConfig{Address: addr}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newRegistry(t *testing.T) *Registry {
	r := New(Config{})
	t.Cleanup(func() { r.Shutdown(time.Now()) })
	return r
}

// waitUntil polls cond for up to 5 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
	}
}

// TestSlowBindStallsNothing: while one StartListener is stuck in its bind
// (as a slow DNS lookup would hold it), other listeners start, accept and
// close connections, connections are dialed, and lists answer; a repeat of
// the stuck call waits for it and gets the same listener.
func TestSlowBindStallsNothing(t *testing.T) {
	ctx := testCtx(t)
	r := newRegistry(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	r.listen = func(ctx context.Context, cfg transport.ListenerConfig) (*transport.Listener, error) {
		if cfg.ID == "slow" {
			close(entered)
			<-release
		}
		return transport.Listen(ctx, cfg)
	}
	type result struct {
		v   ListenerView
		err error
	}
	slow := make(chan result, 2)
	for range 2 { // the second call is a retry of the first
		go func() {
			v, err := r.StartListener(ctx, "slow", spec("127.0.0.1:0"), listenerCfg())
			slow <- result{v, err}
		}()
	}
	<-entered

	fast, err := r.StartListener(ctx, "fast", spec("127.0.0.1:0"), listenerCfg())
	if err != nil {
		t.Fatalf("StartListener(fast) while another binds: %v", err)
	}
	nc, err := net.Dial("tcp", fast.Info.Addr)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool {
		vs, _ := r.Connections(ConnFilter{ListenerID: "fast"}, "", 10)
		return len(vs) == 1
	})
	nc.Close()
	waitUntil(t, func() bool {
		vs, _ := r.Connections(ConnFilter{ListenerID: "fast"}, "", 10)
		return len(vs) == 0
	})
	out, err := r.Connect(ctx, "out", &switchboardv1.ConnectionConfig{Address: fast.Info.Addr},
		transport.DialConfig{Address: fast.Info.Addr, Sink: nopSink{}})
	if err != nil || out.Info.State != transport.StateOpen {
		t.Fatalf("Connect while a bind is stuck = %+v, %v", out, err)
	}
	if vs, _ := r.Listeners("", 10); len(vs) != 1 || vs[0].ID != "fast" {
		t.Errorf("Listeners while one binds = %v; want only fast", vs)
	}
	close(release)
	a, b := <-slow, <-slow
	if a.err != nil || b.err != nil || a.v.Info.Addr != b.v.Info.Addr {
		t.Errorf("StartListener(slow) and its retry = %v / %v; want the same listener", a, b)
	}
}

// TestListenerIdempotency: the same id and spec returns the existing
// listener; another spec is a conflict; a stopping listener says so; once
// stopped the id is free.
func TestListenerIdempotency(t *testing.T) {
	ctx := testCtx(t)
	r := newRegistry(t)
	first, err := r.StartListener(ctx, "a", spec("127.0.0.1:0"), listenerCfg())
	if err != nil {
		t.Fatal(err)
	}
	again, err := r.StartListener(ctx, "a", spec("127.0.0.1:0"), listenerCfg())
	if err != nil || again.Info.Addr != first.Info.Addr {
		t.Errorf("repeat = %v, %v; want the same listener", again, err)
	}
	if _, err := r.StartListener(ctx, "a", spec("127.0.0.2:0"), listenerCfg()); !errors.Is(err, ErrConflict) {
		t.Errorf("other spec = %v, want ErrConflict", err)
	}
	// Hold the drain open with a connection in the middle of a frame.
	nc, err := net.Dial("tcp", first.Info.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte{0x0B, 'M', 'S', 'H'}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { // the server has read the start of the frame
		vs, _ := r.Connections(ConnFilter{ListenerID: "a"}, "", 10)
		return len(vs) == 1 && vs[0].Info.LastActivity.After(vs[0].Info.OpenTime)
	})
	stopped := make(chan ListenerView, 1)
	go func() {
		v, err := r.StopListener(ctx, "a", time.Now().Add(3*time.Second))
		if err != nil {
			t.Errorf("StopListener: %v", err)
		}
		stopped <- v
	}()
	waitUntil(t, func() bool {
		_, err := r.StartListener(ctx, "a", spec("127.0.0.1:0"), listenerCfg())
		return errors.Is(err, ErrStopping)
	})
	nc.Close() // the drain ends: the peer gave up on its frame
	v := <-stopped
	if v.Info.State != transport.ListenerStopped {
		t.Errorf("state after stop = %v", v.Info.State)
	}
	if _, err := r.Listener("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Listener after stop = %v, want ErrNotFound", err)
	}
	if _, err := r.StartListener(ctx, "a", spec("127.0.0.2:0"), listenerCfg()); err != nil {
		t.Errorf("StartListener after stop with another spec = %v; the id should be free", err)
	}
}

// TestOutboundOutlivesItsSession: an outbound connection whose peer hangs
// up stays listed as closed with its reason; Connect with the same spec
// opens a new session; Disconnect removes it.
func TestOutboundOutlivesItsSession(t *testing.T) {
	ctx := testCtx(t)
	r := newRegistry(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	accepted := make(chan net.Conn, 2)
	wg.Go(func() {
		for range 2 {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- nc
		}
	})
	addr := ln.Addr().String()
	cs := &switchboardv1.ConnectionConfig{Address: addr}
	dc := transport.DialConfig{Address: addr, Sink: nopSink{}}
	if _, err := r.Connect(ctx, "o", cs, dc); err != nil {
		t.Fatal(err)
	}
	(<-accepted).Close() // the peer hangs up
	waitUntil(t, func() bool {
		v, err := r.Connection("o")
		return err == nil && v.Info.State == transport.StateClosed
	})
	if v, _ := r.Connection("o"); v.Info.CloseReason != transport.ClosePeerClosed || v.Spec == nil {
		t.Errorf("closed connection = %+v; want it listed, peer closed", v)
	}
	if _, err := r.Connect(ctx, "o", &switchboardv1.ConnectionConfig{Address: "127.0.0.1:1"}, dc); !errors.Is(err, ErrConflict) {
		t.Errorf("Connect with another spec = %v, want ErrConflict", err)
	}
	v, err := r.Connect(ctx, "o", cs, dc)
	if err != nil || v.Info.State != transport.StateOpen {
		t.Fatalf("Connect again = %+v, %v; want a new open session", v, err)
	}
	peer := <-accepted
	defer peer.Close()
	if _, err := r.Disconnect(ctx, "o"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Connection("o"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Connection after Disconnect = %v, want ErrNotFound", err)
	}
}

// TestShutdownDuringBind: a listener whose bind finishes after Shutdown
// began is closed, not leaked, and the call says the server is shutting
// down.
func TestShutdownDuringBind(t *testing.T) {
	ctx := testCtx(t)
	r := New(Config{})
	release, entered := make(chan struct{}), make(chan struct{})
	r.listen = func(ctx context.Context, cfg transport.ListenerConfig) (*transport.Listener, error) {
		close(entered)
		<-release
		return transport.Listen(ctx, cfg)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := r.StartListener(ctx, "late", spec("127.0.0.1:0"), listenerCfg())
		errc <- err
	}()
	<-entered
	r.Shutdown(time.Now())
	close(release)
	if err := <-errc; !errors.Is(err, ErrShuttingDown) {
		t.Errorf("StartListener racing Shutdown = %v, want ErrShuttingDown", err)
	}
	if _, err := r.StartListener(ctx, "after", spec("127.0.0.1:0"), listenerCfg()); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("StartListener after Shutdown = %v, want ErrShuttingDown", err)
	}
}
