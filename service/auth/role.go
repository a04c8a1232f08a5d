// Package auth authenticates and authorizes calls to Switchboard's control
// plane and records them for audit.
//
// A caller is identified by a bearer token (metadata "authorization: Bearer
// sbt_..."), else by a verified mTLS client certificate, both mapped to a
// role and an optional scope by the access file (see ParseAccessFile).
// Without an access file the server may run anonymously: every caller is
// the admin "anonymous", as before authentication existed; audit records
// are written all the same.
//
// Each RPC needs a role (see methodRules); a scoped identity may only name
// listeners and connections whose ids start with one of its prefixes, and
// its calls that span resources must carry a filter within its scope.
package auth

import (
	"fmt"
	"strings"
)

// Role is what a caller may do. Each role includes the ones below it.
type Role int

const (
	// RoleViewer reads state: Get*, List* (without payloads), WatchEvents,
	// GetJournal, server reflection.
	RoleViewer Role = iota + 1
	// RoleConsumer also reads payloads (patient data) and consumes:
	// Receive, Ack, AnswerMessage, GetMessage, ListMessages with payloads.
	RoleConsumer
	// RoleOperator also changes the running configuration and sends:
	// Start/StopListener, Connect/Disconnect, Send, ReplayDeadLetters.
	RoleOperator
	// RoleAdmin may do everything, including DeleteConsumer,
	// ResolveMessage and any method not in the role table.
	RoleAdmin
)

var roleNames = [...]string{RoleViewer: "viewer", RoleConsumer: "consumer", RoleOperator: "operator", RoleAdmin: "admin"}

// String returns the role's name as written in the access file.
func (r Role) String() string {
	if r >= RoleViewer && r <= RoleAdmin {
		return roleNames[r]
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ParseRole parses a role name (viewer, consumer, operator, admin).
func ParseRole(s string) (Role, error) {
	for r := RoleViewer; r <= RoleAdmin; r++ {
		if s == roleNames[r] {
			return r, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown role %q (want viewer, consumer, operator or admin)", ErrInvalid, s)
}

// Scope restricts an identity to listener and connection ids starting
// with one of the given prefixes. The zero Scope is unrestricted. Once
// either list is set the identity is scoped and the other list limits too:
// a scope of listeners=adt- alone reaches no outbound connection (fail
// closed; a scope never grows by leaving a list out).
type Scope struct {
	Listeners, Connections []string
}

// Scoped reports whether s restricts anything.
func (s Scope) Scoped() bool { return len(s.Listeners) > 0 || len(s.Connections) > 0 }

// Listener reports whether listener id is within s.
func (s Scope) Listener(id string) bool { return !s.Scoped() || hasPrefix(id, s.Listeners) }

// Connection reports whether connection id is within s by its own id.
// (An inbound connection of an in-scope listener is also within s; the
// authorizer checks that through its Lookup.)
func (s Scope) Connection(id string) bool { return !s.Scoped() || hasPrefix(id, s.Connections) }

// String is the scope as the access file writes it, "" when unrestricted;
// ErrorInfo metadata "scope" and audit records use it.
func (s Scope) String() string {
	var parts []string
	if len(s.Listeners) > 0 {
		parts = append(parts, "listeners="+strings.Join(s.Listeners, ","))
	}
	if len(s.Connections) > 0 {
		parts = append(parts, "connections="+strings.Join(s.Connections, ","))
	}
	return strings.Join(parts, " ")
}

func hasPrefix(id string, prefixes []string) bool {
	if id == "" {
		return false
	}
	for _, p := range prefixes {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}
