package service

import (
	"context"
	"errors"
	"time"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// Connect creates an outbound connection and opens it, or returns the
// existing one (reopened if it had closed) when the same id is connected
// again with the same config.
func (s *Service) Connect(ctx context.Context, req *switchboardv1.ConnectRequest) (*switchboardv1.ConnectResponse, error) {
	cfg, err := s.resolveDial(req.GetConfig())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	v, err := s.reg.Connect(ctx, req.GetConnectionId(), req.GetConfig(), cfg)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.ConnectResponse{Connection: s.connToProto(v)}, nil
}

// Disconnect closes a connection, inbound or outbound.
func (s *Service) Disconnect(ctx context.Context, req *switchboardv1.DisconnectRequest) (*switchboardv1.DisconnectResponse, error) {
	v, err := s.reg.Disconnect(ctx, req.GetConnectionId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.DisconnectResponse{Connection: s.connToProto(v)}, nil
}

// GetConnection returns one connection.
func (s *Service) GetConnection(ctx context.Context, req *switchboardv1.GetConnectionRequest) (*switchboardv1.GetConnectionResponse, error) {
	v, err := s.reg.Connection(req.GetConnectionId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.GetConnectionResponse{Connection: s.connToProto(v)}, nil
}

// ListConnections returns a page of connections, ordered by id.
func (s *Service) ListConnections(ctx context.Context, req *switchboardv1.ListConnectionsRequest) (*switchboardv1.ListConnectionsResponse, error) {
	filter := registry.ConnFilter{ListenerID: req.GetListenerId(), Direction: directionFromProto(req.GetDirection())}
	list := func(after string, n int) ([]registry.ConnectionView, bool) {
		return s.reg.Connections(filter, after, n)
	}
	cs, next, err := page(req.GetPageToken(), req.GetPageSize(), list,
		func(v registry.ConnectionView) string { return v.ID }, s.connToProto)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &switchboardv1.ListConnectionsResponse{Connections: cs, NextPageToken: next}, nil
}

// sendDeadlineMargin is the most a Send ends before the caller's deadline.
const sendDeadlineMargin = 200 * time.Millisecond

// Send writes one message and waits for the peer's acknowledgement (direct
// mode). On an outbound connection that is reconnecting it first waits,
// within the call's deadline, for the connection to open, unless the caller
// asked to fail fast; it also waits when the session it was given closes
// before the message could be written.
func (s *Service) Send(ctx context.Context, req *switchboardv1.SendRequest) (*switchboardv1.SendResponse, error) {
	if req.GetQueued() || req.GetIdempotencyKey() != "" {
		return s.sendQueued(ctx, req) // messages.go
	}
	id, failFast := req.GetConnectionId(), req.GetFailFast()
	c, err := s.reg.Conn(id)
	if err != nil && (failFast || !errors.Is(err, registry.ErrReconnecting)) {
		return nil, s.toStatus(ctx, err)
	}
	// Answer a little before the caller's deadline: when the deadline fires
	// on the client first, the client gets a bare DEADLINE_EXCEEDED and
	// cannot learn whether the message was written.
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-min(time.Until(d)/5, sendDeadlineMargin)))
		defer cancel()
	}
	var lost *transport.Conn // a session that closed under this Send
	for {
		if errors.Is(err, registry.ErrReconnecting) && !failFast {
			c, err = s.reg.WaitOpen(ctx, id)
		}
		if err != nil {
			// The connection existed when the Send began: whatever ended
			// the wait, nothing was written.
			return nil, notSentStatus(err, id)
		}
		var res transport.SendResult
		span := startSendSpan(ctx, c, req.GetPayload())
		res, err = c.Send(ctx, req.GetPayload(), durationOr(req.GetAckTimeout(), 0))
		endSendSpan(span, res, err)
		var se *transport.SendError
		switch {
		case err == nil:
			return sendResultToProto(res), nil
		case !errors.As(err, &se):
			return nil, s.toStatus(ctx, err)
		case se.Cause == transport.CauseNotOpen && !se.Written && !failFast &&
			c.Direction() == transport.Outbound && c != lost && ctx.Err() == nil:
			// Lost just before the write: wait for the reconnect.
			lost = c
			c, err = s.reg.Conn(id)
			continue
		}
		return nil, sendStatus(se, id)
	}
}
