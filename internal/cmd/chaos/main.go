//go:build unix

// Command chaos runs a Switchboard cluster as real processes (3
// nats-server, 3 `switchboard serve --cluster`) on loopback, drives inbound
// MLLP load at a listener and queued outbound sends at a connection, kills
// -9 instances and pauses NATS nodes at random meanwhile, then checks that
// nothing acknowledged was lost: every inbound message ACKed AA is in the
// journal, and every queued Send that returned reached the peer. It prints
// the counts and exits 1 on any loss, unexplained duplicate or stuck
// failover. scripts/chaos.sh builds the binaries and runs it.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/internal/peersim"
	"github.com/switchboard-dev/switchboard/transport"
)

// mllp is the framing of the inbound load and its ACKs.
var mllp = transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()

type options struct {
	switchboard, natsServer string
	duration, leaseTTL      time.Duration
	settle, deliverTimeout  time.Duration
	inWorkers, outWorkers   int
	inInterval, outInterval time.Duration
	seed                    uint64
	keep                    bool
	graceful                float64
}

func main() {
	var o options
	flag.StringVar(&o.switchboard, "switchboard", "switchboard", "the switchboard binary")
	flag.StringVar(&o.natsServer, "nats-server", "nats-server", "the nats-server binary")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long faults are injected (load runs meanwhile)")
	flag.DurationVar(&o.leaseTTL, "lease-ttl", 3*time.Second, "the instances' --cluster-lease-ttl")
	flag.DurationVar(&o.settle, "settle", 5*time.Second, "wait after the faults are healed and the load stopped, before checking")
	flag.DurationVar(&o.deliverTimeout, "deliver-timeout", 60*time.Second, "how long accepted outbound messages may take to reach the peer after the settle")
	flag.IntVar(&o.inWorkers, "inbound-workers", 2, "inbound MLLP connections sending at once")
	flag.IntVar(&o.outWorkers, "outbound-workers", 2, "concurrent queued Send callers")
	flag.DurationVar(&o.inInterval, "inbound-interval", 40*time.Millisecond, "pause between one inbound worker's messages")
	flag.DurationVar(&o.outInterval, "outbound-interval", 80*time.Millisecond, "pause between one outbound worker's messages")
	flag.Uint64Var(&o.seed, "seed", 0, "random seed of the faults; 0: from the clock")
	flag.Float64Var(&o.graceful, "graceful", 0, "fraction (0 to 1) of the instance restarts done with SIGTERM (a rolling restart) instead of kill -9")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, NATS stores) even when the run passes")
	flag.Parse()
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	os.Exit(run(o))
}

// ---- processes ----

// proc is a child process in its own process group, so that kill -9 and
// SIGSTOP reach it (and nothing else) and it can always be cleaned up.
type proc struct {
	name, bin, log string
	args           []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

var (
	procsMu sync.Mutex
	procs   []*proc
)

func newProc(name, bin, log string, args ...string) *proc {
	p := &proc{name: name, bin: bin, log: log, args: args}
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p
}

func (p *proc) start() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "---- chaos: start %s at %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeath(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return nil
}

// signal sends sig to the process group; false when it is not running.
func (p *proc) signal(sig syscall.Signal) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
	}
	return syscall.Kill(-p.cmd.Process.Pid, sig) == nil
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill kills the process group with SIGKILL and waits (bounded) for it.
func (p *proc) kill() {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGKILL)
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	}
}

// stop asks the process to stop (SIGTERM), then kills it after a while.
func (p *proc) stop(grace time.Duration) {
	p.signal(syscall.SIGCONT)
	if !p.signal(syscall.SIGTERM) {
		return
	}
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
	case <-time.After(grace):
		p.kill()
	}
}

func cleanupAll() {
	procsMu.Lock()
	ps := slices.Clone(procs)
	procsMu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(5 * time.Second) }()
	}
	wg.Wait()
}

// ---- logging and counters ----

var t0 = time.Now()

func logf(format string, args ...any) {
	fmt.Printf("[%6.1fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
}

type counters struct {
	mu sync.Mutex
	// inbound
	inSent      int            // distinct ids sent at least once
	inWrites    map[string]int // frames written per id
	inAcked     map[string]bool
	inGaveUp    []string
	inConnFails int
	// outbound
	outSent    int
	outCalls   int
	outErrs    map[string]int // by gRPC code
	outAccept  map[string]string
	outGaveUp  []string
	peerGot    map[string]int
	kills      int
	terms      int
	pauses     int
	failovers  []string
	problems   []string
	restartsMs []int64
}

func (c *counters) problem(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	logf("PROBLEM: %s", s)
	c.mu.Lock()
	c.problems = append(c.problems, s)
	c.mu.Unlock()
}

// ---- the cluster ----

type instance struct {
	name, grpcAddr string
	p              *proc
	client         switchboardv1.SwitchboardServiceClient
	health         healthpb.HealthClient
	up             atomic.Bool
}

type chaos struct {
	o        options
	rnd      *rand.Rand
	rndMu    sync.Mutex
	work     string
	nats     []*proc
	sbs      []*instance
	inAddr   string
	peerAddr string
	c        counters
}

func (ch *chaos) rand() float64 {
	ch.rndMu.Lock()
	defer ch.rndMu.Unlock()
	return ch.rnd.Float64()
}

func (ch *chaos) between(a, b time.Duration) time.Duration {
	return a + time.Duration(ch.rand()*float64(b-a))
}

// freePort finds a free loopback port below the ephemeral range, so a
// restarted process finds its port still free.
func freePort(used map[int]bool) (int, error) {
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if used[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		used[port] = true
		return port, nil
	}
	return 0, errors.New("no free port")
}

// live returns a random instance believed up (any, if none is).
func (ch *chaos) live() *instance {
	var ups []*instance
	for _, in := range ch.sbs {
		if in.up.Load() {
			ups = append(ups, in)
		}
	}
	if len(ups) == 0 {
		ups = ch.sbs
	}
	ch.rndMu.Lock()
	defer ch.rndMu.Unlock()
	return ups[ch.rnd.IntN(len(ups))]
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (ch *chaos) startNATS(ctx context.Context, used map[int]bool) (string, error) {
	var client, route, mon [3]int
	for i := range 3 {
		var err error
		for _, p := range []*int{&client[i], &route[i], &mon[i]} {
			if *p, err = freePort(used); err != nil {
				return "", err
			}
		}
	}
	var urls []string
	for i := range 3 {
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", route[j]))
			}
		}
		dir := filepath.Join(ch.work, fmt.Sprintf("nats%d", i+1))
		conf := fmt.Sprintf("server_name: n%d\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n"+
			"jetstream { store_dir: %q, sync_interval: always }\n"+
			"cluster { name: sb, listen: 127.0.0.1:%d, routes: [%s] }\n",
			i+1, client[i], mon[i], dir, route[i], strings.Join(routes, ", "))
		cf := dir + ".conf"
		if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
			return "", err
		}
		p := newProc(fmt.Sprintf("n%d", i+1), ch.o.natsServer, dir+".log", "-c", cf)
		if err := p.start(); err != nil {
			return "", err
		}
		ch.nats = append(ch.nats, p)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", client[i]))
	}
	for i := range 3 {
		url := fmt.Sprintf("http://127.0.0.1:%d/healthz", mon[i])
		if err := until(ctx, 60*time.Second, func() error {
			r, err := http.Get(url)
			if err != nil {
				return err
			}
			r.Body.Close()
			if r.StatusCode != 200 {
				return fmt.Errorf("%s: %s", url, r.Status)
			}
			return nil
		}); err != nil {
			return "", fmt.Errorf("nats n%d not healthy: %w", i+1, err)
		}
	}
	logf("NATS up: %s", strings.Join(urls, ","))
	return strings.Join(urls, ","), nil
}

// until retries fn every 200 ms until it succeeds, d passes or ctx ends.
func until(ctx context.Context, d time.Duration, fn func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return err
		}
	}
}

func (ch *chaos) startSwitchboards(ctx context.Context, urls string, used map[int]bool) error {
	for i := range 3 {
		g, err := freePort(used)
		if err != nil {
			return err
		}
		a, err := freePort(used)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("sb%d", i+1)
		in := &instance{name: name, grpcAddr: fmt.Sprintf("127.0.0.1:%d", g)}
		in.p = newProc(name, ch.o.switchboard, filepath.Join(ch.work, name+".log"),
			"serve", "--cluster", urls, "--cluster-name", "chaos", "--instance", name,
			"--cluster-lease-ttl", ch.o.leaseTTL.String(),
			"--grpc-addr", in.grpcAddr, "--admin-addr", fmt.Sprintf("127.0.0.1:%d", a),
			"--data-dir", filepath.Join(ch.work, name))
		cc, err := grpc.NewClient(in.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, MaxDelay: time.Second}, MinConnectTimeout: 2 * time.Second}))
		if err != nil {
			return err
		}
		in.client = switchboardv1.NewSwitchboardServiceClient(cc)
		in.health = healthpb.NewHealthClient(cc)
		ch.sbs = append(ch.sbs, in)
		// One after another: R3 stream creations racing each other can
		// time out while JetStream elects leaders.
		if err := ch.startInstance(ctx, in); err != nil {
			return err
		}
	}
	return nil
}

// startInstance starts (or restarts) an instance and waits until it
// reports SERVING.
func (ch *chaos) startInstance(ctx context.Context, in *instance) error {
	if err := in.p.start(); err != nil {
		return err
	}
	started := time.Now()
	err := until(ctx, 45*time.Second, func() error {
		if !in.p.running() {
			// serve exits when it cannot reach a JetStream quorum at start:
			// its supervisor (here, this) starts it again.
			logf("%s exited while starting; starting it again", in.name)
			if err := in.p.start(); err != nil {
				return err
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		r, err := in.health.Check(cctx, &healthpb.HealthCheckRequest{Service: switchboardv1.SwitchboardService_ServiceDesc.ServiceName})
		if err != nil {
			return err
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("%s: %v", in.name, r.GetStatus())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s not SERVING: %w", in.name, err)
	}
	in.up.Store(true)
	ch.c.mu.Lock()
	ch.c.restartsMs = append(ch.c.restartsMs, time.Since(started).Milliseconds())
	ch.c.mu.Unlock()
	logf("%s SERVING on %s (%.1fs after start)", in.name, in.grpcAddr, time.Since(started).Seconds())
	return nil
}

// ---- resources ----

const (
	listenerID = "in"
	connID     = "out"
)

func (ch *chaos) createResources(ctx context.Context) error {
	err := until(ctx, 60*time.Second, func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := ch.live().client.StartListener(cctx, &switchboardv1.StartListenerRequest{
			ListenerId: listenerID,
			Config:     &switchboardv1.ListenerConfig{Address: ch.inAddr},
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("StartListener: %w", err)
	}
	err = until(ctx, 60*time.Second, func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := ch.live().client.Connect(cctx, &switchboardv1.ConnectRequest{
			ConnectionId: connID,
			Config: &switchboardv1.ConnectionConfig{
				Address:        ch.peerAddr,
				ConnectTimeout: durationpb.New(2 * time.Second),
				AckTimeout:     durationpb.New(3 * time.Second),
				Reconnect:      &switchboardv1.ReconnectPolicy{InitialDelay: durationpb.New(200 * time.Millisecond), MaxDelay: durationpb.New(time.Second)},
				Outbox: &switchboardv1.OutboxPolicy{
					MaxAttempts:   1000,
					RetryDelay:    durationpb.New(200 * time.Millisecond),
					MaxRetryDelay: durationpb.New(time.Second),
					InDoubt:       switchboardv1.InDoubtPolicy_IN_DOUBT_POLICY_RESEND,
				},
			},
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("Connect: %w", err)
	}
	owners := ch.owners(ctx)
	logf("created listener %s on %s (owner %s) and connection %s to the peer %s (owner %s)",
		listenerID, ch.inAddr, owners[listenerID], connID, ch.peerAddr, owners[connID])
	return nil
}

// owners asks a live instance who serves the listener and the connection
// and whether they are up (LISTENING, OPEN); "" when unknown or not up.
func (ch *chaos) ownersFrom(ctx context.Context, in *instance) map[string]string {
	m := map[string]string{}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if r, err := in.client.GetListener(cctx, &switchboardv1.GetListenerRequest{ListenerId: listenerID}); err == nil &&
		r.GetListener().GetStatus().GetState() == switchboardv1.ListenerState_LISTENER_STATE_LISTENING {
		m[listenerID] = r.GetListener().GetStatus().GetInstance()
	}
	if r, err := in.client.GetConnection(cctx, &switchboardv1.GetConnectionRequest{ConnectionId: connID}); err == nil &&
		r.GetConnection().GetStatus().GetState() == switchboardv1.ConnectionState_CONNECTION_STATE_OPEN {
		m[connID] = r.GetConnection().GetStatus().GetInstance()
	}
	return m
}

func (ch *chaos) owners(ctx context.Context) map[string]string { return ch.ownersFrom(ctx, ch.live()) }

// ---- load ----

func hl7Message(id string) []byte {
	return []byte("MSH|^~\\&|CHAOS|SRC|SB|DST|20260101000000||ADT^A01|" + id + "|P|2.5\r" +
		"EVN|A01|20260101000000\rPID|1||" + id + "^^^CHAOS||DOE^JOHN\r")
}

// inbound sends messages with unique control ids to the listener over MLLP,
// resending each until it is ACKed AA (a timeout or connection error
// reconnects first: after a failover another instance binds the port).
func (ch *chaos) inbound(ctx context.Context, stop <-chan struct{}, w int) {
	var conn net.Conn
	var dec *transport.Decoder
	closeConn := func() {
		if conn != nil {
			conn.Close()
			conn = nil
		}
	}
	defer closeConn()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		id := fmt.Sprintf("IN-%d-%06d", w, n)
		frame := mllp.AppendFrame(nil, hl7Message(id))
		ch.c.mu.Lock()
		ch.c.inSent++
		ch.c.mu.Unlock()
		giveUp := time.Now().Add(90 * time.Second)
		for {
			if ctx.Err() != nil {
				return
			}
			if time.Now().After(giveUp) {
				ch.c.mu.Lock()
				ch.c.inGaveUp = append(ch.c.inGaveUp, id)
				ch.c.mu.Unlock()
				ch.c.problem("inbound %s: no AA within 90 s", id)
				break
			}
			if conn == nil {
				var err error
				conn, err = net.DialTimeout("tcp", ch.inAddr, time.Second)
				if err != nil {
					ch.c.mu.Lock()
					ch.c.inConnFails++
					ch.c.mu.Unlock()
					sleepCtx(ctx, 200*time.Millisecond)
					continue
				}
				dec = transport.NewDecoder(conn, mllp)
			}
			_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
			_, err := conn.Write(frame)
			ch.c.mu.Lock()
			ch.c.inWrites[id]++
			ch.c.mu.Unlock()
			if err == nil {
				var reply []byte
				if reply, err = dec.Next(); err == nil {
					var ack hl7.Ack
					if ack, err = hl7.ParseAck(reply); err == nil {
						if ack.Code == hl7.AA && ack.ControlID == id {
							ch.c.mu.Lock()
							ch.c.inAcked[id] = true
							ch.c.mu.Unlock()
							break
						}
						err = fmt.Errorf("ack %s for %q", ack.Code, ack.ControlID)
					}
				}
			}
			// Not ACKed AA: a new connection, then the same message again.
			closeConn()
			sleepCtx(ctx, 100*time.Millisecond)
		}
		select {
		case <-stop:
			return
		case <-time.After(ch.o.inInterval):
		}
	}
}

// outbound queues messages on the connection through a random live
// instance, retrying errors with the same idempotency key.
func (ch *chaos) outbound(ctx context.Context, stop <-chan struct{}, w int) {
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		id := fmt.Sprintf("OUT-%d-%06d", w, n)
		ch.c.mu.Lock()
		ch.c.outSent++
		ch.c.mu.Unlock()
		giveUp := time.Now().Add(90 * time.Second)
		for {
			if ctx.Err() != nil {
				return
			}
			if time.Now().After(giveUp) {
				ch.c.mu.Lock()
				ch.c.outGaveUp = append(ch.c.outGaveUp, id)
				ch.c.mu.Unlock()
				ch.c.problem("outbound %s: queued Send not accepted within 90 s", id)
				break
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			r, err := ch.live().client.Send(cctx, &switchboardv1.SendRequest{
				ConnectionId: connID, Payload: hl7Message(id), Queued: true, IdempotencyKey: id,
			})
			cancel()
			ch.c.mu.Lock()
			ch.c.outCalls++
			if err == nil {
				ch.c.outAccept[id] = r.GetMessageId()
			} else {
				code := status.Code(err)
				ch.c.outErrs[code.String()]++
				if code != codes.Unavailable && ch.c.outErrs[code.String()] <= 3 {
					logf("outbound %s: Send: %v", id, err)
				}
			}
			ch.c.mu.Unlock()
			if err == nil {
				break
			}
			sleepCtx(ctx, 200*time.Millisecond)
		}
		select {
		case <-stop:
			return
		case <-time.After(ch.o.outInterval):
		}
	}
}

// ---- faults ----

// killOne kills an instance with SIGKILL, watches its listener and
// connection move, and restarts it a few seconds later.
func (ch *chaos) killOne(ctx context.Context) {
	before := ch.owners(ctx)
	var victim *instance
	r := ch.rand()
	pick := func(name string) {
		for _, in := range ch.sbs {
			if in.name == name {
				victim = in
			}
		}
	}
	switch {
	case r < 0.4:
		pick(before[listenerID])
	case r < 0.7:
		pick(before[connID])
	}
	if victim == nil {
		ch.rndMu.Lock()
		victim = ch.sbs[ch.rnd.IntN(len(ch.sbs))]
		ch.rndMu.Unlock()
	}
	var owned []string
	for _, res := range []string{listenerID, connID} {
		if before[res] == victim.name {
			owned = append(owned, res)
		}
	}
	victim.up.Store(false)
	killed := time.Now()
	how := "kill -9"
	if ch.rand() < ch.o.graceful {
		how = "SIGTERM"
		victim.p.stop(15 * time.Second)
		ch.c.mu.Lock()
		ch.c.terms++
		ch.c.mu.Unlock()
	} else {
		victim.p.kill()
		ch.c.mu.Lock()
		ch.c.kills++
		ch.c.mu.Unlock()
	}
	logf("%s %s (it served: %s)", how, victim.name, strings.Join(owned, ",")+map[bool]string{true: "nothing", false: ""}[len(owned) == 0])
	var wg sync.WaitGroup
	for _, res := range owned {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Served again (LISTENING, OPEN) by a live instance: another
			// one (a failover) or the victim itself once restarted.
			var got string
			err := until(ctx, 60*time.Second, func() error {
				for _, in := range ch.sbs {
					if !in.up.Load() {
						continue
					}
					if o := ch.ownersFrom(ctx, in)[res]; o != "" && (o != victim.name || victim.up.Load()) {
						got = o
						return nil
					}
					break
				}
				return errors.New("not yet")
			})
			if err != nil {
				ch.c.problem("failover of %s from %s: not served again within 60 s of the kill", res, victim.name)
				return
			}
			d := time.Since(killed)
			what := "failover"
			if got == victim.name {
				what = "back on the restarted instance"
			}
			logf("%s: %s %s -> %s %.1fs after the %s", what, res, victim.name, got, d.Seconds(), how)
			ch.c.mu.Lock()
			ch.c.failovers = append(ch.c.failovers, fmt.Sprintf("%s %s->%s %.1fs", res, victim.name, got, d.Seconds()))
			ch.c.mu.Unlock()
		}()
	}
	sleepCtx(ctx, ch.between(2*time.Second, 5*time.Second))
	logf("restart %s", victim.name)
	if err := ch.startInstance(ctx, victim); err != nil {
		ch.c.problem("restart %s: %v", victim.name, err)
	}
	wg.Wait()
}

// pauseOne stops a NATS node with SIGSTOP for a few seconds.
func (ch *chaos) pauseOne(ctx context.Context) {
	ch.rndMu.Lock()
	i := ch.rnd.IntN(len(ch.nats))
	ch.rndMu.Unlock()
	d := ch.between(2*time.Second, 5*time.Second)
	n := ch.nats[i]
	n.signal(syscall.SIGSTOP)
	ch.c.mu.Lock()
	ch.c.pauses++
	ch.c.mu.Unlock()
	logf("SIGSTOP nats %s for %.1fs", n.name, d.Seconds())
	sleepCtx(ctx, d)
	n.signal(syscall.SIGCONT)
	logf("SIGCONT nats %s", n.name)
}

func (ch *chaos) faults(ctx context.Context) {
	end := time.Now().Add(ch.o.duration)
	var killing, pausing atomic.Bool
	var wg sync.WaitGroup
	for time.Now().Before(end) && ctx.Err() == nil {
		if !sleepCtx(ctx, ch.between(time.Second, 4*time.Second)) || !time.Now().Before(end) {
			break
		}
		if ch.rand() < 0.6 {
			if killing.CompareAndSwap(false, true) {
				wg.Add(1)
				go func() { defer wg.Done(); defer killing.Store(false); ch.killOne(ctx) }()
			}
		} else if pausing.CompareAndSwap(false, true) {
			wg.Add(1)
			go func() { defer wg.Done(); defer pausing.Store(false); ch.pauseOne(ctx) }()
		}
	}
	wg.Wait()
}

// ---- checks ----

// journal reads the listener's records from sequence 1 to the head and
// counts them by control id.
func (ch *chaos) journal(ctx context.Context) (map[string]int, int, error) {
	var counts map[string]int
	var total int
	err := until(ctx, 60*time.Second, func() error {
		counts, total = map[string]int{}, 0
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		start := uint64(1)
		st, err := ch.live().client.Receive(cctx, &switchboardv1.ReceiveRequest{
			StartSequence: &start, StopAtHead: true, ListenerIds: []string{listenerID},
		})
		if err != nil {
			return err
		}
		for {
			r, err := st.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if r.GetLost() != nil {
				return fmt.Errorf("records %d-%d lost", r.GetLost().GetFirstSequence(), r.GetLost().GetLastSequence())
			}
			for _, m := range r.GetMessages() {
				counts[m.GetControlId()]++
				total++
			}
		}
	})
	return counts, total, err
}

// outboxMessages lists the connection's queued messages by idempotency key.
func (ch *chaos) outboxMessages(ctx context.Context) (map[string]*switchboardv1.Message, error) {
	var msgs map[string]*switchboardv1.Message
	err := until(ctx, 60*time.Second, func() error {
		msgs = map[string]*switchboardv1.Message{}
		token := ""
		for {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r, err := ch.live().client.ListMessages(cctx, &switchboardv1.ListMessagesRequest{
				ConnectionId: connID, Direction: switchboardv1.Direction_DIRECTION_OUTBOUND, PageSize: 1000, PageToken: token,
			})
			cancel()
			if err != nil {
				return err
			}
			for _, m := range r.GetMessages() {
				msgs[m.GetIdempotencyKey()] = m
			}
			if token = r.GetNextPageToken(); token == "" {
				return nil
			}
		}
	})
	return msgs, err
}

func run(o options) int {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	// Everything is bounded: the faults, the load's drain, the checks.
	ctx, cancelAll := context.WithTimeout(ctx, o.duration+o.settle+o.deliverTimeout+6*time.Minute)
	defer cancelAll()

	work, err := os.MkdirTemp("", "switchboard-chaos-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	ch := &chaos{o: o, rnd: rand.New(rand.NewPCG(o.seed, o.seed^0x5bd1e995)), work: work}
	ch.c.inWrites, ch.c.inAcked = map[string]int{}, map[string]bool{}
	ch.c.outErrs, ch.c.outAccept, ch.c.peerGot = map[string]int{}, map[string]string{}, map[string]int{}
	failed := true
	defer func() {
		cleanupAll()
		if failed || o.keep {
			fmt.Printf("work directory kept: %s\n", work)
		} else {
			os.RemoveAll(work)
		}
	}()
	logf("chaos: seed %d, faults for %v, lease TTL %v, work directory %s", o.seed, o.duration, o.leaseTTL, work)

	used := map[int]bool{}
	urls, err := ch.startNATS(ctx, used)
	if err != nil {
		logf("FAIL: %v", err)
		return 1
	}
	if err := ch.startSwitchboards(ctx, urls, used); err != nil {
		logf("FAIL: %v", err)
		ch.dumpLogs()
		return 1
	}

	// The outbound connection's peer: records every message, ACKs AA.
	peer, err := peersim.Listen(peersim.ServerConfig{Address: "127.0.0.1:0", OnTurn: func(ex peersim.Exchange) {
		if ex.ControlID != "" && ex.Err == nil {
			ch.c.mu.Lock()
			ch.c.peerGot[ex.ControlID]++
			ch.c.mu.Unlock()
		}
	}})
	if err != nil {
		logf("FAIL: peer: %v", err)
		return 1
	}
	defer peer.Close()
	ch.peerAddr = peer.Addr().String()
	inPort, err := freePort(used)
	if err != nil {
		logf("FAIL: %v", err)
		return 1
	}
	ch.inAddr = fmt.Sprintf("127.0.0.1:%d", inPort)
	if err := ch.createResources(ctx); err != nil {
		logf("FAIL: %v", err)
		ch.dumpLogs()
		return 1
	}

	// Load and faults.
	stop := make(chan struct{})
	var load sync.WaitGroup
	for w := range o.inWorkers {
		load.Add(1)
		go func() { defer load.Done(); ch.inbound(ctx, stop, w) }()
	}
	for w := range o.outWorkers {
		load.Add(1)
		go func() { defer load.Done(); ch.outbound(ctx, stop, w) }()
	}
	logf("load started: %d inbound, %d outbound workers", o.inWorkers, o.outWorkers)
	ch.faults(ctx)
	logf("faults over; healing")
	for _, n := range ch.nats {
		n.signal(syscall.SIGCONT)
	}
	for _, in := range ch.sbs {
		if !in.p.running() {
			if err := ch.startInstance(ctx, in); err != nil {
				ch.c.problem("restart %s after the faults: %v", in.name, err)
			}
		}
	}
	// A few more seconds of load on the healed cluster, then stop it; each
	// worker finishes its message in hand (resent until ACKed/accepted).
	sleepCtx(ctx, 3*time.Second)
	close(stop)
	logf("load stopping")
	load.Wait()
	logf("load stopped; settling %v", o.settle)
	sleepCtx(ctx, o.settle)
	if ctx.Err() != nil {
		logf("FAIL: interrupted or out of time")
		return 1
	}

	// Inbound: every ACKed id is in the journal.
	journal, records, err := ch.journal(ctx)
	if err != nil {
		ch.c.problem("reading the journal: %v", err)
	}
	c := &ch.c
	c.mu.Lock()
	var inMissing, inDupResent, inDupUnexplained []string
	for id := range c.inAcked {
		if journal[id] == 0 {
			inMissing = append(inMissing, id)
		}
	}
	for id, k := range journal {
		if k > 1 {
			if c.inWrites[id] >= k {
				inDupResent = append(inDupResent, id)
			} else {
				inDupUnexplained = append(inDupUnexplained, fmt.Sprintf("%s (%d in the journal, written %d times)", id, k, c.inWrites[id]))
			}
		}
	}
	var resent int
	for _, k := range c.inWrites {
		if k > 1 {
			resent++
		}
	}
	inSent, inAcked := c.inSent, len(c.inAcked)
	c.mu.Unlock()
	sort.Strings(inMissing)
	sort.Strings(inDupUnexplained)

	// Outbound: every accepted message reaches the peer (bounded wait).
	deliverStart := time.Now()
	undelivered := func() []string {
		c.mu.Lock()
		defer c.mu.Unlock()
		var u []string
		for id := range c.outAccept {
			if c.peerGot[id] == 0 {
				u = append(u, id)
			}
		}
		sort.Strings(u)
		return u
	}
	for len(undelivered()) > 0 && time.Since(deliverStart) < o.deliverTimeout && ctx.Err() == nil {
		sleepCtx(ctx, 500*time.Millisecond)
	}
	outMissing := undelivered()
	msgs, err := ch.outboxMessages(ctx)
	if err != nil {
		ch.c.problem("listing the outbox: %v", err)
	}
	states := map[string]int{}
	for _, m := range msgs {
		states[strings.TrimPrefix(m.GetState().String(), "MESSAGE_STATE_")]++
	}
	c.mu.Lock()
	var outNotAccepted, outDupInFlight, outDupUnexplained, outIDMismatch []string
	for id, mid := range c.outAccept {
		m := msgs[id]
		switch {
		case m == nil:
			outNotAccepted = append(outNotAccepted, id+" (not in the outbox)")
		case m.GetState() != switchboardv1.MessageState_MESSAGE_STATE_ACCEPTED:
			outNotAccepted = append(outNotAccepted, fmt.Sprintf("%s (%s, %d attempts, %s)", id, m.GetState(), len(m.GetAttempts()), m.GetFailure()))
		}
		if m != nil && m.GetMessageId() != mid {
			outIDMismatch = append(outIDMismatch, fmt.Sprintf("%s: Send returned %s, outbox has %s", id, mid, m.GetMessageId()))
		}
	}
	for id, k := range c.peerGot {
		if k > 1 {
			if m := msgs[id]; m != nil && len(m.GetAttempts()) >= k {
				outDupInFlight = append(outDupInFlight, id)
			} else {
				outDupUnexplained = append(outDupUnexplained, fmt.Sprintf("%s (peer got it %d times, %d attempts recorded)", id, k, len(m.GetAttempts())))
			}
		}
	}
	outSent, outAccepted, outCalls := c.outSent, len(c.outAccept), c.outCalls
	peerDistinct := len(c.peerGot)
	outErrs := fmt.Sprint(c.outErrs)
	c.mu.Unlock()
	sort.Strings(outNotAccepted)
	sort.Strings(outDupUnexplained)

	fmt.Println()
	fmt.Println("==== chaos run summary")
	fmt.Printf("seed %d; faults %v; lease TTL %v\n", o.seed, o.duration, o.leaseTTL)
	fmt.Printf("faults:   %d kill -9 and %d SIGTERM of an instance, %d SIGSTOP of a NATS node\n", c.kills, c.terms, c.pauses)
	fmt.Printf("failover: %d observed (kill -9 or SIGTERM to LISTENING/OPEN again, on whichever instance): %s\n", len(c.failovers), strings.Join(c.failovers, ", "))
	fmt.Printf("restarts: SERVING after (ms) %v\n", c.restartsMs)
	fmt.Printf("inbound:  %d sent, %d ACKed AA, %d resent (not ACKed at first), %d frames written, %d failed dials\n",
		inSent, inAcked, resent, sum(c.inWrites), c.inConnFails)
	fmt.Printf("          journal: %d records of %d ids; %d ACKed missing; %d duplicated after resends; %d duplicated unexplained\n",
		records, len(journal), len(inMissing), len(inDupResent), len(inDupUnexplained))
	fmt.Printf("outbound: %d queued, %d accepted (%d Send calls; errors by code %s)\n", outSent, outAccepted, outCalls, outErrs)
	fmt.Printf("          peer received %d distinct; %d accepted not received; outbox states %v\n", peerDistinct, len(outMissing), states)
	fmt.Printf("          %d duplicates at the peer after an in-flight attempt; %d duplicated unexplained; %d accepted not ACCEPTED in the outbox\n",
		len(outDupInFlight), len(outDupUnexplained), len(outNotAccepted))
	show := func(what string, ids []string) {
		if len(ids) > 0 {
			ch.c.problem("%s: %d: %s", what, len(ids), strings.Join(first(ids, 20), ", "))
		}
	}
	show("inbound ACKed AA but not in the journal", inMissing)
	show("inbound duplicated in the journal beyond the resends", inDupUnexplained)
	show("outbound accepted but never received by the peer", outMissing)
	show("outbound accepted but not ACCEPTED in the outbox", outNotAccepted)
	show("outbound duplicated at the peer beyond the recorded attempts", outDupUnexplained)
	show("outbound message id differs from Send's", outIDMismatch)
	if len(c.problems) > 0 {
		fmt.Printf("FAIL: %d problems\n", len(c.problems))
		for _, p := range c.problems {
			fmt.Println("  -", p)
		}
		ch.dumpLogs()
		return 1
	}
	fmt.Println("PASS: no ACKed or accepted message lost")
	failed = false
	return 0
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(slices.Clone(s[:n]), "...")
	}
	return s
}

// dumpLogs prints the warnings and errors of the instances' logs, for a
// failed run in CI where the work directory is gone.
func (ch *chaos) dumpLogs() {
	for _, in := range ch.sbs {
		b, err := os.ReadFile(in.p.log)
		if err != nil {
			continue
		}
		var lines []string
		for _, l := range bytes.Split(b, []byte("\n")) {
			if bytes.Contains(l, []byte("finished call")) {
				continue
			}
			if bytes.Contains(l, []byte("level=WARN")) || bytes.Contains(l, []byte("level=ERROR")) ||
				bytes.HasPrefix(l, []byte("----")) || bytes.HasPrefix(l, []byte("switchboard")) || bytes.Contains(l, []byte("panic")) {
				lines = append(lines, string(l))
			}
		}
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		fmt.Printf("---- %s (%s): last warnings and errors\n%s\n", in.name, in.p.log, strings.Join(lines, "\n"))
	}
}
