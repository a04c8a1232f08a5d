package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/internal/tlsfiles"
	"github.com/switchboard-dev/switchboard/internal/tlstest"
)

// pki is one test CA with a server certificate for loopback and two
// client certificates.
type pki struct {
	ca             *tlstest.CA
	server         *tlstest.Leaf
	alice, mallory *tlstest.Leaf
}

func newPKI(t *testing.T) *pki {
	ca := tlstest.NewCA(t, "Test CA")
	return &pki{
		ca:      ca,
		server:  ca.Issue(t, tlstest.LeafOptions{CommonName: "switchboard", DNSNames: []string{"localhost", "mllp.hospital.test"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}),
		alice:   ca.Issue(t, tlstest.LeafOptions{CommonName: "alice", URIs: []string{"spiffe://hospital.test/lab"}, DNSNames: []string{"lab.hospital.test"}, Client: true}),
		mallory: ca.Issue(t, tlstest.LeafOptions{CommonName: "mallory", DNSNames: []string{"mallory.evil.test"}, Client: true}),
	}
}

// tlsPeer dials l over TLS with cfg and returns a raw MLLP peer on it.
func tlsPeer(t *testing.T, l *Listener, cfg *tls.Config) (*rawPeer, error) {
	t.Helper()
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr().String(), cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { nc.Close() })
	f := mllpFraming.WithDefaults()
	return &rawPeer{t: t, nc: nc, f: f, dec: NewDecoder(nc, f)}, nil
}

func TestTLSListenerRecordsClientIdentity(t *testing.T) {
	p := newPKI(t)
	sink := &memSink{}
	opened := make(chan *Conn, 1)
	l := startListener(t, ListenerConfig{
		ID: "tls", Sink: sink, TLS: tlstest.ServerConfig(p.server, p.ca),
		PeerNames: []string{"*.hospital.test"}, OnOpen: func(c *Conn) { opened <- c },
	})
	peer, err := tlsPeer(t, l, tlstest.ClientConfig(p.ca, p.alice, "localhost"))
	if err != nil {
		t.Fatal(err)
	}
	peer.send(hl7Msg("ADT^A01^ADT_A01", "M1"))
	if a := peer.ackOf(); a.Code != "AA" {
		t.Fatalf("ack %q, want AA", a.Code)
	}
	c := <-opened
	info := c.Info()
	if info.TLS == nil || info.TLS.PeerIdentity != "spiffe://hospital.test/lab" || info.TLS.PeerSubject != "CN=alice" || info.TLS.Version == "" {
		t.Fatalf("TLS info %+v", info.TLS)
	}
	sink.mu.Lock()
	got := sink.msgs[0].PeerIdentity
	sink.mu.Unlock()
	if got != "spiffe://hospital.test/lab" {
		t.Fatalf("message peer identity %q", got)
	}
}

func TestTLSListenerWithoutClientCertificate(t *testing.T) {
	p := newPKI(t)
	sink := &memSink{}
	l := startListener(t, ListenerConfig{Sink: sink, TLS: tlstest.ServerConfig(p.server, nil)})
	peer, err := tlsPeer(t, l, tlstest.ClientConfig(p.ca, nil, "localhost"))
	if err != nil {
		t.Fatal(err)
	}
	peer.send(hl7Msg("ADT^A01^ADT_A01", "M1"))
	if a := peer.ackOf(); a.Code != "AA" {
		t.Fatalf("ack %q, want AA", a.Code)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.msgs[0].PeerIdentity != "" {
		t.Fatalf("identity %q without a client certificate", sink.msgs[0].PeerIdentity)
	}
}

func TestTLSListenerRefusesPeers(t *testing.T) {
	p := newPKI(t)
	other := tlstest.NewCA(t, "Other CA")
	stranger := other.Issue(t, tlstest.LeafOptions{CommonName: "lab.hospital.test", DNSNames: []string{"lab.hospital.test"}, Client: true})
	sink := &memSink{}
	logs := newLogCounter()
	l := startListener(t, ListenerConfig{Sink: sink, TLS: tlstest.ServerConfig(p.server, p.ca),
		PeerNames: []string{"*.hospital.test", "alice"}, Logger: slog.New(logs)})

	// Not in the allow-list: the handshake completes, then the server
	// closes.
	peer, err := tlsPeer(t, l, tlstest.ClientConfig(p.ca, p.mallory, "localhost"))
	if err == nil {
		peer.closedByServerAfterWrite(hl7Msg("ADT^A01^ADT_A01", "M1"))
	}
	waitUntil(t, func() bool { return l.Info().PeerDenied == 1 })

	// No client certificate, and one from another CA: the handshake fails.
	for _, cfg := range []*tls.Config{tlstest.ClientConfig(p.ca, nil, "localhost"), tlstest.ClientConfig(p.ca, stranger, "localhost")} {
		if peer, err := tlsPeer(t, l, cfg); err == nil {
			peer.closedByServerAfterWrite(hl7Msg("ADT^A01^ADT_A01", "M1"))
		}
	}
	waitUntil(t, func() bool { return l.Info().TLSFailures == 2 })
	if sink.count() != 0 {
		t.Fatalf("%d messages stored from refused peers", sink.count())
	}
	if lines, _ := logs.count("TLS handshake failed; closed"); lines == 0 {
		t.Fatal("handshake failure not logged")
	}
	waitUntil(t, func() bool { return l.Info().Open == 0 })
}

// closedByServerAfterWrite writes payload (a TLS 1.3 client learns that the
// server refused its certificate only at its first read) and asserts no
// answer comes but the end of the connection.
func (p *rawPeer) closedByServerAfterWrite(payload []byte) {
	p.t.Helper()
	_, _ = p.nc.Write(p.f.AppendFrame(nil, payload))
	_ = p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.dec.Next(); err == nil {
		p.t.Fatal("got an answer from a refused peer")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		p.t.Fatal("connection still open after 5 s")
	}
}

func TestTLSHandshakeTimeoutFreesTheSlot(t *testing.T) {
	p := newPKI(t)
	l := startListener(t, ListenerConfig{Sink: &memSink{}, TLS: tlstest.ServerConfig(p.server, nil),
		HandshakeTimeout: 100 * time.Millisecond, MaxConnections: 1})
	silent, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// The silent connection holds the only slot while it is in its
	// handshake: a second one is turned away.
	waitUntil(t, func() bool { return l.Info().Open == 1 })
	dialRefused(t, l.Addr().String())
	waitUntil(t, func() bool { return l.Info().Rejected == 1 })
	// Then the handshake times out and the server closes the silent one.
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("silent connection: %v, want it closed by the server", err)
	}
	waitUntil(t, func() bool { i := l.Info(); return i.TLSFailures == 1 && i.Open == 0 })
	if peer, err := tlsPeer(t, l, tlstest.ClientConfig(p.ca, nil, "localhost")); err != nil {
		t.Fatalf("slot not given back: %v", err)
	} else {
		peer.send(hl7Msg("ADT^A01^ADT_A01", "M1"))
		peer.ackOf()
	}
}

// dialRefused asserts that the server resets a connection to addr before
// anything is sent: so fast, at times, that the connect itself sees it.
func dialRefused(t *testing.T, addr string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err == nil {
		defer nc.Close()
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = nc.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%v, want a reset", err)
	}
}

func TestPlainPeerOnTLSListener(t *testing.T) {
	p := newPKI(t)
	sink := &memSink{}
	l := startListener(t, ListenerConfig{Sink: sink, TLS: tlstest.ServerConfig(p.server, nil)})
	peer := dialRaw(t, l, mllpFraming)
	peer.send(hl7Msg("ADT^A01^ADT_A01", "M1"))
	peer.closedByServer()
	waitUntil(t, func() bool { return l.Info().TLSFailures == 1 })
	if sink.count() != 0 {
		t.Fatal("a plain message was stored on a TLS listener")
	}
}

func TestTLSPeerOnPlainListener(t *testing.T) {
	sink := &memSink{}
	closed := newCloseLog()
	l := startListener(t, ListenerConfig{Sink: sink, OnClose: closed.onClose})
	p := newPKI(t)
	_, err := Dial(context.Background(), DialConfig{ID: "o", Address: l.Addr().String(), Sink: &memSink{},
		TLS: tlstest.ClientConfig(p.ca, nil, "localhost")})
	if !errors.Is(err, ErrTLSHandshake) || !errors.Is(err, ErrConnectFailed) {
		t.Fatalf("dial: %v, want a failed TLS handshake", err)
	}
	info := closed.next(t)
	if info.CloseReason != CloseFramingError || !errors.Is(info.CloseErr, ErrTLSHandshake) || info.Counters.FramingErrors != 1 {
		t.Fatalf("closed %v (%v), framing errors %d", info.CloseReason, info.CloseErr, info.Counters.FramingErrors)
	}
	if sink.count() != 0 {
		t.Fatal("stored something")
	}
}

func TestDialTLSVerifiesServer(t *testing.T) {
	p := newPKI(t)
	l := startListener(t, ListenerConfig{Sink: &memSink{}, TLS: tlstest.ServerConfig(p.server, p.ca)})
	dial := func(cfg *tls.Config, names ...string) (*Conn, error) {
		return Dial(context.Background(), DialConfig{ID: "o", Address: l.Addr().String(), Sink: &memSink{}, TLS: cfg, PeerNames: names})
	}
	// The right name, the right CA and an allowed server name.
	c, err := dial(tlstest.ClientConfig(p.ca, p.alice, "mllp.hospital.test"), "switchboard")
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Send(context.Background(), hl7Msg("ADT^A01^ADT_A01", "M1"), 0)
	if err != nil || res.Outcome != OutcomeAccepted {
		t.Fatalf("send: %v %v", res.Outcome, err)
	}
	if ti := c.Info().TLS; ti == nil || ti.PeerIdentity != "localhost" {
		t.Fatalf("server identity %+v", ti)
	}
	c.Close()
	// Server name without ServerName: the host of the address (127.0.0.1,
	// an IP SAN of the server's certificate).
	cfg := tlstest.ClientConfig(p.ca, p.alice, "")
	if c, err := dial(cfg); err != nil {
		t.Fatalf("IP SAN: %v", err)
	} else {
		c.Close()
	}
	for name, tc := range map[string]struct {
		cfg   *tls.Config
		names []string
		want  error
	}{
		"wrong server name":   {tlstest.ClientConfig(p.ca, p.alice, "other.test"), nil, ErrTLSHandshake},
		"untrusted CA":        {tlstest.ClientConfig(tlstest.NewCA(t, "x"), p.alice, "localhost"), nil, ErrTLSHandshake},
		"server name refused": {tlstest.ClientConfig(p.ca, p.alice, "localhost"), []string{"lab.hospital.test"}, ErrPeerNotAllowed},
	} {
		_, err := dial(tc.cfg, tc.names...)
		if !errors.Is(err, tc.want) || !errors.Is(err, ErrConnectFailed) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestDialTLSConfigPerDial(t *testing.T) {
	p := newPKI(t)
	l := startListener(t, ListenerConfig{Sink: &memSink{}, TLS: tlstest.ServerConfig(p.server, nil)})
	calls := 0
	c, err := Dial(context.Background(), DialConfig{ID: "o", Address: l.Addr().String(), Sink: &memSink{},
		TLSConfig: func() *tls.Config { calls++; return tlstest.ClientConfig(p.ca, nil, "localhost") }})
	if err != nil || calls != 1 {
		t.Fatalf("dial: %v, %d calls", err, calls)
	}
	c.Close()
}

func TestSourceAllowList(t *testing.T) {
	sink := &memSink{}
	l := startListener(t, ListenerConfig{Sink: sink, AllowedSources: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	// From 127.0.0.1: reset before anything is read.
	dialRefused(t, l.Addr().String())
	waitUntil(t, func() bool { return l.Info().SourceDenied == 1 })
	// From 127.0.0.2: served.
	peer := dialFrom(t, l, "127.0.0.2")
	peer.send(hl7Msg("ADT^A01^ADT_A01", "M1"))
	if a := peer.ackOf(); a.Code != "AA" {
		t.Fatalf("ack %q", a.Code)
	}
	if i := l.Info(); i.Accepted != 1 || i.SourceDenied != 1 {
		t.Fatalf("accepted %d, denied %d", i.Accepted, i.SourceDenied)
	}
}

// proxyV2 is a PROXY protocol v2 header for a TCP over IPv4 connection
// from src to dst.
func proxyV2(src, dst netip.AddrPort) []byte {
	b := append([]byte{}, proxyV2Sig...)
	b = append(b, 0x21, 0x11, 0, 12) // v2 PROXY, TCP over IPv4, 12 bytes
	s, d := src.Addr().As4(), dst.Addr().As4()
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = append(b, byte(src.Port()>>8), byte(src.Port()), byte(dst.Port()>>8), byte(dst.Port()))
	return b
}

func TestProxyProtocolFromTrustedProxy(t *testing.T) {
	sink := &memSink{}
	opened := make(chan *Conn, 1)
	l := startListener(t, ListenerConfig{Sink: sink, OnOpen: func(c *Conn) { opened <- c },
		ProxyTrusted:   []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		AllowedSources: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}})
	peer := dialRaw(t, l, mllpFraming)
	real := netip.MustParseAddrPort("10.1.2.3:40000")
	hdr := proxyV2(real, netip.MustParseAddrPort("10.0.0.1:2575"))
	// The header and the first frame in one write: the bytes after the
	// header must not be lost.
	if _, err := peer.nc.Write(append(hdr, mllpFraming.AppendFrame(nil, hl7Msg("ADT^A01^ADT_A01", "M1"))...)); err != nil {
		t.Fatal(err)
	}
	if a := peer.ackOf(); a.Code != "AA" {
		t.Fatalf("ack %q", a.Code)
	}
	if got := (<-opened).Info().RemoteAddr; got != real.String() {
		t.Fatalf("remote address %s, want %s", got, real)
	}
	sink.mu.Lock()
	got := sink.msgs[0].RemoteAddr
	sink.mu.Unlock()
	if got != real.String() {
		t.Fatalf("message remote address %s", got)
	}

	// A real address the allow-list does not hold: reset.
	bad := dialRaw(t, l, mllpFraming)
	_, _ = bad.nc.Write(proxyV2(netip.MustParseAddrPort("192.0.2.9:1"), netip.MustParseAddrPort("10.0.0.1:2575")))
	bad.closedByServer()
	waitUntil(t, func() bool { return l.Info().SourceDenied == 1 })

	// No header from the trusted proxy: closed, counted.
	none := dialRaw(t, l, mllpFraming)
	none.send(hl7Msg("ADT^A01^ADT_A01", "M2"))
	none.closedByServer()
	waitUntil(t, func() bool { return l.Info().ProxyHeaderFailures == 1 })
	if sink.count() != 1 {
		t.Fatalf("%d messages stored", sink.count())
	}
}

func TestProxyHeaderTimeout(t *testing.T) {
	l := startListener(t, ListenerConfig{Sink: &memSink{}, HandshakeTimeout: 50 * time.Millisecond,
		ProxyTrusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	peer := dialRaw(t, l, mllpFraming)
	peer.closedByServer()
	waitUntil(t, func() bool { i := l.Info(); return i.ProxyHeaderFailures == 1 && i.Open == 0 })
}

func TestProxyHeaderFromUntrustedAddressRefused(t *testing.T) {
	sink := &memSink{}
	closed := newCloseLog()
	l := startListener(t, ListenerConfig{Sink: sink, OnClose: closed.onClose,
		ProxyTrusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	peer := dialRaw(t, l, mllpFraming)
	hdr := proxyV2(netip.MustParseAddrPort("10.9.9.9:1"), netip.MustParseAddrPort("10.0.0.1:2575"))
	if _, err := peer.nc.Write(append(hdr, mllpFraming.AppendFrame(nil, hl7Msg("ADT^A01^ADT_A01", "M1"))...)); err != nil {
		t.Fatal(err)
	}
	peer.closedByServer()
	info := closed.next(t)
	if !errors.Is(info.CloseErr, ErrProxyHeader) || info.CloseReason != CloseFramingError {
		t.Fatalf("closed %v: %v", info.CloseReason, info.CloseErr)
	}
	if sink.count() != 0 {
		t.Fatal("stored a message behind a spoofed header")
	}
}

func TestMessageRateIsBackPressure(t *testing.T) {
	sink := &memSink{}
	l := startListener(t, ListenerConfig{Sink: sink, Conn: ConnConfig{MaxMessagesPerSecond: 200}})
	peer := dialRaw(t, l, mllpFraming)
	const n = 300 // more than the burst: the rest wait
	var all []byte
	for i := range n {
		all = mllpFraming.AppendFrame(all, hl7Msg("ADT^A01^ADT_A01", "M"+itoa(i)))
	}
	go func() { _, _ = peer.nc.Write(all) }()
	for i := range n {
		a := peer.ackOf()
		if a.Code != "AA" || a.ControlID != "M"+itoa(i) {
			t.Fatalf("ack %d: %s %s", i, a.Code, a.ControlID)
		}
	}
	if sink.count() != n {
		t.Fatalf("%d stored, want %d", sink.count(), n)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestConnSlotsAcrossListeners(t *testing.T) {
	slots := NewConnSlots(2)
	a := startListener(t, ListenerConfig{Sink: &memSink{}, Slots: slots})
	b := startListener(t, ListenerConfig{Sink: &memSink{}, Slots: slots})
	pa := dialRaw(t, a, mllpFraming)
	pb := dialRaw(t, b, mllpFraming)
	waitUntil(t, func() bool { return slots.Used() == 2 })
	dialRefused(t, b.Addr().String())
	if i := b.Info(); i.Rejected != 1 || slots.Refused() != 1 {
		t.Fatalf("rejected %d, refused %d", i.Rejected, slots.Refused())
	}
	pa.nc.Close()
	waitUntil(t, func() bool { return slots.Used() == 1 })
	again := dialRaw(t, a, mllpFraming)
	again.send(hl7Msg("ADT^A01^ADT_A01", "M1"))
	again.ackOf()
	pb.send(hl7Msg("ADT^A01^ADT_A01", "M2"))
	pb.ackOf()
}

func TestControlHooks(t *testing.T) {
	forbid := func(network, address string, _ syscall.RawConn) error {
		return errors.Join(ErrAddressForbidden, errors.New("no "+address))
	}
	_, err := Listen(context.Background(), ListenerConfig{Address: "127.0.0.1:0", Sink: &memSink{}, Control: forbid})
	if !errors.Is(err, ErrAddressForbidden) || errors.Is(err, ErrAddrNotBindable) {
		t.Fatalf("listen: %v", err)
	}
	l := startListener(t, ListenerConfig{Sink: &memSink{}})
	var seen string
	_, err = Dial(context.Background(), DialConfig{ID: "o", Address: "localhost:" + portOf(l), Sink: &memSink{},
		Control: func(n, a string, c syscall.RawConn) error { seen = a; return forbid(n, a, c) }})
	if !errors.Is(err, ErrAddressForbidden) || errors.Is(err, ErrConnectFailed) {
		t.Fatalf("dial: %v", err)
	}
	if ap, perr := netip.ParseAddrPort(seen); perr != nil || !ap.Addr().IsLoopback() {
		t.Fatalf("control saw %q, want the resolved address", seen)
	}
}

func portOf(l *Listener) string {
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

func TestUserTimeoutSet(t *testing.T) {
	opened := make(chan *Conn, 1)
	l := startListener(t, ListenerConfig{Sink: &memSink{}, OnOpen: func(c *Conn) { opened <- c }})
	out, err := Dial(context.Background(), DialConfig{ID: "o", Address: l.Addr().String(), Sink: &memSink{},
		Conn: ConnConfig{UserTimeout: 7 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if ms := userTimeoutOf(t, (<-opened).nc); ms != int(DefaultUserTimeout.Milliseconds()) {
		t.Fatalf("inbound TCP_USER_TIMEOUT %d ms", ms)
	}
	if ms := userTimeoutOf(t, out.nc); ms != 7000 {
		t.Fatalf("outbound TCP_USER_TIMEOUT %d ms", ms)
	}
}

func TestPeerNameMatching(t *testing.T) {
	p := newPKI(t)
	leaf := p.alice.Cert
	for _, tc := range []struct {
		pattern string
		want    bool
	}{
		{"alice", true}, {"ALICE", true}, {"lab.hospital.test", true}, {"LAB.Hospital.Test", true},
		{"*.hospital.test", true}, {"*.test", false}, {"spiffe://hospital.test/lab", true},
		{"hospital.test", false}, {"*.lab.hospital.test", false}, {"bob", false}, {"", false},
	} {
		if got := tlsfiles.Match(leaf, []string{tc.pattern}); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.pattern, got, tc.want)
		}
	}
	if id := tlsfiles.Identity(p.mallory.Cert); id != "mallory.evil.test" {
		t.Errorf("identity %q", id)
	}
	if id := tlsfiles.Identity(tlstest.NewCA(t, "x").Issue(t, tlstest.LeafOptions{CommonName: "cn-only"}).Cert); id != "cn-only" {
		t.Errorf("identity %q", id)
	}
}

func TestSniffFirst(t *testing.T) {
	for in, want := range map[string]error{
		"\x16\x03\x01\x00": ErrTLSHandshake, "PROXY TCP4 1.2.3.4": ErrProxyHeader, string(proxyV2Sig): ErrProxyHeader,
		"\x0bMSH|": nil, "\x16": nil, "PROX": nil,
	} {
		if err := sniffFirst([]byte(in)); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("%q: %v, want %v", in, err, want)
		}
	}
}
