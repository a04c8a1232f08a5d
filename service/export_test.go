package service

import switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"

// MaxTextBytes is what the API's strings taken from message bytes are cut
// to, for the external tests' model of them.
const MaxTextBytes = maxTextBytes

// OutboundChanged runs the outbox's hook on the registry's OutboundChanged,
// as the registry does once it calls the hook (the reconnection work brings
// those calls); until then the tests call it after Connect and Disconnect.
// A second call for the same change does nothing.
func (s *Service) OutboundChanged(id string, spec *switchboardv1.ConnectionConfig, removed bool) {
	if s.outbox != nil {
		s.outbox.ConnectionChanged(id, spec, removed)
	}
}
