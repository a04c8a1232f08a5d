package service

import (
	"context"
	"time"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// StartListener creates a listener and binds it, or returns the existing one
// when the same id is started again with the same config.
func (s *Service) StartListener(ctx context.Context, req *switchboardv1.StartListenerRequest) (*switchboardv1.StartListenerResponse, error) {
	if err := checkConsumerAck(req.GetConfig()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if err := checkDuplicates(req.GetConfig()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	cfg, err := s.resolveListener(req.GetConfig())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	v, err := s.reg.StartListener(ctx, req.GetListenerId(), req.GetConfig(), cfg)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if err := s.ensureDecidingConsumer(ctx, v.ID, req.GetConfig().GetConsumerAck()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.StartListenerResponse{Listener: listenerToProto(v)}, nil
}

// StopListener stops accepting, drains the listener's connections and
// removes it.
func (s *Service) StopListener(ctx context.Context, req *switchboardv1.StopListenerRequest) (*switchboardv1.StopListenerResponse, error) {
	deadline := time.Now().Add(durationOr(req.GetDrainTimeout(), transport.DefaultDrainTimeout))
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	v, err := s.reg.StopListener(ctx, req.GetListenerId(), deadline)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.StopListenerResponse{Listener: listenerToProto(v)}, nil
}

// GetListener returns one listener.
func (s *Service) GetListener(ctx context.Context, req *switchboardv1.GetListenerRequest) (*switchboardv1.GetListenerResponse, error) {
	v, err := s.reg.Listener(req.GetListenerId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.GetListenerResponse{Listener: listenerToProto(v)}, nil
}

// ListListeners returns a page of listeners, ordered by id.
func (s *Service) ListListeners(ctx context.Context, req *switchboardv1.ListListenersRequest) (*switchboardv1.ListListenersResponse, error) {
	ls, next, err := page(req.GetPageToken(), req.GetPageSize(), s.reg.Listeners,
		func(v registry.ListenerView) string { return v.ID }, listenerToProto)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.ListListenersResponse{Listeners: ls, NextPageToken: next}, nil
}
