package service_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// consume opens a stream of the named consumer.
func (s *server) consume(ctx context.Context, req *switchboardv1.ReceiveRequest) switchboardv1.SwitchboardService_ReceiveClient {
	s.t.Helper()
	stream, err := s.client.Receive(ctx, req)
	if err != nil {
		s.t.Fatalf("Receive(%v): %v", req, err)
	}
	// The headers say the stream is attached, so what the test sends next
	// is the consumer's.
	if _, err := stream.Header(); err != nil {
		s.t.Fatalf("Receive(%v) headers: %v", req, err)
	}
	return stream
}

func seqs(ms []*switchboardv1.ReceivedMessage) []uint64 {
	out := make([]uint64, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.GetSequence())
	}
	return out
}

func (s *server) ack(ctx context.Context, consumer string, seq ...uint64) *switchboardv1.ConsumerStatus {
	s.t.Helper()
	resp, err := s.client.Ack(ctx, &switchboardv1.AckRequest{Consumer: consumer, Sequences: seq})
	if err != nil {
		s.t.Fatalf("Ack(%s, %v): %v", consumer, seq, err)
	}
	return resp.GetStatus()
}

func (s *server) consumer(ctx context.Context, name string) *switchboardv1.Consumer {
	s.t.Helper()
	resp, err := s.client.GetConsumer(ctx, &switchboardv1.GetConsumerRequest{Name: name})
	if err != nil {
		s.t.Fatalf("GetConsumer(%s): %v", name, err)
	}
	return resp.GetConsumer()
}

// checkDeliveries asserts that ms are exactly want, in order, each with
// the given redelivered flag.
func checkDeliveries(t *testing.T, ms []*switchboardv1.ReceivedMessage, want []uint64, redelivered bool) {
	t.Helper()
	if got := seqs(ms); !slices.Equal(got, want) {
		t.Fatalf("delivered %v; want %v", got, want)
	}
	for _, m := range ms {
		if m.GetRedelivered() != redelivered || (redelivered && m.GetDeliveryCount() < 2 && !m.GetRedelivered()) ||
			(!redelivered && m.GetDeliveryCount() != 1) {
			t.Errorf("message %d: redelivered %v, delivery_count %d; want redelivered %v", m.GetSequence(),
				m.GetRedelivered(), m.GetDeliveryCount(), redelivered)
		}
	}
}

// TestConsumerResumes: a consumer acks half of what it got and goes away;
// the next stream under its name gets exactly the other half, marked
// redelivered, then new messages; the same holds across a restart.
func TestConsumerResumes(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	s := startServer(t, dir)
	l := s.startListener(ctx, "adt", nil)
	sctx, cancel := context.WithCancel(ctx)
	stream := s.consume(sctx, &switchboardv1.ReceiveRequest{Consumer: "billing", ListenerIds: []string{"adt"}})
	sendInbound(t, addr(l), "FIRST", 10)
	got := receive(t, stream, 10)
	all := seqs(got)
	checkDeliveries(t, got, all, false)
	var acked, unacked []uint64
	for i, seq := range all {
		if i%2 == 0 {
			acked = append(acked, seq)
		} else {
			unacked = append(unacked, seq)
		}
	}
	st := s.ack(ctx, "billing", acked...)
	if st.GetPendingCount() != int64(len(unacked)) {
		t.Errorf("after acking %v: pending_count %d; want %d", acked, st.GetPendingCount(), len(unacked))
	}
	cancel()

	stream = s.consume(ctx, &switchboardv1.ReceiveRequest{Consumer: "billing"})
	checkDeliveries(t, receive(t, stream, len(unacked)), unacked, true)
	sendInbound(t, addr(l), "SECOND", 1)
	next := receive(t, stream, 1)
	checkDeliveries(t, next, []uint64{all[len(all)-1] + 1}, false)
	s.ack(ctx, "billing", unacked[0])

	// A restart: everything not acked comes again, once.
	s.stop()
	s = startServer(t, dir)
	want := append(slices.Clone(unacked[1:]), next[0].GetSequence())
	stream = s.consume(ctx, &switchboardv1.ReceiveRequest{Consumer: "billing"})
	checkDeliveries(t, receive(t, stream, len(want)), want, true)
	if _, err := s.client.Ack(ctx, &switchboardv1.AckRequest{Consumer: "billing", ThroughSequence: want[len(want)-1]}); err != nil {
		t.Fatalf("Ack through %d: %v", want[len(want)-1], err)
	}
	c := s.consumer(ctx, "billing")
	if st := c.GetStatus(); st.GetPendingCount() != 0 || st.GetAckFloor() != want[len(want)-1] ||
		!slices.Equal(c.GetListenerIds(), []string{"adt"}) {
		t.Errorf("after acking everything: %v; want nothing pending, ack floor %d, filter [adt]", c, want[len(want)-1])
	}
}

// TestConsumerAckWaitAndDeadLetter: a message not acked within ack_wait
// comes again, and after max_deliveries it is a dead letter, listed and
// replayable.
func TestConsumerAckWaitAndDeadLetter(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "adt", nil)
	stream := s.consume(ctx, &switchboardv1.ReceiveRequest{Consumer: "flaky", ConsumerConfig: &switchboardv1.ConsumerConfig{
		AckWait: durationpb.New(50 * time.Millisecond), MaxDeliveries: 2,
	}})
	sendInbound(t, addr(l), "POISON", 1)
	first := receive(t, stream, 1)[0]
	again := receive(t, stream, 1)[0]
	if again.GetSequence() != first.GetSequence() || !again.GetRedelivered() || again.GetDeliveryCount() != 2 {
		t.Fatalf("after ack_wait got %d (redelivered %v, count %d); want %d again, count 2", again.GetSequence(),
			again.GetRedelivered(), again.GetDeliveryCount(), first.GetSequence())
	}
	// Not acked again: after the second ack_wait it is dead. Wait for it.
	var dls []*switchboardv1.DeadLetter
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		resp, err := s.client.ListDeadLetters(ctx, &switchboardv1.ListDeadLettersRequest{Consumer: "flaky"})
		if err != nil {
			t.Fatalf("ListDeadLetters: %v", err)
		}
		if dls = resp.GetDeadLetters(); len(dls) > 0 {
			break
		}
	}
	if len(dls) != 1 || dls[0].GetSequence() != first.GetSequence() || dls[0].GetDeliveryCount() != 2 {
		t.Fatalf("dead letters %v; want %d after 2 deliveries", dls, first.GetSequence())
	}
	if n := s.consumer(ctx, "flaky").GetStatus().GetDeadLetterCount(); n != 1 {
		t.Errorf("dead_letter_count %d; want 1", n)
	}
	resp, err := s.client.ReplayDeadLetters(ctx, &switchboardv1.ReplayDeadLettersRequest{Consumer: "flaky"})
	if err != nil || resp.GetReplayedCount() != 1 {
		t.Fatalf("ReplayDeadLetters = %v, %v; want 1 replayed", resp, err)
	}
	replayed := receive(t, stream, 1)[0]
	if replayed.GetSequence() != first.GetSequence() || replayed.GetDeliveryCount() != 1 {
		t.Errorf("replayed %d with count %d; want %d with its count reset", replayed.GetSequence(), replayed.GetDeliveryCount(), first.GetSequence())
	}
	s.ack(ctx, "flaky", replayed.GetSequence())
	if n := s.consumer(ctx, "flaky").GetStatus().GetDeadLetterCount(); n != 0 {
		t.Errorf("dead_letter_count after replay and ack %d; want 0", n)
	}
}

// TestConsumerShared: two streams of one consumer share its messages, each
// to exactly one of them.
func TestConsumerShared(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "adt", nil)
	req := &switchboardv1.ReceiveRequest{Consumer: "workers", ConsumerConfig: &switchboardv1.ConsumerConfig{MaxAckPending: 4}}
	a, b := s.consume(ctx, req), s.consume(ctx, req)
	const n = 40
	go sendInbound(t, addr(l), "WORK", n)
	// Each stream acks what it gets; with at most 4 pending, both must
	// take part for all n to arrive.
	got := make(chan []uint64, 2)
	for _, st := range []switchboardv1.SwitchboardService_ReceiveClient{a, b} {
		go func() {
			var mine []uint64
			for {
				resp, err := st.Recv()
				if err != nil {
					got <- mine
					return
				}
				for _, m := range resp.GetMessages() {
					mine = append(mine, m.GetSequence())
					if _, err := s.client.Ack(ctx, &switchboardv1.AckRequest{Consumer: "workers", Sequences: []uint64{m.GetSequence()}}); err != nil {
						t.Errorf("Ack: %v", err)
					}
				}
			}
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st := s.consumer(ctx, "workers").GetStatus(); st.GetAckFloor() >= n && st.GetPendingCount() == 0 {
			break
		}
	}
	if _, err := s.client.DeleteConsumer(ctx, &switchboardv1.DeleteConsumerRequest{Name: "workers"}); err != nil {
		t.Fatalf("DeleteConsumer: %v", err)
	}
	x, y := <-got, <-got
	all := append(slices.Clone(x), y...)
	slices.Sort(all)
	if len(all) != n || all[0] != 1 || all[n-1] != n || len(slices.Compact(slices.Clone(all))) != n {
		t.Fatalf("the two streams got %d and %d messages: %v; want 1..%d once each", len(x), len(y), all, n)
	}
	if len(x) == 0 || len(y) == 0 {
		t.Errorf("one stream got everything (%d and %d); want the work shared", len(x), len(y))
	}
}

// TestConsumerExclusive: only the first stream gets messages; when it goes
// away the standby takes over with what it had not acked.
func TestConsumerExclusive(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "adt", nil)
	req := &switchboardv1.ReceiveRequest{Consumer: "single", ConsumerConfig: &switchboardv1.ConsumerConfig{Mode: switchboardv1.ConsumerMode_CONSUMER_MODE_EXCLUSIVE}}
	actx, cancelActive := context.WithCancel(ctx)
	active := s.consume(actx, req)
	standby := s.consume(ctx, req)
	sendInbound(t, addr(l), "ONE", 6)
	got := receive(t, active, 6)
	s.ack(ctx, "single", seqs(got[:3])...)
	if n := s.consumer(ctx, "single").GetStatus().GetAttachedStreamCount(); n != 2 {
		t.Errorf("attached_stream_count %d; want 2", n)
	}
	cancelActive()
	checkDeliveries(t, receive(t, standby, 3), seqs(got[3:]), true)
}

// TestConsumerConfigFixed: a consumer's filters and settings are fixed
// when it is created; a different request is CONFIG_CONFLICT.
func TestConsumerConfigFixed(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	s.startListener(ctx, "adt", nil)
	s.startListener(ctx, "lab", nil)
	stream := s.consume(ctx, &switchboardv1.ReceiveRequest{Consumer: "c", ListenerIds: []string{"adt"}})
	_ = stream
	bad, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{Consumer: "c", ListenerIds: []string{"lab"}})
	if err == nil {
		_, err = bad.Recv()
	}
	checkReason(t, err, codes.AlreadyExists, "CONFIG_CONFLICT")
	// Repeating it, or leaving it out, attaches.
	s.consume(ctx, &switchboardv1.ReceiveRequest{Consumer: "c", ListenerIds: []string{"adt"}})
	s.consume(ctx, &switchboardv1.ReceiveRequest{Consumer: "c"})
	if n := s.consumer(ctx, "c").GetStatus().GetAttachedStreamCount(); n != 3 {
		t.Errorf("attached_stream_count %d; want 3", n)
	}
}

// TestReceiveSaysWhy: Receive refuses what would otherwise wait forever,
// stop_at_head ends at the head, and Ack refuses what was never delivered.
func TestReceiveSaysWhy(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "adt", nil)
	sendInbound(t, addr(l), "OLD", 3)

	recvErr := func(req *switchboardv1.ReceiveRequest) error {
		stream, err := s.client.Receive(ctx, req)
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	checkReason(t, recvErr(&switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(9)}), codes.OutOfRange, "BEYOND_HEAD")
	checkReason(t, recvErr(&switchboardv1.ReceiveRequest{ListenerIds: []string{"nope"}}), codes.NotFound, "NOT_FOUND")
	checkReason(t, recvErr(&switchboardv1.ReceiveRequest{Consumer: "x", ListenerIds: []string{"nope"}}), codes.NotFound, "NOT_FOUND")

	for _, consumer := range []string{"", "batch"} {
		stream, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1), StopAtHead: true, Consumer: consumer})
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for {
			resp, err := stream.Recv()
			if err != nil {
				if status.Code(err) != codes.OK && err.Error() != "EOF" {
					t.Fatalf("consumer %q: stream ended with %v; want a clean end", consumer, err)
				}
				break
			}
			got = append(got, seqs(resp.GetMessages())...)
		}
		if !slices.Equal(got, []uint64{1, 2, 3}) {
			t.Errorf("consumer %q stop_at_head: got %v; want [1 2 3]", consumer, got)
		}
	}
	j, err := s.client.GetJournal(ctx, &switchboardv1.GetJournalRequest{})
	if err != nil || j.GetFirstSequence() != 1 || j.GetLastSequence() != 3 {
		t.Errorf("GetJournal = %v, %v; want 1..3", j, err)
	}
	_, err = s.client.Ack(ctx, &switchboardv1.AckRequest{Consumer: "batch", Sequences: []uint64{1, 7}})
	checkReason(t, err, codes.FailedPrecondition, "NOT_DELIVERED")
	if st := s.consumer(ctx, "batch").GetStatus(); st.GetPendingCount() != 3 {
		t.Errorf("after a refused Ack: pending_count %d; want 3 (nothing applied)", st.GetPendingCount())
	}
	_, err = s.client.Ack(ctx, &switchboardv1.AckRequest{Consumer: "nobody", Sequences: []uint64{1}})
	checkReason(t, err, codes.NotFound, "NOT_FOUND")
	list, err := s.client.ListConsumers(ctx, &switchboardv1.ListConsumersRequest{PageSize: 1})
	if err != nil || len(list.GetConsumers()) != 1 || list.GetConsumers()[0].GetName() != "batch" || list.GetNextPageToken() != "" {
		t.Errorf("ListConsumers = %v, %v; want [batch]", list, err)
	}
}

// checkReason asserts err is a status with code and ErrorInfo reason.
func checkReason(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("error %v; want %v (%s)", err, code, reason)
	}
	for _, d := range st.Details() {
		if info, ok := d.(interface{ GetReason() string }); ok && info.GetReason() == reason {
			return
		}
	}
	t.Errorf("error %v: no ErrorInfo reason %s in %v", err, reason, st.Details())
}

var _ = fmt.Sprintf
