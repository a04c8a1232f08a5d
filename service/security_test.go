package service_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/internal/tlsfiles"
	"github.com/switchboard-dev/switchboard/internal/tlstest"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/transport"
)

// tlsSetup is a CA, a profile directory with a server profile ("mllp",
// with the CA to verify clients) and a client profile ("lab"), and the
// client leaf.
type tlsSetup struct {
	ca       *tlstest.CA
	client   *tlstest.Leaf
	profiles *tlsfiles.Profiles
}

func newTLSSetup(t *testing.T) *tlsSetup {
	ca := tlstest.NewCA(t, "Hospital CA")
	server := ca.Issue(t, tlstest.LeafOptions{CommonName: "switchboard", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true, Client: true})
	client := ca.Issue(t, tlstest.LeafOptions{CommonName: "lab", URIs: []string{"spiffe://hospital.test/lab"}, DNSNames: []string{"lab.hospital.test"}, Client: true})
	dir := t.TempDir()
	tlstest.WriteFiles(t, filepath.Join(dir, "mllp"), server, ca)
	tlstest.WriteFiles(t, filepath.Join(dir, "lab"), client, ca)
	tlstest.WriteFiles(t, filepath.Join(dir, "noca"), server, nil)
	p, err := tlsfiles.OpenProfiles(dir, tlsfiles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &tlsSetup{ca: ca, client: client, profiles: p}
}

func startServerOpts(t *testing.T, opts ...func(*service.Config)) *server {
	t.Helper()
	j, err := pebblejournal.Open(t.TempDir(), pebblejournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return startServerWith(t, j, opts...)
}

func TestTLSListenerIdentityRecordedAndReceived(t *testing.T) {
	ts := newTLSSetup(t)
	s := startServerOpts(t, func(c *service.Config) { c.TLSProfiles = ts.profiles })
	ctx := testCtx(t)
	l := s.startListener(ctx, "mtls", &switchboardv1.ListenerConfig{Tls: &switchboardv1.ListenerTls{
		Profile: "mllp", AllowedPeerNames: []string{"*.hospital.test"}}})
	stream := s.consume(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1)})

	nc, err := tls.Dial("tcp", addr(l), tlstest.ClientConfig(ts.ca, ts.client, "localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p := &peer{t: t, nc: nc, dec: transport.NewDecoder(nc, mllp)}
	msg := hl7Message("TLS-1")
	p.write(mllp.AppendFrame(nil, msg))
	checkAck(t, msg, p.readFrame())

	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := resp.GetMessages()[0]
	if got.GetPeerIdentity() != "spiffe://hospital.test/lab" {
		t.Fatalf("Receive peer_identity %q", got.GetPeerIdentity())
	}
	rec, err := s.j.Read(ctx, got.GetSequence(), 1, 1<<20)
	if err != nil || rec[0].PeerIdentity != "spiffe://hospital.test/lab" {
		t.Fatalf("journal record: %v %+v", err, rec)
	}
	m, err := s.client.GetMessage(ctx, &switchboardv1.GetMessageRequest{MessageId: fmt.Sprintf("in-%d", got.GetSequence())})
	if err != nil || m.GetMessage().GetPeerIdentity() != "spiffe://hospital.test/lab" {
		t.Fatalf("GetMessage: %v %v", err, m.GetMessage().GetPeerIdentity())
	}
	cs, err := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{ListenerId: "mtls"})
	if err != nil {
		t.Fatal(err)
	}
	st := cs.GetConnections()[0].GetStatus().GetTls()
	if st.GetPeerIdentity() != "spiffe://hospital.test/lab" || st.GetVersion() == "" || st.GetPeerSubject() != "CN=lab" || len(st.GetPeerNames()) == 0 {
		t.Fatalf("connection TLS state %v", st)
	}

	// A plain peer on the TLS listener: refused, counted, nothing stored.
	plain := dialPeer(t, addr(l))
	plain.write(mllp.AppendFrame(nil, hl7Message("PLAIN-1")))
	plain.expectClosed()
	waitFor(t, func() bool {
		v, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "mtls"})
		return err == nil && v.GetListener().GetStatus().GetTlsFailedConnectionCount() == 1
	})
	if s.lastSeq() != got.GetSequence() {
		t.Fatal("a plain message was stored")
	}
}

func TestOutboundTLSWithProfile(t *testing.T) {
	ts := newTLSSetup(t)
	s := startServerOpts(t, func(c *service.Config) { c.TLSProfiles = ts.profiles })
	ctx := testCtx(t)
	l := s.startListener(ctx, "in", &switchboardv1.ListenerConfig{Tls: &switchboardv1.ListenerTls{Profile: "mllp"}})
	_, port, _ := net.SplitHostPort(addr(l))
	c, err := s.client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "out", Config: &switchboardv1.ConnectionConfig{
		Address: "localhost:" + port, Tls: &switchboardv1.ConnectionTls{Profile: "lab", AllowedPeerNames: []string{"switchboard"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if id := c.GetConnection().GetStatus().GetTls().GetPeerIdentity(); id != "localhost" {
		t.Fatalf("server identity %q", id)
	}
	resp, err := s.client.Send(ctx, &switchboardv1.SendRequest{ConnectionId: "out", Payload: hl7Message("OUT-1")})
	if err != nil || resp.GetOutcome() != switchboardv1.SendOutcome_SEND_OUTCOME_ACCEPTED {
		t.Fatalf("send: %v %v", resp.GetOutcome(), err)
	}
	// Our own listener saw the lab's certificate.
	recs, err := s.j.Read(ctx, 1, 1, 1<<20)
	if err != nil || recs[0].PeerIdentity != "spiffe://hospital.test/lab" {
		t.Fatalf("inbound identity: %v %+v", err, recs)
	}
	// The wrong server name, and a server that is not on the allow-list.
	for _, tc := range []*switchboardv1.ConnectionTls{
		{Profile: "lab", ServerName: "other.test"},
		{Profile: "lab", AllowedPeerNames: []string{"not-the-server"}},
	} {
		_, err := s.client.Connect(ctx, &switchboardv1.ConnectRequest{Config: &switchboardv1.ConnectionConfig{
			Address: addr(l), Tls: tc, Reconnect: &switchboardv1.ReconnectPolicy{Disabled: true}}})
		checkReason(t, err, codes.Unavailable, "CONNECT_FAILED")
	}
}

func TestTLSProfileUnavailable(t *testing.T) {
	ts := newTLSSetup(t)
	ctx := testCtx(t)
	none := startServerOpts(t)
	_, err := none.client.StartListener(ctx, &switchboardv1.StartListenerRequest{Config: &switchboardv1.ListenerConfig{
		Address: "127.0.0.1:0", Tls: &switchboardv1.ListenerTls{Profile: "mllp"}}})
	checkReason(t, err, codes.FailedPrecondition, "TLS_PROFILE_UNAVAILABLE")

	s := startServerOpts(t, func(c *service.Config) { c.TLSProfiles = ts.profiles })
	for _, tc := range []*switchboardv1.ListenerTls{
		{Profile: "missing"},
		{Profile: "noca", ClientCertificate: switchboardv1.ClientCertificate_CLIENT_CERTIFICATE_REQUIRED},
	} {
		_, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0", Tls: tc}})
		checkReason(t, err, codes.FailedPrecondition, "TLS_PROFILE_UNAVAILABLE")
	}
	_, err = s.client.Connect(ctx, &switchboardv1.ConnectRequest{Config: &switchboardv1.ConnectionConfig{
		Address: "127.0.0.1:1", Tls: &switchboardv1.ConnectionTls{Profile: "missing"}}})
	checkReason(t, err, codes.FailedPrecondition, "TLS_PROFILE_UNAVAILABLE")
	// A profile without a CA serves TLS without client certificates.
	s.startListener(ctx, "", &switchboardv1.ListenerConfig{Tls: &switchboardv1.ListenerTls{Profile: "noca"}})
}

func TestSecurityValidation(t *testing.T) {
	s := startServerOpts(t)
	ctx := testCtx(t)
	for name, cfg := range map[string]*switchboardv1.ListenerConfig{
		"host bits":       {Address: "127.0.0.1:0", AllowedSources: []string{"10.0.0.1/8"}},
		"not a CIDR":      {Address: "127.0.0.1:0", AllowedSources: []string{"10.0.0.1"}},
		"no proxies":      {Address: "127.0.0.1:0", ProxyProtocol: &switchboardv1.ProxyProtocol{}},
		"profile name":    {Address: "127.0.0.1:0", Tls: &switchboardv1.ListenerTls{Profile: "../etc"}},
		"names, no certs": {Address: "127.0.0.1:0", Tls: &switchboardv1.ListenerTls{Profile: "mllp", ClientCertificate: switchboardv1.ClientCertificate_CLIENT_CERTIFICATE_NONE, AllowedPeerNames: []string{"x"}}},
		"bad pattern":     {Address: "127.0.0.1:0", Tls: &switchboardv1.ListenerTls{Profile: "mllp", AllowedPeerNames: []string{"a*.b"}}},
		"negative rate":   {Address: "127.0.0.1:0", MaxMessagesPerSecond: -1},
	} {
		_, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{Config: cfg})
		if badRequestFields(err) == "" {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming the field", name, err)
		}
	}
}

func TestSourceAllowListAndProxy(t *testing.T) {
	s := startServerOpts(t)
	ctx := testCtx(t)
	l := s.startListener(ctx, "cidr", &switchboardv1.ListenerConfig{AllowedSources: []string{"192.0.2.0/24"}})
	nc, err := net.Dial("tcp", addr(l))
	if err == nil {
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = nc.Read(make([]byte, 1))
		nc.Close()
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%v, want a reset", err)
	}
	waitFor(t, func() bool {
		v, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "cidr"})
		return err == nil && v.GetListener().GetStatus().GetSourceDeniedConnectionCount() == 1
	})

	// Behind a trusted proxy the header's address is the one allowed and
	// recorded.
	pl := s.startListener(ctx, "proxied", &switchboardv1.ListenerConfig{AllowedSources: []string{"192.0.2.0/24"},
		ProxyProtocol: &switchboardv1.ProxyProtocol{TrustedSources: []string{"127.0.0.0/8"}}})
	p := dialPeer(t, addr(pl))
	msg := hl7Message("PROXIED-1")
	p.write(append(proxyV2Header(netip.MustParseAddrPort("192.0.2.7:3000")), mllp.AppendFrame(nil, msg)...))
	checkAck(t, msg, p.readFrame())
	recs, err := s.j.Read(ctx, s.lastSeq(), 1, 1<<20)
	if err != nil || recs[0].RemoteAddr != "192.0.2.7:3000" {
		t.Fatalf("recorded %v %+v", err, recs)
	}
}

// proxyV2Header is a PROXY protocol v2 header of a TCP/IPv4 connection from
// src.
func proxyV2Header(src netip.AddrPort) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
	a := src.Addr().As4()
	b = append(b, a[:]...)
	b = append(b, 10, 0, 0, 1)
	return append(b, byte(src.Port()>>8), byte(src.Port()), 0x0a, 0x0f)
}

// testPolicy forbids binding port 1 and dialing loopback addresses,
// except the names and addresses in allowDial.
type testPolicy struct{ allowDial []string }

func (testPolicy) CheckListen(address string) error {
	if strings.HasSuffix(address, ":1") {
		return fmt.Errorf("%w: %s: port 1 is not in the listen ranges", service.ErrAddressForbidden, address)
	}
	return nil
}

func (p testPolicy) CheckDial(address string) error {
	for _, a := range p.allowDial {
		if a == address {
			return nil
		}
	}
	return fmt.Errorf("%s: no dial rule matches", address) // not wrapped: the service wraps it
}

func (p testPolicy) ListenControlFor(string) func(network, address string, c syscall.RawConn) error {
	return p.listenControl
}

func (p testPolicy) DialControlFor(string) func(network, address string, c syscall.RawConn) error {
	return p.dialControl
}

func (testPolicy) listenControl(_, address string, _ syscall.RawConn) error {
	if strings.HasPrefix(address, "127.0.0.2:") {
		return fmt.Errorf("%w: %s: resolved address not allowed", service.ErrAddressForbidden, address)
	}
	return nil
}

func (testPolicy) dialControl(_, address string, _ syscall.RawConn) error {
	if ap, err := netip.ParseAddrPort(address); err == nil && ap.Addr().IsLoopback() && ap.Port() != 2 {
		return fmt.Errorf("%w: %s: loopback is not a destination", service.ErrAddressForbidden, address)
	}
	return nil
}

func TestAddressPolicy(t *testing.T) {
	s := startServerOpts(t, func(c *service.Config) {
		c.AddressPolicy = testPolicy{allowDial: []string{"localhost:7"}}
	})
	ctx := testCtx(t)
	for _, a := range []string{"127.0.0.1:1", "127.0.0.2:0"} {
		_, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{Config: &switchboardv1.ListenerConfig{Address: a}})
		checkReason(t, err, codes.PermissionDenied, "ADDRESS_FORBIDDEN")
		if err != nil && !strings.Contains(err.Error(), a) {
			t.Errorf("error %v does not name %s", err, a)
		}
	}
	// Not allowed by name; allowed by name, but resolves to loopback.
	for _, a := range []string{"127.0.0.1:7", "localhost:7"} {
		_, err := s.client.Connect(ctx, &switchboardv1.ConnectRequest{Config: &switchboardv1.ConnectionConfig{Address: a}})
		checkReason(t, err, codes.PermissionDenied, "ADDRESS_FORBIDDEN")
	}
}

func TestRateLimitedListenerLosesNothing(t *testing.T) {
	s := startServerOpts(t)
	ctx := testCtx(t)
	l := s.startListener(ctx, "slow", &switchboardv1.ListenerConfig{MaxMessagesPerSecond: 100})
	p := dialPeer(t, addr(l))
	const n = 150
	var all []byte
	for i := range n {
		all = mllp.AppendFrame(all, hl7Message(fmt.Sprintf("R-%d", i)))
	}
	go func() { _, _ = p.nc.Write(all) }()
	for i := range n {
		checkAck(t, hl7Message(fmt.Sprintf("R-%d", i)), p.readFrame())
	}
	if got := s.lastSeq(); got != n {
		t.Fatalf("%d stored, want %d", got, n)
	}
}

// TestRestoreResolvesProfilesAndPolicy: a restored listener whose profile
// is gone, and a restored connection the policy now forbids, come back
// backing off with the reason as last_error; a restored TLS listener whose
// profile is there serves TLS again.
func TestRestoreResolvesProfilesAndPolicy(t *testing.T) {
	ts := newTLSSetup(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	start := func(opts ...func(*service.Config)) *server {
		j, err := pebblejournal.Open(dir, pebblejournal.Options{})
		if err != nil {
			t.Fatal(err)
		}
		s := startServerWith(t, j, append(opts, func(c *service.Config) { c.State = j.StateStore() })...)
		if err := s.svc.Restore(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start(func(c *service.Config) { c.TLSProfiles = ts.profiles })
	l := s.startListener(ctx, "tls", &switchboardv1.ListenerConfig{Address: freeAddr(t), Tls: &switchboardv1.ListenerTls{Profile: "mllp"}})
	s.connectWith(ctx, "out", &switchboardv1.ConnectionConfig{Address: addr(l), Reconnect: fastReconnect,
		Tls: &switchboardv1.ConnectionTls{Profile: "lab"}})
	bound := addr(l)
	s.stop()

	// Without profiles, and with a policy forbidding loopback dials.
	s = start(func(c *service.Config) { c.AddressPolicy = testPolicy{allowDial: []string{bound}} })
	lv, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "tls"})
	if err != nil {
		t.Fatal(err)
	}
	if st := lv.GetListener().GetStatus(); st.GetState() != switchboardv1.ListenerState_LISTENER_STATE_BACKING_OFF ||
		!strings.Contains(st.GetLastError(), `TLS profile "mllp"`) {
		t.Fatalf("restored listener without its profile: %v", st)
	}
	cv, err := s.client.GetConnection(ctx, &switchboardv1.GetConnectionRequest{ConnectionId: "out"})
	if err != nil {
		t.Fatal(err)
	}
	if st := cv.GetConnection().GetStatus(); st.GetState() == switchboardv1.ConnectionState_CONNECTION_STATE_OPEN || st.GetLastError() == "" {
		t.Fatalf("restored connection: %v", st)
	}
	s.stop()

	// With the profiles back, the listener serves TLS again.
	s = start(func(c *service.Config) { c.TLSProfiles = ts.profiles })
	waitFor(t, func() bool {
		v, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "tls"})
		return err == nil && v.GetListener().GetStatus().GetState() == switchboardv1.ListenerState_LISTENER_STATE_LISTENING
	})
	nc, err := tls.Dial("tcp", bound, tlstest.ClientConfig(ts.ca, ts.client, "localhost"))
	if err != nil {
		t.Fatalf("restored TLS listener: %v", err)
	}
	nc.Close()
}
