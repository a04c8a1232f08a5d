package service_test

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/journaltest"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal/pebbletest"
)

// TestJournalFailureNeverAcks: when the disk under the journal fails (WAL
// syncs fail), peers get AR, never AA, for that message and every later one;
// the journal's Health reports the failure; what was acknowledged before
// stays readable; once the disk works again the journal recovers by itself
// and the next message is acknowledged and delivered after the first.
func TestJournalFailureNeverAcks(t *testing.T) {
	ctx := testCtx(t)
	fs := &pebbletest.FaultFS{FS: vfs.Default}
	j, err := pebblejournal.Open(t.TempDir(), pebblejournal.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	s := startServerWith(t, j)
	l := s.startListener(ctx, "adt", nil)
	p := dialPeer(t, addr(l))
	p.write(mllp.AppendFrame(nil, hl7Message("GOOD")))
	checkAck(t, hl7Message("GOOD"), p.readFrame())

	_, changed := j.Health()
	fs.FailSyncs.Store(true)
	s.journalBroken = true
	for _, id := range []string{"LOST-1", "LOST-2"} {
		p.write(mllp.AppendFrame(nil, hl7Message(id)))
		a, err := hl7.ParseAck(p.readFrame())
		if err != nil || a.Code != hl7.AR || a.ControlID != id {
			t.Fatalf("answer while the disk fails = %+v, %v; want AR for %s", a, err, id)
		}
	}
	select {
	case <-changed:
	default:
		t.Error("the failure did not signal Health watchers")
	}
	if err, _ := j.Health(); !errors.Is(err, journal.ErrUnavailable) {
		t.Errorf("journal Health = %v, want ErrUnavailable", err)
	}
	if got := s.lastSeq(); got != 1 {
		t.Errorf("LastSeq while failing = %d, want 1", got)
	}
	stream, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1)})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil || len(resp.GetMessages()) != 1 || resp.GetMessages()[0].GetControlId() != "GOOD" {
		t.Fatalf("Receive while failing = %v, %v; want GOOD only", resp, err)
	}

	fs.FailSyncs.Store(false) // the disk recovers, and so does the journal
	journaltest.WaitHealthy(t, j)
	p.write(mllp.AppendFrame(nil, hl7Message("AFTER")))
	checkAck(t, hl7Message("AFTER"), p.readFrame())
	// The stream stayed open across the failure and gets AFTER next; a
	// refused message that reached the disk before its sync failed may come
	// first (it was never acknowledged, so its sender resends it).
	for got := ""; got != "AFTER"; {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Receive after recovery: %v", err)
		}
		for _, m := range resp.GetMessages() {
			if got = m.GetControlId(); got != "AFTER" && got != "LOST-1" && got != "LOST-2" {
				t.Fatalf("Receive after recovery got %s, want AFTER", got)
			}
		}
	}
}
