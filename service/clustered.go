package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/service/cluster"
	"github.com/switchboard-dev/switchboard/service/registry"
)

// In a cluster (Config.Cluster), every instance answers every RPC:
//
//   - A call about one listener or connection (Get, Stop, Disconnect, Send,
//     ResolveMessage) runs where the resource is: here when it is, else on
//     the lease's owner (cluster.Node.Call); an inbound connection, which
//     has no lease, is looked for on every live instance.
//   - StartListener and Connect take the resource's lease first and create
//     it here; when another live instance holds the lease the call is run
//     there. A listener with every_instance has no lease: every instance
//     binds it (reconcile).
//   - ListListeners and ListConnections ask every live instance for its
//     page and merge them by id.
//   - reconcile, run at start, whenever members or leases change and every
//     TTL/5, takes over resources without a live owner (Adopt), gives up
//     those whose lease was lost or when this instance is cut off
//     (Release), and keeps every_instance listeners bound everywhere.
//
// Status.instance names the instance that answered for the resource.

// clusterUnary routes unary calls; it is the innermost interceptor, after
// authentication and validation, so a call is checked once, where it
// arrived.
func (s *Service) clusterUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	m := info.FullMethod
	switch r := req.(type) {
	case *switchboardv1.StartListenerRequest:
		if r.GetConfig().GetEveryInstance() {
			return s.local(ctx, req, handler)
		}
		if r.ListenerId == "" {
			r.ListenerId = registry.NewID("l-")
		}
		return s.routeCreate(ctx, m, registry.TypeListener, r.ListenerId, req, handler)
	case *switchboardv1.ConnectRequest:
		if r.ConnectionId == "" {
			r.ConnectionId = registry.NewID("c-")
		}
		return s.routeCreate(ctx, m, registry.TypeConnection, r.ConnectionId, req, handler)
	case *switchboardv1.StopListenerRequest:
		return s.route(ctx, m, registry.TypeListener, r.GetListenerId(), req, handler)
	case *switchboardv1.GetListenerRequest:
		return s.route(ctx, m, registry.TypeListener, r.GetListenerId(), req, handler)
	case *switchboardv1.DisconnectRequest:
		return s.route(ctx, m, registry.TypeConnection, r.GetConnectionId(), req, handler)
	case *switchboardv1.GetConnectionRequest:
		return s.route(ctx, m, registry.TypeConnection, r.GetConnectionId(), req, handler)
	case *switchboardv1.SendRequest:
		return s.route(ctx, m, registry.TypeConnection, r.GetConnectionId(), req, handler)
	case *switchboardv1.ResolveMessageRequest:
		if conn, ok := outboundConnOfMessage(r.GetMessageId()); ok {
			return s.route(ctx, m, registry.TypeConnection, conn, req, handler)
		}
	case *switchboardv1.AckRequest:
		return s.routeConsumer(ctx, m, r.GetConsumer(), req, handler)
	case *switchboardv1.AnswerMessageRequest:
		return s.routeConsumer(ctx, m, r.GetConsumer(), req, handler)
	case *switchboardv1.GetConsumerRequest:
		return s.routeConsumer(ctx, m, r.GetName(), req, handler)
	case *switchboardv1.DeleteConsumerRequest:
		return s.routeConsumer(ctx, m, r.GetName(), req, handler)
	case *switchboardv1.ListDeadLettersRequest:
		return s.routeConsumer(ctx, m, r.GetConsumer(), req, handler)
	case *switchboardv1.ReplayDeadLettersRequest:
		return s.routeConsumer(ctx, m, r.GetConsumer(), req, handler)
	case *switchboardv1.ListConsumersRequest:
		// A snapshot from the store: the consumers attached elsewhere as
		// they last saved.
		if err := s.consumers.Reload(ctx); err != nil {
			return nil, s.toStatus(ctx, err)
		}
		return handler(ctx, req)
	case *switchboardv1.ListListenersRequest:
		return s.gather(ctx, m, req, handler)
	case *switchboardv1.ListConnectionsRequest:
		return s.gather(ctx, m, req, handler)
	}
	return handler(ctx, req)
}

// A durable consumer is served by one instance at a time: the one a
// Receive stream attached it through takes the consumer's lease
// (claimConsumer) and gives it up when its last stream there ends. Calls
// about the consumer run on that instance; while nobody holds it, any
// instance answers from the store.

// claimConsumer takes consumer name's lease for a Receive stream here, and
// reads the consumer from the store when no stream here has it attached
// (another instance may have served it since).
func (s *Service) claimConsumer(ctx context.Context, name string) error {
	if s.node == nil {
		return nil
	}
	err := s.node.Acquire(ctx, typeConsumer, name)
	var owned *cluster.OwnedError
	switch {
	case errors.As(err, &owned):
		return status.Errorf(codes.FailedPrecondition, "consumer %q is attached through instance %q: attach there, or once its streams there have ended", name, owned.Owner)
	case err != nil:
		return status.Errorf(codes.Unavailable, "consumer %q: %v", name, err)
	}
	if s.consumers.Attached(name) == 0 {
		if err := s.consumers.Reload(ctx, name); err != nil {
			s.releaseLease(typeConsumer, name)
			return s.toStatus(ctx, err)
		}
	}
	return nil
}

// unclaimConsumer gives the consumer's lease up once no stream here has it
// attached.
func (s *Service) unclaimConsumer(name string) {
	if s.node != nil && s.consumers.Attached(name) == 0 {
		s.releaseLease(typeConsumer, name)
	}
}

// typeConsumer is the lease type of durable consumers.
const typeConsumer = "consumer"

// routeConsumer runs a call about a consumer on the instance serving it,
// or here, from the store, when none is.
func (s *Service) routeConsumer(ctx context.Context, method, name string, req any, handler grpc.UnaryHandler) (any, error) {
	if s.node.Holds(typeConsumer, name) {
		return handler(ctx, req)
	}
	if owner, ok := s.node.Owner(typeConsumer, name); ok && owner != s.node.Instance() {
		return s.forward(ctx, owner, method, req)
	}
	if err := s.consumers.Reload(ctx, name); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return handler(ctx, req)
}

// movingStatus is UNAVAILABLE with reason OWNER_MOVING.
func movingStatus(typ, id, what string) error {
	return statusOf(codes.Unavailable, fmt.Sprintf("%s %q %s: retry", typ, id, what), switchboardv1.ErrorReason_ERROR_REASON_OWNER_MOVING, nil)
}

// resourceOf names the listener or connection a call is about.
func resourceOf(req any) (typ, id string, ok bool) {
	switch r := req.(type) {
	case *switchboardv1.GetListenerRequest:
		return registry.TypeListener, r.GetListenerId(), true
	case *switchboardv1.StopListenerRequest:
		return registry.TypeListener, r.GetListenerId(), true
	case *switchboardv1.GetConnectionRequest:
		return registry.TypeConnection, r.GetConnectionId(), true
	case *switchboardv1.DisconnectRequest:
		return registry.TypeConnection, r.GetConnectionId(), true
	case *switchboardv1.SendRequest:
		return registry.TypeConnection, r.GetConnectionId(), true
	}
	return "", "", false
}

// outboundConnOfMessage reads the connection id out of an outbound
// message id, "out-<connection_id>-<sequence>".
func outboundConnOfMessage(id string) (string, bool) {
	rest, ok := strings.CutPrefix(id, "out-")
	i := strings.LastIndexByte(rest, '-')
	if !ok || i <= 0 {
		return "", false
	}
	return rest[:i], true
}

// local runs the call here and names this instance in its answer; a
// listener or connection removed here gives its lease up. Calls routed
// here from another instance run through it too (serveCall).
func (s *Service) local(ctx context.Context, req any, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		if typ, id, ok := resourceOf(req); ok && status.Code(err) == codes.NotFound && s.node.Leased(typ, id) {
			// Not here, yet leased: it is being released or taken over here.
			return nil, movingStatus(typ, id, "is moving between instances")
		}
		return nil, err
	}
	s.stampInstance(resp)
	switch r := req.(type) {
	case *switchboardv1.StopListenerRequest:
		s.released(registry.TypeListener, r.GetListenerId())
	case *switchboardv1.DisconnectRequest:
		s.released(registry.TypeConnection, r.GetConnectionId())
	}
	return resp, nil
}

// here reports whether the resource is in this instance's registry.
func (s *Service) here(typ, id string) bool {
	if typ == registry.TypeListener {
		_, err := s.reg.Listener(id)
		return err == nil
	}
	_, err := s.reg.Connection(id)
	return err == nil
}

// route runs a call about one resource where the resource is.
func (s *Service) route(ctx context.Context, method, typ, id string, req any, handler grpc.UnaryHandler) (any, error) {
	if id == "" || s.here(typ, id) {
		return s.local(ctx, req, handler)
	}
	if owner, ok := s.node.Owner(typ, id); ok && owner != s.node.Instance() {
		return s.forward(ctx, owner, method, req)
	}
	if owner, ok := s.node.Owner(typ, id); ok && owner == s.node.Instance() {
		return s.local(ctx, req, handler) // ours, but gone here: removed meanwhile
	}
	if s.node.Leased(typ, id) {
		return nil, movingStatus(typ, id, fmt.Sprintf("has no live owner right now (its instance stopped answering; another takes it over within %v)", s.node.TTL()+s.node.TTL()/5))
	}
	if typ == registry.TypeConnection {
		// An inbound connection: ask the others whether they have it.
		for _, inst := range s.node.Members() {
			if inst == s.node.Instance() {
				continue
			}
			resp, err := s.forward(ctx, inst, method, req)
			if status.Code(err) != codes.NotFound {
				return resp, err
			}
		}
	}
	return s.local(ctx, req, handler) // not found anywhere: the local answer
}

// routeCreate takes the lease of a resource about to be created, and
// creates it here; when a live instance holds it, the call runs there.
func (s *Service) routeCreate(ctx context.Context, method, typ, id string, req any, handler grpc.UnaryHandler) (any, error) {
	if s.here(typ, id) {
		return s.local(ctx, req, handler)
	}
	err := s.node.Acquire(ctx, typ, id)
	var owned *cluster.OwnedError
	switch {
	case errors.As(err, &owned):
		return s.forward(ctx, owned.Owner, method, req)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "%s %q: %v", typ, id, err)
	}
	resp, err := s.local(ctx, req, handler)
	if err != nil && !s.here(typ, id) {
		s.releaseLease(typ, id)
	}
	return resp, err
}

// released gives up the lease of a resource a call removed here.
func (s *Service) released(typ, id string) {
	if !s.here(typ, id) {
		s.releaseLease(typ, id)
	}
}

func (s *Service) releaseLease(typ, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.node.Release(ctx, typ, id); err != nil {
		s.log.Warn("could not release a lease; it expires with this instance", "type", typ, "id", id, "err", err)
	}
}

// forward runs the call on another instance.
func (s *Service) forward(ctx context.Context, inst, method string, req any) (any, error) {
	b, err := proto.Marshal(req.(proto.Message))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "marshal a routed request: %v", err)
	}
	out, err := s.node.Call(ctx, inst, method, b)
	if err != nil {
		return nil, err
	}
	name := method[strings.LastIndexByte(method, '/')+1:]
	resp := newResponse(name)
	if resp == nil {
		return nil, status.Errorf(codes.Unimplemented, "method %s cannot be routed", method)
	}
	if err := proto.Unmarshal(out, resp); err != nil {
		return nil, status.Errorf(codes.Internal, "unreadable answer from instance %q: %v", inst, err)
	}
	return resp, nil
}

// serveCall answers a call routed here by another instance: the method's
// handler runs without the interceptors (the calling instance ran them).
func (s *Service) serveCall(ctx context.Context, method string, body []byte) ([]byte, error) {
	md, ok := unaryMethod(method)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "method %s cannot be routed", method)
	}
	dec := func(v any) error { return proto.Unmarshal(body, v.(proto.Message)) }
	here := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return s.local(ctx, req, handler)
	}
	resp, err := md.Handler(s, ctx, dec, here)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(resp.(proto.Message))
}

// unaryMethod finds a unary method of SwitchboardService by full name.
func unaryMethod(full string) (grpc.MethodDesc, bool) {
	name, ok := strings.CutPrefix(full, "/"+switchboardv1.SwitchboardService_ServiceDesc.ServiceName+"/")
	if !ok {
		return grpc.MethodDesc{}, false
	}
	i := slices.IndexFunc(switchboardv1.SwitchboardService_ServiceDesc.Methods, func(m grpc.MethodDesc) bool { return m.MethodName == name })
	if i < 0 {
		return grpc.MethodDesc{}, false
	}
	return switchboardv1.SwitchboardService_ServiceDesc.Methods[i], true
}

// newResponse is the empty response of a routed method.
func newResponse(method string) proto.Message {
	switch method {
	case "StartListener":
		return &switchboardv1.StartListenerResponse{}
	case "StopListener":
		return &switchboardv1.StopListenerResponse{}
	case "GetListener":
		return &switchboardv1.GetListenerResponse{}
	case "ListListeners":
		return &switchboardv1.ListListenersResponse{}
	case "Connect":
		return &switchboardv1.ConnectResponse{}
	case "Disconnect":
		return &switchboardv1.DisconnectResponse{}
	case "GetConnection":
		return &switchboardv1.GetConnectionResponse{}
	case "ListConnections":
		return &switchboardv1.ListConnectionsResponse{}
	case "Send":
		return &switchboardv1.SendResponse{}
	case "ResolveMessage":
		return &switchboardv1.ResolveMessageResponse{}
	case "Ack":
		return &switchboardv1.AckResponse{}
	case "AnswerMessage":
		return &switchboardv1.AnswerMessageResponse{}
	case "GetConsumer":
		return &switchboardv1.GetConsumerResponse{}
	case "DeleteConsumer":
		return &switchboardv1.DeleteConsumerResponse{}
	case "ListDeadLetters":
		return &switchboardv1.ListDeadLettersResponse{}
	case "ReplayDeadLetters":
		return &switchboardv1.ReplayDeadLettersResponse{}
	}
	return nil
}

// stampInstance names this instance in the resources of a response.
func (s *Service) stampInstance(resp any) {
	inst := s.node.Instance()
	stampL := func(l *switchboardv1.Listener) {
		if l != nil && l.Status != nil {
			l.Status.Instance = inst
		}
	}
	stampC := func(c *switchboardv1.Connection) {
		if c != nil && c.Status != nil {
			c.Status.Instance = inst
		}
	}
	switch r := resp.(type) {
	case *switchboardv1.StartListenerResponse:
		stampL(r.Listener)
	case *switchboardv1.StopListenerResponse:
		stampL(r.Listener)
	case *switchboardv1.GetListenerResponse:
		stampL(r.Listener)
	case *switchboardv1.ListListenersResponse:
		for _, l := range r.Listeners {
			stampL(l)
		}
	case *switchboardv1.ConnectResponse:
		stampC(r.Connection)
	case *switchboardv1.DisconnectResponse:
		stampC(r.Connection)
	case *switchboardv1.GetConnectionResponse:
		stampC(r.Connection)
	case *switchboardv1.ListConnectionsResponse:
		for _, c := range r.Connections {
			stampC(c)
		}
	}
}

// gather runs a List on every live instance and merges the pages by id.
// An instance that does not answer is left out (and logged): its
// resources are missing from the page until it answers or they are taken
// over.
func (s *Service) gather(ctx context.Context, method string, req any, handler grpc.UnaryHandler) (any, error) {
	mine, err := s.local(ctx, req, handler)
	if err != nil {
		return nil, err
	}
	var size int32
	var ls []*switchboardv1.Listener
	var cs []*switchboardv1.Connection
	more := false
	add := func(resp any) {
		switch r := resp.(type) {
		case *switchboardv1.ListListenersResponse:
			ls = append(ls, r.Listeners...)
			more = more || r.NextPageToken != ""
		case *switchboardv1.ListConnectionsResponse:
			cs = append(cs, r.Connections...)
			more = more || r.NextPageToken != ""
		}
	}
	switch r := req.(type) {
	case *switchboardv1.ListListenersRequest:
		size = r.GetPageSize()
	case *switchboardv1.ListConnectionsRequest:
		size = r.GetPageSize()
	}
	add(mine)
	for _, inst := range s.node.Members() {
		if inst == s.node.Instance() {
			continue
		}
		resp, err := s.forward(ctx, inst, method, req)
		if err != nil {
			s.log.Warn("an instance did not answer a list; its resources are left out", "instance", inst, "method", method, "err", err)
			continue
		}
		add(resp)
	}
	n := pageSize(size)
	switch mine.(type) {
	case *switchboardv1.ListListenersResponse:
		ls = mergeByID(ls, func(l *switchboardv1.Listener) string { return l.GetListenerId() })
		out := &switchboardv1.ListListenersResponse{Listeners: ls}
		if len(ls) > n || (more && len(ls) > 0) {
			out.Listeners = ls[:min(n, len(ls))]
			out.NextPageToken = encodePageToken(out.Listeners[len(out.Listeners)-1].GetListenerId())
		}
		return out, nil
	default:
		cs = mergeByID(cs, func(c *switchboardv1.Connection) string { return c.GetConnectionId() })
		out := &switchboardv1.ListConnectionsResponse{Connections: cs}
		if len(cs) > n || (more && len(cs) > 0) {
			out.Connections = cs[:min(n, len(cs))]
			out.NextPageToken = encodePageToken(out.Connections[len(out.Connections)-1].GetConnectionId())
		}
		return out, nil
	}
}

// mergeByID sorts by id and keeps the first of each id (this instance's,
// for a listener on every instance).
func mergeByID[T any](xs []T, id func(T) string) []T {
	slices.SortStableFunc(xs, func(a, b T) int { return strings.Compare(id(a), id(b)) })
	return slices.CompactFunc(xs, func(a, b T) bool { return id(a) == id(b) })
}

// Routed is the Service's resource calls as a client of this instance
// sees them: in a cluster they go through the routing above (a declared
// listener is started once, on the instance that gets its lease, and the
// others find it there); on a single instance they are the Service's own
// methods. serve reconciles the configuration file's declared resources
// through it.
func (s *Service) Routed() Routed { return Routed{s} }

// Routed: see Service.Routed.
type Routed struct{ s *Service }

func (r Routed) GetListener(ctx context.Context, req *switchboardv1.GetListenerRequest) (*switchboardv1.GetListenerResponse, error) {
	return routedCall(r.s, ctx, "GetListener", req, r.s.GetListener)
}

func (r Routed) StartListener(ctx context.Context, req *switchboardv1.StartListenerRequest) (*switchboardv1.StartListenerResponse, error) {
	return routedCall(r.s, ctx, "StartListener", req, r.s.StartListener)
}

func (r Routed) StopListener(ctx context.Context, req *switchboardv1.StopListenerRequest) (*switchboardv1.StopListenerResponse, error) {
	return routedCall(r.s, ctx, "StopListener", req, r.s.StopListener)
}

func (r Routed) GetConnection(ctx context.Context, req *switchboardv1.GetConnectionRequest) (*switchboardv1.GetConnectionResponse, error) {
	return routedCall(r.s, ctx, "GetConnection", req, r.s.GetConnection)
}

func (r Routed) Connect(ctx context.Context, req *switchboardv1.ConnectRequest) (*switchboardv1.ConnectResponse, error) {
	return routedCall(r.s, ctx, "Connect", req, r.s.Connect)
}

func (r Routed) Disconnect(ctx context.Context, req *switchboardv1.DisconnectRequest) (*switchboardv1.DisconnectResponse, error) {
	return routedCall(r.s, ctx, "Disconnect", req, r.s.Disconnect)
}

func routedCall[Req, Resp any](s *Service, ctx context.Context, method string, req Req, h func(context.Context, Req) (Resp, error)) (Resp, error) {
	if s.node == nil {
		return h(ctx, req)
	}
	info := &grpc.UnaryServerInfo{Server: s, FullMethod: "/" + switchboardv1.SwitchboardService_ServiceDesc.ServiceName + "/" + method}
	out, err := s.clusterUnary(ctx, req, info, func(ctx context.Context, r any) (any, error) { return h(ctx, r.(Req)) })
	if err != nil {
		var zero Resp
		return zero, err
	}
	return out.(Resp), nil
}
