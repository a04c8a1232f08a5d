package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
)

// Prefill appends n records of size bytes to the journal in dir (which no
// process may have open), from many writers so it is quick.
func Prefill(ctx context.Context, dir string, n, size int) error {
	j, err := pebblejournal.Open(dir, pebblejournal.Options{})
	if err != nil {
		return err
	}
	msg, _ := Message(size)
	const writers = 64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				r := journal.Record{Kind: journal.KindMessage, Time: time.Now(), ListenerID: "prefill", ConnectionID: "c-prefill", MessageType: "ADT^A01^ADT_A01", ControlID: strconv.Itoa(i), Payload: msg}
				if _, err := j.Append(ctx, &r); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		j.Close()
		return err
	}
	return j.Close()
}

// ReceiveConfig describes Receive delivery: Streams concurrent streams, each
// reading Count messages from sequence 1 of a pre-filled journal.
type ReceiveConfig struct {
	Target   string
	GRPCAddr string
	Streams  int
	Count    int
	Size     int
	// Stall is how long to wait for the next message before concluding the
	// journal holds fewer than Count. Zero: 10 s.
	Stall time.Duration
	// Consumer, when set, measures a durable consumer of this name instead
	// of anonymous streams: one stream (Streams must be 0 or 1) creates it
	// from sequence 1 with the default settings, acks what it is delivered
	// as Ack says, and the run ends when Count messages are delivered and
	// acked. The consumer must not exist; it is deleted afterwards.
	Consumer string
	// Ack is how the consumer acks: AckThrough (the default), AckEach or
	// AckAsync.
	Ack AckMode
}

// Receive measures how fast a pre-filled journal is delivered. Rate is the
// total across streams.
func Receive(ctx context.Context, cfg ReceiveConfig) (Result, error) {
	cfg.Streams = max(cfg.Streams, 1)
	if cfg.Stall <= 0 {
		cfg.Stall = 10 * time.Second
	}
	if cfg.Consumer != "" {
		return consume(ctx, cfg)
	}
	res := Result{Group: "receive", Target: cfg.Target, Conns: cfg.Streams, Size: cfg.Size}
	cc, err := dialGRPC(cfg.GRPCAddr)
	if err != nil {
		return res, err
	}
	defer cc.Close()
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := time.Now()
	var wg sync.WaitGroup
	got := make([]int, cfg.Streams)
	errs := make([]error, cfg.Streams)
	// A journal holding fewer than Count messages would leave the streams
	// waiting for ever: give up when nothing arrives for cfg.Stall.
	progress, stopWatch := watchStall(cancel, cfg.Stall, cfg.Count)
	defer stopWatch()
	for s := range cfg.Streams {
		wg.Go(func() {
			stream, err := client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1)})
			if err != nil {
				errs[s] = err
				return
			}
			var next uint64 = 1
			for got[s] < cfg.Count {
				resp, err := stream.Recv()
				if err != nil {
					if cause := context.Cause(ctx); cause != nil {
						err = cause
					}
					errs[s] = err
					return
				}
				progress.Store(time.Now().UnixNano())
				for _, m := range resp.GetMessages() {
					if m.GetSequence() != next {
						errs[s] = fmt.Errorf("stream %d: got sequence %d, want %d", s, m.GetSequence(), next)
						return
					}
					next++
				}
				got[s] += len(resp.GetMessages())
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, n := range got {
		res.Msgs += uint64(n)
	}
	res.Seconds = elapsed.Seconds()
	res.Rate = float64(res.Msgs) / res.Seconds
	for _, err := range errs {
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// watchStall cancels with an explanation once progress (Unix nanoseconds
// of the last message) is older than stall, until stop is called.
func watchStall(cancel context.CancelCauseFunc, stall time.Duration, count int) (progress *atomic.Int64, stop func()) {
	progress = new(atomic.Int64)
	progress.Store(time.Now().UnixNano())
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(stall / 10)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if time.Since(time.Unix(0, progress.Load())) > stall {
					cancel(fmt.Errorf("no message for %v: does the journal hold %d messages?", stall, count))
					return
				}
			}
		}
	}()
	return progress, func() { close(done); <-exited }
}

// IdleConfig describes the idle-connection memory measurement: open Conns
// connections to Addr and see how much the resident memory of process PID
// grows.
type IdleConfig struct {
	Target string
	Addr   string
	Conns  int
	PID    int
	// Settle is how long to wait after connecting before reading memory.
	Settle time.Duration
}

// Idle measures RSS growth per idle connection.
func Idle(ctx context.Context, cfg IdleConfig) (Result, error) {
	res := Result{Group: "idle", Target: cfg.Target, Conns: cfg.Conns}
	if err := raiseFileLimit(uint64(cfg.Conns) + 1024); err != nil {
		return res, err
	}
	before, err := RSS(cfg.PID)
	if err != nil {
		return res, err
	}
	var conns []interface{ Close() error }
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range cfg.Conns {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		nc, err := dialer.DialContext(ctx, "tcp", cfg.Addr)
		if err != nil {
			return res, fmt.Errorf("after %d connections: %w", len(conns), err)
		}
		conns = append(conns, nc)
	}
	select {
	case <-time.After(cfg.Settle):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	after, err := RSS(cfg.PID)
	if err != nil {
		return res, err
	}
	res.Msgs = uint64(len(conns))
	res.BytesPerConn = float64(after-before) / float64(len(conns))
	res.Note = fmt.Sprintf("RSS %d MiB -> %d MiB", before>>20, after>>20)
	return res, nil
}

var dialer = net.Dialer{Timeout: 5 * time.Second}

// RSS returns the resident set size of process pid in bytes (Linux).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for process %d", pid)
}

// CPUTime returns the user+system CPU time process pid has used (Linux).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields overall, in clock ticks (100 per second on Linux).
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}
