package service

import (
	"testing"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// TestEventFilter: listener, connection and kinds combine with AND; no
// filter (or only UNSPECIFIED kinds) takes everything.
func TestEventFilter(t *testing.T) {
	opened := &switchboardv1.Event{Kind: switchboardv1.EventKind_EVENT_KIND_CONNECTION_OPENED, ListenerId: "adt", ConnectionId: "c-1"}
	closed := &switchboardv1.Event{Kind: switchboardv1.EventKind_EVENT_KIND_CONNECTION_CLOSED, ListenerId: "adt", ConnectionId: "c-2"}
	journal := &switchboardv1.Event{Kind: switchboardv1.EventKind_EVENT_KIND_JOURNAL_FAILED}
	outbound := &switchboardv1.Event{Kind: switchboardv1.EventKind_EVENT_KIND_CONNECTION_RECONNECTING, ConnectionId: "lab"}
	all := []*switchboardv1.Event{opened, closed, journal, outbound}
	for _, tc := range []struct {
		name string
		req  *switchboardv1.WatchEventsRequest
		want []*switchboardv1.Event
	}{
		{"none", &switchboardv1.WatchEventsRequest{}, all},
		{"unspecified kind", &switchboardv1.WatchEventsRequest{Kinds: []switchboardv1.EventKind{0}}, all},
		{"listener", &switchboardv1.WatchEventsRequest{ListenerId: "adt"}, []*switchboardv1.Event{opened, closed}},
		{"connection", &switchboardv1.WatchEventsRequest{ConnectionId: "lab"}, []*switchboardv1.Event{outbound}},
		{"kinds", &switchboardv1.WatchEventsRequest{Kinds: []switchboardv1.EventKind{
			switchboardv1.EventKind_EVENT_KIND_CONNECTION_CLOSED, switchboardv1.EventKind_EVENT_KIND_JOURNAL_FAILED}},
			[]*switchboardv1.Event{closed, journal}},
		{"listener and kind", &switchboardv1.WatchEventsRequest{ListenerId: "adt",
			Kinds: []switchboardv1.EventKind{switchboardv1.EventKind_EVENT_KIND_CONNECTION_OPENED}}, []*switchboardv1.Event{opened}},
		{"listener and connection", &switchboardv1.WatchEventsRequest{ListenerId: "adt", ConnectionId: "lab"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			match := eventFilter(tc.req)
			var got []*switchboardv1.Event
			for _, e := range all {
				if match == nil || match(e) {
					got = append(got, e)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("filter took %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("filter took %v, want %v", got, tc.want)
				}
			}
		})
	}
}
