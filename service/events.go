package service

import (
	"context"
	"errors"

	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/observe"
)

// DefaultEventBuffer is how many events a WatchEvents stream may have
// waiting to be sent when Config.EventBuffer is zero. Events are small
// (about 150 bytes), so a full buffer is some 150 KiB per watcher; a
// watcher that falls further behind is cut off.
const DefaultEventBuffer = 1024

// eventBatch is the most events sent in one response.
const eventBatch = 256

// WatchEvents streams events from the bus: the recent ones first when asked,
// then new ones as they are published, several per response when several
// are ready. It never slows the bus: a watcher whose buffer fills is cut off
// by it, and its stream ends, after the events already buffered, with
// RESOURCE_EXHAUSTED (WATCHER_TOO_SLOW). The stream ends with UNAVAILABLE
// when the service shuts down, after the events published during the
// shutdown.
func (s *Service) WatchEvents(req *switchboardv1.WatchEventsRequest, stream switchboardv1.SwitchboardService_WatchEventsServer) error {
	match := eventFilter(req)
	// Subscribe before reading the recent events, so none falls between
	// the two; those both hold are sent once (last).
	sub := s.events.Subscribe(match, s.eventBuf)
	defer sub.Close()
	ctx := stream.Context()

	// Headers now, so the client knows the subscription is live before the
	// first event.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	var last uint64 // the sequence of the last event sent
	if req.GetReplayRecent() {
		recent := s.events.Recent(0, match)
		for len(recent) > 0 {
			n := min(len(recent), eventBatch)
			if err := stream.Send(&switchboardv1.WatchEventsResponse{Events: recent[:n]}); err != nil {
				return err
			}
			last = recent[n-1].GetSequence()
			recent = recent[n:]
		}
	}
	resp := &switchboardv1.WatchEventsResponse{}
	// add appends e unless it was sent already (by the replay).
	add := func(e *switchboardv1.Event) {
		if e.GetSequence() > last {
			resp.Events = append(resp.Events, e)
		}
	}
	// send sends what add gathered; ended reports that the subscription
	// was over (cut off) when the batch was gathered.
	send := func() error {
		if len(resp.Events) == 0 {
			return nil
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		last = resp.Events[len(resp.Events)-1].GetSequence()
		clear(resp.Events)
		resp.Events = resp.Events[:0]
		return nil
	}
	// gather adds the events ready now, up to a batch; it reports whether
	// the subscription has ended.
	gather := func() (ended bool) {
		for len(resp.Events) < eventBatch {
			select {
			case e, ok := <-sub.C():
				if !ok {
					return true
				}
				add(e)
			default:
				return false
			}
		}
		return false
	}
	for {
		var ended bool
		select {
		case e, ok := <-sub.C():
			if ok {
				add(e)
				ended = gather()
			} else {
				ended = true
			}
		case <-ctx.Done():
			return s.eventsEnded(ctx, nil, last)
		case <-s.ctx.Done():
			// What the shutdown itself published (connections drained,
			// listeners stopped) goes out first.
			for {
				ended = gather()
				if err := send(); err != nil {
					return err
				}
				if ended || len(sub.C()) == 0 {
					return s.eventsEnded(ctx, nil, last)
				}
			}
		}
		if err := send(); err != nil {
			return err
		}
		if ended {
			// Cut off: the events it was given are all sent now.
			return s.eventsEnded(ctx, sub.Err(), last)
		}
	}
}

// eventsEnded is the status a WatchEvents stream ends with, last being
// the sequence of the last event it sent: RESOURCE_EXHAUSTED
// (WATCHER_TOO_SLOW) when it was cut off, UNAVAILABLE (SHUTTING_DOWN) when
// the service shut down, the context's status when the client went away.
func (s *Service) eventsEnded(ctx context.Context, err error, last uint64) error {
	var slow *observe.TooSlowError
	switch {
	case errors.As(err, &slow):
		// Everything it was given has been sent since: say so exactly.
		return s.toStatus(ctx, &observe.TooSlowError{LastSequence: last, Buffer: slow.Buffer})
	case s.ctx.Err() != nil:
		return shuttingDownStatus()
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	}
	return s.toStatus(ctx, err)
}

// eventFilter returns whether an event passes the request's filters (nil:
// every event does). It runs inside the bus's Publish, so it only compares.
func eventFilter(req *switchboardv1.WatchEventsRequest) func(*switchboardv1.Event) bool {
	listener, conn := req.GetListenerId(), req.GetConnectionId()
	var kinds map[switchboardv1.EventKind]bool
	for _, k := range req.GetKinds() {
		if k != switchboardv1.EventKind_EVENT_KIND_UNSPECIFIED {
			if kinds == nil {
				kinds = make(map[switchboardv1.EventKind]bool)
			}
			kinds[k] = true
		}
	}
	if listener == "" && conn == "" && kinds == nil {
		return nil
	}
	return func(e *switchboardv1.Event) bool {
		return (listener == "" || e.GetListenerId() == listener) && (conn == "" || e.GetConnectionId() == conn) &&
			(kinds == nil || kinds[e.GetKind()])
	}
}
