package service_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
)

// listIDs lists every message matching req (whose paging fields it sets),
// a page at a time, and returns their ids in order and the number of pages.
func (s *server) listIDs(ctx context.Context, req *switchboardv1.ListMessagesRequest, pageSize int32) ([]string, int) {
	s.t.Helper()
	var ids []string
	pages := 0
	req.PageSize, req.PageToken = pageSize, ""
	for {
		resp, err := s.client.ListMessages(ctx, req)
		if err != nil {
			s.t.Fatalf("ListMessages(%v): %v", req, err)
		}
		pages++
		if pageSize > 0 && len(resp.GetMessages()) > int(pageSize) {
			s.t.Fatalf("page of %d messages, asked for %d", len(resp.GetMessages()), pageSize)
		}
		for _, m := range resp.GetMessages() {
			ids = append(ids, m.GetMessageId())
			if !req.GetIncludePayloads() && len(m.GetPayload()) > 0 {
				s.t.Errorf("%s has its payload without include_payloads", m.GetMessageId())
			}
		}
		if resp.GetNextPageToken() == "" {
			return ids, pages
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// TestListMessages: every filter of ListMessages, alone and together, over
// outbound messages (in connection and queue order) and then inbound ones
// (in journal order); paging returns each message once; payloads only when
// asked for. GetMessage reads both kinds; ResolveMessage refuses what is
// not in doubt.
func TestListMessages(t *testing.T) {
	ctx := testCtx(t)
	s := startOutboxServer(t, t.TempDir())
	peer := startTestPeer(t, byCount(func(id string, _ int) hl7.AckCode {
		if id == "L-BAD" {
			return hl7.AE
		}
		return hl7.AA
	}))
	s.connectQueued(ctx, "lab", peer.addr(), fastPolicy(nil), 5*time.Second)
	s.connectQueued(ctx, "ris", peer.addr(), fastPolicy(nil), 5*time.Second)
	out := []string{
		s.queue(ctx, "lab", hl7Message("L-1"), ""),
		s.queue(ctx, "lab", hl7Message("L-BAD"), ""),
		s.queue(ctx, "lab", hl7Message("L-2"), ""),
		s.queue(ctx, "ris", hl7Message("R-1"), ""),
	}
	for i, id := range out {
		want := stateAccepted
		if i == 1 {
			want = stateFailed
		}
		s.waitState(ctx, id, want)
	}
	time.Sleep(5 * time.Millisecond) // the clock moves on between the two groups
	mid := time.Now()
	time.Sleep(5 * time.Millisecond)

	l := s.startListener(ctx, "adt", nil)
	p := dialPeer(t, addr(l))
	first := s.lastSeq() + 1
	var in []string
	for i, c := range []string{"I-1", "I-2", "I-3"} {
		p.write(mllp.AppendFrame(nil, hl7Message(c)))
		p.readFrame()
		in = append(in, "in-"+strconv.FormatUint(first+uint64(i), 10))
	}

	all := append(append([]string{}, out...), in...)
	// Sorted by connection id: "lab" < "ris".
	for _, tc := range []struct {
		name string
		req  *switchboardv1.ListMessagesRequest
		want []string
	}{
		{"everything", &switchboardv1.ListMessagesRequest{}, all},
		{"connection", &switchboardv1.ListMessagesRequest{ConnectionId: "lab"}, out[:3]},
		{"listener", &switchboardv1.ListMessagesRequest{ListenerId: "adt"}, in},
		{"outbound", &switchboardv1.ListMessagesRequest{Direction: switchboardv1.Direction_DIRECTION_OUTBOUND}, out},
		{"inbound", &switchboardv1.ListMessagesRequest{Direction: switchboardv1.Direction_DIRECTION_INBOUND}, in},
		{"failed", &switchboardv1.ListMessagesRequest{States: []switchboardv1.MessageState{stateFailed}}, out[1:2]},
		{"received", &switchboardv1.ListMessagesRequest{States: []switchboardv1.MessageState{stateReceived}}, in},
		{"accepted or received", &switchboardv1.ListMessagesRequest{States: []switchboardv1.MessageState{stateAccepted, stateReceived}},
			[]string{out[0], out[2], out[3], in[0], in[1], in[2]}},
		{"queued", &switchboardv1.ListMessagesRequest{States: []switchboardv1.MessageState{stateQueued}}, nil},
		{"control id, outbound", &switchboardv1.ListMessagesRequest{ControlId: "L-BAD"}, out[1:2]},
		{"control id, inbound", &switchboardv1.ListMessagesRequest{ControlId: "I-2"}, in[1:2]},
		{"since", &switchboardv1.ListMessagesRequest{StartTime: timestamppb.New(mid)}, in},
		{"until", &switchboardv1.ListMessagesRequest{EndTime: timestamppb.New(mid)}, out},
		{"connection and state", &switchboardv1.ListMessagesRequest{ConnectionId: "lab", States: []switchboardv1.MessageState{stateAccepted}},
			[]string{out[0], out[2]}},
		{"listener and outbound", &switchboardv1.ListMessagesRequest{ListenerId: "adt", Direction: switchboardv1.Direction_DIRECTION_OUTBOUND}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, size := range []int32{0, 1, 2, 1000} {
				got, pages := s.listIDs(ctx, tc.req, size)
				if strings.Join(got, " ") != strings.Join(tc.want, " ") {
					t.Errorf("page size %d: %v, want %v", size, got, tc.want)
				}
				if size == 1 && pages < len(tc.want) {
					t.Errorf("page size 1: %d pages for %d messages", pages, len(tc.want))
				}
			}
		})
	}

	// Payloads only when asked for.
	resp, err := s.client.ListMessages(ctx, &switchboardv1.ListMessagesRequest{IncludePayloads: true})
	if err != nil || len(resp.GetMessages()) != len(all) {
		t.Fatalf("ListMessages with payloads = %v, %v", resp, err)
	}
	for _, m := range resp.GetMessages() {
		if !bytes.Equal(m.GetPayload(), hl7Message(m.GetControlId())) {
			t.Errorf("%s payload %q", m.GetMessageId(), m.GetPayload())
		}
	}

	// GetMessage, both kinds.
	o := s.getMessage(ctx, out[1])
	if o.GetState() != stateFailed || !strings.Contains(o.GetFailure(), "AE") || o.GetAck().GetCode() != switchboardv1.AckCode_ACK_CODE_AE ||
		!bytes.Equal(o.GetPayload(), hl7Message("L-BAD")) {
		t.Errorf("GetMessage(%s) = %v", out[1], o)
	}
	i := s.getMessage(ctx, in[0])
	if i.GetState() != stateReceived || i.GetDirection() != switchboardv1.Direction_DIRECTION_INBOUND || i.GetListenerId() != "adt" ||
		i.GetControlId() != "I-1" || i.GetMessageType() != "ADT^A01^ADT_A01" || i.GetSequence() != first ||
		i.GetKind() != switchboardv1.RecordKind_RECORD_KIND_MESSAGE || !bytes.Equal(i.GetPayload(), hl7Message("I-1")) {
		t.Errorf("GetMessage(%s) = %v", in[0], i)
	}
	for _, tc := range []struct {
		id     string
		code   codes.Code
		reason string
	}{
		{"in-999999", codes.NotFound, "NOT_FOUND"},
		{"out-lab-99", codes.NotFound, "NOT_FOUND"},
		{"out-nope-1", codes.NotFound, "NOT_FOUND"},
		{"bogus", codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"in-01", codes.InvalidArgument, "INVALID_ARGUMENT"},
	} {
		_, err := s.client.GetMessage(ctx, &switchboardv1.GetMessageRequest{MessageId: tc.id})
		if status.Code(err) != tc.code || errorInfo(err).GetReason() != tc.reason {
			t.Errorf("GetMessage(%s) = %v; want %v %s", tc.id, err, tc.code, tc.reason)
		}
	}

	// ResolveMessage: only for messages held in doubt.
	for _, tc := range []struct {
		id     string
		code   codes.Code
		reason string
	}{
		{out[0], codes.FailedPrecondition, "NOT_IN_DOUBT"},
		{in[0], codes.FailedPrecondition, "NOT_IN_DOUBT"},
		{"out-lab-99", codes.NotFound, "NOT_FOUND"},
		{"in-999999", codes.NotFound, "NOT_FOUND"},
	} {
		_, err := s.client.ResolveMessage(ctx, &switchboardv1.ResolveMessageRequest{MessageId: tc.id, Resolution: switchboardv1.Resolution_RESOLUTION_FAIL})
		if status.Code(err) != tc.code || errorInfo(err).GetReason() != tc.reason {
			t.Errorf("ResolveMessage(%s) = %v; want %v %s", tc.id, err, tc.code, tc.reason)
		}
	}
	if st := s.getMessage(ctx, out[0]).GetState(); st != stateAccepted {
		t.Errorf("a refused ResolveMessage changed the message to %v", st)
	}

	// A page token is ours or refused.
	_, err = s.client.ListMessages(ctx, &switchboardv1.ListMessagesRequest{PageToken: "bm90LW91cnM"})
	if status.Code(err) != codes.InvalidArgument || badRequestFields(err) != "page_token" {
		t.Errorf("ListMessages with a foreign token = %v; want INVALID_ARGUMENT on page_token", err)
	}
}
