package registry

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// TestAdoptRelease: Adopt brings stored resources up without writing them
// again; Release stops them here and leaves them stored, so another
// registry (another instance) can adopt them.
func TestAdoptRelease(t *testing.T) {
	ctx := context.Background()
	state := newMemState()
	peer := startTCPPeer(t)
	changes := make(chan string, 8)
	r := durableRegistry(t, state, changes)
	lspec, _ := proto.Marshal(&switchboardv1.ListenerConfig{Address: "127.0.0.1:0"})
	cspec, _ := proto.Marshal(fastReconnect(peer.addr))
	created := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	rs := []Resource{
		{Type: TypeListener, ID: "in", Spec: lspec, Created: created},
		{Type: TypeConnection, ID: "out", Spec: cspec, Created: created},
		{Type: "gadget", ID: "x", Spec: nil},                      // unknown type: skipped
		{Type: TypeListener, ID: "bad", Spec: []byte{0xff, 0xff}}, // unreadable: skipped
	}
	if err := r.Adopt(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if got := <-changes; got != "out" {
		t.Fatalf("outbound change %q; want out", got)
	}
	l, err := r.Listener("in")
	if err != nil || l.State != ListenerListening || !l.Created.Equal(created) {
		t.Fatalf("adopted listener = %+v, %v", l, err)
	}
	waitConn(t, r, "out", ConnOpen)
	if _, err := r.Listener("bad"); err == nil {
		t.Fatal("an unreadable record was adopted")
	}
	if n := len(state.all()); n != 0 {
		t.Fatalf("Adopt wrote %d records; want none (they are stored already)", n)
	}
	// The state store holds them (as the cluster's would); Release keeps it.
	for _, res := range rs[:2] {
		if err := state.PutResource(ctx, res.Type, res.ID, res.Spec, res.Created); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Release(ctx, TypeListener, "in", time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := r.Release(ctx, TypeConnection, "out", time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := <-changes; got != "~out" {
		t.Fatalf("outbound change %q; want ~out (released, not removed)", got)
	}
	if _, err := r.Listener("in"); err == nil {
		t.Fatal("released listener still here")
	}
	if _, err := r.Connection("out"); err == nil {
		t.Fatal("released connection still here")
	}
	if n := len(state.all()); n != 2 {
		t.Fatalf("after Release the state holds %d records; want both", n)
	}
	// Releasing what is not here is no error; an unknown type is.
	if err := r.Release(ctx, TypeListener, "nothing", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := r.Release(ctx, "gadget", "x", time.Now()); err == nil {
		t.Fatal("Release of an unknown type: no error")
	}
	// Another registry adopts them from the store.
	r2 := durableRegistry(t, state, nil)
	if err := r2.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	waitConn(t, r2, "out", ConnOpen)
}

func waitConn(t *testing.T, r *Registry, id string, want ConnState) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for connState(r, id) != want {
		if time.Now().After(deadline) {
			t.Fatalf("connection %s is %v; want %v", id, connState(r, id), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
