package service_test

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/transport"
)

// startDedupServer starts a server on dir with the journal's own state and
// answer stores, and restores what it holds, as `switchboard serve` does.
func startDedupServer(t *testing.T, dir string) *server {
	t.Helper()
	j, err := pebblejournal.Open(dir, pebblejournal.Options{})
	if err != nil {
		t.Fatalf("journal.Open: %v", err)
	}
	s := startServerWith(t, j, func(c *service.Config) { c.State, c.Answers = j.StateStore(), j.Answers() })
	if err := s.svc.Restore(testCtx(t)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return s
}

func dedupConfig(addr string, window time.Duration, scope switchboardv1.DuplicateScope) *switchboardv1.ListenerConfig {
	return &switchboardv1.ListenerConfig{
		Address:    addr,
		Duplicates: &switchboardv1.DuplicateSuppression{Window: durationpbNew(window), Scope: scope},
	}
}

// fromSender is hl7Message(controlID) sent by application app.
func fromSender(app, controlID string) []byte {
	return bytes.Replace(hl7Message(controlID), []byte("|ADT1|"), []byte("|"+app+"|"), 1)
}

// exchange sends msg on p and returns the answer.
func (p *peer) exchange(msg []byte) []byte {
	p.t.Helper()
	p.write(mllp.AppendFrame(nil, msg))
	return p.readFrame()
}

// inbound returns GetMessage("in-<seq>").
func (s *server) inbound(ctx context.Context, seq uint64) *switchboardv1.Message {
	s.t.Helper()
	resp, err := s.client.GetMessage(ctx, &switchboardv1.GetMessageRequest{MessageId: "in-" + strconv.FormatUint(seq, 10)})
	if err != nil {
		s.t.Fatalf("GetMessage(in-%d): %v", seq, err)
	}
	return resp.GetMessage()
}

// waitAnswer waits until the answer of inbound message seq is recorded and
// returns it.
func (s *server) waitAnswer(ctx context.Context, seq uint64) *switchboardv1.InboundAnswer {
	s.t.Helper()
	var a *switchboardv1.InboundAnswer
	waitFor(s.t, func() bool {
		resp, err := s.client.GetMessage(ctx, &switchboardv1.GetMessageRequest{MessageId: "in-" + strconv.FormatUint(seq, 10)})
		if status.Code(err) == codes.NotFound {
			return false // not stored yet
		}
		if err != nil {
			s.t.Fatalf("GetMessage(in-%d): %v", seq, err)
		}
		a = resp.GetMessage().GetAnswer()
		return a != nil
	})
	return a
}

// TestDuplicateResendGetsFirstAck: a peer that resends a message it got the
// ACK for (same MSH-10, same sender) gets the same ACK byte for byte, and
// the journal holds the message once. GetMessage shows the answer, and the
// connection's and listener's counters count the duplicate.
func TestDuplicateResendGetsFirstAck(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "adt", dedupConfig("", time.Hour, switchboardv1.DuplicateScope_DUPLICATE_SCOPE_UNSPECIFIED))
	p := dialPeer(t, addr(l))

	msg := hl7Message("DUP-1")
	first := p.exchange(msg)
	checkAck(t, msg, first)
	again := p.exchange(msg)
	if !bytes.Equal(first, again) {
		t.Fatalf("resend answered\n%q\nwant the first ACK\n%q", again, first)
	}
	if got := s.lastSeq(); got != 1 {
		t.Fatalf("journal holds %d records, want 1", got)
	}
	a := s.waitAnswer(ctx, 1)
	if a == nil || !bytes.Equal(a.GetSent(), first) || !a.GetWritten() || a.GetCode() != switchboardv1.AckCode_ACK_CODE_AA || a.GetAnswerTime() == nil {
		t.Fatalf("GetMessage answer = %v; want the ACK, written, AA", a)
	}

	// Another message is stored as usual.
	checkAck(t, hl7Message("DUP-2"), p.exchange(hl7Message("DUP-2")))
	if got := s.lastSeq(); got != 2 {
		t.Fatalf("journal holds %d records, want 2", got)
	}

	// An ACK is counted just after it is written: wait (bounded) for the
	// last one.
	var k *switchboardv1.ConnectionCounters
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		cs, err := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{ListenerId: "adt"})
		if err != nil || len(cs.GetConnections()) != 1 {
			t.Fatalf("ListConnections = %v, %v", cs, err)
		}
		if k = cs.GetConnections()[0].GetStatus().GetCounters(); ackCount(k.GetSentAcks(), switchboardv1.AckCode_ACK_CODE_AA) == 3 {
			break
		}
	}
	if k.GetDuplicateCount() != 1 || ackCount(k.GetSentAcks(), switchboardv1.AckCode_ACK_CODE_AA) != 3 {
		t.Errorf("connection counters = %v; want 1 duplicate, 3 AA sent", k)
	}
	gl, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "adt"})
	if err != nil || gl.GetListener().GetStatus().GetConnectionTotals().GetDuplicateCount() != 1 {
		t.Errorf("listener totals = %v, %v; want 1 duplicate", gl.GetListener().GetStatus().GetConnectionTotals(), err)
	}
}

// TestDuplicateAfterCut: the peer sends and hangs up before reading the ACK
// (as if the connection broke after the store), then reconnects and resends:
// the message is stored once and the resend gets the ACK the first send was
// answered with.
func TestDuplicateAfterCut(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "adt", dedupConfig("", time.Hour, switchboardv1.DuplicateScope_DUPLICATE_SCOPE_SENDER))
	msg := hl7Message("CUT-1")

	p := dialPeer(t, addr(l))
	p.write(mllp.AppendFrame(nil, msg))
	_ = p.nc.Close()
	// Stored, and its answer recorded (written or not: the peer is gone).
	first := s.waitAnswer(ctx, 1)

	p = dialPeer(t, addr(l))
	again := p.exchange(msg)
	checkAck(t, msg, again)
	if !bytes.Equal(again, first.GetSent()) {
		t.Fatalf("resend answered\n%q\nwant the first answer\n%q", again, first.GetSent())
	}
	if got := s.lastSeq(); got != 1 {
		t.Fatalf("journal holds %d records, want 1", got)
	}
}

// TestDuplicateAcrossRestart: the index and the answers survive a restart
// of the service and the journal: a resend after it is not stored again
// and gets the first ACK.
func TestDuplicateAcrossRestart(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	fixed := freeAddr(t)
	s := startDedupServer(t, dir)
	s.startListener(ctx, "adt", dedupConfig(fixed, time.Hour, switchboardv1.DuplicateScope_DUPLICATE_SCOPE_SENDER))
	msg := hl7Message("RESTART-1")
	first := dialPeer(t, fixed).exchange(msg)
	s.waitAnswer(ctx, 1)
	// The answer was recorded unsynced; this synced write commits after it.
	s.startListener(ctx, "other", nil)
	s.stop()

	s = startDedupServer(t, dir)
	again := dialPeer(t, fixed).exchange(msg)
	if !bytes.Equal(first, again) {
		t.Fatalf("resend after the restart answered\n%q\nwant the first ACK\n%q", again, first)
	}
	if got := s.lastSeq(); got != 1 {
		t.Fatalf("journal holds %d records after the restart, want 1", got)
	}
	if a := s.waitAnswer(ctx, 1); !bytes.Equal(a.GetSent(), first) {
		t.Fatalf("answer after the restart = %v", a)
	}
}

// TestDuplicateScope: SENDER compares MSH-3 and MSH-4 (another application
// with the same MSH-10 is stored; the same one from another connection is
// not); REMOTE_ADDRESS compares the peer's IP (another sender from the same
// IP is a duplicate, the same message from another IP is not).
func TestDuplicateScope(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	sender := s.startListener(ctx, "by-sender", dedupConfig("", time.Hour, switchboardv1.DuplicateScope_DUPLICATE_SCOPE_SENDER))
	byAddr := s.startListener(ctx, "by-addr", dedupConfig("", time.Hour, switchboardv1.DuplicateScope_DUPLICATE_SCOPE_REMOTE_ADDRESS))

	p := dialPeer(t, addr(sender))
	checkAck(t, fromSender("APP-A", "X-1"), p.exchange(fromSender("APP-A", "X-1")))
	checkAck(t, fromSender("APP-B", "X-1"), p.exchange(fromSender("APP-B", "X-1")))
	if got := s.lastSeq(); got != 2 {
		t.Fatalf("SENDER: two senders' X-1 -> %d records, want 2", got)
	}
	first := dialPeer(t, addr(sender)).exchange(fromSender("APP-A", "X-1"))
	checkAck(t, fromSender("APP-A", "X-1"), first)
	if got := s.lastSeq(); got != 2 {
		t.Fatalf("SENDER: APP-A's X-1 again on a new connection -> %d records, want 2", got)
	}
	// The scope is the listener's: the same message on another listener is
	// another listener's business.
	q := dialPeer(t, addr(byAddr))
	ackA := q.exchange(fromSender("APP-A", "X-1"))
	checkAck(t, fromSender("APP-A", "X-1"), ackA)
	if got := s.lastSeq(); got != 3 {
		t.Fatalf("another listener -> %d records, want 3", got)
	}
	// REMOTE_ADDRESS: another sender, same IP: a duplicate, answered with
	// the first one's ACK (addressed to APP-A).
	if got := q.exchange(fromSender("APP-B", "X-1")); !bytes.Equal(got, ackA) {
		t.Fatalf("REMOTE_ADDRESS: APP-B's X-1 from the same IP answered %q, want the first ACK %q", got, ackA)
	}
	if got := s.lastSeq(); got != 3 {
		t.Fatalf("REMOTE_ADDRESS: APP-B's X-1 from the same IP -> %d records, want 3", got)
	}
	// Another IP: not one.
	r := dialPeerFrom(t, addr(byAddr), "127.0.0.2")
	checkAck(t, fromSender("APP-A", "X-1"), r.exchange(fromSender("APP-A", "X-1")))
	if got := s.lastSeq(); got != 4 {
		t.Fatalf("REMOTE_ADDRESS: X-1 from another IP -> %d records, want 4", got)
	}
}

// dialPeerFrom is dialPeer from the loopback address src, skipping the test
// where src cannot be bound.
func dialPeerFrom(t *testing.T, addr, src string) *peer {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot dial from %s here: %v", src, err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &peer{t: t, nc: nc, dec: transport.NewDecoder(nc, mllp)}
}

// TestDuplicateAfterWindow: a resend after the window is stored again and
// answered afresh.
func TestDuplicateAfterWindow(t *testing.T) {
	ctx := testCtx(t)
	const window = 100 * time.Millisecond
	s := startServer(t, t.TempDir())
	l := s.startListener(ctx, "adt", dedupConfig("", window, switchboardv1.DuplicateScope_DUPLICATE_SCOPE_SENDER))
	p := dialPeer(t, addr(l))
	msg := hl7Message("LATE-1")
	first := p.exchange(msg)
	time.Sleep(2 * window)
	again := p.exchange(msg)
	checkAck(t, msg, again)
	if got := s.lastSeq(); got != 2 {
		t.Fatalf("resend after the window -> %d records, want 2", got)
	}
	if bytes.Equal(first, again) {
		t.Fatal("resend after the window got the first ACK again; want a fresh one")
	}
	if a, _ := hl7.ParseAck(again); a.Code != hl7.AA {
		t.Fatalf("resend after the window answered %s", a.Code)
	}
}

// TestDuplicatesNeedHL7: duplicate suppression on a listener whose policy is
// not HL7 is refused with INVALID_ARGUMENT.
func TestDuplicatesNeedHL7(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	cfg := dedupConfig("127.0.0.1:0", time.Hour, switchboardv1.DuplicateScope_DUPLICATE_SCOPE_SENDER)
	cfg.AckPolicy = &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_SingleByte{SingleByte: &switchboardv1.SingleByteAckPolicy{}}}
	_, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "bytes", Config: cfg})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("StartListener with duplicates and the single-byte policy = %v, want INVALID_ARGUMENT", err)
	}
	cfg.AckPolicy = &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_Hl7{Hl7: &switchboardv1.Hl7AckPolicy{}}}
	if _, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "hl7", Config: cfg}); err != nil {
		t.Fatalf("StartListener with duplicates and the HL7 policy: %v", err)
	}
}
