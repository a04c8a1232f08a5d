package registry

import (
	"context"
	"time"
)

// StateStore keeps desired state: the specs of the listeners and outbound
// connections callers created, so that they come back after a restart or a
// crash. Put and Delete return only once the change is durable. Backends:
// the embedded one shares the journal's Pebble database
// (pebblejournal.Journal.StateStore); a NATS JetStream KV backend will
// follow. Every backend passes statetest.Run.
type StateStore interface {
	// Put records r, replacing any resource of the same type and id.
	Put(ctx context.Context, r StoredResource) error
	// Delete removes the resource; deleting one that does not exist is not
	// an error.
	Delete(ctx context.Context, typ, id string) error
	// List returns every stored resource, ordered by type, then id.
	List(ctx context.Context) ([]StoredResource, error)
}

// StoredResource is one resource as the state store keeps it.
type StoredResource struct {
	// Type is TypeListener or TypeConnection.
	Type string
	// ID is the resource's id.
	ID string
	// Spec is the resource's config (switchboardv1.ListenerConfig or
	// ConnectionConfig), marshalled deterministically.
	Spec []byte
	// Created is when the resource was created.
	Created time.Time
}
