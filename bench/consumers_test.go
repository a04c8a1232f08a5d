package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// TestReceiveConsumer delivers a pre-filled journal to a new durable
// consumer through a real Switchboard, acking each way:
// every message once, the consumer deleted afterwards. A consumer that
// exists already is refused rather than measured from its old position.
func TestReceiveConsumer(t *testing.T) {
	dir := t.TempDir()
	if err := Prefill(t.Context(), dir, 300, 1024); err != nil {
		t.Fatal(err)
	}
	addr := startService(t, dir)
	client := grpcClient(t, addr)
	for _, mode := range []AckMode{AckThrough, AckEach, AckAsync} {
		name := "t-" + string(mode)
		res, err := Receive(t.Context(), ReceiveConfig{GRPCAddr: addr, Count: 300, Size: 1024, Consumer: name, Ack: mode})
		if err != nil || res.Msgs != 300 || res.Rate <= 0 || !strings.Contains(res.Note, "Acks") {
			t.Errorf("Receive as consumer, ack %s = %+v, %v; want 300 messages", mode, res, err)
		}
		if _, err := client.GetConsumer(t.Context(), &switchboardv1.GetConsumerRequest{Name: name}); status.Code(err) != codes.NotFound {
			t.Errorf("consumer %s after the run: %v, want NOT_FOUND (deleted)", name, err)
		}
	}

	// An existing consumer.
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := client.Receive(ctx, &switchboardv1.ReceiveRequest{Consumer: "t-old"})
	if err == nil {
		_, err = stream.Header()
	}
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Receive(t.Context(), ReceiveConfig{GRPCAddr: addr, Count: 10, Consumer: "t-old"}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("Receive as an existing consumer = %v, want refused", err)
	}
	if _, err := Receive(t.Context(), ReceiveConfig{GRPCAddr: addr, Count: 10, Consumer: "t-two", Streams: 2}); err == nil {
		t.Error("Receive as a consumer on 2 streams: no error")
	}
}

func TestParseAckMode(t *testing.T) {
	for in, want := range map[string]AckMode{"": AckThrough, "through": AckThrough, "each": AckEach, "async": AckAsync} {
		if got, err := ParseAckMode(in); got != want || err != nil {
			t.Errorf("ParseAckMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseAckMode("all"); err == nil {
		t.Error(`ParseAckMode("all"): no error`)
	}
}

// TestDecider: load on a listener whose ACK a consumer decides, with the
// Decider attached, is acknowledged AA for every message, each one
// answered by the Decider (and counted once).
func TestDecider(t *testing.T) {
	addr := startService(t, t.TempDir())
	lc := listenerConfig(SuiteConfig{})
	lc.ConsumerAck = &switchboardv1.ConsumerAck{Consumer: deciderName}
	lnAddr, err := startListener(t.Context(), addr, appAckListener, lc)
	if err != nil {
		t.Fatal(err)
	}
	d, err := StartDecider(t.Context(), addr, deciderName)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Inbound(t.Context(), InboundConfig{Addr: lnAddr, Conns: 2, Count: 40})
	st, derr := d.Take()
	if err != nil || derr != nil || res.Msgs != 40 || res.Errors != nil {
		t.Errorf("Inbound with the decider = %+v, %v (decider %v)", res, err, derr)
	}
	if r, err := deciderChecked(res, st); err != nil || st.Answered != 40 || r.Errors != nil {
		t.Errorf("decider stats %+v, checked %+v, %v; want 40 answers, no errors", st, r, err)
	}
	if st, _ := d.Take(); st.Answered != 0 {
		t.Errorf("second Take = %+v, want counting again from 0", st)
	}
	if err := d.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if _, err := deciderChecked(Result{Msgs: 5}, DeciderStats{Answered: 4}); err == nil {
		t.Error("deciderChecked with fewer answers than messages: no error")
	}
}

// TestDuplicates: the probe finds suppression on a listener that has it
// and not on one without; load with different IDBases on the suppressing
// listener is never suppressed, and the same base twice is.
func TestDuplicates(t *testing.T) {
	addr := startService(t, t.TempDir())
	client := grpcClient(t, addr)
	lc := listenerConfig(SuiteConfig{})
	lc.Duplicates = &switchboardv1.DuplicateSuppression{Window: durationpb.New(time.Minute)}
	dedupAddr, err := startListener(t.Context(), addr, dedupListener, lc)
	if err != nil {
		t.Fatal(err)
	}
	if err := probeDuplicates(t.Context(), client, dedupAddr, 260); err != nil {
		t.Errorf("probe of a suppressing listener: %v", err)
	}
	before, err := duplicateCount(t.Context(), client)
	if err != nil {
		t.Fatal(err)
	}
	for _, base := range []int{dedupIDSpacing, 2 * dedupIDSpacing, 2 * dedupIDSpacing} {
		// One connection, so a run's ids are exactly base+0 to base+19.
		if res, err := Inbound(t.Context(), InboundConfig{Addr: dedupAddr, Conns: 1, Count: 20, IDBase: base}); err != nil || res.Msgs != 20 {
			t.Errorf("Inbound with IDBase %d = %+v, %v", base, res, err)
		}
	}
	if after, err := duplicateCount(t.Context(), client); err != nil || after-before != 20 {
		t.Errorf("duplicates after runs with bases 1, 2, 2 (x spacing): %d more, %v; want 20 (the repeated run's)", after-before, err)
	}

	// A plain listener under the suppressing one's id (on another server).
	plain := startService(t, t.TempDir())
	plainAddr, err := startListener(t.Context(), plain, dedupListener, listenerConfig(SuiteConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := probeDuplicates(t.Context(), grpcClient(t, plain), plainAddr, 260); err == nil || !strings.Contains(err.Error(), "suppress duplicates") {
		t.Errorf("probe of a plain listener = %v, want it found out", err)
	}
}

func TestNoteP99Difference(t *testing.T) {
	rs := []Result{{Group: "app-ack", Target: "automatic", P50: 300, P99: 900}, {Group: "app-ack", Target: "app-ack", P50: 700, P99: 2400, Note: "x"}}
	noteP99Difference(rs, "app-ack", "automatic", "app-ack")
	if want := "x p99 +1500 µs, p50 +400 µs against automatic"; rs[1].Note != want || rs[0].Note != "" {
		t.Errorf("notes %q, %q; want %q on app-ack", rs[0].Note, rs[1].Note, want)
	}
}

// grpcClient is a client of the server at addr, closed when the test ends.
func grpcClient(t *testing.T, addr string) switchboardv1.SwitchboardServiceClient {
	t.Helper()
	cc, err := dialGRPC(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return switchboardv1.NewSwitchboardServiceClient(cc)
}
