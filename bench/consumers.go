package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// The groups of issue 10: durable consumers, application ACK decided by a
// consumer, duplicate suppression. Each compares the feature with the same
// server without it, in alternating rounds, as the rest of the suite does.

// runFunc runs one comparison of the suite (see Suite).
type runFunc func(group, title string, key func(Result) float64, cs ...contender) error

// Names the issue 10 groups use.
const (
	appAckListener = "bench-app-ack"
	deciderName    = "bench-decider"
	dedupListener  = "bench-dedup"
	// appAckRate and appAckConns are the paced load of the app-ack group.
	appAckRate  = 1000
	appAckConns = 8
	// dedupWindow is the dedup group's duplicate window.
	dedupWindow = 10 * time.Minute
)

// consumerGroup compares, on one server with a pre-filled journal of
// cfg.ReceiveCount 1 KiB records, an anonymous Receive stream from
// sequence 1 with a new durable consumer from sequence 1 (default
// settings: max_ack_pending 1000) that acks each response before reading
// the next, with one Ack{through_sequence} and with one Ack{sequences:
// each message}, and one that acks from a second goroutine while it reads
// on (AckAsync). One stream each.
func consumerGroup(ctx context.Context, cfg SuiteConfig, run runFunc) error {
	dir := filepath.Join(cfg.Dir, "consumer")
	if err := Prefill(ctx, dir, cfg.ReceiveCount, 1024); err != nil {
		return fmt.Errorf("prefill: %w", err)
	}
	srv, grpcAddr, _, err := switchboard(ctx, cfg, "switchboard-consumer", dir)
	if err != nil {
		return err
	}
	defer srv.stop()
	var n atomic.Int64
	recv := func(name string, mode AckMode) contender {
		return contender{name, func() (Result, error) {
			rc := ReceiveConfig{Target: name, GRPCAddr: grpcAddr, Streams: 1, Count: cfg.ReceiveCount, Size: 1024, Ack: mode}
			if mode != "" {
				rc.Consumer = fmt.Sprintf("bench-%s-%d", mode, n.Add(1))
			}
			return withCPU(srv.pid(), func() (Result, error) { return Receive(ctx, rc) })
		}}
	}
	return run("consumer", fmt.Sprintf("durable consumer with acks vs anonymous Receive, %d 1 KiB messages, one stream", cfg.ReceiveCount),
		func(r Result) float64 { return r.Rate },
		recv("anonymous", ""), recv("consumer-through", AckThrough), recv("consumer-each", AckEach), recv("consumer-async", AckAsync))
}

// appAckGroup compares ACK latency at a paced 1,000 msgs/s over 8
// connections on one server: a listener whose ACK a consumer decides (the
// Decider in this process answers AA for every message) and a plain HL7
// listener (Switchboard acknowledges once the message is stored). The
// median round is taken by p99; the app-ack row's note gives the p99
// difference (see noteP99Difference).
func appAckGroup(ctx context.Context, cfg SuiteConfig, run runFunc) error {
	srv, grpcAddr, plainAddr, err := switchboard(ctx, cfg, "switchboard-app-ack", filepath.Join(cfg.Dir, "app-ack"))
	if err != nil {
		return err
	}
	defer srv.stop()
	lc := listenerConfig(cfg)
	lc.ConsumerAck = &switchboardv1.ConsumerAck{Consumer: deciderName}
	appAddr, err := startListener(ctx, grpcAddr, appAckListener, lc)
	if err != nil {
		return err
	}
	d, err := StartDecider(ctx, grpcAddr, deciderName)
	if err != nil {
		return err
	}
	load := func(addr string) (Result, error) {
		return withCPU(srv.pid(), func() (Result, error) {
			return Inbound(ctx, InboundConfig{Addr: addr, Conns: appAckConns, Size: cfg.Size, Duration: cfg.Duration, Warmup: cfg.Warmup, Rate: appAckRate})
		})
	}
	err = run("app-ack", fmt.Sprintf("ACK decided by a consumer vs automatic, %d msgs/s over %d connections", appAckRate, appAckConns),
		func(r Result) float64 { return r.P99 },
		contender{"automatic", func() (Result, error) { return load(plainAddr) }},
		contender{"app-ack", func() (Result, error) {
			if _, err := d.Take(); err != nil {
				return Result{}, err
			}
			r, err := load(appAddr)
			st, derr := d.Take()
			if err != nil {
				return r, err
			}
			if derr != nil {
				return r, derr
			}
			return deciderChecked(r, st)
		}})
	if serr := d.Stop(); err == nil && serr != nil {
		err = serr
	}
	return err
}

// deciderChecked adds what the decider did to an app-ack round: its
// errors, and whether it answered every message the round measured (it
// also answers the warm-up's, so it answers more).
func deciderChecked(r Result, st DeciderStats) (Result, error) {
	if r.Errors == nil && len(st.Errors) > 0 {
		r.Errors = map[string]uint64{}
	}
	for k, v := range st.Errors {
		r.Errors["decider_"+k] += v
	}
	r.Note = strings.TrimSpace(r.Note + fmt.Sprintf(" decider %s answered AA with AnswerMessage (%d answers written;"+
		" receive_time to delivery p50 %.0f µs, p99 %.0f µs; AnswerMessage call p50 %.0f µs, p99 %.0f µs)",
		deciderName, st.Answered, st.DeliveryP50, st.DeliveryP99, st.AnswerP50, st.AnswerP99))
	if st.Answered < r.Msgs {
		return r, fmt.Errorf("the deciding consumer wrote %d answers for %d acknowledged messages (errors: %s): are its ACKs decided?",
			st.Answered, r.Msgs, errorsString(st.Errors))
	}
	return r, nil
}

// noteP99Difference notes on other's row of group its p99 and p50 less
// base's.
func noteP99Difference(rs []Result, group, base, other string) {
	var b, o *Result
	for i := range rs {
		switch {
		case rs[i].Group == group && rs[i].Target == base:
			b = &rs[i]
		case rs[i].Group == group && rs[i].Target == other:
			o = &rs[i]
		}
	}
	if b == nil || o == nil {
		return
	}
	o.Note = strings.TrimSpace(o.Note + fmt.Sprintf(" p99 %+.0f µs, p50 %+.0f µs against %s", o.P99-b.P99, o.P50-b.P50, base))
}

// dedupGroup compares closed-loop inbound load on one server, at each of
// cfg.DedupConns (default 8 and 64) connections: a listener with duplicate
// suppression (a 10 minute window, scope SENDER) and a plain one. Every
// control id of every round is new (InboundConfig.IDBase), so nothing is
// suppressed: what is measured is the cost of the check (and of keeping
// each answer for a later duplicate). Before the rounds, a probe sends one
// message twice to the suppressing listener and checks the second is
// counted as a duplicate, so a server that ignored the setting cannot pass
// for a cheap one.
func dedupGroup(ctx context.Context, cfg SuiteConfig, run runFunc) error {
	srv, grpcAddr, plainAddr, err := switchboard(ctx, cfg, "switchboard-dedup", filepath.Join(cfg.Dir, "dedup"))
	if err != nil {
		return err
	}
	defer srv.stop()
	lc := listenerConfig(cfg)
	lc.Duplicates = &switchboardv1.DuplicateSuppression{Window: durationpb.New(dedupWindow)}
	dedupAddr, err := startListener(ctx, grpcAddr, dedupListener, lc)
	if err != nil {
		return err
	}
	cc, err := dialGRPC(grpcAddr)
	if err != nil {
		return err
	}
	defer cc.Close()
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	if err := probeDuplicates(ctx, client, dedupAddr, cfg.Size); err != nil {
		return err
	}
	var runs atomic.Int64
	load := func(name, addr string, conns int) contender {
		return contender{name, func() (Result, error) {
			return withCPU(srv.pid(), func() (Result, error) {
				return Inbound(ctx, InboundConfig{Addr: addr, Conns: conns, Size: cfg.Size, Duration: cfg.Duration, Warmup: cfg.Warmup,
					IDBase: int(runs.Add(1)) * dedupIDSpacing})
			})
		}}
	}
	conns := cfg.DedupConns
	if len(conns) == 0 {
		conns = []int{8, 64}
	}
	for _, n := range conns {
		on := load("dedup-10m", dedupAddr, n)
		measure := on.run
		on.run = func() (Result, error) {
			before, err := duplicateCount(ctx, client)
			if err != nil {
				return Result{}, err
			}
			r, err := measure()
			after, derr := duplicateCount(ctx, client)
			if err != nil {
				return r, err
			}
			if derr != nil {
				return r, derr
			}
			if after != before {
				return r, fmt.Errorf("%d messages were suppressed as duplicates: the run's control ids were not all new", after-before)
			}
			r.Note = strings.TrimSpace(r.Note + fmt.Sprintf(" duplicates window %v, every control id new: none suppressed", dedupWindow))
			return r, nil
		}
		if err := run("dedup", fmt.Sprintf("inbound with duplicate suppression vs without, %d connections, fsync on", n),
			func(r Result) float64 { return r.Rate }, load("dedup-off", plainAddr, n), on); err != nil {
			return err
		}
	}
	return nil
}

// dedupIDSpacing separates the control ids of the dedup group's runs: a
// worker sends fewer messages than this in a run.
const dedupIDSpacing = 10_000_000

// duplicateCount is the suppressing listener's duplicate count over every
// connection it accepted.
func duplicateCount(ctx context.Context, client switchboardv1.SwitchboardServiceClient) (int64, error) {
	resp, err := client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: dedupListener})
	if err != nil {
		return 0, fmt.Errorf("GetListener %s: %w", dedupListener, err)
	}
	return resp.GetListener().GetStatus().GetConnectionTotals().GetDuplicateCount(), nil
}

// probeDuplicates sends one message twice on one connection to the
// suppressing listener at addr: both must be acknowledged positively and
// the listener must count one duplicate more.
func probeDuplicates(ctx context.Context, client switchboardv1.SwitchboardServiceClient, addr string, size int) error {
	before, err := duplicateCount(ctx, client)
	if err != nil {
		return err
	}
	nc, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	msg, at := Message(size)
	putID(msg[at:], 9999, 0) // no load worker is 9999
	frame := mllp.AppendFrame(nil, msg)
	dec := transport.NewDecoder(nc, mllp)
	for i := range 2 {
		if _, err := nc.Write(frame); err != nil {
			return fmt.Errorf("duplicate probe: %w", err)
		}
		ack, err := dec.Next()
		if err != nil {
			return fmt.Errorf("duplicate probe: %w", err)
		}
		if kind := checkAck(ack, msg[at:at+controlIDWidth]); kind != "" {
			return fmt.Errorf("duplicate probe: message %d: %s", i+1, kind)
		}
	}
	after, err := duplicateCount(ctx, client)
	if err != nil {
		return err
	}
	if after != before+1 {
		return fmt.Errorf("listener %s counted %d duplicates for a message sent twice, want 1: does the server suppress duplicates?", dedupListener, after-before)
	}
	return nil
}

// listenerConfig is the configuration of the suite's listeners: every
// load comes from one address, so the per-source limit is lifted too.
func listenerConfig(cfg SuiteConfig) *switchboardv1.ListenerConfig {
	limit := int32(max(cfg.IdleConns+128, 1024))
	return &switchboardv1.ListenerConfig{Address: "127.0.0.1:0", MaxConnections: limit, MaxConnectionsPerSource: limit}
}

// startListener starts listener id with config lc on the server at
// grpcAddr and returns the address it bound.
func startListener(ctx context.Context, grpcAddr, id string, lc *switchboardv1.ListenerConfig) (string, error) {
	cc, err := dialGRPC(grpcAddr)
	if err != nil {
		return "", err
	}
	defer cc.Close()
	resp, err := switchboardv1.NewSwitchboardServiceClient(cc).StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: id, Config: lc})
	if err != nil {
		return "", fmt.Errorf("StartListener %s: %w", id, err)
	}
	return resp.GetListener().GetStatus().GetBoundAddress(), nil
}
