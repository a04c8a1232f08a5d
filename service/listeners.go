package service

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

func notFound(kind, id string) error {
	return fmt.Errorf("%s %q: %w", kind, id, errNotFound)
}

// StartListener binds a listener, or returns the existing one when the same
// id is started again with the same config.
func (s *Service) StartListener(ctx context.Context, req *switchboardv1.StartListenerRequest) (*switchboardv1.StartListenerResponse, error) {
	cc, err := listenerConnConfig(req.GetConfig())
	if err != nil {
		return nil, toStatus(err)
	}
	id := req.GetListenerId()
	if id == "" {
		id = transport.NewID("l-")
	}
	// Held across the bind so two calls with one id cannot both bind; a
	// bind does not block.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, toStatus(errShuttingDown)
	}
	if e, ok := s.listeners[id]; ok {
		if !proto.Equal(e.config, req.GetConfig()) {
			return nil, toStatus(fmt.Errorf("listener %q exists with a different config: %w", id, errExists))
		}
		return &switchboardv1.StartListenerResponse{Listener: listenerToProto(e)}, nil
	}
	l, err := transport.Listen(ctx, transport.ListenerConfig{
		ID:             id,
		Address:        req.GetConfig().GetAddress(),
		Conn:           cc,
		MaxConnections: int(req.GetConfig().GetMaxConnections()),
		Sink:           s.sink,
		Logger:         s.log,
		OnOpen:         s.register,
		OnClose:        s.forget,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	e := &listenerEntry{l: l, config: proto.CloneOf(req.GetConfig()), started: time.Now()}
	s.listeners[id] = e
	return &switchboardv1.StartListenerResponse{Listener: listenerToProto(e)}, nil
}

// StopListener stops accepting, drains the listener's connections and
// removes it.
func (s *Service) StopListener(ctx context.Context, req *switchboardv1.StopListenerRequest) (*switchboardv1.StopListenerResponse, error) {
	e, err := s.listener(req.GetListenerId())
	if err != nil {
		return nil, toStatus(err)
	}
	deadline := time.Now().Add(durationOr(req.GetDrainTimeout(), defaultDrainTimeout))
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	e.l.Stop(deadline)
	s.mu.Lock()
	if s.listeners[req.GetListenerId()] == e {
		delete(s.listeners, req.GetListenerId())
	}
	s.mu.Unlock()
	return &switchboardv1.StopListenerResponse{Listener: listenerToProto(e)}, nil
}

// GetListener returns one listener.
func (s *Service) GetListener(_ context.Context, req *switchboardv1.GetListenerRequest) (*switchboardv1.GetListenerResponse, error) {
	e, err := s.listener(req.GetListenerId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &switchboardv1.GetListenerResponse{Listener: listenerToProto(e)}, nil
}

// ListListeners returns every listener, ordered by id.
func (s *Service) ListListeners(context.Context, *switchboardv1.ListListenersRequest) (*switchboardv1.ListListenersResponse, error) {
	s.mu.Lock()
	entries := make([]*listenerEntry, 0, len(s.listeners))
	for _, e := range s.listeners {
		entries = append(entries, e)
	}
	s.mu.Unlock()
	out := make([]*switchboardv1.Listener, 0, len(entries))
	for _, e := range entries {
		out = append(out, listenerToProto(e))
	}
	slices.SortFunc(out, func(a, b *switchboardv1.Listener) int { return strings.Compare(a.GetListenerId(), b.GetListenerId()) })
	return &switchboardv1.ListListenersResponse{Listeners: out}, nil
}
