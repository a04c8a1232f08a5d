package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// restoreWait is how long Restore waits for the first binds and connects of
// what it recreates: a reachable peer answers in milliseconds and a refused
// connect fails as fast, so a normal restart shows its connections open
// when it reports SERVING; a peer that does not answer at all (a connect
// timeout) must not hold up the restart, and its connection goes on
// connecting in the background.
const restoreWait = time.Second

// forgetTimeout bounds the state delete of a resource whose creation was
// cut short by Shutdown.
const forgetTimeout = 5 * time.Second

// putState records a resource in the state store, when there is one.
func (r *Registry) putState(ctx context.Context, typ, id string, spec proto.Message, created time.Time) error {
	if r.cfg.State == nil {
		return nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(spec)
	if err == nil {
		err = r.cfg.State.PutResource(ctx, typ, id, b, created)
	}
	if err != nil {
		return fmt.Errorf("record %s %q: %w", typ, id, err)
	}
	return nil
}

// deleteState removes a resource from the state store, when there is one.
func (r *Registry) deleteState(ctx context.Context, typ, id string) error {
	if r.cfg.State == nil {
		return nil
	}
	if err := r.cfg.State.DeleteResource(ctx, typ, id); err != nil {
		return fmt.Errorf("delete %s %q: %w", typ, id, err)
	}
	return nil
}

// forgetState deletes a resource that was recorded but not created after
// all (Shutdown began meanwhile), so it does not come back at the next
// start. The caller was told it failed; if the delete fails too, it is
// logged.
func (r *Registry) forgetState(typ, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), forgetTimeout)
	defer cancel()
	if err := r.deleteState(ctx, typ, id); err != nil {
		r.log.Error("a resource refused during shutdown stays recorded and comes back at the next start", "type", typ, "id", id, "err", err)
	}
}

// Restore recreates the listeners and outbound connections recorded in
// Config.State, with their ids, specs and creation times, building their
// transport configuration with Config.ListenerConfig and DialConfig. Ids
// that exist already (created meanwhile through the API) are left as they
// are.
//
// Every resource comes up in a goroutine of its own, so none holds up the
// others: a listener whose address cannot be bound is listed BackingOff
// and retried with backoff until it binds or is stopped; an outbound
// connection is listed Connecting at once and its reconnect loop takes
// over. Restore waits for the first attempts, at most restoreWait (1 s),
// then returns; a record that cannot be read is logged and skipped (it stays
// stored). The error is the state store's, when it cannot be read at all.
func (r *Registry) Restore(ctx context.Context) error {
	if r.cfg.State == nil {
		return nil
	}
	if r.cfg.ListenerConfig == nil || r.cfg.DialConfig == nil {
		return errors.New("registry: Restore needs Config.ListenerConfig and Config.DialConfig")
	}
	var all []Resource
	err := r.cfg.State.Resources(ctx, func(typ, id string, b []byte, created time.Time) error {
		all = append(all, Resource{Type: typ, ID: id, Spec: b, Created: created})
		return nil
	})
	if err != nil {
		return fmt.Errorf("read desired state: %w", err)
	}
	return r.Adopt(ctx, all)
}

// Resource is one stored resource, as the StateStore keeps it.
type Resource struct {
	Type, ID string
	Spec     []byte // the marshalled ListenerConfig or ConnectionConfig
	Created  time.Time
}

// Adopt brings up stored resources that are not in the registry yet, as
// Restore does (which is Adopt of everything stored), without writing the
// state store: they are recorded already. In a cluster, an instance adopts
// a resource once it holds its lease (service/cluster), and Release gives
// it up again. A resource that cannot be read is logged and skipped.
func (r *Registry) Adopt(ctx context.Context, rs []Resource) error {
	if r.cfg.ListenerConfig == nil || r.cfg.DialConfig == nil {
		return errors.New("registry: Adopt needs Config.ListenerConfig and Config.DialConfig")
	}
	began := time.Now()
	var ls []*listener
	var cs []*connection
	skipped := 0
	for _, res := range rs {
		typ, id := res.Type, res.ID
		var spec proto.Message
		switch typ {
		case TypeListener:
			spec = &switchboardv1.ListenerConfig{}
		case TypeConnection:
			spec = &switchboardv1.ConnectionConfig{}
		default:
			r.log.Error("desired state: unknown resource type; skipped", "type", typ, "id", id)
			skipped++
			continue
		}
		if err := proto.Unmarshal(res.Spec, spec); err != nil {
			r.log.Error("desired state: unreadable resource; skipped", "type", typ, "id", id, "err", err)
			skipped++
			continue
		}
		switch spec := spec.(type) {
		case *switchboardv1.ListenerConfig:
			ls = append(ls, &listener{id: id, spec: spec, cfg: r.listenerHooks(id, r.cfg.ListenerConfig(spec)),
				created: res.Created, ready: make(chan struct{}), retry: newRetry(r.rebind)})
		case *switchboardv1.ConnectionConfig:
			cs = append(cs, &connection{id: id, spec: spec, dial: r.dialHooks(id, r.cfg.DialConfig(spec)),
				created: res.Created, listed: true, state: ConnConnecting, retry: newRetry(reconnectBackoff(spec.GetReconnect())),
				announced: make(chan struct{})})
		}
	}

	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return ErrShuttingDown
	}
	ls = slices.DeleteFunc(ls, func(e *listener) bool { _, ok := r.listeners[e.id]; return ok })
	cs = slices.DeleteFunc(cs, func(e *connection) bool { _, ok := r.conns[e.id]; return ok })
	for _, e := range ls {
		r.listeners[e.id] = e
		r.start(e.retry, func(ctx context.Context) { r.keepBinding(ctx, e) })
	}
	for _, e := range cs {
		r.conns[e.id] = e
		r.start(e.retry, func(ctx context.Context) { r.keepOpen(ctx, e) })
	}
	r.mu.Unlock()
	for _, e := range cs {
		r.outboundChanged(e, false)
	}

	wctx, cancel := context.WithTimeout(ctx, r.restoreWait)
	defer cancel()
	for _, e := range ls {
		select {
		case <-e.ready:
		case <-wctx.Done():
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range cs {
		for e.retry.attempts == 0 && wctx.Err() == nil {
			ch := e.retry.changed
			r.mu.Unlock()
			select {
			case <-ch:
			case <-wctx.Done():
			}
			r.mu.Lock()
		}
	}
	bound, open := 0, 0
	for _, e := range ls {
		if e.l != nil {
			bound++
		}
	}
	for _, e := range cs {
		if e.state == ConnOpen {
			open++
		}
	}
	r.log.Info("resources brought up", "listeners", len(ls), "listeners_bound", bound,
		"outbound_connections", len(cs), "outbound_open", open, "skipped", skipped,
		"elapsed", time.Since(began).Round(time.Millisecond))
	return nil
}

// deleteStateUnless is deleteState, unless keep.
func (r *Registry) deleteStateUnless(ctx context.Context, keep bool, typ, id string) error {
	if keep {
		return nil
	}
	return r.deleteState(ctx, typ, id)
}

// Release stops a listener or outbound connection here without removing
// it: its desired state stays recorded, so that another instance of a
// cluster brings it up (Adopt) once it holds the lease. A listener drains
// until deadline; a connection's session is closed and its outbox worker
// stopped. Releasing what is not here is not an error.
func (r *Registry) Release(ctx context.Context, typ, id string, deadline time.Time) error {
	r.mu.Lock()
	switch typ {
	case TypeListener:
		e, ok := r.listeners[id]
		if !ok || e.stop != nil {
			r.mu.Unlock()
			return nil
		}
		st := &removal{keepState: true, done: make(chan struct{})}
		e.stop = st
		r.mu.Unlock()
		r.stopListener(ctx, e, st, deadline)
		return st.err
	case TypeConnection:
		e, ok := r.conns[id]
		if !ok || e.spec == nil || e.removing != nil {
			r.mu.Unlock()
			return nil
		}
		rm := &removal{keepState: true, done: make(chan struct{})}
		e.removing = rm
		r.mu.Unlock()
		r.remove(ctx, e, rm)
		return rm.err
	}
	r.mu.Unlock()
	return fmt.Errorf("registry: Release: unknown resource type %q", typ)
}
