package auth

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// rule is what one method needs.
type rule struct {
	role Role
	// roleFor, when set, raises the role for some requests (payload reads).
	roleFor func(req any) (Role, string)
	// scope checks a request of a scoped identity before the call; nil:
	// the method names no listener or connection (allowed).
	scope func(c *checker, req any) error
	// post checks or filters a response for a scoped identity.
	post func(c *checker, resp any) error
	// target names the resource for the audit record.
	target func(req any) string
	// audit: state-changing or a payload read, always recorded.
	audit func(req any) bool
	// data: the data path (Send, Ack, AnswerMessage): exempt from the rate
	// limit, audited only with AuditConfig.DataCalls.
	data bool
	// stream counts against Config.MaxStreams.
	stream bool
	// denyScoped: no scoped identity may call it.
	denyScoped bool
}

func always(any) bool { return true }

const svcPrefix = "/" + "switchboard.v1.SwitchboardService" + "/"

// methodRules is the role table. A method of SwitchboardService missing
// here needs admin and is denied to scoped identities (a test walks the
// service descriptor so none is missed by accident).
//
// Scope rules for a scoped identity (unscoped identities skip them):
//   - calls naming a listener (StartListener, StopListener, GetListener)
//     need its id within the listener prefixes; StartListener needs an
//     explicit listener_id (a server-chosen one could not be in scope);
//   - calls naming a connection (Connect, Disconnect, GetConnection,
//     Send) need its id within the connection prefixes, or, for an
//     inbound connection, its listener within the listener prefixes
//     (through Config.Lookup); Connect needs an explicit connection_id;
//   - ListListeners, ListConnections and ListConsumers have no filter that
//     could bound them (ListConnections' listener_id, when set, must be in
//     scope): their responses are filtered to what is in scope, so a page
//     may hold fewer items than page_size;
//   - Receive needs listener_ids or connection_ids set, each within scope;
//     a durable consumer must then be attached with those filters repeated
//     (the server refuses filters that differ from the consumer's);
//   - WatchEvents needs listener_id or connection_id set, within scope;
//   - ListMessages needs listener_id or connection_id set, within scope
//     (and its response is filtered too);
//   - GetMessage's response must be of a listener or connection in scope;
//   - ResolveMessage needs an outbound message id whose connection is in
//     scope;
//   - Ack, AnswerMessage, DeleteConsumer, ListDeadLetters and
//     ReplayDeadLetters need the consumer to exist with filters all within
//     scope (through Config.Lookup; without a Lookup they are denied);
//     GetConsumer's response is checked the same way;
//   - GetJournal names no resource and is allowed; reflection too.
var methodRules = map[string]rule{
	"StartListener": {role: RoleOperator, audit: always,
		target: func(r any) string { return "listener:" + r.(*switchboardv1.StartListenerRequest).GetListenerId() },
		scope: func(c *checker, r any) error {
			id := r.(*switchboardv1.StartListenerRequest).GetListenerId()
			if id == "" {
				return c.deny("StartListener by a scoped identity must set listener_id to an id within its scope")
			}
			return c.listener(id)
		}},
	"StopListener": {role: RoleOperator, audit: always,
		target: func(r any) string { return "listener:" + r.(*switchboardv1.StopListenerRequest).GetListenerId() },
		scope: func(c *checker, r any) error {
			return c.listener(r.(*switchboardv1.StopListenerRequest).GetListenerId())
		}},
	"GetListener": {role: RoleViewer,
		target: func(r any) string { return "listener:" + r.(*switchboardv1.GetListenerRequest).GetListenerId() },
		scope: func(c *checker, r any) error {
			return c.listener(r.(*switchboardv1.GetListenerRequest).GetListenerId())
		}},
	"ListListeners": {role: RoleViewer,
		post: func(c *checker, resp any) error {
			r := resp.(*switchboardv1.ListListenersResponse)
			r.Listeners = keep(r.Listeners, func(l *switchboardv1.Listener) bool { return c.id.Scope.Listener(l.GetListenerId()) })
			return nil
		}},
	"Connect": {role: RoleOperator, audit: always,
		target: func(r any) string { return "connection:" + r.(*switchboardv1.ConnectRequest).GetConnectionId() },
		scope: func(c *checker, r any) error {
			id := r.(*switchboardv1.ConnectRequest).GetConnectionId()
			if id == "" || !c.id.Scope.Connection(id) {
				return c.deny(fmt.Sprintf("Connect by a scoped identity must set connection_id to an id within its connection prefixes (got %q)", id))
			}
			return nil
		}},
	"Disconnect": {role: RoleOperator, audit: always,
		target: func(r any) string { return "connection:" + r.(*switchboardv1.DisconnectRequest).GetConnectionId() },
		scope: func(c *checker, r any) error {
			return c.connection(r.(*switchboardv1.DisconnectRequest).GetConnectionId())
		}},
	"GetConnection": {role: RoleViewer,
		target: func(r any) string { return "connection:" + r.(*switchboardv1.GetConnectionRequest).GetConnectionId() },
		scope: func(c *checker, r any) error {
			return c.connection(r.(*switchboardv1.GetConnectionRequest).GetConnectionId())
		}},
	"ListConnections": {role: RoleViewer,
		target: func(r any) string { return listenerTarget(r.(*switchboardv1.ListConnectionsRequest).GetListenerId()) },
		scope: func(c *checker, r any) error {
			if id := r.(*switchboardv1.ListConnectionsRequest).GetListenerId(); id != "" {
				return c.listener(id)
			}
			return nil
		},
		post: func(c *checker, resp any) error {
			r := resp.(*switchboardv1.ListConnectionsResponse)
			r.Connections = keep(r.Connections, func(cn *switchboardv1.Connection) bool {
				return c.id.Scope.Connection(cn.GetConnectionId()) || cn.GetListenerId() != "" && c.id.Scope.Listener(cn.GetListenerId())
			})
			return nil
		}},
	"Send": {role: RoleOperator, data: true, audit: always,
		target: func(r any) string { return "connection:" + r.(*switchboardv1.SendRequest).GetConnectionId() },
		scope:  func(c *checker, r any) error { return c.connection(r.(*switchboardv1.SendRequest).GetConnectionId()) }},
	"Receive": {role: RoleConsumer, stream: true, audit: always,
		target: func(r any) string {
			q := r.(*switchboardv1.ReceiveRequest)
			return filterTarget(q.GetListenerIds(), q.GetConnectionIds(), q.GetConsumer())
		},
		scope: func(c *checker, r any) error {
			q := r.(*switchboardv1.ReceiveRequest)
			if len(q.GetListenerIds()) == 0 && len(q.GetConnectionIds()) == 0 {
				return c.deny("Receive by a scoped identity must set listener_ids or connection_ids to ids within its scope")
			}
			return c.all(q.GetListenerIds(), q.GetConnectionIds())
		}},
	"GetMessage": {role: RoleConsumer, audit: always,
		target: func(r any) string { return "message:" + r.(*switchboardv1.GetMessageRequest).GetMessageId() },
		post: func(c *checker, resp any) error {
			m := resp.(*switchboardv1.GetMessageResponse).GetMessage()
			if !c.message(m) {
				return c.deny(fmt.Sprintf("message %q is of a listener or connection outside the scope", m.GetMessageId()))
			}
			return nil
		}},
	"ListMessages": {role: RoleViewer,
		roleFor: func(r any) (Role, string) {
			if r.(*switchboardv1.ListMessagesRequest).GetIncludePayloads() {
				return RoleConsumer, " with include_payloads (payloads are patient data)"
			}
			return RoleViewer, ""
		},
		audit: func(r any) bool { return r.(*switchboardv1.ListMessagesRequest).GetIncludePayloads() },
		target: func(r any) string {
			q := r.(*switchboardv1.ListMessagesRequest)
			return filterTarget(nonEmpty(q.GetListenerId()), nonEmpty(q.GetConnectionId()), "")
		},
		scope: func(c *checker, r any) error {
			q := r.(*switchboardv1.ListMessagesRequest)
			if q.GetListenerId() == "" && q.GetConnectionId() == "" {
				return c.deny("ListMessages by a scoped identity must set listener_id or connection_id to an id within its scope")
			}
			return c.all(nonEmpty(q.GetListenerId()), nonEmpty(q.GetConnectionId()))
		},
		post: func(c *checker, resp any) error {
			r := resp.(*switchboardv1.ListMessagesResponse)
			r.Messages = keep(r.Messages, c.message)
			return nil
		}},
	"ResolveMessage": {role: RoleAdmin, audit: always,
		target: func(r any) string { return "message:" + r.(*switchboardv1.ResolveMessageRequest).GetMessageId() },
		scope: func(c *checker, r any) error {
			id := r.(*switchboardv1.ResolveMessageRequest).GetMessageId()
			conn, ok := outboundConnection(id)
			if !ok {
				return c.deny(fmt.Sprintf("ResolveMessage by a scoped identity must name an outbound message (out-<connection_id>-<sequence>), not %q", id))
			}
			return c.connection(conn)
		}},
	"WatchEvents": {role: RoleViewer, stream: true,
		target: func(r any) string {
			q := r.(*switchboardv1.WatchEventsRequest)
			return filterTarget(nonEmpty(q.GetListenerId()), nonEmpty(q.GetConnectionId()), "")
		},
		scope: func(c *checker, r any) error {
			q := r.(*switchboardv1.WatchEventsRequest)
			if q.GetListenerId() == "" && q.GetConnectionId() == "" {
				return c.deny("WatchEvents by a scoped identity must set listener_id or connection_id to an id within its scope")
			}
			return c.all(nonEmpty(q.GetListenerId()), nonEmpty(q.GetConnectionId()))
		}},
	"Ack": {role: RoleConsumer, data: true, audit: always,
		target: func(r any) string { return "consumer:" + r.(*switchboardv1.AckRequest).GetConsumer() },
		scope:  func(c *checker, r any) error { return c.consumer(r.(*switchboardv1.AckRequest).GetConsumer()) }},
	"AnswerMessage": {role: RoleConsumer, data: true, audit: always,
		target: func(r any) string {
			q := r.(*switchboardv1.AnswerMessageRequest)
			return "consumer:" + q.GetConsumer() + " message:in-" + strconv.FormatUint(q.GetSequence(), 10)
		},
		scope: func(c *checker, r any) error {
			return c.consumer(r.(*switchboardv1.AnswerMessageRequest).GetConsumer())
		}},
	"GetConsumer": {role: RoleViewer,
		target: func(r any) string { return "consumer:" + r.(*switchboardv1.GetConsumerRequest).GetName() },
		post: func(c *checker, resp any) error {
			cs := resp.(*switchboardv1.GetConsumerResponse).GetConsumer()
			if !c.consumerIn(cs.GetListenerIds(), cs.GetConnectionIds()) {
				return c.deny(fmt.Sprintf("consumer %q has filters outside the scope", cs.GetName()))
			}
			return nil
		}},
	"ListConsumers": {role: RoleViewer,
		post: func(c *checker, resp any) error {
			r := resp.(*switchboardv1.ListConsumersResponse)
			r.Consumers = keep(r.Consumers, func(cs *switchboardv1.Consumer) bool { return c.consumerIn(cs.GetListenerIds(), cs.GetConnectionIds()) })
			return nil
		}},
	"DeleteConsumer": {role: RoleAdmin, audit: always,
		target: func(r any) string { return "consumer:" + r.(*switchboardv1.DeleteConsumerRequest).GetName() },
		scope:  func(c *checker, r any) error { return c.consumer(r.(*switchboardv1.DeleteConsumerRequest).GetName()) }},
	"ListDeadLetters": {role: RoleViewer,
		target: func(r any) string { return "consumer:" + r.(*switchboardv1.ListDeadLettersRequest).GetConsumer() },
		scope: func(c *checker, r any) error {
			return c.consumer(r.(*switchboardv1.ListDeadLettersRequest).GetConsumer())
		}},
	"ReplayDeadLetters": {role: RoleOperator, audit: always,
		target: func(r any) string { return "consumer:" + r.(*switchboardv1.ReplayDeadLettersRequest).GetConsumer() },
		scope: func(c *checker, r any) error {
			return c.consumer(r.(*switchboardv1.ReplayDeadLettersRequest).GetConsumer())
		}},
	"GetJournal": {role: RoleViewer},
}

// reflectionRule: server reflection (grpcurl) describes the API, no data.
var reflectionRule = rule{role: RoleViewer}

// unknownRule fails closed: admin, and no scoped identity.
var unknownRule = rule{role: RoleAdmin, denyScoped: true}

// ruleFor returns the rule of a full method name.
func ruleFor(full string) rule {
	if name, ok := strings.CutPrefix(full, svcPrefix); ok {
		if r, ok := methodRules[name]; ok {
			return r
		}
		return unknownRule
	}
	if strings.HasPrefix(full, "/grpc.reflection.") {
		return reflectionRule
	}
	return unknownRule
}

// checker checks one call of a scoped identity.
type checker struct {
	ctx    context.Context
	id     Identity
	lookup Lookup
}

func (c *checker) deny(msg string) error { return outOfScope(c.id, msg) }

func (c *checker) listener(id string) error {
	if !c.id.Scope.Listener(id) {
		return c.deny(fmt.Sprintf("listener %q is outside the scope", id))
	}
	return nil
}

// connIn reports whether connection id is in scope: by its own id, or as
// an inbound connection of a listener in scope.
func (c *checker) connIn(id string) bool {
	if c.id.Scope.Connection(id) {
		return true
	}
	if len(c.id.Scope.Listeners) == 0 || c.lookup == nil || id == "" {
		return false
	}
	l, err := c.lookup.ConnectionListener(c.ctx, id)
	return err == nil && l != "" && c.id.Scope.Listener(l)
}

func (c *checker) connection(id string) error {
	if !c.connIn(id) {
		return c.deny(fmt.Sprintf("connection %q is outside the scope", id))
	}
	return nil
}

func (c *checker) all(listeners, connections []string) error {
	for _, l := range listeners {
		if err := c.listener(l); err != nil {
			return err
		}
	}
	for _, cn := range connections {
		if err := c.connection(cn); err != nil {
			return err
		}
	}
	return nil
}

// consumerIn: a consumer is in scope when it has filters and all of them
// are (an unfiltered consumer reads every listener's messages).
func (c *checker) consumerIn(listeners, connections []string) bool {
	return (len(listeners) > 0 || len(connections) > 0) && c.all(listeners, connections) == nil
}

func (c *checker) consumer(name string) error {
	if c.lookup == nil {
		return c.deny(fmt.Sprintf("consumer %q cannot be checked against the scope (the server has no consumer lookup)", name))
	}
	ls, cs, err := c.lookup.ConsumerFilters(c.ctx, name)
	if err != nil && status.Code(err) != codes.NotFound {
		return err
	}
	if err != nil || !c.consumerIn(ls, cs) {
		// Not found is out of scope too: a scoped caller learns nothing
		// of consumers outside it, and cannot create one by Ack.
		return c.deny(fmt.Sprintf("consumer %q is not one whose filters are all within the scope", name))
	}
	return nil
}

func (c *checker) message(m *switchboardv1.Message) bool {
	if m.GetDirection() == switchboardv1.Direction_DIRECTION_INBOUND && m.GetListenerId() != "" && c.id.Scope.Listener(m.GetListenerId()) {
		return true
	}
	return c.id.Scope.Connection(m.GetConnectionId())
}

// outboundConnection parses "out-<connection_id>-<sequence>".
func outboundConnection(id string) (string, bool) {
	rest, ok := strings.CutPrefix(id, "out-")
	i := strings.LastIndexByte(rest, '-')
	if !ok || i <= 0 {
		return "", false
	}
	if _, err := strconv.ParseUint(rest[i+1:], 10, 64); err != nil {
		return "", false
	}
	return rest[:i], true
}

func keep[T any](s []T, f func(T) bool) []T {
	out := s[:0]
	for _, v := range s {
		if f(v) {
			out = append(out, v)
		}
	}
	return out
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func listenerTarget(id string) string {
	if id == "" {
		return ""
	}
	return "listener:" + id
}

func filterTarget(listeners, connections []string, consumer string) string {
	var parts []string
	if len(listeners) > 0 {
		parts = append(parts, "listeners:"+strings.Join(listeners, ","))
	}
	if len(connections) > 0 {
		parts = append(parts, "connections:"+strings.Join(connections, ","))
	}
	if consumer != "" {
		parts = append(parts, "consumer:"+consumer)
	}
	return strings.Join(parts, " ")
}
