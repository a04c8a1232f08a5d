package auth

import (
	"testing"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// TestRoleTableCoversService fails when an RPC is added without a rule
// (it would need admin: safe, but surely not what was meant).
func TestRoleTableCoversService(t *testing.T) {
	sd := switchboardv1.SwitchboardService_ServiceDesc
	names := map[string]bool{}
	for _, m := range sd.Methods {
		names[m.MethodName] = true
	}
	for _, s := range sd.Streams {
		names[s.StreamName] = true
		if r, ok := methodRules[s.StreamName]; ok && r.scope != nil && !s.ServerStreams {
			t.Errorf("%s: scope checks read the first request, which only server-streaming calls send first", s.StreamName)
		}
	}
	for n := range names {
		r, ok := methodRules[n]
		if !ok {
			t.Errorf("method %s is not in the role table", n)
			continue
		}
		if r.role < RoleViewer || r.role > RoleAdmin {
			t.Errorf("method %s: role %v", n, r.role)
		}
	}
	for n := range methodRules {
		if !names[n] {
			t.Errorf("role table has %s, which the service does not", n)
		}
	}
	if r := ruleFor("/switchboard.v1.SwitchboardService/Nope"); r.role != RoleAdmin || !r.denyScoped {
		t.Errorf("unknown method rule = %+v", r)
	}
	if r := ruleFor("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"); r.role != RoleViewer {
		t.Errorf("reflection needs %v", r.role)
	}
}

func TestOutboundConnection(t *testing.T) {
	for id, want := range map[string]string{"out-c1-5": "c1", "out-a-b-c-17": "a-b-c", "out--1": "", "in-5": "", "out-c1-x": "", "out-c1": ""} {
		got, ok := outboundConnection(id)
		if got != want || ok != (want != "") {
			t.Errorf("outboundConnection(%q) = %q, %v; want %q", id, got, ok, want)
		}
	}
}
