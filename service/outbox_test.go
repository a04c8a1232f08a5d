package service_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/journaltest"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal/pebbletest"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/service/outbox"
	"github.com/switchboard-dev/switchboard/transport"
)

// Queued sends: the outbox stores a message, then delivers it in order,
// retrying by the connection's policy, across resets and restarts. These
// tests use the journal's own outbox (pebblejournal.Journal.Outbox), as
// `switchboard serve` does; the crash tests run it on Pebble's
// crash-simulating filesystem and cut the power (vfs.MemFS.CrashClone).

// startOutboxServer starts a server on a journal in dir on the real disk,
// with the journal's outbox.
func startOutboxServer(t *testing.T, dir string) *server {
	t.Helper()
	return startOutboxServerOn(t, dir, pebblejournal.Options{})
}

// startOutboxServerOn starts a server on a journal opened in dir with opts
// (opts.FS: the disk), with the journal's outbox.
func startOutboxServerOn(t *testing.T, dir string, opts pebblejournal.Options) *server {
	t.Helper()
	j, err := pebblejournal.Open(dir, opts)
	if err != nil {
		t.Fatalf("journal.Open: %v", err)
	}
	return startServerWith(t, j, func(c *service.Config) { c.Outbox = j.Outbox() })
}

// memDataDir is the data directory on a crash-simulating in-memory disk.
const memDataDir = "/data"

// startCrashableOutboxServer starts a server with the journal's outbox on
// disk, a crash-simulating in-memory filesystem (vfs.NewCrashableMem, or
// what a power cut left of one).
func startCrashableOutboxServer(t *testing.T, disk *vfs.MemFS) *server {
	t.Helper()
	return startOutboxServerOn(t, memDataDir, pebblejournal.Options{FS: disk})
}

// cutPower returns what disk holds after a power cut at this instant:
// everything synced and a random share of what was written but not synced
// (so a WAL tail may be torn anywhere). The server running on disk goes on
// working on disk, which the cut leaves alone; a server started on the
// result is the one that came back after the cut.
func cutPower(t *testing.T, disk *vfs.MemFS) *vfs.MemFS {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 3))
	pct := rng.IntN(101)
	t.Logf("power cut (seed %d): %d%% of the unsynced data survives", seed, pct)
	return disk.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
}

// afterCut opens a journal on what disk would hold after a power cut at
// this instant that keeps only what was synced, as a server restarted
// after the cut would, and calls f with its outbox. disk itself is left
// as it is.
func afterCut(disk *vfs.MemFS, f func(*pebblejournal.Outbox) error) error {
	j, err := pebblejournal.Open(memDataDir, pebblejournal.Options{FS: disk.CrashClone(vfs.CrashCloneCfg{})})
	if err != nil {
		return fmt.Errorf("open after a power cut: %w", err)
	}
	return errors.Join(f(j.Outbox()), j.Close())
}

// cutPowerOnce cuts the power (see cutPower) at the first moment when
// what the disk keeps satisfies durable (10 s at most from now), and
// returns what the disk holds after that cut. A message's new state reads
// as soon as its Update returns, while its fsync may still run: tests that
// need a state to survive the cut wait for it this way.
func cutPowerOnce(t *testing.T, disk *vfs.MemFS, what string, durable func(*pebblejournal.Outbox) bool) *vfs.MemFS {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		cut := cutPower(t, disk)
		ok := false
		if err := afterCut(cut, func(o *pebblejournal.Outbox) error { ok = durable(o); return nil }); err != nil {
			t.Fatal(err)
		}
		if ok {
			return cut
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not durable after 10 s", what)
		}
	}
}

// fastPolicy is an outbox policy with short retry delays, changed by mod.
func fastPolicy(mod func(*switchboardv1.OutboxPolicy)) *switchboardv1.OutboxPolicy {
	p := &switchboardv1.OutboxPolicy{RetryDelay: durationpbNew(20 * time.Millisecond), MaxRetryDelay: durationpbNew(100 * time.Millisecond)}
	if mod != nil {
		mod(p)
	}
	return p
}

// connectQueued connects id to addr with an outbox policy and an ack
// timeout, and returns the config (to connect again with).
func (s *server) connectQueued(ctx context.Context, id, addr string, pol *switchboardv1.OutboxPolicy, ackTimeout time.Duration) *switchboardv1.ConnectionConfig {
	s.t.Helper()
	cfg := &switchboardv1.ConnectionConfig{Address: addr, Outbox: pol, AckTimeout: durationpbNew(ackTimeout)}
	if _, err := s.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: id, Config: cfg}); err != nil {
		s.t.Fatalf("Connect(%s): %v", id, err)
	}
	s.svc.OutboundChanged(id, cfg, false)
	return cfg
}

// disconnect removes connection id.
func (s *server) disconnect(ctx context.Context, id string) {
	s.t.Helper()
	if _, err := s.client.Disconnect(ctx, &switchboardv1.DisconnectRequest{ConnectionId: id}); err != nil {
		s.t.Fatalf("Disconnect(%s): %v", id, err)
	}
	s.svc.OutboundChanged(id, nil, true)
}

// reopen opens connection id again once its session has been reset. Until
// the registry reconnects by itself (the reconnection work), this is what
// a client does: Connect with the same config. With reconnection it simply
// waits for the connection to be open again.
func (s *server) reopen(ctx context.Context, id string, cfg *switchboardv1.ConnectionConfig) {
	s.t.Helper()
	waitFor(s.t, func() bool {
		resp, err := s.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: id, Config: cfg})
		return err == nil && resp.GetConnection().GetStatus().GetState() == switchboardv1.ConnectionState_CONNECTION_STATE_OPEN
	})
}

// queue sends msg in queued mode and returns the message id.
func (s *server) queue(ctx context.Context, connID string, msg []byte, key string) string {
	s.t.Helper()
	resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: connID, Payload: msg, Queued: true, IdempotencyKey: key})
	if err != nil {
		s.t.Fatalf("queued Send: %v", err)
	}
	if resp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_QUEUED || resp.GetMessageId() == "" {
		s.t.Fatalf("queued Send = %v; want QUEUED with a message id", resp)
	}
	return resp.GetMessageId()
}

func (s *server) getMessage(ctx context.Context, id string) *switchboardv1.Message {
	s.t.Helper()
	resp, err := s.client.GetMessage(ctx, &switchboardv1.GetMessageRequest{MessageId: id})
	if err != nil {
		s.t.Fatalf("GetMessage(%s): %v", id, err)
	}
	return resp.GetMessage()
}

// waitMessage polls message id until cond holds (at most 10 s) and returns
// it.
func (s *server) waitMessage(ctx context.Context, id string, what string, cond func(*switchboardv1.Message) bool) *switchboardv1.Message {
	s.t.Helper()
	var m *switchboardv1.Message
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		m = s.getMessage(ctx, id)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("message %s is not %s after 10 s: %v", id, what, m)
		}
	}
}

// waitState waits for message id to reach state.
func (s *server) waitState(ctx context.Context, id string, state switchboardv1.MessageState) *switchboardv1.Message {
	s.t.Helper()
	return s.waitMessage(ctx, id, state.String(), func(m *switchboardv1.Message) bool { return m.GetState() == state })
}

// attemptResults lists a message's attempts' results, as "IN_DOUBT,ACCEPTED".
// waitOutboxStats waits until the outbox's figures for connection conn
// satisfy cond (they follow the stored state by a moment).
func (s *server) waitOutboxStats(ctx context.Context, conn, what string, cond func(outbox.ConnStats) bool) {
	s.t.Helper()
	var last outbox.ConnStats
	for ctx.Err() == nil {
		for _, st := range s.svc.Outbox().Stats(ctx) {
			if st.ConnectionID == conn {
				if last = st; cond(st) {
					return
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.t.Fatalf("outbox stats of %s never showed %s; last %+v", conn, what, last)
}

func attemptResults(m *switchboardv1.Message) string {
	var r []string
	for _, a := range m.GetAttempts() {
		r = append(r, strings.TrimPrefix(a.GetResult().String(), "ATTEMPT_RESULT_"))
	}
	return strings.Join(r, ",")
}

const (
	stateQueued   = switchboardv1.MessageState_MESSAGE_STATE_QUEUED
	stateAwaiting = switchboardv1.MessageState_MESSAGE_STATE_AWAITING_ACK
	stateSending  = switchboardv1.MessageState_MESSAGE_STATE_SENDING
	stateAccepted = switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED
	stateFailed   = switchboardv1.MessageState_MESSAGE_STATE_FAILED
	stateInDoubt  = switchboardv1.MessageState_MESSAGE_STATE_IN_DOUBT
	stateReceived = switchboardv1.MessageState_MESSAGE_STATE_RECEIVED
)

// byCount answers each message by how many times its control id has been
// seen (1 for the first copy); nil stays silent.
func byCount(answer func(controlID string, nth int) hl7.AckCode) func([]byte) []byte {
	var mu sync.Mutex
	seen := map[string]int{}
	return func(msg []byte) []byte {
		h, _ := hl7.ParseHeader(msg)
		mu.Lock()
		seen[h.ControlID]++
		n := seen[h.ControlID]
		mu.Unlock()
		code := answer(h.ControlID, n)
		if code == "" {
			return nil
		}
		return ackWith(code, "")(msg)
	}
}

// nextReceived returns the control id of the next message the peer got.
func (p *testPeer) nextReceived(t *testing.T) (string, []byte) {
	t.Helper()
	select {
	case msg := <-p.received:
		h, _ := hl7.ParseHeader(msg)
		return h.ControlID, msg
	case <-time.After(10 * time.Second):
		t.Fatal("peer received nothing within 10 s")
		return "", nil
	}
}

// expectReceived asserts the peer gets these control ids next, in order.
func (p *testPeer) expectReceived(t *testing.T, ids ...string) {
	t.Helper()
	for _, want := range ids {
		if got, _ := p.nextReceived(t); got != want {
			t.Fatalf("peer received %s, want %s (in order %v)", got, want, ids)
		}
	}
}

// expectNothing asserts the peer gets nothing for a while (many retry
// delays of fastPolicy).
func (p *testPeer) expectNothing(t *testing.T) {
	t.Helper()
	select {
	case msg := <-p.received:
		h, _ := hl7.ParseHeader(msg)
		t.Fatalf("peer received %s; want nothing", h.ControlID)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestQueuedDeliveredInOrder: queued messages return QUEUED with their ids
// at once and reach the peer in queue order, each written only once its
// SENDING state is durable, and end ACCEPTED with the attempt and the
// acknowledgement recorded.
func TestQueuedDeliveredInOrder(t *testing.T) {
	ctx := testCtx(t)
	disk := vfs.NewCrashableMem()
	s := startCrashableOutboxServer(t, disk)
	var mu sync.Mutex
	var notDurable []string
	// The peer has the bytes and has not answered: a power cut now must
	// leave the message mid-attempt (SENDING, or AWAITING_ACK if that
	// unsynced update made it to the disk too), never QUEUED.
	peer := startTestPeer(t, func(msg []byte) []byte {
		h, _ := hl7.ParseHeader(msg)
		var seq uint64
		fmt.Sscanf(h.ControlID, "Q-%d", &seq)
		err := afterCut(disk, func(o *pebblejournal.Outbox) error {
			m, err := o.Get(context.Background(), "lab", seq)
			if err != nil {
				return err
			}
			if st := m.GetState(); st != stateSending && st != stateAwaiting {
				return fmt.Errorf("%v", st)
			}
			return nil
		})
		if err != nil {
			mu.Lock()
			notDurable = append(notDurable, fmt.Sprintf("%s written while a power cut would leave it: %v", h.ControlID, err))
			mu.Unlock()
		}
		return ackWith(hl7.AA, "")(msg)
	})
	s.connectQueued(ctx, "lab", peer.addr(), nil, 5*time.Second)
	var ids, controls []string
	start := time.Now()
	for i := 1; i <= 20; i++ {
		id := s.queue(ctx, "lab", hl7Message(fmt.Sprintf("Q-%d", i)), "")
		if want := fmt.Sprintf("out-lab-%d", i); id != want {
			t.Fatalf("message id %s, want %s", id, want)
		}
		ids, controls = append(ids, id), append(controls, fmt.Sprintf("Q-%d", i))
	}
	peer.expectReceived(t, controls...)
	for i, id := range ids {
		m := s.waitState(ctx, id, stateAccepted)
		a := m.GetAttempts()
		if len(a) != 1 || a[0].GetResult() != switchboardv1.AttemptResult_ATTEMPT_RESULT_ACCEPTED ||
			a[0].GetAck().GetCode() != switchboardv1.AckCode_ACK_CODE_AA || a[0].GetAck().GetControlId() != controls[i] ||
			a[0].GetStartTime().AsTime().Before(start) || a[0].GetEndTime().AsTime().Before(a[0].GetStartTime().AsTime()) {
			t.Errorf("%s attempts = %v; want one, accepted with AA for %s", id, a, controls[i])
		}
		if m.GetAck().GetControlId() != controls[i] || m.GetControlId() != controls[i] || m.GetMessageType() != "ADT^A01^ADT_A01" ||
			m.GetDirection() != switchboardv1.Direction_DIRECTION_OUTBOUND || m.GetConnectionId() != "lab" ||
			m.GetSequence() != uint64(i+1) || !bytes.Equal(m.GetPayload(), hl7Message(controls[i])) || m.GetCreateTime() == nil {
			t.Errorf("%s = %v", id, m)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(notDurable) > 0 {
		t.Errorf("messages written before their attempt was durable: %v", notDurable)
	}
}

// TestQueuedRetries: what the peer's answers make of a message. AR is
// retried (and accepted the next time, with both attempts recorded) unless
// fail_rejected or out of attempts; AE fails at once, and the queue goes on
// with the next message.
func TestQueuedRetries(t *testing.T) {
	ctx := testCtx(t)
	s := startOutboxServer(t, t.TempDir())
	for _, tc := range []struct {
		name     string
		pol      func(*switchboardv1.OutboxPolicy)
		answer   func(nth int) hl7.AckCode // for M1; M2 always gets AA
		state    switchboardv1.MessageState
		attempts string
		failure  string
		copies   int // of M1 the peer receives
	}{
		{name: "AR then AA", answer: func(n int) hl7.AckCode { return map[bool]hl7.AckCode{true: hl7.AR, false: hl7.AA}[n == 1] },
			state: stateAccepted, attempts: "REJECTED,ACCEPTED", copies: 2},
		{name: "CR then CA", answer: func(n int) hl7.AckCode { return map[bool]hl7.AckCode{true: hl7.CR, false: hl7.CA}[n == 1] },
			state: stateAccepted, attempts: "REJECTED,ACCEPTED", copies: 2},
		{name: "AE fails at once", answer: func(int) hl7.AckCode { return hl7.AE },
			state: stateFailed, attempts: "REJECTED", failure: "rejected by the peer (AE)", copies: 1},
		{name: "AR with fail_rejected", pol: func(p *switchboardv1.OutboxPolicy) { p.FailRejected = true },
			answer: func(int) hl7.AckCode { return hl7.AR }, state: stateFailed, attempts: "REJECTED", failure: "(AR)", copies: 1},
		{name: "AR until out of attempts", pol: func(p *switchboardv1.OutboxPolicy) { p.MaxAttempts = 3 },
			answer: func(int) hl7.AckCode { return hl7.AR }, state: stateFailed, attempts: "REJECTED,REJECTED,REJECTED",
			failure: "no attempts left (3 made)", copies: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer := startTestPeer(t, byCount(func(id string, n int) hl7.AckCode {
				if id == "M1" {
					return tc.answer(n)
				}
				return hl7.AA
			}))
			conn := strings.ReplaceAll(tc.name, " ", "-")
			s.connectQueued(ctx, conn, peer.addr(), fastPolicy(tc.pol), 5*time.Second)
			m1 := s.queue(ctx, conn, hl7Message("M1"), "")
			m2 := s.queue(ctx, conn, hl7Message("M2"), "")
			m := s.waitState(ctx, m1, tc.state)
			if got := attemptResults(m); got != tc.attempts || !strings.Contains(m.GetFailure(), tc.failure) {
				t.Errorf("M1 attempts %s, failure %q; want %s, %q", got, m.GetFailure(), tc.attempts, tc.failure)
			}
			if a := m.GetAttempts(); len(a) > 1 && !a[1].GetStartTime().AsTime().After(a[0].GetEndTime().AsTime()) {
				t.Errorf("retry started at %v, before the first attempt ended at %v", a[1].GetStartTime().AsTime(), a[0].GetEndTime().AsTime())
			}
			s.waitState(ctx, m2, stateAccepted)
			var want []string
			for range tc.copies {
				want = append(want, "M1")
			}
			peer.expectReceived(t, append(want, "M2")...) // M2 never overtakes M1
		})
	}
}

// TestQueuedInDoubt: a silent peer leaves the message in doubt (the
// connection is reset), and the connection's in-doubt policy decides:
// RESEND sends the same bytes (same MSH-10) again; HOLD keeps it IN_DOUBT,
// blocking the queue until ResolveMessage; FAIL fails it and goes on.
func TestQueuedInDoubt(t *testing.T) {
	ctx := testCtx(t)
	s := startOutboxServer(t, t.TempDir())
	const (
		resend = switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_RESEND
		hold   = switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_HOLD
		fail   = switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_FAIL
	)
	for _, tc := range []struct {
		name       string
		policy     switchboardv1.InDoubtPolicy
		resolution switchboardv1.Resolution // for HOLD
		state      switchboardv1.MessageState
		attempts   string
		received   []string
	}{
		{name: "resend", policy: resend, state: stateAccepted, attempts: "IN_DOUBT,ACCEPTED", received: []string{"M1", "M1", "M2"}},
		{name: "hold, resend", policy: hold, resolution: switchboardv1.Resolution_RESOLUTION_RESEND,
			state: stateAccepted, attempts: "IN_DOUBT,ACCEPTED", received: []string{"M1", "M1", "M2"}},
		{name: "hold, mark accepted", policy: hold, resolution: switchboardv1.Resolution_RESOLUTION_MARK_ACCEPTED,
			state: stateAccepted, attempts: "IN_DOUBT", received: []string{"M1", "M2"}},
		{name: "hold, fail", policy: hold, resolution: switchboardv1.Resolution_RESOLUTION_FAIL,
			state: stateFailed, attempts: "IN_DOUBT", received: []string{"M1", "M2"}},
		{name: "fail", policy: fail, state: stateFailed, attempts: "IN_DOUBT", received: []string{"M1", "M2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer := startTestPeer(t, byCount(func(id string, n int) hl7.AckCode {
				if id == "M1" && n == 1 {
					return "" // silent: no ACK for the first copy
				}
				return hl7.AA
			}))
			conn := strings.ReplaceAll(strings.ReplaceAll(tc.name, ", ", "-"), " ", "-")
			cfg := s.connectQueued(ctx, conn, peer.addr(), fastPolicy(func(p *switchboardv1.OutboxPolicy) { p.InDoubt = tc.policy }), 300*time.Millisecond)
			m1 := s.queue(ctx, conn, hl7Message("M1"), "")
			m2 := s.queue(ctx, conn, hl7Message("M2"), "")
			_, first := peer.nextReceived(t)
			m := s.waitMessage(ctx, m1, "in doubt", func(m *switchboardv1.Message) bool {
				a := m.GetAttempts()
				return len(a) > 0 && a[0].GetResult() == switchboardv1.AttemptResult_ATTEMPT_RESULT_IN_DOUBT
			})
			if err := m.GetAttempts()[0].GetError(); !strings.Contains(err, "ack timeout") {
				t.Errorf("M1's attempt error %q; want the ack timeout", err)
			}
			// Reset: closed, or already reconnecting (or open again) where
			// the registry reconnects.
			if st, why := s.connState(ctx, conn); st != switchboardv1.ConnectionState_CONNECTION_STATE_OPEN && why != switchboardv1.CloseReason_CLOSE_REASON_ACK_TIMEOUT {
				t.Errorf("connection %v (%v) after the timeout; want reset for it", st, why)
			}
			s.reopen(ctx, conn, cfg)
			if tc.policy == hold {
				if m.GetState() != stateInDoubt || !strings.Contains(m.GetFailure(), "in doubt") {
					t.Fatalf("M1 = %v %q; want held IN_DOUBT", m.GetState(), m.GetFailure())
				}
				s.waitOutboxStats(ctx, conn, "M1 held in doubt", func(st outbox.ConnStats) bool {
					return st.Counted && st.InDoubt == 1 && st.Queued == 2 && !st.Oldest.IsZero() && st.Attempts[3] == 1
				})
				peer.expectNothing(t) // M2 waits behind M1
				if st := s.getMessage(ctx, m2).GetState(); st != stateQueued {
					t.Fatalf("M2 is %v while M1 is held; want QUEUED", st)
				}
				_, err := s.client.ResolveMessage(ctx, &switchboardv1.ResolveMessageRequest{MessageId: m2, Resolution: switchboardv1.Resolution_RESOLUTION_RESEND})
				if status.Code(err) != codes.FailedPrecondition || errorInfo(err).GetReason() != "NOT_IN_DOUBT" {
					t.Errorf("ResolveMessage(M2, queued) = %v; want FAILED_PRECONDITION NOT_IN_DOUBT", err)
				}
				resp, err := s.client.ResolveMessage(ctx, &switchboardv1.ResolveMessageRequest{MessageId: m1, Resolution: tc.resolution})
				if err != nil {
					t.Fatalf("ResolveMessage(M1): %v", err)
				}
				if st := resp.GetMessage().GetState(); st == stateInDoubt {
					t.Errorf("ResolveMessage returned M1 still IN_DOUBT")
				}
			}
			m = s.waitState(ctx, m1, tc.state)
			if got := attemptResults(m); got != tc.attempts {
				t.Errorf("M1 attempts %s, want %s", got, tc.attempts)
			}
			s.waitState(ctx, m2, stateAccepted)
			failed := int64(0)
			if tc.state == stateFailed {
				failed = 1
			}
			s.waitOutboxStats(ctx, conn, "both final", func(st outbox.ConnStats) bool {
				return st.InDoubt == 0 && st.Queued == 0 && st.Oldest.IsZero() && st.Failed == failed && st.Attempts[0] >= 1
			})
			got, again := peer.nextReceived(t)
			if got != tc.received[1] {
				t.Fatalf("peer received %s after the first M1, want %s", got, tc.received[1])
			}
			if got == "M1" {
				if !bytes.Equal(first, hl7Message("M1")) || !bytes.Equal(again, first) {
					t.Errorf("the resent M1 differs from the first copy")
				}
				peer.expectReceived(t, "M2")
			}
		})
	}
}

// TestQueuedRestart: a server that stops (here: loses power, keeping only
// what its disk had) continues where it left off. An accepted message is
// not sent again; the one found mid-attempt may have been written, so it
// follows the in-doubt policy (never resent as if unsent, never dropped);
// the rest follow in order.
func TestQueuedRestart(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   switchboardv1.InDoubtPolicy
		attempts string
		// sending: the cut came before M1's (unsynced) AWAITING_ACK
		// reached the disk, so the restarted server finds M1 SENDING.
		// Cuts rarely fall there (AWAITING_ACK joins the next group
		// commit at once), so the test puts the disk back the way such a
		// cut leaves it.
		sending bool
	}{
		{"resend", switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_RESEND, "IN_DOUBT,ACCEPTED", false},
		{"hold", switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_HOLD, "IN_DOUBT,ACCEPTED", false},
		{"resend, found SENDING", switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_RESEND, "IN_DOUBT,ACCEPTED", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			disk := vfs.NewCrashableMem()
			var mu sync.Mutex
			silent := map[string]bool{"M1": true}
			peer := startTestPeer(t, func(msg []byte) []byte {
				h, _ := hl7.ParseHeader(msg)
				mu.Lock()
				defer mu.Unlock()
				if silent[h.ControlID] {
					return nil
				}
				return ackWith(hl7.AA, "")(msg)
			})
			pol := fastPolicy(func(p *switchboardv1.OutboxPolicy) { p.InDoubt = tc.policy })
			s1 := startCrashableOutboxServer(t, disk)
			s1.connectQueued(ctx, "lab", peer.addr(), pol, time.Second)
			ids := []string{s1.queue(ctx, "lab", hl7Message("M0"), "")}
			s1.waitState(ctx, ids[0], stateAccepted)
			for _, c := range []string{"M1", "M2", "M3"} {
				ids = append(ids, s1.queue(ctx, "lab", hl7Message(c), ""))
			}
			peer.expectReceived(t, "M0", "M1")
			s1.waitState(ctx, ids[1], stateAwaiting)
			// The power goes here. M0's ACCEPTED was committed before M1's
			// SENDING, synced before M1 was written (the store commits in order); M2 and M3
			// were synced when their Sends returned.
			restarted := cutPower(t, disk)
			s1.stop() // on its own disk, which the restarted server never sees
			mu.Lock()
			silent = map[string]bool{}
			mu.Unlock()
			for len(peer.received) > 0 { // what the dead server did after the crash point
				<-peer.received
			}
			// M1 is mid-attempt: SENDING, or AWAITING_ACK when that
			// (unsynced) update reached the disk before the cut too. Both
			// mean "possibly written".
			mid := []switchboardv1.MessageState{stateSending, stateAwaiting}
			if tc.sending {
				rewindToSending(t, restarted, "lab", 2)
				mid = mid[:1]
			}

			s2 := startCrashableOutboxServer(t, restarted)
			for i, want := range [][]switchboardv1.MessageState{{stateAccepted}, mid, {stateQueued}, {stateQueued}} {
				if st := s2.getMessage(ctx, ids[i]).GetState(); !slices.Contains(want, st) {
					t.Fatalf("after the restart %s is %v, want %v", ids[i], st, want)
				} else if i == 1 {
					t.Logf("after the restart M1 is %v", st)
				}
			}
			s2.connectQueued(ctx, "lab", peer.addr(), pol, time.Second)
			if tc.policy == switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_HOLD {
				m := s2.waitState(ctx, ids[1], stateInDoubt)
				if !strings.Contains(m.GetAttempts()[0].GetError(), "interrupted") {
					t.Errorf("M1's attempt error %q; want it to say it was interrupted", m.GetAttempts()[0].GetError())
				}
				peer.expectNothing(t)
				if n := s2.connStatus(ctx, "lab").GetQueuedMessageCount(); n != 3 {
					t.Errorf("queued_message_count after the restart, M1 held = %d; want 3 (M1, M2, M3)", n)
				}
				if _, err := s2.client.ResolveMessage(ctx, &switchboardv1.ResolveMessageRequest{MessageId: ids[1], Resolution: switchboardv1.Resolution_RESOLUTION_RESEND}); err != nil {
					t.Fatalf("ResolveMessage: %v", err)
				}
			}
			m := s2.waitState(ctx, ids[1], stateAccepted)
			if got := attemptResults(m); got != tc.attempts {
				t.Errorf("M1 attempts %s, want %s", got, tc.attempts)
			}
			for _, id := range ids[2:] {
				s2.waitState(ctx, id, stateAccepted)
			}
			peer.expectReceived(t, "M1", "M2", "M3")
			peer.expectNothing(t) // and M0 never again
		})
	}
}

// rewindToSending puts message seq of conn on disk back to the SENDING its
// attempt started with, when it is AWAITING_ACK: the disk as a power cut
// just before that update reached it leaves it. The two states differ only
// in state and update time.
func rewindToSending(t *testing.T, disk *vfs.MemFS, conn string, seq uint64) {
	t.Helper()
	j, err := pebblejournal.Open(memDataDir, pebblejournal.Options{FS: disk})
	if err != nil {
		t.Fatalf("journal.Open: %v", err)
	}
	defer func() {
		if err := j.Close(); err != nil {
			t.Fatalf("journal.Close: %v", err)
		}
	}()
	ctx := context.Background()
	m, err := j.Outbox().Get(ctx, conn, seq)
	if err != nil {
		t.Fatalf("outbox Get: %v", err)
	}
	if m.GetState() != stateAwaiting {
		return
	}
	m.State = stateSending
	m.UpdateTime = m.GetAttempts()[len(m.GetAttempts())-1].GetStartTime()
	if err := j.Outbox().Update(ctx, m, true); err != nil {
		t.Fatalf("outbox Update: %v", err)
	}
}

// TestQueuedIdempotent: a queued Send repeated with the same idempotency
// key (say, after the client lost the reply) stores and writes nothing and
// returns the first message's id, also after a restart; another key queues
// another message.
func TestQueuedIdempotent(t *testing.T) {
	ctx := testCtx(t)
	disk := vfs.NewCrashableMem()
	peer := startTestPeer(t, ackWith(hl7.AA, ""))
	s1 := startCrashableOutboxServer(t, disk)
	cfg := s1.connectQueued(ctx, "lab", peer.addr(), nil, 5*time.Second)
	first := s1.queue(ctx, "lab", hl7Message("ORDER-1"), "order-1")
	if again := s1.queue(ctx, "lab", hl7Message("ORDER-1"), "order-1"); again != first {
		t.Fatalf("repeated Send = %s, want the first id %s", again, first)
	}
	other := s1.queue(ctx, "lab", hl7Message("ORDER-2"), "order-2")
	if other == first {
		t.Fatal("another key got the first message's id")
	}
	s1.waitState(ctx, other, stateAccepted)
	peer.expectReceived(t, "ORDER-1", "ORDER-2")
	// The power goes once both acceptances are on the disk (else the
	// restarted server would rightly find one in doubt and send it again).
	accepted := []*switchboardv1.Message{s1.getMessage(ctx, first), s1.getMessage(ctx, other)}
	restarted := cutPowerOnce(t, disk, "ORDER-2's acceptance", func(o *pebblejournal.Outbox) bool {
		for _, m := range accepted {
			if got, err := o.Get(ctx, "lab", m.GetSequence()); err != nil || got.GetState() != stateAccepted {
				return false
			}
		}
		return true
	})
	s1.stop() // on its own disk, which the restarted server never sees

	s2 := startCrashableOutboxServer(t, restarted)
	s2.connectQueued(ctx, "lab", cfg.GetAddress(), nil, 5*time.Second)
	if again := s2.queue(ctx, "lab", hl7Message("ORDER-1"), "order-1"); again != first {
		t.Errorf("Send after the restart = %s, want the first id %s", again, first)
	}
	peer.expectNothing(t)
	resp, err := s2.client.ListMessages(ctx, &switchboardv1.ListMessagesRequest{ConnectionId: "lab"})
	if err != nil || len(resp.GetMessages()) != 2 {
		t.Errorf("ListMessages = %v, %v; want the two messages", resp, err)
	}
}

// reorderingPeer reads up to window messages, then answers them in reverse
// order; it records the most it held unanswered at once.
type reorderingPeer struct {
	ln       net.Listener
	mu       sync.Mutex
	order    []string // control ids as received
	maxHeld  int
	finished chan struct{}
}

func startReorderingPeer(t *testing.T, window int) *reorderingPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &reorderingPeer{ln: ln, finished: make(chan struct{})}
	accepted := make(chan net.Conn, 1)
	go func() {
		defer close(p.finished)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		accepted <- nc
		defer nc.Close()
		dec := transport.NewDecoder(nc, mllp)
		var held [][]byte
		flush := func() bool {
			for i := len(held) - 1; i >= 0; i-- {
				if _, err := nc.Write(mllp.AppendFrame(nil, ackWith(hl7.AA, "")(held[i]))); err != nil {
					return false
				}
			}
			held = held[:0]
			return true
		}
		for {
			// Answer what is held when the window is full or the sender
			// pauses.
			_ = nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			msg, err := dec.Next()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				if !flush() {
					return
				}
				continue
			}
			if err != nil {
				return
			}
			h, _ := hl7.ParseHeader(msg)
			held = append(held, bytes.Clone(msg))
			p.mu.Lock()
			p.order = append(p.order, h.ControlID)
			p.maxHeld = max(p.maxHeld, len(held))
			p.mu.Unlock()
			if len(held) == window && !flush() {
				return
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		select {
		case nc := <-accepted:
			nc.Close()
		default:
		}
		<-p.finished
	})
	return p
}

// TestQueuedPipelining: with max_in_flight 8, eight messages are written
// before their ACKs return; the peer answers each batch in reverse order
// and every ACK is matched to its message by MSA-2.
func TestQueuedPipelining(t *testing.T) {
	ctx := testCtx(t)
	s := startOutboxServer(t, t.TempDir())
	peer := startReorderingPeer(t, 8)
	s.connectQueued(ctx, "lab", peer.ln.Addr().String(), fastPolicy(func(p *switchboardv1.OutboxPolicy) { p.MaxInFlight = 8 }), 5*time.Second)
	var ids, controls []string
	for i := range 40 {
		c := fmt.Sprintf("P-%02d", i)
		ids, controls = append(ids, s.queue(ctx, "lab", hl7Message(c), "")), append(controls, c)
	}
	for i, id := range ids {
		m := s.waitState(ctx, id, stateAccepted)
		if got := attemptResults(m); got != "ACCEPTED" || m.GetAck().GetControlId() != controls[i] {
			t.Errorf("%s: attempts %s, ack for %s; want accepted once with its own ACK", controls[i], got, m.GetAck().GetControlId())
		}
	}
	peer.mu.Lock()
	defer peer.mu.Unlock()
	if strings.Join(peer.order, ",") != strings.Join(controls, ",") {
		t.Errorf("peer received %v, want queue order", peer.order)
	}
	if peer.maxHeld != 8 {
		t.Errorf("at most %d messages were in flight, want 8", peer.maxHeld)
	}
	if st, _ := s.connState(ctx, "lab"); st != switchboardv1.ConnectionState_CONNECTION_STATE_OPEN {
		t.Errorf("connection %v; want it still open", st)
	}
}

// TestQueuedPipeliningUnmatched: an ACK that matches none of the messages in
// flight resets the connection and puts all of them in doubt.
func TestQueuedPipeliningUnmatched(t *testing.T) {
	ctx := testCtx(t)
	s := startOutboxServer(t, t.TempDir())
	var mu sync.Mutex
	n := 0
	peer := startTestPeer(t, func(msg []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		if n++; n == 3 {
			return ackWith(hl7.AA, "NOBODY")(msg) // after three are in flight
		}
		return nil
	})
	pol := fastPolicy(func(p *switchboardv1.OutboxPolicy) {
		p.MaxInFlight, p.InDoubt = 4, switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_HOLD
	})
	s.connectQueued(ctx, "lab", peer.addr(), pol, 5*time.Second)
	var ids []string
	for _, c := range []string{"A", "B", "C"} {
		ids = append(ids, s.queue(ctx, "lab", hl7Message(c), ""))
	}
	for _, id := range ids {
		m := s.waitState(ctx, id, stateInDoubt)
		if a := m.GetAttempts(); len(a) != 1 || a[0].GetAck().GetControlId() != "NOBODY" {
			t.Errorf("%s attempts %v; want one in doubt with the stray ACK", id, a)
		}
	}
	if _, why := s.connState(ctx, "lab"); why != switchboardv1.CloseReason_CLOSE_REASON_ACK_MISMATCH {
		t.Errorf("connection closed for %v; want the mismatch", why)
	}
}

// TestQueuedSendRules: what a queued Send refuses, and that nothing is
// stored then.
func TestQueuedSendRules(t *testing.T) {
	ctx := testCtx(t)
	s := startOutboxServer(t, t.TempDir())
	peer := startTestPeer(t, ackWith(hl7.AA, ""))
	s.connect(ctx, "lab", peer.addr())
	l := s.startListener(ctx, "adt", nil)
	in := dialPeer(t, addr(l))
	in.write(mllp.AppendFrame(nil, hl7Message("IN-1")))
	in.readFrame()
	var inboundID string
	waitFor(t, func() bool {
		resp, err := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{ListenerId: "adt"})
		if err == nil && len(resp.GetConnections()) == 1 {
			inboundID = resp.GetConnections()[0].GetConnectionId()
		}
		return inboundID != ""
	})
	for _, tc := range []struct {
		name  string
		req   *switchboardv1.SendRequest
		code  codes.Code
		field string
	}{
		{"inbound connection", &switchboardv1.SendRequest{ConnectionId: inboundID, Payload: hl7Message("X"), Queued: true}, codes.InvalidArgument, "queued"},
		{"ack timeout", &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("X"), Queued: true, AckTimeout: durationpbNew(time.Second)}, codes.InvalidArgument, "ack_timeout"},
		{"fail fast", &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("X"), Queued: true, FailFast: true}, codes.InvalidArgument, "fail_fast"},
		{"key without queued", &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("X"), IdempotencyKey: "k"}, codes.InvalidArgument, "idempotency_key"},
		{"no MSH-10", &switchboardv1.SendRequest{ConnectionId: "lab", Payload: []byte("MSH|^~\\&|A|B|C|D|x||ADT^A01||P|2.5\r"), Queued: true}, codes.InvalidArgument, "payload"},
		{"unknown connection", &switchboardv1.SendRequest{ConnectionId: "nope", Payload: hl7Message("X"), Queued: true}, codes.NotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.client.Send(ctx, tc.req)
			if status.Code(err) != tc.code || badRequestFields(err) != tc.field {
				t.Errorf("Send = %v; want %v on field %q", err, tc.code, tc.field)
			}
		})
	}
	if ms, err := s.j.Outbox().Scan(ctx, "", 0, 100); err != nil || len(ms) != 0 {
		t.Errorf("refused sends stored messages: %v, %v", ms, err)
	}

	// A server without an outbox store refuses queued sends.
	plain := startServer(t, t.TempDir())
	plain.connect(ctx, "lab", peer.addr())
	_, err := plain.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("X"), Queued: true})
	if status.Code(err) != codes.InvalidArgument || badRequestFields(err) != "queued" {
		t.Errorf("queued Send without a store = %v; want INVALID_ARGUMENT on queued", err)
	}
}

// TestQueuedStoreFailure: when the disk under the journal fails, a queued
// Send fails with UNAVAILABLE, JOURNAL_UNAVAILABLE, and is never reported
// as queued (no message id); the journal's Health reports the failure for
// as long as it lasts (what turns serve's gRPC health NOT_SERVING,
// followJournalHealth); once the disk works again the journal recovers by
// itself and queued Sends work again.
//
// What a failed Send leaves behind depends on how the disk failed. A write
// that fails (a full disk) never reaches it: nothing of the Send is
// stored. A sync that fails may follow a write that went through, and the
// recovered journal then has the message (the package documentation of
// pebblejournal, "Failure and recovery"): at most once; the client's retry
// with the same idempotency key finds it instead of queuing it again, and
// it is delivered once. (Without a retry it waits for the worker's next
// wake-up, a later Send on the connection or a restart: nothing tells the
// worker of a recovery.)
func TestQueuedStoreFailure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(fs *pebbletest.FaultFS, on bool)
		// mayKeep: the failed Send's message may be stored after all.
		mayKeep bool
	}{
		{"disk full", func(fs *pebbletest.FaultFS, on bool) { fs.Full.Store(on) }, false},
		{"sync fails", func(fs *pebbletest.FaultFS, on bool) { fs.FailSyncs.Store(on) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			fs := &pebbletest.FaultFS{FS: vfs.Default}
			s := startOutboxServerOn(t, t.TempDir(), pebblejournal.Options{FS: fs, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond})
			peer := startTestPeer(t, ackWith(hl7.AA, ""))
			s.connectQueued(ctx, "lab", peer.addr(), fastPolicy(nil), 5*time.Second)
			err, changed := s.j.Health()
			if err != nil {
				t.Fatalf("journal Health before the failure = %v", err)
			}

			tc.fault(fs, true)
			s.journalBroken = true
			// The first Send meets the failing disk; the second finds the
			// journal unavailable and is refused at once.
			for _, req := range []*switchboardv1.SendRequest{
				{ConnectionId: "lab", Payload: hl7Message("X-1"), Queued: true, IdempotencyKey: "x"},
				{ConnectionId: "lab", Payload: hl7Message("X-2"), Queued: true},
			} {
				resp, err := s.client.Send(ctx, req)
				if status.Code(err) != codes.Unavailable || errorInfo(err).GetReason() != "JOURNAL_UNAVAILABLE" || resp.GetMessageId() != "" {
					t.Fatalf("queued Send of %s while the disk fails = %v, %v; want UNAVAILABLE JOURNAL_UNAVAILABLE and no message id",
						hl7ControlID(req.GetPayload()), resp, err)
				}
				t.Logf("queued Send of %s while the disk fails: %v", hl7ControlID(req.GetPayload()), err)
			}
			select {
			case <-changed:
			default:
				t.Error("the failure did not signal Health watchers")
			}
			peer.expectNothing(t) // while recovery attempts fail
			if err, _ := s.j.Health(); !errors.Is(err, journal.ErrUnavailable) {
				t.Errorf("journal Health while the disk fails = %v, want ErrUnavailable", err)
			}
			if resp, err := s.client.ListMessages(ctx, &switchboardv1.ListMessagesRequest{ConnectionId: "lab"}); err != nil || len(resp.GetMessages()) != 0 {
				t.Errorf("ListMessages while the disk fails = %v, %v; want nothing", resp, err)
			}

			tc.fault(fs, false)
			journaltest.WaitHealthy(t, s.j)
			resp, err := s.client.ListMessages(ctx, &switchboardv1.ListMessagesRequest{ConnectionId: "lab"})
			if err != nil {
				t.Fatalf("ListMessages after the recovery: %v", err)
			}
			stored, err := s.j.Outbox().Scan(ctx, "", 0, 100)
			if err != nil {
				t.Fatalf("outbox Scan after the recovery: %v", err)
			}
			kept := resp.GetMessages()
			switch {
			case len(kept) != len(stored):
				t.Fatalf("after the recovery ListMessages has %v, the outbox %v", kept, stored)
			case len(kept) == 0:
			case !tc.mayKeep:
				t.Fatalf("after the recovery the outbox has %v; want nothing of the failed Sends", kept)
			case len(kept) > 1 || kept[0].GetControlId() != "X-1" || kept[0].GetIdempotencyKey() != "x":
				// X-2 was refused before it reached the journal.
				t.Fatalf("after the recovery the outbox has %v; want at most X-1, once", kept)
			default:
				t.Logf("the failed Send of X-1 reached the disk and is back after the recovery as %s", kept[0].GetMessageId())
				// Delivered without a retry or another Send: the recovery
				// wakes the worker.
				s.waitState(ctx, kept[0].GetMessageId(), stateAccepted)
			}
			if tc.mayKeep {
				// The client retries with its key: one X-1, delivered once.
				x := s.queue(ctx, "lab", hl7Message("X-1"), "x")
				if len(kept) == 1 && x != kept[0].GetMessageId() {
					t.Errorf("the retry of X-1 queued %s; want the one kept, %s", x, kept[0].GetMessageId())
				}
				s.waitState(ctx, x, stateAccepted)
				peer.expectReceived(t, "X-1")
			}
			id := s.queue(ctx, "lab", hl7Message("Y"), "")
			s.waitState(ctx, id, stateAccepted)
			peer.expectReceived(t, "Y")
			peer.expectNothing(t)
		})
	}
}

// hl7ControlID is msg's MSH-10.
func hl7ControlID(msg []byte) string {
	h, _ := hl7.ParseHeader(msg)
	return h.ControlID
}

// TestQueuedRetryFindsStored: a queued Send whose idempotency key finds a
// message the outbox's worker has not seen is delivered at once, without
// waiting for another Send. Such a message is what a queued Send leaves
// when its store write failed but reached the disk (a failed fsync): the
// Send returned an error, and the message is back once the journal has
// recovered, found by the client's retry with the same key. Here it is
// appended to the journal's outbox directly, behind the worker's back.
func TestQueuedRetryFindsStored(t *testing.T) {
	ctx := testCtx(t)
	s := startOutboxServer(t, t.TempDir())
	peer := startTestPeer(t, ackWith(hl7.AA, ""))
	s.connectQueued(ctx, "lab", peer.addr(), fastPolicy(nil), 5*time.Second)
	s.waitState(ctx, s.queue(ctx, "lab", hl7Message("FIRST"), ""), stateAccepted)
	peer.expectReceived(t, "FIRST")
	peer.expectNothing(t) // the worker is idle, waiting to be told of a message

	stored, created, err := s.j.Outbox().Append(ctx, &switchboardv1.Message{
		ConnectionId: "lab", Direction: switchboardv1.Direction_DIRECTION_OUTBOUND, State: stateQueued,
		Payload: hl7Message("AGAIN"), ControlId: "AGAIN", MessageType: "ADT^A01^ADT_A01", IdempotencyKey: "again",
		CreateTime: timestamppb.Now(), UpdateTime: timestamppb.Now(),
	})
	if err != nil || !created {
		t.Fatalf("outbox Append = %v, %v", created, err)
	}
	if id := s.queue(ctx, "lab", hl7Message("AGAIN"), "again"); id != stored.GetMessageId() {
		t.Fatalf("the retry queued %s; want the stored %s", id, stored.GetMessageId())
	}
	s.waitState(ctx, stored.GetMessageId(), stateAccepted)
	peer.expectReceived(t, "AGAIN")
}

// TestDisconnectFailsQueued: Disconnect fails the connection's remaining
// messages, the one in flight as possibly written; a queued Send after it
// finds no connection.
func TestDisconnectFailsQueued(t *testing.T) {
	ctx := testCtx(t)
	s := startOutboxServer(t, t.TempDir())
	peer := startTestPeer(t, func([]byte) []byte { return nil })
	s.connectQueued(ctx, "lab", peer.addr(), nil, time.Minute)
	var ids []string
	for _, c := range []string{"A", "B", "C"} {
		ids = append(ids, s.queue(ctx, "lab", hl7Message(c), ""))
	}
	s.waitState(ctx, ids[0], stateAwaiting)
	s.disconnect(ctx, "lab")
	for i, id := range ids {
		m := s.getMessage(ctx, id) // failed by the time Disconnect returned
		if m.GetState() != stateFailed || !strings.Contains(m.GetFailure(), "connection removed") {
			t.Errorf("%s = %v %q; want FAILED, connection removed", id, m.GetState(), m.GetFailure())
		}
		if want := map[bool]string{true: "IN_DOUBT", false: ""}[i == 0]; attemptResults(m) != want {
			t.Errorf("%s attempts %s, want %q", id, attemptResults(m), want)
		}
	}
	_, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: hl7Message("D"), Queued: true})
	if status.Code(err) != codes.NotFound {
		t.Errorf("queued Send after Disconnect = %v; want NOT_FOUND", err)
	}
}

// TestQueuedReconnect: the peer goes away and comes back; queued messages
// flow again without a call from anyone. This needs the registry to
// reconnect by itself (the reconnection work); until it does, the test
// says so and skips.
func TestQueuedReconnect(t *testing.T) {
	ctx := testCtx(t)
	s := startOutboxServer(t, t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := ln.Addr().String()
	ln.Close()
	first := startTestPeerOn(t, address, ackWith(hl7.AA, ""))
	s.connectQueued(ctx, "lab", address, fastPolicy(nil), 5*time.Second)
	s.waitState(ctx, s.queue(ctx, "lab", hl7Message("BEFORE"), ""), stateAccepted)
	first.stop()
	waitFor(t, func() bool {
		st, _ := s.connState(ctx, "lab")
		return st != switchboardv1.ConnectionState_CONNECTION_STATE_OPEN
	})
	id := s.queue(ctx, "lab", hl7Message("AFTER"), "")
	id2 := s.queue(ctx, "lab", hl7Message("AFTER-2"), "")
	if n := s.connStatus(ctx, "lab").GetQueuedMessageCount(); n != 2 {
		t.Errorf("queued_message_count while the peer is away = %d; want 2", n)
	}
	second := startTestPeerOn(t, address, ackWith(hl7.AA, ""))
	for start := time.Now(); s.getMessage(ctx, id).GetState() != stateAccepted; time.Sleep(20 * time.Millisecond) {
		// A reconnecting connection is CONNECTING or BACKING_OFF, never
		// CLOSED (its reconnect policy is the default one).
		if st, _ := s.connState(ctx, "lab"); st == switchboardv1.ConnectionState_CONNECTION_STATE_CLOSED {
			t.Fatalf("the connection is CLOSED after its peer went away; want it reconnecting")
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("queued message not delivered after the peer came back: %v", s.getMessage(ctx, id))
		}
	}
	s.waitState(ctx, id2, stateAccepted)
	second.expectReceived(t, "AFTER", "AFTER-2")
	if n := s.connStatus(ctx, "lab").GetQueuedMessageCount(); n != 0 {
		t.Errorf("queued_message_count once delivered = %d; want 0", n)
	}
}
