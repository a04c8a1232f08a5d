package bench

import (
	"context"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/internal/natstest"
)

// TestJetStream runs the publish baseline against a real in-process
// server: every publish acknowledged and counted, the stream gone after.
func TestJetStream(t *testing.T) {
	ns := natstest.Start(t, server.Options{})
	for _, follow := range []bool{false, true} {
		res, err := JetStream(context.Background(), JetStreamConfig{URL: ns.URL(), Conns: 4, NATSConns: 2, Count: 200, Stream: "bench-test", Follow: follow})
		if err != nil {
			t.Fatal(err)
		}
		if res.Group != "jetstream" || res.Target != "jetstream-r1" || res.Msgs != 200 || res.Errors != nil || res.P50 <= 0 || res.Rate <= 0 {
			t.Errorf("follow %v: result %+v", follow, res)
		}
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(context.Background(), "bench-test"); err == nil {
		t.Error("the stream is still there after the run")
	}
}
