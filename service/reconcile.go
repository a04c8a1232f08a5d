package service

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// reconcileGap spaces reconcile passes out when the node's notifications
// (leases, members, validity) come in bursts; besides them a pass runs
// every TTL/5.
const reconcileGap = 200 * time.Millisecond

// startCluster answers calls from other instances and runs the first
// reconcile pass (Restore, in a cluster), then keeps reconciling in the
// background until Shutdown.
func (s *Service) startCluster(ctx context.Context) error {
	if err := s.node.Serve(s.serveCall); err != nil {
		return err
	}
	s.reconcile(ctx)
	s.bg.Go(func() { s.reconcileLoop(ctx) })
	return nil
}

func (s *Service) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(s.node.TTL() / 5)
	defer t.Stop()
	for {
		changed := s.node.Changed()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
		s.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(reconcileGap):
		}
	}
}

// reconcile makes this instance run what it should: see clustered.go.
func (s *Service) reconcile(ctx context.Context) {
	if !s.node.Valid() {
		// Cut off: let go of everything single-owner before the others
		// take it over.
		s.releaseAll(ctx, false)
		return
	}
	var adopt []registry.Resource
	desired := map[string]bool{}
	err := s.state.Resources(ctx, func(typ, id string, spec []byte, created time.Time) error {
		desired[typ+"/"+id] = true
		every := false
		if typ == registry.TypeListener {
			var c switchboardv1.ListenerConfig
			if proto.Unmarshal(spec, &c) == nil {
				every = c.GetEveryInstance()
			}
		}
		here := s.here(typ, id)
		switch {
		case every:
			s.every[id] = true
			if !here {
				adopt = append(adopt, registry.Resource{Type: typ, ID: id, Spec: spec, Created: created})
			}
		case here:
			if !s.node.Holds(typ, id) && !s.node.Leased(typ, id) {
				// Created here, lease not seen yet, or released: leave it
				// to the call that made it.
				return nil
			}
			if !s.node.Holds(typ, id) {
				s.log.Warn("lease lost; releasing", "type", typ, "id", id)
				s.release(ctx, typ, id)
			}
		default:
			if owner, owned := s.node.Owner(typ, id); owned && owner != s.node.Instance() {
				return nil
			}
			if err := s.node.Acquire(ctx, typ, id); err != nil {
				return nil // someone else was quicker, or we are cut off
			}
			adopt = append(adopt, registry.Resource{Type: typ, ID: id, Spec: spec, Created: created})
		}
		return nil
	})
	if err != nil {
		s.log.Warn("reconcile: desired state unreadable", "err", err)
		return
	}
	// Leases of dead instances whose resource was removed.
	for _, l := range s.node.Leases() {
		if !l.Alive && !desired[l.Type+"/"+l.ID] {
			if err := s.node.Clear(ctx, l.Type, l.ID); err != nil {
				s.log.Warn("reconcile: could not clear a dead instance's lease", "type", l.Type, "id", l.ID, "err", err)
			}
		}
	}
	// A listener on every instance that was removed elsewhere.
	for id := range s.every {
		if !desired[registry.TypeListener+"/"+id] {
			delete(s.every, id)
			s.release(ctx, registry.TypeListener, id)
		}
	}
	if len(adopt) > 0 {
		if err := s.reg.Adopt(ctx, adopt); err != nil {
			s.log.Warn("reconcile: could not bring resources up", "err", err)
			return
		}
		for _, r := range adopt {
			s.log.Info("resource taken over", "type", r.Type, "id", r.ID)
		}
	}
}

// release stops a resource here without removing it.
func (s *Service) release(ctx context.Context, typ, id string) {
	if !s.here(typ, id) {
		return
	}
	if err := s.reg.Release(ctx, typ, id, time.Now().Add(2*time.Second)); err != nil {
		s.log.Warn("release failed", "type", typ, "id", id, "err", err)
		return
	}
	s.log.Info("resource released here", "type", typ, "id", id)
}

// releaseAll releases every single-owner resource here (and with leases,
// gives their leases up: at shutdown, so the others take over at once).
func (s *Service) releaseAll(ctx context.Context, leases bool) {
	var ls []string
	after := ""
	for {
		page, more := s.reg.Listeners(after, 1000)
		for _, v := range page {
			if !v.Spec.GetEveryInstance() {
				ls = append(ls, v.ID)
			}
		}
		if !more || len(page) == 0 {
			break
		}
		after = page[len(page)-1].ID
	}
	var cs []string
	after = ""
	for {
		page, more := s.reg.Connections(registry.ConnFilter{Direction: transport.Outbound}, after, 1000)
		for _, v := range page {
			cs = append(cs, v.ID)
		}
		if !more || len(page) == 0 {
			break
		}
		after = page[len(page)-1].ID
	}
	for _, id := range ls {
		s.release(ctx, registry.TypeListener, id)
		if leases {
			s.releaseLease(registry.TypeListener, id)
		}
	}
	for _, id := range cs {
		s.release(ctx, registry.TypeConnection, id)
		if leases {
			s.releaseLease(registry.TypeConnection, id)
		}
	}
}
