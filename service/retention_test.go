package service_test

import (
	"context"
	"io"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
)

// TestReceiveNotRetained: once retention has deleted the oldest records, a
// Receive from a deleted sequence ends with OUT_OF_RANGE, reason
// NOT_RETAINED, naming the oldest retained sequence; start_sequence 1 still
// replays everything retained, and ListMessages lists from there.
func TestReceiveNotRetained(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	// Records in four batches 50 ms apart, on a journal that keeps them
	// 640 ms (so it marks time every 10 ms); then a restart after that
	// age: the pass at Open deletes all but the last batch.
	const maxAge = 640 * time.Millisecond
	j, err := pebblejournal.Open(dir, pebblejournal.Options{MaxAge: maxAge})
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	for i := range n {
		if i%100 == 0 {
			time.Sleep(50 * time.Millisecond)
		}
		r := &journal.Record{Kind: journal.KindMessage, ListenerID: "adt", ControlID: "C" + strconv.Itoa(i), Time: time.Now(), Payload: []byte("MSH|^~\\&|A|B|C|D|||ADT^A01|C" + strconv.Itoa(i) + "|P|2.5\r")}
		if _, err := j.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(maxAge + 100*time.Millisecond)
	j, err = pebblejournal.Open(dir, pebblejournal.Options{MaxAge: maxAge})
	if err != nil {
		t.Fatal(err)
	}
	s := startServerWith(t, j)
	var first uint64
	for deadline := time.Now().Add(10 * time.Second); first <= 2; time.Sleep(10 * time.Millisecond) {
		if first, err = j.FirstSeq(ctx); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("retention never ran: FirstSeq %d", first)
		}
	}
	t.Logf("FirstSeq %d of %d after retention", first, n)

	stream, err := s.client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(first - 1)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	ei := errorInfo(err)
	if status.Code(err) != codes.OutOfRange || ei.GetReason() != "NOT_RETAINED" ||
		ei.GetMetadata()["first_sequence"] != strconv.FormatUint(first, 10) {
		t.Errorf("Receive from %d: %v (%v); want OUT_OF_RANGE NOT_RETAINED first_sequence %d", first-1, err, ei, first)
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err = s.client.Receive(rctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1)})
	if err != nil {
		t.Fatal(err)
	}
	want := first
	for want <= n {
		resp, err := stream.Recv()
		if err == io.EOF || err != nil {
			t.Fatalf("Receive from 1 at %d: %v", want, err)
		}
		for _, m := range resp.GetMessages() {
			if m.GetSequence() != want {
				t.Fatalf("Receive from 1 gave %d; want %d", m.GetSequence(), want)
			}
			want++
		}
	}
	cancel()

	// Retention may have deleted into the last batch (a slow batch spans
	// more than one time mark), leaving fewer than a page.
	page, err := s.client.ListMessages(ctx, &switchboardv1.ListMessagesRequest{Direction: switchboardv1.Direction_DIRECTION_INBOUND, PageSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	if ms := page.GetMessages(); len(ms) != int(min(5, n+1-first)) || ms[0].GetMessageId() != "in-"+strconv.FormatUint(first, 10) {
		t.Errorf("ListMessages inbound starts at %v; want in-%d, and %d messages", ms, first, min(5, n+1-first))
	}
}
