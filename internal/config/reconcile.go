package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	configv1 "github.com/switchboard-dev/switchboard/gen/switchboard/config/v1"
	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// API is the part of the Switchboard API Reconcile uses. A
// switchboardv1.SwitchboardServiceServer (the *service.Service itself) is
// one; ClientAPI makes one of a gRPC client.
type API interface {
	GetListener(context.Context, *switchboardv1.GetListenerRequest) (*switchboardv1.GetListenerResponse, error)
	StartListener(context.Context, *switchboardv1.StartListenerRequest) (*switchboardv1.StartListenerResponse, error)
	StopListener(context.Context, *switchboardv1.StopListenerRequest) (*switchboardv1.StopListenerResponse, error)
	GetConnection(context.Context, *switchboardv1.GetConnectionRequest) (*switchboardv1.GetConnectionResponse, error)
	Connect(context.Context, *switchboardv1.ConnectRequest) (*switchboardv1.ConnectResponse, error)
	Disconnect(context.Context, *switchboardv1.DisconnectRequest) (*switchboardv1.DisconnectResponse, error)
}

var _ API = switchboardv1.SwitchboardServiceServer(nil)

// ClientAPI is c as an API, for reconciling a server over gRPC.
func ClientAPI(c switchboardv1.SwitchboardServiceClient, opts ...grpc.CallOption) API {
	return clientAPI{c, opts}
}

type clientAPI struct {
	c    switchboardv1.SwitchboardServiceClient
	opts []grpc.CallOption
}

func (a clientAPI) GetListener(ctx context.Context, r *switchboardv1.GetListenerRequest) (*switchboardv1.GetListenerResponse, error) {
	return a.c.GetListener(ctx, r, a.opts...)
}

func (a clientAPI) StartListener(ctx context.Context, r *switchboardv1.StartListenerRequest) (*switchboardv1.StartListenerResponse, error) {
	return a.c.StartListener(ctx, r, a.opts...)
}

func (a clientAPI) StopListener(ctx context.Context, r *switchboardv1.StopListenerRequest) (*switchboardv1.StopListenerResponse, error) {
	return a.c.StopListener(ctx, r, a.opts...)
}

func (a clientAPI) GetConnection(ctx context.Context, r *switchboardv1.GetConnectionRequest) (*switchboardv1.GetConnectionResponse, error) {
	return a.c.GetConnection(ctx, r, a.opts...)
}

func (a clientAPI) Connect(ctx context.Context, r *switchboardv1.ConnectRequest) (*switchboardv1.ConnectResponse, error) {
	return a.c.Connect(ctx, r, a.opts...)
}

func (a clientAPI) Disconnect(ctx context.Context, r *switchboardv1.DisconnectRequest) (*switchboardv1.DisconnectResponse, error) {
	return a.c.Disconnect(ctx, r, a.opts...)
}

// Action is what Reconcile did with one declared resource.
type Action string

const (
	// Created: it did not exist; it was created with the file's config.
	Created Action = "created"
	// Unchanged: it existed (restored from the data directory) with the
	// file's config.
	Unchanged Action = "unchanged"
	// Replaced: it existed with another config; it was stopped (a
	// listener drained, a connection closed) and created again with the
	// file's.
	Replaced Action = "replaced"
	// Kept: an outbound connection existed with another config and
	// messages still queued, which replacing it would fail; it runs on
	// with its durable config, and the file's applies at a later start
	// once its queue is empty.
	Kept Action = "kept"
	// Pending: it could not be created yet (its address cannot be bound,
	// its peer cannot be reached); RetryPending goes on trying.
	Pending Action = "pending"
)

// Change is what Reconcile did with one declared resource.
type Change struct {
	// Kind is "listener" or "connection".
	Kind string
	// ID is the resource's id.
	ID     string
	Action Action
	// Err is why, for Kept and Pending.
	Err error
}

// Report is the outcome of Reconcile.
type Report struct {
	Changes []Change

	api     API
	logger  *slog.Logger
	mu      sync.Mutex // guards pending while Reconcile runs
	pending []pendingItem
	// retryDelay and maxRetryDelay pace RetryPending.
	retryDelay, maxRetryDelay time.Duration
}

// pendingItem is a declared resource RetryPending creates.
type pendingItem struct {
	logKey, id string // "listener_id", "adt"
	create     func(context.Context) error
}

// firstTry bounds the first Connect of a declared connection during
// Reconcile, as Restore bounds the restored ones: a peer that does not
// answer must not hold up the start; RetryPending takes over.
const firstTry = 2 * time.Second

// drainTimeout bounds the drain of a listener Reconcile replaces.
const drainTimeout = 10 * time.Second

// Reconcile brings the listeners and connections the file declares into
// api, after the service has restored its durable desired state (call it
// after Restore, before reporting SERVING). For each declared id:
//
//   - missing: it is created with the file's config;
//   - present with the same config: nothing is done;
//   - present with another config: the file wins (it is what the operator
//     declared last; the durable state is what an earlier file or an API
//     call left): a listener is stopped, its connections drained, and
//     started again; a connection is disconnected and connected again,
//     unless it has queued messages, which disconnecting would fail: then
//     it is kept as it is and the difference logged (Kept);
//   - an address that cannot be bound or a peer that cannot be reached: it
//     is Pending, logged, and RetryPending creates it when it can.
//
// Resources the file does not declare (created through the API, or
// declared by an earlier version of the file) are left alone. Every
// decision is logged. The error is any other refusal (an address the
// policy forbids, an unknown TLS profile, the server shutting down): the
// file asks for something this server will not do, and serve should stop.
func Reconcile(ctx context.Context, api API, cfg *configv1.ServeConfig, logger *slog.Logger) (*Report, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Report{api: api, logger: logger, retryDelay: time.Second, maxRetryDelay: time.Minute}
	for _, l := range cfg.GetListeners() {
		act, err := r.listener(ctx, l)
		if act == "" {
			return r, fmt.Errorf("listener %q declared in the config file: %w", l.GetListenerId(), err)
		}
		r.Changes = append(r.Changes, Change{Kind: "listener", ID: l.GetListenerId(), Action: act, Err: err})
	}
	// Connections side by side: each first try may take firstTry, and a
	// file may declare dozens whose peers are down together.
	conns := cfg.GetConnections()
	changes := make([]Change, len(conns))
	var wg sync.WaitGroup
	slots := make(chan struct{}, parallelConnects)
	for i, c := range conns {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			act, err := r.connection(ctx, c)
			changes[i] = Change{Kind: "connection", ID: c.GetConnectionId(), Action: act, Err: err}
		})
	}
	wg.Wait()
	for _, c := range changes {
		if c.Action == "" {
			return r, fmt.Errorf("connection %q declared in the config file: %w", c.ID, c.Err)
		}
		r.Changes = append(r.Changes, c)
	}
	return r, nil
}

// parallelConnects bounds the declared connections reconciled at once.
const parallelConnects = 16

// listener reconciles one declared listener; an empty Action is a fatal
// error.
func (r *Report) listener(ctx context.Context, l *configv1.Listener) (Action, error) {
	id, want := l.GetListenerId(), l.GetConfig()
	log := r.logger.With("listener_id", id)
	start := func(ctx context.Context) error {
		_, err := r.api.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: id, Config: want})
		return err
	}
	got, err := r.api.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: id})
	switch {
	case status.Code(err) == codes.NotFound:
		return r.create(ctx, log, pendingItem{"listener_id", id, start}, want.GetAddress())
	case err != nil:
		return "", err
	case proto.Equal(got.GetListener().GetConfig(), want):
		log.Info("declared listener unchanged")
		return Unchanged, nil
	}
	log.Warn("declared listener differs from its durable config: the config file wins; stopping it and starting it again",
		"address", want.GetAddress(), "durable_address", got.GetListener().GetConfig().GetAddress())
	if _, err := r.api.StopListener(ctx, &switchboardv1.StopListenerRequest{ListenerId: id, DrainTimeout: durationOf(drainTimeout)}); err != nil && status.Code(err) != codes.NotFound {
		return "", fmt.Errorf("stopping it to apply the file's config: %w", err)
	}
	act, err := r.create(ctx, log, pendingItem{"listener_id", id, start}, want.GetAddress())
	if act == Created {
		act = Replaced
	}
	return act, err
}

// connection reconciles one declared connection; an empty Action is a
// fatal error.
func (r *Report) connection(ctx context.Context, c *configv1.Connection) (Action, error) {
	id, want := c.GetConnectionId(), c.GetConfig()
	log := r.logger.With("connection_id", id)
	connect := func(ctx context.Context) error {
		_, err := r.api.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: id, Config: want})
		return err
	}
	got, err := r.api.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: id})
	switch {
	case status.Code(err) == codes.NotFound:
		return r.create(ctx, log, pendingItem{"connection_id", id, connect}, want.GetAddress())
	case err != nil:
		return "", err
	case got.GetConnection().GetDirection() != switchboardv1.Direction_DIRECTION_OUTBOUND:
		return "", errors.New("the id is an inbound connection's")
	case proto.Equal(got.GetConnection().GetConfig(), want):
		log.Info("declared connection unchanged")
		return Unchanged, nil
	}
	if q := got.GetConnection().GetStatus().GetQueuedMessageCount(); q > 0 {
		err := fmt.Errorf("its durable config differs from the file's, and it has %d queued messages that replacing it would fail", q)
		log.Error("declared connection differs from its durable config but has queued messages: it keeps its durable config until a start finds its queue empty (or Disconnect it, failing them, and restart)",
			"queued_messages", q, "address", want.GetAddress(), "durable_address", got.GetConnection().GetConfig().GetAddress())
		return Kept, err
	}
	log.Warn("declared connection differs from its durable config: the config file wins; disconnecting it and connecting again",
		"address", want.GetAddress(), "durable_address", got.GetConnection().GetConfig().GetAddress())
	if _, err := r.api.Disconnect(ctx, &switchboardv1.DisconnectRequest{ConnectionId: id}); err != nil && status.Code(err) != codes.NotFound {
		return "", fmt.Errorf("disconnecting it to apply the file's config: %w", err)
	}
	act, err := r.create(ctx, log, pendingItem{"connection_id", id, connect}, want.GetAddress())
	if act == Created {
		act = Replaced
	}
	return act, err
}

// create makes a resource: Created, Pending (retried by RetryPending) when
// the failure may pass, or an empty Action with the error.
func (r *Report) create(ctx context.Context, log *slog.Logger, p pendingItem, address string) (Action, error) {
	kind := "listener"
	if p.logKey == "connection_id" {
		kind = "connection"
	}
	tctx, cancel := context.WithTimeout(ctx, firstTry)
	err := p.create(tctx)
	cancel()
	switch {
	case err == nil:
		log.Info("declared "+kind+" created", "address", address)
		return Created, nil
	case ctx.Err() == nil && mayPass(err):
		log.Error("declared "+kind+" cannot be created yet; retrying in the background", "address", address, "err", err)
		r.mu.Lock()
		r.pending = append(r.pending, p)
		r.mu.Unlock()
		return Pending, err
	}
	return "", err
}

// mayPass reports whether a failed create may succeed later without a
// change to the file: the address is busy, the peer is down or slow.
func mayPass(err error) bool {
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Canceled, codes.Unavailable:
		return !hasReason(err, "SHUTTING_DOWN")
	case codes.FailedPrecondition:
		return hasReason(err, "ADDRESS_NOT_BINDABLE")
	}
	return errors.Is(err, context.DeadlineExceeded)
}

func durationOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// hasReason reports whether err's ErrorInfo has reason.
func hasReason(err error, reason string) bool {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == reason {
			return true
		}
	}
	return false
}

// RetryPending tries the Pending resources again, with a backoff of 1 s
// doubling to 60 s, until each is created, fails for a reason that will
// not pass (logged), or ctx ends. It returns at once when nothing is
// pending. Run it in a goroutine that serve waits for at shutdown.
func (r *Report) RetryPending(ctx context.Context) {
	r.mu.Lock()
	pending := slices.Clone(r.pending)
	r.mu.Unlock()
	delay := r.retryDelay
	for len(pending) > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, r.maxRetryDelay)
		var still []pendingItem
		for _, p := range pending {
			err := p.create(ctx)
			switch {
			case ctx.Err() != nil:
				return
			case err == nil:
				r.logger.Info("pending declared resource created", p.logKey, p.id)
			case mayPass(err):
				r.logger.Debug("pending declared resource still cannot be created", p.logKey, p.id, "err", err)
				still = append(still, p)
			default:
				r.logger.Error("pending declared resource refused; not retrying", p.logKey, p.id, "err", err)
			}
		}
		pending = still
	}
}
