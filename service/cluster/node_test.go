package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchboard-dev/switchboard/internal/natstest"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/jsjournal"
	"github.com/switchboard-dev/switchboard/service/cluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ttl = time.Second

type member struct {
	nc   *nats.Conn
	b    *jsjournal.Bucket
	node *cluster.Node
}

func join(t *testing.T, url, name string) *member {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jsjournal.OpenBucket(t.Context(), js, "nodetest", 1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n, err := cluster.Start(t.Context(), cluster.Config{Bucket: b, Conn: nc, Cluster: "t", Instance: name, LeaseTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	m := &member{nc: nc, b: b, node: n}
	t.Cleanup(func() { n.Close(); nc.Close() })
	return m
}

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLeases: one owner at a time; the other is told who owns it; a write
// fenced by the first owner's lease is refused once the second took over
// after the first went silent; the first no longer considers itself valid.
func TestLeases(t *testing.T) {
	srv := natstest.Start(t, server.Options{})
	a := join(t, srv.URL(), "a")
	b := join(t, srv.URL(), "b")
	ctx := t.Context()
	eventually(t, "members", 5*time.Second, func() bool { return len(a.node.Members()) == 2 && len(b.node.Members()) == 2 })

	if err := a.node.Acquire(ctx, "connection", "lab.1"); err != nil {
		t.Fatal(err)
	}
	fa, ok := a.node.Fence("connection", "lab.1")
	if !ok {
		t.Fatal("a holds no fence after Acquire")
	}
	eventually(t, "b sees a's lease", 5*time.Second, func() bool { o, ok := b.node.Owner("connection", "lab.1"); return ok && o == "a" })
	var owned *cluster.OwnedError
	if err := b.node.Acquire(ctx, "connection", "lab.1"); !errors.As(err, &owned) || owned.Owner != "a" {
		t.Fatalf("b's Acquire of a's lease = %v; want OwnedError a", err)
	}
	if _, err := a.b.Put(ctx, "outbox.test", []byte("by a"), fa); err != nil {
		t.Fatalf("a's fenced write: %v", err)
	}

	// a goes silent (its connection is cut): it stops being valid by
	// itself, and b takes over after the TTL.
	a.nc.Close()
	eventually(t, "a invalid", 2*ttl, func() bool { return !a.node.Valid() })
	if a.node.Holds("connection", "lab.1") {
		t.Fatal("a still holds the lease while invalid")
	}
	began := time.Now()
	eventually(t, "b takes over", 3*ttl, func() bool { return b.node.Acquire(ctx, "connection", "lab.1") == nil })
	if waited := time.Since(began); waited > 2*ttl {
		t.Errorf("takeover took %v, want at most about the TTL %v", waited, ttl)
	}
	// a's old fence no longer writes, whatever a believes.
	if _, err := b.b.Put(ctx, "outbox.test", []byte("stale"), fa); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("write with a's old fence after the takeover = %v; want ErrFenced", err)
	}
	fb, ok := b.node.Fence("connection", "lab.1")
	if !ok || fb.Revision == fa.Revision {
		t.Fatalf("b's fence %v (ok %v); want a new revision after %v", fb, ok, fa)
	}
	// Release lets anyone have it at once.
	if err := b.node.Release(ctx, "connection", "lab.1"); err != nil {
		t.Fatal(err)
	}
	c := join(t, srv.URL(), "c")
	eventually(t, "c acquires the released lease", 5*time.Second, func() bool { return c.node.Acquire(ctx, "connection", "lab.1") == nil })
}

// TestCall: a call reaches the named instance and returns its answer or
// its gRPC status; an instance nobody runs is UNAVAILABLE.
func TestCall(t *testing.T) {
	srv := natstest.Start(t, server.Options{})
	a := join(t, srv.URL(), "a")
	b := join(t, srv.URL(), "b")
	err := b.node.Serve(func(ctx context.Context, method string, req []byte) ([]byte, error) {
		if method == "/fail" {
			return nil, status.Error(codes.NotFound, "no such thing")
		}
		return append([]byte(method+":"), req...), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	out, err := a.node.Call(ctx, "b", "/echo", []byte("hi"))
	if err != nil || string(out) != "/echo:hi" {
		t.Fatalf("Call = %q, %v", out, err)
	}
	if _, err := a.node.Call(ctx, "b", "/fail", nil); status.Code(err) != codes.NotFound {
		t.Fatalf("Call /fail = %v; want NotFound", err)
	}
	if _, err := a.node.Call(ctx, "nobody", "/echo", nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("Call to nobody = %v; want Unavailable", err)
	}
}

func TestStartRefusesBadInstance(t *testing.T) {
	for _, name := range []string{"", "a.b", "a b", "x>"} {
		if _, err := cluster.Start(t.Context(), cluster.Config{Instance: name}); err == nil {
			t.Errorf("Start with instance %q: no error", name)
		}
	}
}
