package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// Connect opens an outbound connection, or returns the open one when the
// same id is connected again with the same config.
func (s *Service) Connect(ctx context.Context, req *switchboardv1.ConnectRequest) (*switchboardv1.ConnectResponse, error) {
	cfg := req.GetConfig()
	cc, err := dialConnConfig(cfg)
	if err != nil {
		return nil, toStatus(err)
	}
	id := req.GetConnectionId()
	if id == "" {
		id = transport.NewID("c-")
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, toStatus(errShuttingDown)
	}
	if e, ok := s.conns[id]; ok {
		s.mu.Unlock()
		if e.config == nil || !proto.Equal(e.config, cfg) {
			return nil, toStatus(fmt.Errorf("connection %q exists with a different config: %w", id, errExists))
		}
		return &switchboardv1.ConnectResponse{Connection: connToProto(e)}, nil
	}
	if s.dialing[id] {
		s.mu.Unlock()
		return nil, toStatus(fmt.Errorf("a Connect for connection %q is in progress: %w", id, errExists))
	}
	s.dialing[id] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.dialing, id)
		s.mu.Unlock()
	}()

	c, err := transport.Dial(ctx, transport.DialConfig{
		ID:             id,
		Address:        cfg.GetAddress(),
		Conn:           cc,
		ConnectTimeout: durationOr(cfg.GetConnectTimeout(), transport.DefaultConnectTimeout),
		Sink:           s.sink,
		Logger:         s.log,
		OnClose:        s.forget,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	e := &connEntry{c: c, config: proto.CloneOf(cfg)}
	// Register unless it closed already (the peer hung up at once). Its
	// OnClose runs after its state turns closed and needs s.mu, so it
	// either is skipped here or removes the entry later.
	s.mu.Lock()
	closing := s.closing
	if !closing && c.State() != transport.StateClosed {
		s.conns[id] = e
	}
	s.mu.Unlock()
	if closing {
		c.Close()
		return nil, toStatus(errShuttingDown)
	}
	return &switchboardv1.ConnectResponse{Connection: connToProto(e)}, nil
}

// Disconnect closes a connection, inbound or outbound.
func (s *Service) Disconnect(_ context.Context, req *switchboardv1.DisconnectRequest) (*switchboardv1.DisconnectResponse, error) {
	e, err := s.conn(req.GetConnectionId())
	if err != nil {
		return nil, toStatus(err)
	}
	e.c.Close()
	return &switchboardv1.DisconnectResponse{Connection: connToProto(e)}, nil
}

// GetConnection returns one connection.
func (s *Service) GetConnection(_ context.Context, req *switchboardv1.GetConnectionRequest) (*switchboardv1.GetConnectionResponse, error) {
	e, err := s.conn(req.GetConnectionId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &switchboardv1.GetConnectionResponse{Connection: connToProto(e)}, nil
}

// ListConnections returns open connections, ordered by id.
func (s *Service) ListConnections(_ context.Context, req *switchboardv1.ListConnectionsRequest) (*switchboardv1.ListConnectionsResponse, error) {
	s.mu.Lock()
	entries := make([]*connEntry, 0, len(s.conns))
	for _, e := range s.conns {
		entries = append(entries, e)
	}
	s.mu.Unlock()
	out := make([]*switchboardv1.Connection, 0, len(entries))
	for _, e := range entries {
		p := connToProto(e)
		if req.GetListenerId() != "" && p.GetListenerId() != req.GetListenerId() {
			continue
		}
		if req.GetDirection() != switchboardv1.Direction_DIRECTION_UNSPECIFIED && p.GetDirection() != req.GetDirection() {
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *switchboardv1.Connection) int {
		return strings.Compare(a.GetConnectionId(), b.GetConnectionId())
	})
	return &switchboardv1.ListConnectionsResponse{Connections: out}, nil
}

// sendDeadlineMargin is the most a Send ends before the caller's deadline.
const sendDeadlineMargin = 200 * time.Millisecond

// Send writes one message and waits for the peer's acknowledgement.
func (s *Service) Send(ctx context.Context, req *switchboardv1.SendRequest) (*switchboardv1.SendResponse, error) {
	e, err := s.conn(req.GetConnectionId())
	if err != nil {
		return nil, toStatus(err)
	}
	// Answer a little before the caller's deadline: when the deadline fires
	// on the client first, the client gets a bare DEADLINE_EXCEEDED and
	// cannot learn whether the message was written.
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-min(time.Until(d)/5, sendDeadlineMargin)))
		defer cancel()
	}
	res, err := e.c.Send(ctx, req.GetPayload(), durationOr(req.GetAckTimeout(), 0))
	if err != nil {
		var se *transport.SendError
		if errors.As(err, &se) {
			return nil, sendStatus(se, map[string]string{"connection_id": req.GetConnectionId()})
		}
		return nil, toStatus(err)
	}
	return sendResultToProto(res), nil
}
