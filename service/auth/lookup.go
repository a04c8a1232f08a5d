package auth

import (
	"context"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// Lookup answers the questions a scope check cannot answer from a request
// alone. Without one (Config.Lookup nil), a listener-scoped identity
// reaches inbound connections only if their ids match its connection
// prefixes, and scoped identities cannot use calls naming a consumer.
type Lookup interface {
	// ConnectionListener returns the listener that accepted inbound
	// connection id, "" for an outbound one.
	ConnectionListener(ctx context.Context, id string) (string, error)
	// ConsumerFilters returns the listener and connection filters a
	// durable consumer was created with (a NOT_FOUND status when there is
	// no such consumer).
	ConsumerFilters(ctx context.Context, name string) (listeners, connections []string, err error)
}

// ServerLookup answers from the service itself, called directly (not
// through gRPC, so not through these interceptors): pass the *service.Service
// that the gRPC server serves.
func ServerLookup(s switchboardv1.SwitchboardServiceServer) Lookup { return serverLookup{s} }

type serverLookup struct {
	s switchboardv1.SwitchboardServiceServer
}

func (l serverLookup) ConnectionListener(ctx context.Context, id string) (string, error) {
	resp, err := l.s.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: id})
	if err != nil {
		return "", err
	}
	return resp.GetConnection().GetListenerId(), nil
}

func (l serverLookup) ConsumerFilters(ctx context.Context, name string) ([]string, []string, error) {
	resp, err := l.s.GetConsumer(ctx, &switchboardv1.GetConsumerRequest{Name: name})
	if err != nil {
		return nil, nil, err
	}
	return resp.GetConsumer().GetListenerIds(), resp.GetConsumer().GetConnectionIds(), nil
}
