package main

// Hostile peers and bad input against the real binary (issue 11). Every
// test here starts `switchboard serve` as a child process with its own
// temporary data directory, configures it over gRPC on loopback, attacks
// one of its listeners over raw loopback sockets (some through
// internal/faultproxy), and reads the outcome back the way an operator
// would: over gRPC (listener counters, connections, the journal,
// WatchEvents) and from the admin /metrics.
//
// The catalogue of issue 11 and what covers it:
//
//	item                                  covered by
//	------------------------------------  ------------------------------------------------------------
//	reset in the middle of a frame        TestHostileResetMidFrame (raw socket with SO_LINGER 0, a
//	                                      proxy resetting both sides, a proxy cutting the stream);
//	                                      transport TestPeerReset (the same at the transport level)
//	half-open peer                        TestHostileHalfOpen (a proxy that stops forwarding both
//	                                      ways without closing: idle_timeout and frame_timeout bound it)
//	slowloris on 200 connections          TestHostileSlowloris (frame deadline, every other peer's
//	                                      ACKs); BenchmarkSlowloris (ACK latency p50/p99 figures)
//	oversized frames, 1 GiB without end   TestHostileOversized (peak RSS of the server process);
//	                                      transport TestMemoryBudgetRefusesWhatDoesNotFit
//	garbage and non-HL7 bytes             TestHostileGarbage; transport TestJunkLimit,
//	                                      TestJunkIsNotActivity, FuzzDecode* (transport) and
//	                                      FuzzParseHeader, FuzzParseAck (hl7)
//	connection flood past the limits      TestHostileFlood; transport TestConnectionFloodFromOneSource
//	                                      (log sampling under the flood)
//	TLS handshake that never finishes     TestSecureEndToEnd (security_test.go: silent connections on a
//	                                      mutual-TLS listener hold their slots until the handshake
//	                                      timeout, then are closed and counted); transport
//	                                      TestTLSHandshakeTimeoutFreesTheSlot, TestPlainPeerOnTLSListener
//	(found here) length prefix reserves   TestHostileLengthPrefixReservation; fixed: the decoder grows
//	the budget before any payload         a length-prefix buffer with the bytes received
//	goroutines and fds back to baseline   every TestHostile* (hostileServer.baseline, checked at the
//	                                      end of each test)
//	payload bytes never logged            every TestHostile*: payloads and garbage carry
//	                                      phiMarker, which the server's log must never contain
//
// They run in parallel, a few seconds each (about 25 s for all of them
// with the race detector on 2 cores); `go test -race -run Hostile
// ./cmd/switchboard/` runs them alone.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/internal/faultproxy"
	"github.com/switchboard-dev/switchboard/transport"
)

// phiMarker stands for patient data: every payload and every garbage
// stream these tests send carries it outside the fields a log may name
// (MSH-9, MSH-10), so a log line holding it holds payload bytes.
const phiMarker = "ZZPHI-EVERYMAN-ADAM-ZZ"

// hostileWait bounds every wait of these tests for something the server
// must do (a close, an answer, counters); far above what any of it takes.
const hostileWait = 20 * time.Second

var hostileMLLP = transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()

// hostileMessage is a small ADT^A01 with control id id and phiMarker as
// the patient's name.
func hostileMessage(id string) []byte {
	return []byte("MSH|^~\\&|HOSTILE|HOSP|SB|HOSP|20261202050000||ADT^A01^ADT_A01|" + id + "|P|2.5\rPID|1||" + id + "||" + phiMarker + "^PATIENT\r")
}

// hostileServer is a `switchboard serve` child process with a client.
type hostileServer struct {
	*serveChild
	t      testing.TB
	client switchboardv1.SwitchboardServiceClient
	logs   *serverLog
}

// serverLog reads the child's log: it counts lines by level and notes
// every line that holds phiMarker, without keeping the lines.
type serverLog struct {
	mu       sync.Mutex
	levels   map[string]int
	leaks    int
	leakMsgs []string // the "msg" of lines that leaked, for the failure
}

func (l *serverLog) add(line []byte) {
	var rec struct {
		Level string `json:"level"`
		Msg   string `json:"msg"`
	}
	_ = json.Unmarshal(line, &rec)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.levels[rec.Level]++
	if bytes.Contains(line, []byte(phiMarker)) {
		l.leaks++
		if len(l.leakMsgs) < 5 {
			l.leakMsgs = append(l.leakMsgs, rec.Msg)
		}
	}
}

// lines is the number of lines logged.
func (l *serverLog) lines() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.levels {
		n += c
	}
	return n
}

// count is the number of lines logged at level (INFO, WARN, ERROR).
func (l *serverLog) count(level string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.levels[level]
}

// startHostile starts serve with a fresh data directory on free loopback
// ports and connects a gRPC client; both end with the test (the server by
// SIGTERM, as an operator stops it, and must exit 0).
func startHostile(t testing.TB, args ...string) *hostileServer {
	t.Helper()
	logs := &serverLog{levels: map[string]int{}}
	args = append([]string{"--admin-addr", "127.0.0.1:0", "--drain-timeout", "2s"}, args...)
	s := &hostileServer{serveChild: startServeChild(t, childOpts{onLine: logs.add}, args...), t: t, logs: logs}
	t.Cleanup(s.stop)
	if s.adminAddr == "" {
		t.Fatal("serve never logged its admin address")
	}
	cc, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	s.client = switchboardv1.NewSwitchboardServiceClient(cc)
	return s
}

// stop ends the child with SIGTERM and checks how it went: exit 0, and
// no log line holding payload bytes.
func (s *hostileServer) stop() {
	if !s.terminate() {
		s.t.Errorf("serve did not exit within %v of SIGTERM", childWait)
		return
	}
	if s.exitErr != nil {
		s.t.Errorf("serve exited with %v, want 0", s.exitErr)
	}
	s.logs.mu.Lock()
	defer s.logs.mu.Unlock()
	s.t.Logf("the server logged %v lines by level", s.logs.levels)
	if s.logs.leaks > 0 {
		s.t.Errorf("%d server log lines hold payload bytes (messages %q)", s.logs.leaks, s.logs.leakMsgs)
	}
	if s.loggedTooLong() {
		s.t.Error("the server logged a line over 1 MiB")
	}
}

// ctx bounds one gRPC call.
func (s *hostileServer) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.t.Context(), hostileWait)
}

// listen starts listener id on a free loopback port and returns the bound
// address.
func (s *hostileServer) listen(id string, cfg *switchboardv1.ListenerConfig) string {
	s.t.Helper()
	if cfg == nil {
		cfg = &switchboardv1.ListenerConfig{}
	}
	cfg.Address = "127.0.0.1:0"
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: id, Config: cfg})
	if err != nil {
		s.t.Fatalf("StartListener %s: %v", id, err)
	}
	return resp.GetListener().GetStatus().GetBoundAddress()
}

// status is listener id's status.
func (s *hostileServer) status(id string) *switchboardv1.ListenerStatus {
	s.t.Helper()
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: id})
	if err != nil {
		s.t.Fatalf("GetListener %s: %v", id, err)
	}
	return resp.GetListener().GetStatus()
}

// conns is the open connections of listener id.
func (s *hostileServer) conns(id string) []*switchboardv1.Connection {
	s.t.Helper()
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{ListenerId: id, PageSize: 1000})
	if err != nil {
		s.t.Fatalf("ListConnections: %v", err)
	}
	return resp.GetConnections()
}

// stored is the journal's last sequence: how many records were stored.
func (s *hostileServer) stored() uint64 {
	s.t.Helper()
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.client.GetJournal(ctx, &switchboardv1.GetJournalRequest{})
	if err != nil {
		s.t.Fatalf("GetJournal: %v", err)
	}
	return resp.GetLastSequence()
}

// eventually polls cond (which reads the server over gRPC) until it holds,
// failing the test with what after hostileWait. Polling, not sleeping:
// nothing here asserts how long the server takes.
func (s *hostileServer) eventually(what string, cond func() bool) {
	s.t.Helper()
	for deadline := time.Now().Add(hostileWait); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("after %v: %s", hostileWait, what)
		}
	}
}

// waitPartialRead waits until every open connection of listener id has
// had bytes read (its last activity is after its open time): the server
// holds a partial frame.
func (s *hostileServer) waitPartialRead(id string, n int) {
	s.t.Helper()
	s.eventually(fmt.Sprintf("the server never read the partial frames of %d connections", n), func() bool {
		cs := s.conns(id)
		read := 0
		for _, c := range cs {
			if st := c.GetStatus(); st.GetLastActivityTime().AsTime().After(st.GetOpenTime().AsTime()) {
				read++
			}
		}
		return read == n
	})
}

// serverResources is what a connection holds in the server process.
type serverResources struct {
	goroutines int // go_goroutines from the admin /metrics
	fds        int // entries of /proc/PID/fd; -1 where there is no /proc
}

// resources reads the server's goroutines and open file descriptors.
func (s *hostileServer) resources() serverResources {
	s.t.Helper()
	r := serverResources{goroutines: -1, fds: -1}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.cmd.Process.Pid)); err == nil {
		r.fds = len(ents)
	}
	r.goroutines = int(s.metric("go_goroutines"))
	return r
}

// metric reads one unlabelled sample from the server's admin /metrics, on
// a new connection closed after it: no idle keep-alive connection of ours
// stays in the goroutine and file-descriptor counts.
func (s *hostileServer) metric(name string) float64 {
	s.t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + s.adminAddr + "/metrics")
	if err != nil {
		s.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				s.t.Fatalf("%s %q: %v", name, v, err)
			}
			return f
		}
	}
	s.t.Fatalf("/metrics has no %s", name)
	return 0
}

// Slack over the baseline that still counts as back: the journal's
// background work (flushes, compactions: a goroutine and a file or two)
// comes and goes on its own.
const goroutineSlack, fdSlack = 4, 3

// baseline records the server's resources now (after the test's setup,
// before the attack) and checks at the end of the test, after every peer
// and stream of the test closed, that they came back to it, polling
// within a bound. Call it after the listeners are started and before
// opening anything the test closes.
func (s *hostileServer) baseline() {
	s.t.Helper()
	base := s.resources()
	s.t.Logf("server baseline: %d goroutines, %d open file descriptors", base.goroutines, base.fds)
	// Cleanups run last in first out: this one runs after those the test
	// registers later (its peers, proxies, streams), before the server
	// stops.
	s.t.Cleanup(func() {
		var now serverResources
		back := func() bool {
			now = s.resources()
			return now.goroutines <= base.goroutines+goroutineSlack && now.fds <= base.fds+fdSlack
		}
		for deadline := time.Now().Add(hostileWait); !back(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				s.t.Errorf("server not back to its baseline after the test: %d goroutines, %d file descriptors; baseline %d, %d",
					now.goroutines, now.fds, base.goroutines, base.fds)
				return
			}
		}
		s.t.Logf("server back to baseline: %d goroutines, %d open file descriptors", now.goroutines, now.fds)
	})
}

// events follows WatchEvents (listener id's events, replaying the recent
// ones) until the test ends.
type events struct {
	mu  sync.Mutex
	evs []*switchboardv1.Event
	err error
}

func (s *hostileServer) watch(id string) *events {
	s.t.Helper()
	ctx, cancel := context.WithCancel(s.t.Context())
	stream, err := s.client.WatchEvents(ctx, &switchboardv1.WatchEventsRequest{ListenerId: id, ReplayRecent: true})
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		s.t.Fatal(err)
	}
	e := &events{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			resp, err := stream.Recv()
			e.mu.Lock()
			if err != nil {
				e.err = err
				e.mu.Unlock()
				return
			}
			e.evs = append(e.evs, resp.GetEvents()...)
			e.mu.Unlock()
		}
	}()
	s.t.Cleanup(func() {
		cancel()
		<-done
	})
	return e
}

// closed counts CONNECTION_CLOSED events by reason.
func (e *events) closed() map[switchboardv1.CloseReason]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := map[switchboardv1.CloseReason]int{}
	for _, ev := range e.evs {
		if ev.GetKind() == switchboardv1.EventKind_EVENT_KIND_CONNECTION_CLOSED {
			m[ev.GetCloseReason()]++
		}
	}
	return m
}

// count is the number of events of kind.
func (e *events) count(kind switchboardv1.EventKind) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.evs {
		if ev.GetKind() == kind {
			n++
		}
	}
	return n
}

// failed is the error that ended the stream early, if one did.
func (e *events) failed() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// acks is the number of acknowledgements sent with code.
func acks(k *switchboardv1.ConnectionCounters, code switchboardv1.AckCode) int64 {
	for _, a := range k.GetSentAcks() {
		if a.GetCode() == code {
			return a.GetCount()
		}
	}
	return 0
}

// totalAcks is the number of acknowledgements sent, whatever the code.
func totalAcks(k *switchboardv1.ConnectionCounters) int64 {
	var n int64
	for _, a := range k.GetSentAcks() {
		n += a.GetCount()
	}
	return n
}

// hostilePeer is a raw MLLP peer.
type hostilePeer struct {
	t   testing.TB
	nc  net.Conn
	dec *transport.Decoder
}

func dialPeer(t testing.TB, addr string) *hostilePeer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, hostileWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &hostilePeer{t: t, nc: nc, dec: transport.NewDecoder(nc, hostileMLLP)}
}

func (p *hostilePeer) write(b []byte) {
	p.t.Helper()
	_ = p.nc.SetWriteDeadline(time.Now().Add(hostileWait))
	if _, err := p.nc.Write(b); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

// answer reads the next frame and parses it as an acknowledgement.
func (p *hostilePeer) answer() (hl7.Ack, error) {
	_ = p.nc.SetReadDeadline(time.Now().Add(hostileWait))
	f, err := p.dec.Next()
	if err != nil {
		return hl7.Ack{}, err
	}
	return hl7.ParseAck(f)
}

// exchange sends message id and checks it is acknowledged AA.
func (p *hostilePeer) exchange(id string) {
	p.t.Helper()
	p.write(hostileMLLP.AppendFrame(nil, hostileMessage(id)))
	a, err := p.answer()
	if err != nil || a.Code != hl7.AA || a.ControlID != id {
		p.t.Fatalf("answer to %s: %s for %q, %v; want AA", id, a.Code, a.ControlID, err)
	}
}

// closedByServer waits until the server closed the connection (EOF or a
// reset), reading and dropping whatever it still sends.
func (p *hostilePeer) closedByServer() error {
	_ = p.nc.SetReadDeadline(time.Now().Add(hostileWait))
	_, err := io.Copy(io.Discard, p.nc)
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return err
}

// TestHostileResetMidFrame: a peer whose connection is reset in the middle
// of a frame (by itself, by a middlebox resetting both sides, by a path
// cut at a chosen byte) leaves nothing stored and nothing acknowledged;
// the connection is shown closed as reset and is gone from the server; and
// the listener serves the next peer.
func TestHostileResetMidFrame(t *testing.T) {
	t.Parallel()
	s := startHostile(t)
	addr := s.listen("in", nil)
	s.baseline()
	ev := s.watch("in")
	frame := hostileMLLP.AppendFrame(nil, hostileMessage("RESET-1"))
	half := frame[:len(frame)/2] // inside PID: the marker's bytes are on both sides

	// The peer itself resets (SO_LINGER 0, then close).
	p := dialPeer(t, addr)
	p.write(half)
	s.waitPartialRead("in", 1)
	_ = p.nc.(*net.TCPConn).SetLinger(0)
	p.nc.Close()
	s.eventually("the reset connection is still listed", func() bool { return len(s.conns("in")) == 0 })

	// A middlebox resets both sides while the frame is half through.
	px := faultproxy.Start(t, addr)
	p = dialPeer(t, px.Addr())
	p.write(half)
	s.waitPartialRead("in", 1)
	px.Reset()
	if err := p.closedByServer(); err != nil {
		t.Errorf("peer behind the resetting proxy: %v; want its connection reset", err)
	}
	s.eventually("the connection reset by the proxy is still listed", func() bool { return len(s.conns("in")) == 0 })

	// The path dies at a chosen byte while the peer sends the whole frame:
	// the server gets the bytes up to it and a reset (perhaps the reset
	// alone, if it comes before the server read; either way no frame).
	px.CutAfter(int64(len(half)))
	p = dialPeer(t, px.Addr())
	p.write(frame)
	if err := p.closedByServer(); err != nil {
		t.Errorf("peer behind the cutting proxy: %v; want its connection reset", err)
	}
	s.eventually("the cut connection is still listed", func() bool { return len(s.conns("in")) == 0 })

	s.eventually("three CONNECTION_CLOSED events for the resets", func() bool { return ev.closed()[switchboardv1.CloseReason_CLOSE_REASON_PEER_RESET] == 3 })
	st := s.status("in")
	k := st.GetConnectionTotals()
	if st.GetOpenConnectionCount() != 0 || st.GetAcceptedConnectionCount() != 3 {
		t.Errorf("listener: %d open, %d accepted; want 0, 3", st.GetOpenConnectionCount(), st.GetAcceptedConnectionCount())
	}
	if k.GetReceivedFrameCount() != 0 || totalAcks(k) != 0 || s.stored() != 0 {
		t.Errorf("%d frames received, %d acknowledgements sent, %d records stored; want nothing of a reset frame",
			k.GetReceivedFrameCount(), totalAcks(k), s.stored())
	}
	// The first two were read in part before the reset: framing errors.
	// The cut one is one too unless the reset overtook its bytes.
	if n := k.GetFramingErrorCount(); n < 2 || n > 3 {
		t.Errorf("%d framing errors, want 2 or 3 (one per reset inside a frame)", n)
	}
	if n := ev.count(switchboardv1.EventKind_EVENT_KIND_FRAMING_ERROR); int64(n) != k.GetFramingErrorCount() {
		t.Errorf("%d FRAMING_ERROR events for %d framing errors", n, k.GetFramingErrorCount())
	}

	// The listener still serves.
	dialPeer(t, addr).exchange("AFTER-RESETS")
	if n := s.stored(); n != 1 {
		t.Errorf("%d records stored, want only the message after the resets", n)
	}
}

// TestHostileHalfOpen: a peer that goes silent without closing (its host
// died, a firewall dropped the flow) is found by the listener's configured
// bound: idle_timeout between frames, frame_timeout inside one.
//
// Loopback cannot exercise the kernel's own detection. TCP keepalive
// probes a dead host, but on loopback the proxy's socket is alive and its
// kernel answers every probe; TCP_USER_TIMEOUT bounds data sent and not
// acknowledged, and loopback acknowledges everything at once. Making a
// peer's packets vanish needs a packet filter (netem, iptables), which
// needs root. So on loopback the bounds that apply are the listener's
// idle_timeout and frame_timeout, which this test sets; in production,
// without an idle_timeout, a dead peer between frames is found by TCP
// keepalive (keepalive 30 s by default: 30 s idle, then 3 probes 30 s
// apart, about 2 minutes) and a peer that stops reading our
// acknowledgements by the write timeout (transport.DefaultWriteTimeout);
// TCP_USER_TIMEOUT (ConnConfig.UserTimeout, being added with listener TLS)
// will bound unacknowledged writes to a dead host too, and needs the same
// packet filter to be tested.
func TestHostileHalfOpen(t *testing.T) {
	t.Parallel()
	const idle, frameTimeout = 700 * time.Millisecond, 900 * time.Millisecond
	s := startHostile(t)
	addr := s.listen("in", &switchboardv1.ListenerConfig{IdleTimeout: durationpb.New(idle), FrameTimeout: durationpb.New(frameTimeout)})
	s.baseline()
	ev := s.watch("in")

	// Between frames: one exchange, then silence.
	between := faultproxy.Start(t, addr)
	p1 := dialPeer(t, between.Addr())
	p1.exchange("HALF-1")
	between.Blackhole()
	blackholed := time.Now()
	s.eventually("the silent peer between frames was not closed for idle_timeout", func() bool {
		return ev.closed()[switchboardv1.CloseReason_CLOSE_REASON_IDLE_TIMEOUT] == 1
	})
	t.Logf("silent peer between frames closed %v after it went silent (idle_timeout %v)", time.Since(blackholed).Round(time.Millisecond), idle)

	// Inside a frame: half of one, then silence.
	inside := faultproxy.Start(t, addr)
	p2 := dialPeer(t, inside.Addr())
	frame := hostileMLLP.AppendFrame(nil, hostileMessage("HALF-2"))
	p2.write(frame[:len(frame)/2])
	s.waitPartialRead("in", 1)
	inside.Blackhole()
	blackholed = time.Now()
	s.eventually("the silent peer inside a frame was not closed for frame_timeout", func() bool {
		return ev.closed()[switchboardv1.CloseReason_CLOSE_REASON_FRAME_TIMEOUT] == 1
	})
	t.Logf("silent peer inside a frame closed %v after it went silent (frame_timeout %v from the frame's start)", time.Since(blackholed).Round(time.Millisecond), frameTimeout)

	// The server let both go; the peers never heard (their path is dead).
	s.eventually("connections of silent peers are still listed", func() bool { return len(s.conns("in")) == 0 })
	for _, p := range []*hostilePeer{p1, p2} {
		_ = p.nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := p.nc.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("a peer behind the blackhole read %v; want silence", err)
		}
	}
	k := s.status("in").GetConnectionTotals()
	if s.stored() != 1 || acks(k, switchboardv1.AckCode_ACK_CODE_AA) != 1 || k.GetFramingErrorCount() != 1 {
		t.Errorf("%d stored, %d AA, %d framing errors; want the one whole message, and the frame timeout as a framing error",
			s.stored(), acks(k, switchboardv1.AckCode_ACK_CODE_AA), k.GetFramingErrorCount())
	}
}

// slowloris holds a connection to addr the way the attack does: a frame
// start, then a byte every `every`, never an end; when the server closes
// it, it counts the close and connects again, until stop.
func slowloris(addr string, every time.Duration, stop <-chan struct{}, closes *atomic.Int64) {
	buf := make([]byte, 512)
	for {
		select {
		case <-stop:
			return
		default:
		}
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		_, err = nc.Write([]byte("\x0bMSH|^~\\&|" + phiMarker))
		for err == nil {
			_ = nc.SetReadDeadline(time.Now().Add(every))
			_, err = nc.Read(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				select {
				case <-stop:
					nc.Close()
					return
				default:
				}
				_, err = nc.Write([]byte{'x'})
			}
		}
		closes.Add(1) // the server closed it: EOF, or a reset
		nc.Close()
	}
}

// latencies collects acknowledgement latencies from several peers.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// quantile is the q-quantile (0 < q <= 1) of what was added.
func (l *latencies) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func (l *latencies) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// goodPeer sends messages one at a time on its own connection, waiting for
// each acknowledgement, until stop (or n messages when n > 0); it reports
// the first thing that was not an AA for its message.
func goodPeer(addr, prefix string, n int, stop <-chan struct{}, lat *latencies) error {
	nc, err := net.DialTimeout("tcp", addr, hostileWait)
	if err != nil {
		return err
	}
	defer nc.Close()
	dec := transport.NewDecoder(nc, hostileMLLP)
	var frame []byte
	for i := 0; n <= 0 || i < n; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		id := fmt.Sprintf("%s-%d", prefix, i)
		frame = hostileMLLP.AppendFrame(frame[:0], hostileMessage(id))
		_ = nc.SetDeadline(time.Now().Add(hostileWait))
		start := time.Now()
		if _, err := nc.Write(frame); err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		f, err := dec.Next()
		if err != nil {
			return fmt.Errorf("%s: no answer: %w", id, err)
		}
		lat.add(time.Since(start))
		if a, err := hl7.ParseAck(f); err != nil || a.Code != hl7.AA || a.ControlID != id {
			return fmt.Errorf("%s: answered %s for %q, %v", id, a.Code, a.ControlID, err)
		}
	}
	return nil
}

// TestHostileSlowloris: 200 connections that each start a frame and send a
// byte every 300 ms are closed by the frame deadline (and come back, and
// are closed again), while 8 well-behaved peers on the same listener get
// every message acknowledged AA. Nothing of the slowloris frames is
// stored. How much the attack slows the others down is
// BenchmarkSlowloris's figure, not an assertion here.
func TestHostileSlowloris(t *testing.T) {
	t.Parallel()
	const loris, good = 200, 8
	const frameTimeout = time.Second
	s := startHostile(t)
	addr := s.listen("in", &switchboardv1.ListenerConfig{FrameTimeout: durationpb.New(frameTimeout)})
	s.baseline()
	ev := s.watch("in")

	linesBefore := s.logs.lines()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var closes atomic.Int64
	for range loris {
		wg.Go(func() { slowloris(addr, 300*time.Millisecond, stop, &closes) })
	}
	s.eventually("the slowloris connections never all connected", func() bool { return s.status("in").GetOpenConnectionCount() >= loris })
	lat := &latencies{}
	errs := make(chan error, good)
	for i := range good {
		wg.Go(func() { errs <- goodPeer(addr, fmt.Sprintf("GOOD%d", i), 0, stop, lat) })
	}
	// Until every slowloris connection was closed by its deadline at least
	// once (each holds on for a frame timeout, then comes back).
	s.eventually("the frame deadline did not close every slowloris connection", func() bool {
		return ev.closed()[switchboardv1.CloseReason_CLOSE_REASON_FRAME_TIMEOUT] >= loris && closes.Load() >= loris
	})
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("well-behaved peer: %v", err)
		}
	}
	if err := ev.failed(); err != nil {
		t.Errorf("WatchEvents ended early: %v", err)
	}
	s.eventually("connections still open after the attack ended", func() bool { return s.status("in").GetOpenConnectionCount() == 0 })
	st := s.status("in")
	k := st.GetConnectionTotals()
	aa := acks(k, switchboardv1.AckCode_ACK_CODE_AA)
	t.Logf("%d slowloris connections accepted, %d closed by the frame deadline; %d messages of %d well-behaved peers acknowledged (p50 %v, p99 %v)",
		st.GetAcceptedConnectionCount()-good, ev.closed()[switchboardv1.CloseReason_CLOSE_REASON_FRAME_TIMEOUT], lat.len(), good,
		lat.quantile(0.5).Round(time.Microsecond), lat.quantile(0.99).Round(time.Microsecond))
	if aa == 0 || aa != int64(lat.len()) || totalAcks(k) != aa || s.stored() != uint64(aa) {
		t.Errorf("%d AA of %d acknowledgements, %d answers read, %d stored; want every good message stored and AA, nothing else",
			aa, totalAcks(k), lat.len(), s.stored())
	}
	if k.GetFramingErrorCount() < loris {
		t.Errorf("%d framing errors, want at least one per slowloris connection", k.GetFramingErrorCount())
	}
	// Closes are logged sampled: an attack must not flood the log.
	if lines := s.logs.lines() - linesBefore; int64(lines)*20 > k.GetFramingErrorCount() {
		t.Errorf("%d log lines for %d frame timeouts: the attack floods the log", lines, k.GetFramingErrorCount())
	}
}

// rssPeak is the server's peak resident memory (VmHWM), on Linux.
func (s *hostileServer) rssPeak() (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// endless streams n bytes of filler (phiMarker over and over) to nc after
// prefix, stopping early when the server closes; it returns how many bytes
// the server took.
func endless(nc net.Conn, prefix []byte, n int64) int64 {
	chunk := bytes.Repeat([]byte(phiMarker), (1<<20)/len(phiMarker))
	_ = nc.SetWriteDeadline(time.Now().Add(2 * hostileWait))
	w, err := nc.Write(prefix)
	sent := int64(w)
	for err == nil && sent < n {
		w, err = nc.Write(chunk[:min(int64(len(chunk)), n-sent)])
		sent += int64(w)
	}
	return sent
}

// raceEnabled: this binary (the test binary, which is also the server the
// tests start) was built with the race detector, whose shadow memory
// multiplies the resident memory of the process.
func raceEnabled() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
	}
	return false
}

// heapSys is the server's go_memstats_heap_sys_bytes: the heap the Go
// runtime obtained from the system. It is never given back (released
// pages stay counted), so it is at least the peak heap, and the race
// detector's shadow memory is not in it.
func (s *hostileServer) heapSys() int64 {
	s.t.Helper()
	return int64(s.metric("go_memstats_heap_sys_bytes"))
}

// checkMemory checks the server's peak memory against bound and logs it:
// the peak resident memory (VmHWM) where /proc has it and the race
// detector does not inflate it, and always the Go heap obtained from the
// system.
func (s *hostileServer) checkMemory(what string, bound int64) {
	s.t.Helper()
	heap := s.heapSys()
	peak, ok := s.rssPeak()
	switch {
	case !ok:
		s.t.Logf("%s: Go heap from the system %d MiB (no /proc/PID/status on %s: no peak RSS)", what, heap>>20, runtime.GOOS)
	case raceEnabled():
		s.t.Logf("%s: peak RSS %d MiB with the race detector's shadow memory, not checked (run without -race for the figure); Go heap from the system %d MiB",
			what, peak>>20, heap>>20)
	default:
		s.t.Logf("%s: peak RSS %d MiB; Go heap from the system %d MiB", what, peak>>20, heap>>20)
		if peak >= bound {
			s.t.Errorf("%s: server peak RSS %d MiB, want under %d MiB", what, peak>>20, bound>>20)
		}
	}
	if heap >= bound {
		s.t.Errorf("%s: the server's Go heap took %d MiB from the system, want under %d MiB", what, heap>>20, bound>>20)
	}
}

// TestHostileOversized: frames over the limit and endless streams are
// refused without being buffered. A complete frame over max_frame_bytes is
// answered AR naming the limit, and closed; a frame start followed by 1 GiB
// with no end byte (on a listener with the largest frame limit, 64 MiB),
// 1 GiB of bytes outside frames, and a length prefix announcing 4 GiB are
// each closed long before the 1 GiB is through; nothing is stored; and
// the server's peak memory stays far under what buffering the stream
// would take (under 300 MiB: one 64 MiB frame buffer and the garbage of
// its growth). Then endless streams at once, more than --max-buffered-bytes
// can hold: what does not fit is refused for memory, and the peak stays
// under the soft memory limit serve sets by default (the budget + 256 MiB)
// plus 128 MiB for the runtime's own.
func TestHostileOversized(t *testing.T) {
	t.Parallel()
	const gib = 1 << 30
	// A budget for one 64 MiB frame and a bit: room for the worst single
	// frame, small enough that a few concurrent ones fill it quickly.
	const budget = 80 << 20
	s := startHostile(t, "--max-buffered-bytes", strconv.Itoa(budget))
	def := s.listen("default", nil)
	big := s.listen("big", &switchboardv1.ListenerConfig{MaxFrameBytes: transport.MaxFrameBytesLimit})
	mid := s.listen("mid", &switchboardv1.ListenerConfig{MaxFrameBytes: 24 << 20})
	lp := s.listen("lp", &switchboardv1.ListenerConfig{Framing: &switchboardv1.Framing{Kind: &switchboardv1.Framing_LengthPrefix{LengthPrefix: &switchboardv1.LengthPrefixFraming{}}}})
	s.baseline()
	before, _ := s.rssPeak()
	t.Logf("peak RSS after setup: %d MiB", before>>20)
	evDef, evBig, evMid, evLP := s.watch("default"), s.watch("big"), s.watch("mid"), s.watch("lp")

	// A whole frame 1 KiB over the default 4 MiB limit: AR naming the
	// limit, for its control id, then the connection closes.
	p := dialPeer(t, def)
	msg := append(hostileMessage("TOO-BIG"), bytes.Repeat([]byte("OBX|1|ED|PDF||"+phiMarker+"\r"), (transport.DefaultMaxFrameBytes+1024)/(len(phiMarker)+15))...)
	go func() { _, _ = p.nc.Write(hostileMLLP.AppendFrame(nil, msg)) }() // the server stops reading at the limit
	a, err := p.answer()
	if err != nil || a.Code != hl7.AR || a.ControlID != "TOO-BIG" || !strings.Contains(a.Text, "frame limit") {
		t.Errorf("answer to an oversized frame: %s for %q (%q), %v; want AR for TOO-BIG naming the frame limit", a.Code, a.ControlID, a.Text, err)
	}
	if err := p.closedByServer(); err != nil {
		t.Errorf("oversized frame: %v; want the connection closed", err)
	}

	// 1 GiB with no end byte and, at the same time, 1 GiB of junk: each is
	// cut off once over its limit.
	header := []byte("\x0b" + string(hostileMessage("ENDLESS")))
	var endlessSent, junkSent int64
	var wg sync.WaitGroup
	nc := dialPeer(t, big).nc
	wg.Go(func() { endlessSent = endless(nc, header, gib) })
	junk := dialPeer(t, big).nc
	wg.Go(func() { junkSent = endless(junk, nil, gib) })
	wg.Wait()

	// A length prefix announcing 4 GiB - 1: refused before a payload byte
	// is buffered.
	lpc := dialPeer(t, lp)
	lpc.write(binary.BigEndian.AppendUint32(nil, 0xFFFFFFFF))
	lpc.write([]byte(phiMarker))
	if err := lpc.closedByServer(); err != nil {
		t.Errorf("announced 4 GiB frame: %v; want the connection closed", err)
	}

	s.eventually("an oversized frame's connection was not closed as too large", func() bool {
		return evDef.closed()[switchboardv1.CloseReason_CLOSE_REASON_FRAME_TOO_LARGE] == 1 &&
			evBig.closed()[switchboardv1.CloseReason_CLOSE_REASON_FRAME_TOO_LARGE] == 1 &&
			evBig.closed()[switchboardv1.CloseReason_CLOSE_REASON_JUNK_LIMIT] == 1 &&
			evLP.closed()[switchboardv1.CloseReason_CLOSE_REASON_FRAME_TOO_LARGE] == 1
	})
	t.Logf("bytes the server took before closing: %d of 1 GiB without end byte (64 MiB limit), %d of 1 GiB of junk (64 KiB limit)", endlessSent, junkSent)
	if endlessSent >= gib || junkSent >= gib {
		t.Errorf("the server took all of a 1 GiB stream without closing (%d, %d bytes)", endlessSent, junkSent)
	}
	if n := s.stored(); n != 0 {
		t.Errorf("%d records stored, want none", n)
	}
	s.checkMemory("one 1 GiB stream", 300<<20)

	// Four at once on a listener with a 24 MiB frame limit, each holding
	// 22 MiB of a frame: three fit the 80 MiB budget (a 24 MiB buffer
	// each), at least one is refused for memory (two can be, when both ask
	// before the first refused one gave its memory back). Then the rest of
	// the 1 GiB: the others are closed as too large.
	const streams = 4
	ps := make([]*hostilePeer, streams)
	for i := range ps {
		ps[i] = dialPeer(t, mid)
		wg.Go(func() {
			_ = endless(ps[i].nc, []byte("\x0b"+string(hostileMessage(fmt.Sprintf("HOLD-%d", i)))), 22<<20)
		})
	}
	wg.Wait()
	s.eventually("no stream was refused for memory", func() bool {
		return evMid.closed()[switchboardv1.CloseReason_CLOSE_REASON_MEMORY_LIMIT] >= 1
	})
	for _, p := range ps {
		wg.Go(func() { _ = endless(p.nc, nil, gib) })
	}
	wg.Wait()
	var closed map[switchboardv1.CloseReason]int
	s.eventually("the streams holding memory were not closed as too large", func() bool {
		closed = evMid.closed()
		return closed[switchboardv1.CloseReason_CLOSE_REASON_FRAME_TOO_LARGE]+closed[switchboardv1.CloseReason_CLOSE_REASON_MEMORY_LIMIT] == streams
	})
	t.Logf("%d streams of 24 MiB at once against the 80 MiB budget: %d refused for memory, %d closed as too large", streams,
		closed[switchboardv1.CloseReason_CLOSE_REASON_MEMORY_LIMIT], closed[switchboardv1.CloseReason_CLOSE_REASON_FRAME_TOO_LARGE])
	if n := s.stored(); n != 0 {
		t.Errorf("%d records stored, want none", n)
	}
	s.checkMemory(fmt.Sprintf("%d streams at once", streams), (budget+256<<20)+128<<20)
}

// TestHostileGarbage: bytes that are not HL7 get a clear answer or a close,
// and are counted, each kind on a listener of its own so the counters read
// over gRPC say exactly what happened:
//   - frames whose payload is not an HL7 message are answered AR ("not a
//     readable HL7 message", or the empty MSH-10) and counted invalid; they
//     are stored like every frame (the journal keeps what peers sent, for
//     inspection), and the connection goes on to serve a real message;
//   - an HTTP request and a TLS ClientHello at an MLLP port get nothing the
//     client could take for its own protocol (at most HL7 ARs, where a
//     ClientHello's random bytes happen to hold MLLP frames) and are closed
//     by the listener's idle or frame timeout;
//   - random bytes past max_junk_bytes close for the junk limit;
//   - a strict listener closes at the first byte outside a frame.
func TestHostileGarbage(t *testing.T) {
	t.Parallel()
	s := startHostile(t)
	timeouts := func(c *switchboardv1.ListenerConfig) *switchboardv1.ListenerConfig {
		c.IdleTimeout, c.FrameTimeout = durationpb.New(500*time.Millisecond), durationpb.New(500*time.Millisecond)
		return c
	}
	frames := s.listen("frames", nil)
	foreign := s.listen("foreign", timeouts(&switchboardv1.ListenerConfig{}))
	junkAddr := s.listen("junk", nil)
	strict := s.listen("strict", &switchboardv1.ListenerConfig{Framing: &switchboardv1.Framing{Kind: &switchboardv1.Framing_Mllp{Mllp: &switchboardv1.MllpFraming{Strict: true}}}})
	s.baseline()
	evForeign, evJunk, evStrict := s.watch("foreign"), s.watch("junk"), s.watch("strict")
	rng := rand.New(rand.NewPCG(11, 12))
	random := func(n int, drop ...byte) []byte {
		b := make([]byte, 0, n)
		for len(b) < n {
			if c := byte(rng.Uint32()); !slices.Contains(drop, c) {
				b = append(b, c)
			}
		}
		return b
	}

	p := dialPeer(t, frames)
	bad := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: " + phiMarker + "\r\n\r\n"),
		append([]byte(phiMarker), random(2000, 0x0b, 0x1c)...),
		[]byte("MSH"), // too short to hold its separators
		[]byte("MSH|^~\\&|A|B|C|D|20261202||ADT^A01||P|2.5\rPID|1||" + phiMarker + "\r"), // no control id
	}
	for i, b := range bad {
		p.write(hostileMLLP.AppendFrame(nil, b))
		a, err := p.answer()
		if err != nil || a.Code != hl7.AR || a.Text == "" {
			t.Errorf("non-HL7 frame %d: %s (%q), %v; want AR saying why", i, a.Code, a.Text, err)
		}
	}
	p.exchange("REAL-1")
	p.nc.Close()

	httpPeer := dialPeer(t, foreign)
	httpPeer.write([]byte("POST /fhir/Patient HTTP/1.1\r\nHost: hospital\r\nContent-Length: 22\r\n\r\n" + phiMarker))
	tlsPeer := dialPeer(t, foreign)
	tlsPeer.write(clientHello(t))
	for name, p := range map[string]*hostilePeer{"HTTP request": httpPeer, "TLS ClientHello": tlsPeer} {
		_ = p.nc.SetReadDeadline(time.Now().Add(hostileWait))
		answers := 0
		var err error
		for {
			var a hl7.Ack
			if a, err = p.answer(); err != nil {
				break
			}
			answers++
			if a.Code != hl7.AR {
				t.Errorf("%s: answered %s, want nothing but AR", name, a.Code)
			}
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s: after %d ARs, %v; want the connection closed", name, answers, err)
		}
	}

	junk := dialPeer(t, junkAddr)
	go func() { _, _ = junk.nc.Write(append([]byte(phiMarker), random(256<<10, 0x0b)...)) }()
	if err := junk.closedByServer(); err != nil {
		t.Errorf("random bytes: %v; want the connection closed", err)
	}

	st := dialPeer(t, strict)
	st.write([]byte(phiMarker))
	if err := st.closedByServer(); err != nil {
		t.Errorf("strict listener: %v; want the connection closed", err)
	}

	for _, id := range []string{"frames", "foreign", "junk", "strict"} {
		s.eventually(id+": connections still open", func() bool { return s.status(id).GetOpenConnectionCount() == 0 })
	}
	kf, kx, kj, ks := s.status("frames").GetConnectionTotals(), s.status("foreign").GetConnectionTotals(),
		s.status("junk").GetConnectionTotals(), s.status("strict").GetConnectionTotals()
	t.Logf("non-HL7 frames: %d invalid, %d AR; HTTP and TLS: closes %v, %d junk bytes, %d invalid frames; random bytes: %d junk bytes; strict: %d framing errors",
		kf.GetInvalidMessageCount(), acks(kf, switchboardv1.AckCode_ACK_CODE_AR), evForeign.closed(), kx.GetJunkBytes(), kx.GetInvalidMessageCount(),
		kj.GetJunkBytes(), ks.GetFramingErrorCount())
	if kf.GetInvalidMessageCount() != int64(len(bad)) || acks(kf, switchboardv1.AckCode_ACK_CODE_AR) != int64(len(bad)) || acks(kf, switchboardv1.AckCode_ACK_CODE_AA) != 1 {
		t.Errorf("non-HL7 frames: %d invalid, %d AR, %d AA; want %d, %d, 1", kf.GetInvalidMessageCount(), acks(kf, switchboardv1.AckCode_ACK_CODE_AR),
			acks(kf, switchboardv1.AckCode_ACK_CODE_AA), len(bad), len(bad))
	}
	closed := evForeign.closed()
	// The HTTP request is junk until the idle or frame timeout; a TLS
	// ClientHello on a plain listener is recognised by its first bytes and
	// closed at once as a framing error (transport/sniff.go).
	if n := closed[switchboardv1.CloseReason_CLOSE_REASON_IDLE_TIMEOUT] + closed[switchboardv1.CloseReason_CLOSE_REASON_FRAME_TIMEOUT]; n != 1 ||
		closed[switchboardv1.CloseReason_CLOSE_REASON_FRAMING_ERROR] != 1 || kx.GetJunkBytes() == 0 {
		t.Errorf("HTTP and TLS: closes %v, %d junk bytes; want one by the idle or frame timeout, one framing error, and junk counted", closed, kx.GetJunkBytes())
	}
	if kx.GetInvalidMessageCount() != acks(kx, switchboardv1.AckCode_ACK_CODE_AR) || totalAcks(kx) != kx.GetInvalidMessageCount() {
		t.Errorf("HTTP and TLS: %d invalid frames, %d AR, %d answers; want every answer an AR for an invalid frame",
			kx.GetInvalidMessageCount(), acks(kx, switchboardv1.AckCode_ACK_CODE_AR), totalAcks(kx))
	}
	if evJunk.closed()[switchboardv1.CloseReason_CLOSE_REASON_JUNK_LIMIT] != 1 || kj.GetJunkBytes() != transport.DefaultMaxJunkBytes+1 || kj.GetFramingErrorCount() != 1 {
		t.Errorf("random bytes: closes %v, %d junk bytes, %d framing errors; want the junk limit, %d, 1",
			evJunk.closed(), kj.GetJunkBytes(), kj.GetFramingErrorCount(), transport.DefaultMaxJunkBytes+1)
	}
	if evStrict.closed()[switchboardv1.CloseReason_CLOSE_REASON_FRAMING_ERROR] != 1 || ks.GetFramingErrorCount() != 1 {
		t.Errorf("strict listener: closes %v, %d framing errors; want one framing error", evStrict.closed(), ks.GetFramingErrorCount())
	}
	// Stored: every frame, readable or not (the real one, the non-HL7 ones,
	// any the ClientHello held); nothing of the junk.
	if n, want := s.stored(), uint64(1+len(bad))+uint64(kx.GetInvalidMessageCount()); n != want {
		t.Errorf("%d records stored, want %d (one per frame)", n, want)
	}
}

// clientHello is the first flight of a TLS client, as a peer configured
// for TLS sends it to a port that is not.
func clientHello(t *testing.T) []byte {
	t.Helper()
	c, srv := net.Pipe()
	defer srv.Close()
	go func() {
		cl := tls.Client(c, &tls.Config{ServerName: "switchboard.test", MinVersion: tls.VersionTLS12})
		_ = cl.Handshake() // fails when srv closes
		cl.Close()
	}()
	_ = srv.SetReadDeadline(time.Now().Add(hostileWait))
	buf := make([]byte, 4096)
	n, err := srv.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestHostileFlood: a flood of connections past max_connections_per_source
// and max_connections: the excess is refused at once and counted by
// reason, the connections that got in are served, and once the flood
// closes the server is back to its goroutines and file descriptors. Then
// a reconnect storm (each refused peer dials again at once) is counted
// too, without a log line per refusal.
func TestHostileFlood(t *testing.T) {
	t.Parallel()
	const maxConns, perSource = 20, 8
	s := startHostile(t)
	addr := s.listen("in", &switchboardv1.ListenerConfig{MaxConnections: maxConns, MaxConnectionsPerSource: perSource})
	s.baseline()

	// dialAll opens n connections from src and sorts them into those the
	// server kept and those it refused (closed at once, before any byte).
	dialAll := func(src string, n int) (kept, refused []*hostilePeer) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: hostileWait}
		handled := func() int64 {
			st := s.status("in")
			return st.GetOpenConnectionCount() + st.GetRejectedConnectionCount() + st.GetSourceRejectedConnectionCount()
		}
		before, openBefore := handled(), s.status("in").GetOpenConnectionCount()
		var all []*hostilePeer
		for range n {
			nc, err := d.Dial("tcp", addr)
			if errors.Is(err, syscall.ECONNRESET) {
				// Refused so fast that the connect itself saw the reset.
				refused = append(refused, nil)
				continue
			}
			if err != nil {
				t.Fatalf("dial from %s: %v", src, err)
			}
			t.Cleanup(func() { nc.Close() })
			all = append(all, &hostilePeer{t: t, nc: nc, dec: transport.NewDecoder(nc, hostileMLLP)})
		}
		// Once the server has handled them all, refused ones read EOF or a
		// reset at once and kept ones read nothing. The server counts a
		// refusal just before it closes, so a refused one can still look
		// kept for a moment: probe again until the kept ones are as many
		// as the server holds.
		s.eventually(fmt.Sprintf("the server did not handle the %d connections from %s", n, src), func() bool { return handled() == before+int64(n) })
		opened := s.status("in").GetOpenConnectionCount() - openBefore
		kept = all
		s.eventually(fmt.Sprintf("the connections from %s that look kept never came down to the %d the server holds", src, opened), func() bool {
			var still []*hostilePeer
			for _, p := range kept {
				_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
				if _, err := p.nc.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
					still = append(still, p)
				} else {
					refused = append(refused, p)
				}
			}
			kept = still
			return int64(len(kept)) <= opened
		})
		return kept, refused
	}

	// 40 from one address: 8 kept, 32 refused for the per-source limit.
	kept, refused := dialAll("127.0.0.1", 40)
	st := s.status("in")
	if len(kept) != perSource || len(refused) != 40-perSource || st.GetSourceRejectedConnectionCount() != 40-perSource || st.GetOpenConnectionCount() != perSource {
		t.Errorf("flood from one address: %d kept, %d refused; server: %d open, %d refused per source; want %d, %d",
			len(kept), len(refused), st.GetOpenConnectionCount(), st.GetSourceRejectedConnectionCount(), perSource, 40-perSource)
	}

	// 24 more from three other addresses: the listener fills up to 20 and
	// refuses the other 12 for max_connections (no address is over its
	// share). Other loopback addresses than 127.0.0.1 are Linux's.
	others := 0
	if probe, err := net.Listen("tcp", "127.0.0.2:0"); err == nil {
		probe.Close()
		for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
			k, r := dialAll(src, perSource)
			kept, refused = append(kept, k...), append(refused, r...)
		}
		others = 3 * perSource
		st = s.status("in")
		if len(kept) != maxConns || st.GetRejectedConnectionCount() != int64(perSource+others-maxConns) || st.GetOpenConnectionCount() != maxConns {
			t.Errorf("flood from four addresses: %d kept; server: %d open, %d refused at max_connections; want %d, %d",
				len(kept), st.GetOpenConnectionCount(), st.GetRejectedConnectionCount(), maxConns, perSource+others-maxConns)
		}
	} else {
		t.Logf("127.0.0.2 cannot be bound here (%v): only the per-source limit is flooded", err)
	}

	// Every kept connection is served.
	for i, p := range kept {
		p.exchange(fmt.Sprintf("FLOOD-%d", i))
	}
	if n := s.stored(); n != uint64(len(kept)) {
		t.Errorf("%d stored, want one per kept connection (%d)", n, len(kept))
	}
	for _, p := range append(kept, refused...) {
		if p != nil {
			p.nc.Close()
		}
	}
	s.eventually("the flood's connections are still open", func() bool { return s.status("in").GetOpenConnectionCount() == 0 })

	// A reconnect storm from one address for half a second: 8 hold a slot,
	// 40 more dial again the moment they are refused.
	warnsBefore := s.logs.count("WARN")
	refusedBefore := s.status("in").GetSourceRejectedConnectionCount()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var dials atomic.Int64
	for range 48 {
		wg.Go(func() {
			for {
				nc, err := net.DialTimeout("tcp", addr, time.Second)
				dials.Add(1)
				if err == nil {
					_ = nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					_, _ = nc.Read(make([]byte, 1)) // refused: at once; kept: until the deadline
					nc.Close()
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // how long the storm lasts, not an assertion
	close(stop)
	wg.Wait()
	s.eventually("the storm's connections are still open", func() bool { return s.status("in").GetOpenConnectionCount() == 0 })
	storm := s.status("in").GetSourceRejectedConnectionCount() - refusedBefore
	warns := s.logs.count("WARN") - warnsBefore
	t.Logf("flood: %d kept, %d refused (%d per source, %d at max_connections); storm: %d dials, %d refused, %d warnings logged",
		len(kept), len(refused), st.GetSourceRejectedConnectionCount(), st.GetRejectedConnectionCount(), dials.Load(), storm, warns)
	if storm < 100 {
		t.Errorf("the storm was refused only %d times; want it to have hammered the limit", storm)
	}
	if int64(warns)*20 > storm {
		t.Errorf("%d warnings for %d refusals: refusals are logged one by one", warns, storm)
	}
}

// BenchmarkSlowloris measures what 200 slowloris connections cost 8
// well-behaved peers on the same listener: each peer sends a message,
// waits for its ACK, and sends the next; the figures are ACK latency p50
// and p99 (and messages per second), without and with the attack going
// on (each slowloris connection starts a frame, sends a byte every 300 ms
// and is closed by the 1 s frame deadline, then comes back).
//
//	go test -run XXX -bench BenchmarkSlowloris ./cmd/switchboard/
func BenchmarkSlowloris(b *testing.B) {
	const good = 8
	s := startHostile(b)
	addr := s.listen("in", &switchboardv1.ListenerConfig{FrameTimeout: durationpb.New(time.Second)})
	for _, loris := range []int{0, 200} {
		b.Run(fmt.Sprintf("slowloris=%d", loris), func(b *testing.B) {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var closes atomic.Int64
			for range loris {
				wg.Go(func() { slowloris(addr, 300*time.Millisecond, stop, &closes) })
			}
			defer func() {
				close(stop)
				wg.Wait()
			}()
			for deadline := time.Now().Add(hostileWait); s.status("in").GetOpenConnectionCount() < int64(loris); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					b.Fatal("the slowloris connections never all connected")
				}
			}
			lat := &latencies{}
			errs := make(chan error, good)
			b.ResetTimer()
			start := time.Now()
			var peers sync.WaitGroup
			for i := range good {
				n := b.N / good
				if i < b.N%good {
					n++
				}
				if n == 0 {
					continue
				}
				peers.Go(func() { errs <- goodPeer(addr, fmt.Sprintf("B%d-%d", loris, i), n, nil, lat) })
			}
			peers.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(lat.quantile(0.5).Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat.quantile(0.99).Microseconds()), "p99-µs")
			b.ReportMetric(float64(lat.len())/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(0, "ns/op") // one op is a message of one of 8 peers: the figures above say more
		})
	}
}

// TestHostileLengthPrefixReservation: a length prefix must not buy more of
// the shared receive-memory budget than the bytes actually sent. It did:
// the decoder grew its buffer to the announced length as soon as the
// 4-byte prefix arrived, and charged the budget for all of it. With the
// default configuration (4 MiB frame limit, 256 MiB budget shared by every
// listener, 30 s frame timeout), 65 connections from one address that each
// sent nothing but a prefix announcing 4 MiB (260 bytes in all) took the
// whole budget, and a well-behaved peer on another, MLLP, listener got AR
// "no memory, resend later" for an ordinary 1 MiB message until the
// attackers' frame timeouts fired. The decoder now grows a length-prefix
// buffer with the bytes received, as for MLLP (transport/decoder.go fill).
func TestHostileLengthPrefixReservation(t *testing.T) {
	t.Parallel()
	const attackers = 65 // 65 × 4 MiB > the 256 MiB default budget
	s := startHostile(t)
	lp := s.listen("lp", &switchboardv1.ListenerConfig{Framing: &switchboardv1.Framing{Kind: &switchboardv1.Framing_LengthPrefix{LengthPrefix: &switchboardv1.LengthPrefixFraming{}}}})
	adt := s.listen("adt", nil)
	s.baseline()
	for range attackers {
		p := dialPeer(t, lp)
		p.write(binary.BigEndian.AppendUint32(nil, transport.DefaultMaxFrameBytes))
	}
	// Each prefix is read (the connection holds its reservation) or was
	// refused for memory and closed (the one over the budget).
	s.eventually("the server never read every length prefix", func() bool {
		read := 0
		for _, c := range s.conns("lp") {
			if st := c.GetStatus(); st.GetLastActivityTime().AsTime().After(st.GetOpenTime().AsTime()) {
				read++
			}
		}
		st := s.status("lp")
		return int64(read)+st.GetAcceptedConnectionCount()-st.GetOpenConnectionCount() == attackers
	})
	st := s.status("lp")
	t.Logf("%d prefixes sent: %d connections hold them, %d closed", attackers, st.GetOpenConnectionCount(),
		st.GetAcceptedConnectionCount()-st.GetOpenConnectionCount())

	// An ordinary result with an embedded document, 1 MiB: more than the
	// 4 KiB a connection holds without asking the budget, and more than
	// the 255 KiB the 64 prefixes that fit left of it.
	msg := append(hostileMessage("AFTER-PREFIXES"), bytes.Repeat([]byte("OBX|1|ED|PDF||"+phiMarker+"\r"), (1<<20)/(len(phiMarker)+15))...)
	p := dialPeer(t, adt)
	p.write(hostileMLLP.AppendFrame(nil, msg))
	a, err := p.answer()
	if err != nil || a.Code != hl7.AA {
		t.Errorf("a 1 MiB message while %d peers each sent only a 4-byte length prefix (%d bytes in all): %s (%q), %v; want AA",
			attackers, 4*attackers, a.Code, a.Text, err)
	}
}
