package service

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/internal/tlsfiles"
	"github.com/switchboard-dev/switchboard/observe"
	"github.com/switchboard-dev/switchboard/service/registry"
	"github.com/switchboard-dev/switchboard/transport"
)

// Conversions between the API's messages and transport's types. Unset API
// fields become transport's zero values, which mean transport's defaults
// (transport/limits.go): defaults are written in one place.

// listenerConfig is resolveListener for the registry, which rebuilds
// configs by itself (Restore): a config that does not resolve (a profile
// gone, an address the policy now forbids) gets a Control hook failing
// with that error, so every bind attempt fails with it and the restored
// listener shows it as its last_error while it backs off.
func (s *Service) listenerConfig(c *switchboardv1.ListenerConfig) transport.ListenerConfig {
	cfg, err := s.resolveListener(c)
	if err != nil {
		cfg.TLS, cfg.PeerNames = nil, nil
		cfg.Control = func(string, string, syscall.RawConn) error { return err }
	}
	return cfg
}

// resolveListener builds a listener's transport config, checking its
// address against the policy and resolving its TLS profile.
func (s *Service) resolveListener(c *switchboardv1.ListenerConfig) (transport.ListenerConfig, error) {
	cfg := transport.ListenerConfig{
		Address: c.GetAddress(),
		Conn: transport.ConnConfig{
			Framing:              framingFromProto(c.GetFraming(), c.GetMaxFrameBytes(), c.GetMaxJunkBytes()),
			Ack:                  s.listenerAck(c),
			IdleTimeout:          durationOr(c.GetIdleTimeout(), 0),
			FrameTimeout:         durationOr(c.GetFrameTimeout(), 0),
			Keepalive:            keepaliveFromProto(c.GetKeepalive()),
			UserTimeout:          keepaliveFromProto(c.GetTcpUserTimeout()),
			MaxMessagesPerSecond: c.GetMaxMessagesPerSecond(),
			Budget:               s.budget,
			Observer:             s.observer,
		},
		MaxConnections:          int(c.GetMaxConnections()),
		MaxConnectionsPerSource: int(c.GetMaxConnectionsPerSource()),
		Slots:                   s.slots,
		AllowedSources:          prefixes(c.GetAllowedSources()),
		ProxyTrusted:            prefixes(c.GetProxyProtocol().GetTrustedSources()),
		Sink:                    s.listenerSink(c),
		Logger:                  s.log,
	}
	if s.policy != nil {
		if err := s.policy.CheckListen(c.GetAddress()); err != nil {
			return cfg, forbidden(err)
		}
		check := s.policy.ListenControlFor(c.GetAddress())
		cfg.Control = func(network, address string, rc syscall.RawConn) error {
			return forbidden(check(network, address, rc))
		}
	}
	if t := c.GetTls(); t != nil {
		src, err := s.profile(t.GetProfile())
		if err != nil {
			return cfg, err
		}
		auth := tls.NoClientCert
		switch t.GetClientCertificate() {
		case switchboardv1.ClientCertificate_CLIENT_CERTIFICATE_UNSPECIFIED:
			if src.HasCA() {
				auth = tls.RequireAndVerifyClientCert
			}
		case switchboardv1.ClientCertificate_CLIENT_CERTIFICATE_OPTIONAL:
			auth = tls.VerifyClientCertIfGiven
		case switchboardv1.ClientCertificate_CLIENT_CERTIFICATE_REQUIRED:
			auth = tls.RequireAndVerifyClientCert
		}
		tc, err := src.ServerConfig(auth)
		if err != nil {
			return cfg, &profileError{name: t.GetProfile(), err: err}
		}
		tc.ClientAuth = auth // also set per handshake; here for checks on the config
		cfg.TLS, cfg.PeerNames = tc, t.GetAllowedPeerNames()
	}
	return cfg, nil
}

// dialConfig is resolveDial for the registry (see listenerConfig): a
// config that does not resolve fails every connect with that error.
func (s *Service) dialConfig(c *switchboardv1.ConnectionConfig) transport.DialConfig {
	cfg, err := s.resolveDial(c)
	if err != nil {
		cfg.TLS, cfg.TLSConfig, cfg.PeerNames = nil, nil, nil
		cfg.Control = func(string, string, syscall.RawConn) error { return err }
	}
	return cfg
}

// resolveDial builds a connection's transport config, checking its
// address against the policy and resolving its TLS profile. The profile's
// files are read again at every connect (TLSConfig), so rotated
// certificates are used from the next reconnect on.
func (s *Service) resolveDial(c *switchboardv1.ConnectionConfig) (transport.DialConfig, error) {
	cfg := transport.DialConfig{
		Address: c.GetAddress(),
		Conn: transport.ConnConfig{
			Framing:              framingFromProto(c.GetFraming(), c.GetMaxFrameBytes(), 0),
			Ack:                  ackFromProto(c.GetAckPolicy()),
			AckTimeout:           durationOr(c.GetAckTimeout(), 0),
			Keepalive:            keepaliveFromProto(c.GetKeepalive()),
			UserTimeout:          keepaliveFromProto(c.GetTcpUserTimeout()),
			MaxMessagesPerSecond: c.GetMaxMessagesPerSecond(),
			Budget:               s.budget,
			Observer:             s.observer,
		},
		ConnectTimeout: durationOr(c.GetConnectTimeout(), 0),
		Sink:           s.sink,
		Logger:         s.log,
	}
	if s.policy != nil {
		if err := s.policy.CheckDial(c.GetAddress()); err != nil {
			return cfg, forbidden(err)
		}
		check := s.policy.DialControlFor(c.GetAddress())
		cfg.Control = func(network, address string, rc syscall.RawConn) error {
			return forbidden(check(network, address, rc))
		}
	}
	if t := c.GetTls(); t != nil {
		serverName := t.GetServerName()
		if t.GetProfile() == "" {
			cfg.TLSConfig = func() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName} }
		} else {
			src, err := s.profile(t.GetProfile())
			if err != nil {
				return cfg, err
			}
			cfg.TLSConfig = func() *tls.Config { return src.ClientConfig(serverName) }
		}
		cfg.PeerNames = t.GetAllowedPeerNames()
	}
	return cfg, nil
}

// profile returns the named TLS profile.
func (s *Service) profile(name string) (*tlsfiles.Source, error) {
	if s.profiles == nil {
		return nil, &profileError{name: name, err: errors.New("the server has no TLS profiles (serve --tls-profiles)")}
	}
	src, err := s.profiles.Get(name)
	if err != nil {
		return nil, &profileError{name: name, err: err}
	}
	return src, nil
}

// profileError is a TLS profile that a config names but cannot be used.
type profileError struct {
	name string
	err  error
}

func (e *profileError) Error() string { return fmt.Sprintf("TLS profile %q: %v", e.name, e.err) }
func (e *profileError) Unwrap() error { return e.err }

// forbidden makes sure an address policy's refusal wraps
// ErrAddressForbidden.
func forbidden(err error) error {
	if err == nil || errors.Is(err, ErrAddressForbidden) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrAddressForbidden, err)
}

// prefixes parses CIDR prefixes that validation has checked already
// (ip_prefix). One that does not parse is dropped: with AllowedSources it
// can only make the list stricter.
func prefixes(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

func framingFromProto(f *switchboardv1.Framing, maxFrameBytes, maxJunkBytes int32) transport.Framing {
	out := transport.Framing{Kind: transport.FramingMLLP, MaxFrameBytes: int(maxFrameBytes), MaxJunkBytes: int(maxJunkBytes)}
	switch k := f.GetKind().(type) {
	case *switchboardv1.Framing_Mllp:
		out.Strict = k.Mllp.GetStrict()
	case *switchboardv1.Framing_LengthPrefix:
		out.Kind = transport.FramingLengthPrefix
	case *switchboardv1.Framing_Delimiter:
		out.Kind = transport.FramingDelimiter
		out.Delimiter = k.Delimiter.GetDelimiter()
	case *switchboardv1.Framing_StartEnd:
		out.Kind = transport.FramingStartEnd
		out.Start, out.End, out.Strict = k.StartEnd.GetStart(), k.StartEnd.GetEnd(), k.StartEnd.GetStrict()
	}
	return out
}

func ackFromProto(p *switchboardv1.AckPolicy) transport.AckPolicy {
	switch k := p.GetKind().(type) {
	case *switchboardv1.AckPolicy_SingleByte:
		return transport.SingleByteAck()
	case *switchboardv1.AckPolicy_MllpCommit:
		return transport.MLLPCommitAck()
	case *switchboardv1.AckPolicy_Fixed:
		return transport.FixedAck(k.Fixed.GetAck(), k.Fixed.GetNak())
	case *switchboardv1.AckPolicy_None:
		return transport.NoAck()
	}
	return transport.HL7Ack()
}

// durationOr returns d, or def when d is unset.
func durationOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

// keepaliveFromProto maps the API's "unset: default, zero: off" to
// transport's "zero: default, negative: off".
func keepaliveFromProto(d *durationpb.Duration) time.Duration {
	switch {
	case d == nil:
		return 0
	case d.AsDuration() <= 0:
		return -1
	}
	return d.AsDuration()
}

// maxTextBytes bounds the strings text returns. A header field can be as
// long as its frame, and a response holds the payload and its fields again
// (twice over when read as ISO-8859-1), yet must fit in MaxMessageBytes. No
// real MSH-9, MSH-10 or MSA-3 comes close.
const maxTextBytes = 4 << 10

// text makes a string taken from message bytes valid UTF-8, as proto3
// string fields must be: valid UTF-8 is kept as is, anything else is read
// byte by byte as ISO-8859-1 (the commonest HL7 v2 charset after ASCII, so
// Latin-1 names come out right); either is cut to maxTextBytes at a
// character boundary. The exact bytes stay in the payload. A record whose
// header holds such bytes must never become a message the API cannot
// deliver.
func text(s string) string {
	if !utf8.ValidString(s) {
		b := make([]byte, 0, min(len(s)+len(s)/2, maxTextBytes+utf8.UTFMax))
		for i := 0; i < len(s) && len(b) < maxTextBytes; i++ {
			b = utf8.AppendRune(b, rune(s[i]))
		}
		s = string(b)
	}
	if len(s) > maxTextBytes {
		n := maxTextBytes
		for !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return s
}

// errText is an error's text for a status field, empty for none.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return text(err.Error())
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func listenerToProto(v registry.ListenerView) *switchboardv1.Listener {
	info := v.Info
	return &switchboardv1.Listener{
		ListenerId: v.ID,
		Config:     v.Spec,
		Status: &switchboardv1.ListenerStatus{
			State:                            listenerState(v.State),
			BoundAddress:                     info.Addr,
			CreateTime:                       timestamp(v.Created),
			OpenConnectionCount:              int64(info.Open),
			AcceptedConnectionCount:          info.Accepted,
			RejectedConnectionCount:          info.Rejected,
			SourceRejectedConnectionCount:    info.SourceRejected,
			SourceDeniedConnectionCount:      info.SourceDenied,
			TlsFailedConnectionCount:         info.TLSFailures,
			PeerDeniedConnectionCount:        info.PeerDenied,
			ProxyHeaderFailedConnectionCount: info.ProxyHeaderFailures,
			ConnectionTotals:                 countersToProto(&info.Totals),
			LastError:                        errText(v.LastError),
			NextAttemptTime:                  timestamp(v.NextAttempt),
		},
	}
}

// connToProto is connToProtoView with the outbox's count of the
// connection's undelivered messages.
func (s *Service) connToProto(v registry.ConnectionView) *switchboardv1.Connection {
	c := connToProtoView(v)
	if s.outbox != nil && c.GetDirection() == switchboardv1.Direction_DIRECTION_OUTBOUND {
		if n, ok := s.outbox.Queued(v.ID); ok {
			c.Status.QueuedMessageCount = n
		}
	}
	return c
}

func connToProtoView(v registry.ConnectionView) *switchboardv1.Connection {
	info := v.Info
	c := &switchboardv1.Connection{
		ConnectionId: v.ID,
		Direction:    direction(info.Direction),
		Status: &switchboardv1.ConnectionStatus{
			State:              connState(v.State),
			LocalAddress:       info.LocalAddr,
			RemoteAddress:      info.RemoteAddr,
			OpenTime:           timestamp(info.OpenTime),
			LastActivityTime:   timestamp(info.LastActivity),
			Counters:           countersToProto(&info.Counters),
			CloseReason:        closeReason(info.CloseReason),
			CloseTime:          timestamp(info.CloseTime),
			LastError:          errText(v.LastError),
			NextAttemptTime:    timestamp(v.NextAttempt),
			FailedConnectCount: v.FailedConnects,
			ReconnectCount:     v.Reconnects,
		},
	}
	c.Status.CloseDetail = errText(info.CloseErr)
	if t := info.TLS; t != nil {
		c.Status.Tls = &switchboardv1.TlsState{Version: t.Version, CipherSuite: t.CipherSuite,
			PeerIdentity: text(t.PeerIdentity), PeerSubject: text(t.PeerSubject)}
		for _, n := range t.PeerNames {
			c.Status.Tls.PeerNames = append(c.Status.Tls.PeerNames, text(n))
		}
	}
	if v.Spec != nil {
		c.Origin = &switchboardv1.Connection_Config{Config: v.Spec}
	} else {
		c.Origin = &switchboardv1.Connection_ListenerId{ListenerId: info.ListenerID}
	}
	return c
}

func countersToProto(k *transport.Counters) *switchboardv1.ConnectionCounters {
	return &switchboardv1.ConnectionCounters{
		ReceivedFrameCount:         k.FramesIn,
		ReceivedBytes:              k.BytesIn,
		SentFrameCount:             k.FramesOut,
		SentBytes:                  k.BytesOut,
		SentAcks:                   ackCounts(&k.AcksSent),
		ReceivedAcks:               ackCounts(&k.AcksReceived),
		JunkBytes:                  k.JunkBytes,
		DiscardedPartialFrameCount: k.DiscardedPartials,
		MissingTrailerCount:        k.MissingTrailers,
		FramingErrorCount:          k.FramingErrors,
		JournalErrorCount:          k.JournalErrors,
		InvalidMessageCount:        k.InvalidMessages,
		AckTimeoutCount:            k.AckTimeouts,
		AckMismatchCount:           k.AckMismatches,
		UnsolicitedAckCount:        k.UnsolicitedAcks,
		DuplicateCount:             k.Duplicates,
	}
}

func ackCounts(byCode *transport.AckCounts) []*switchboardv1.AckCount {
	var out []*switchboardv1.AckCount
	for _, code := range transport.AckCodes() {
		if n := byCode[code]; n > 0 {
			out = append(out, &switchboardv1.AckCount{Code: ackCode(code), Count: n})
		}
	}
	return out
}

func peerAckToProto(a *transport.PeerAck) *switchboardv1.PeerAck {
	return &switchboardv1.PeerAck{
		Code:      ackCode(a.Code),
		Payload:   a.Payload,
		ControlId: text(a.ControlID),
		Text:      text(a.Text),
	}
}

func sendResultToProto(r transport.SendResult) *switchboardv1.SendResponse {
	resp := &switchboardv1.SendResponse{
		Outcome:       sendOutcome(r.Outcome),
		SentControlId: text(r.SentControlID),
		RoundTrip:     durationpb.New(r.RoundTrip),
	}
	if r.Outcome != transport.OutcomeWritten {
		resp.Ack = peerAckToProto(&r.Ack)
	}
	return resp
}

// The enum mappings are switches whose default is UNSPECIFIED; a test
// ranges over every transport value so none falls through unnoticed.

func listenerState(s registry.ListenerState) switchboardv1.ListenerState {
	switch s {
	case registry.ListenerListening:
		return switchboardv1.ListenerState_LISTENER_STATE_LISTENING
	case registry.ListenerDraining:
		return switchboardv1.ListenerState_LISTENER_STATE_DRAINING
	case registry.ListenerStopped:
		return switchboardv1.ListenerState_LISTENER_STATE_STOPPED
	case registry.ListenerBackingOff:
		return switchboardv1.ListenerState_LISTENER_STATE_BACKING_OFF
	}
	return switchboardv1.ListenerState_LISTENER_STATE_UNSPECIFIED
}

func connState(s registry.ConnState) switchboardv1.ConnectionState {
	switch s {
	case registry.ConnOpen:
		return switchboardv1.ConnectionState_CONNECTION_STATE_OPEN
	case registry.ConnDraining:
		return switchboardv1.ConnectionState_CONNECTION_STATE_DRAINING
	case registry.ConnClosed:
		return switchboardv1.ConnectionState_CONNECTION_STATE_CLOSED
	case registry.ConnConnecting:
		return switchboardv1.ConnectionState_CONNECTION_STATE_CONNECTING
	case registry.ConnBackingOff:
		return switchboardv1.ConnectionState_CONNECTION_STATE_BACKING_OFF
	}
	return switchboardv1.ConnectionState_CONNECTION_STATE_UNSPECIFIED
}

func direction(d transport.Direction) switchboardv1.Direction {
	switch d {
	case transport.Inbound:
		return switchboardv1.Direction_DIRECTION_INBOUND
	case transport.Outbound:
		return switchboardv1.Direction_DIRECTION_OUTBOUND
	}
	return switchboardv1.Direction_DIRECTION_UNSPECIFIED
}

func directionFromProto(d switchboardv1.Direction) transport.Direction {
	switch d {
	case switchboardv1.Direction_DIRECTION_INBOUND:
		return transport.Inbound
	case switchboardv1.Direction_DIRECTION_OUTBOUND:
		return transport.Outbound
	}
	return 0
}

// The transport -> API mappings of close reasons and ACK codes are the
// event bus's (observe), so events and resources name them alike.

func closeReason(r transport.CloseReason) switchboardv1.CloseReason {
	return observe.ProtoCloseReason(r) // UNSPECIFIED while open
}

func ackCode(c transport.AckCode) switchboardv1.AckCode {
	return observe.ProtoAckCode(c) // UNSPECIFIED when it could not be read
}

func sendOutcome(o transport.Outcome) switchboardv1.SendOutcome {
	switch o {
	case transport.OutcomeAccepted:
		return switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED
	case transport.OutcomeRejected:
		return switchboardv1.SendOutcome_SEND_OUTCOME_REJECTED
	case transport.OutcomeWritten:
		return switchboardv1.SendOutcome_SEND_OUTCOME_WRITTEN
	}
	return switchboardv1.SendOutcome_SEND_OUTCOME_UNSPECIFIED
}

var sendCauses = map[transport.SendCause]switchboardv1.SendFailureCause{
	transport.CauseNotOpen:        switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_NOT_OPEN,
	transport.CauseQueueTimeout:   switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_QUEUE_TIMEOUT,
	transport.CauseCancelled:      switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CANCELLED,
	transport.CauseAckTimeout:     switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_TIMEOUT,
	transport.CauseWriteFailed:    switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_WRITE_FAILED,
	transport.CauseConnectionLost: switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_CONNECTION_LOST,
	transport.CauseAckMismatch:    switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_MISMATCH,
	transport.CauseAckUnreadable:  switchboardv1.SendFailureCause_SEND_FAILURE_CAUSE_ACK_UNREADABLE,
}
