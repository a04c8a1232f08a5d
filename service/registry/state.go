package registry

import (
	"context"
	"time"
)

// StateStore keeps desired state: the specs of the listeners and outbound
// connections callers created, so that they come back after a restart or a
// crash. PutResource and DeleteResource return only once the change is
// durable. Backends: the embedded one shares the journal's Pebble database
// (pebblejournal.Journal.StateStore); a NATS JetStream KV backend will
// follow. Every backend passes statetest.Run. The methods use only basic
// types, so a backend implements the interface without importing this
// package.
type StateStore interface {
	// PutResource records a resource, replacing any of the same type and
	// id. typ is TypeListener or TypeConnection; spec is its config
	// (switchboardv1.ListenerConfig or ConnectionConfig), marshalled
	// deterministically.
	PutResource(ctx context.Context, typ, id string, spec []byte, created time.Time) error
	// DeleteResource removes a resource; removing one that does not exist
	// is not an error.
	DeleteResource(ctx context.Context, typ, id string) error
	// Resources calls fn for every stored resource, ordered by type, then
	// id, and stops at the first error fn returns.
	Resources(ctx context.Context, fn func(typ, id string, spec []byte, created time.Time) error) error
}
