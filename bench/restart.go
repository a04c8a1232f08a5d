package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// RestartConfig describes the restart measurement: a data directory with
// Listeners listeners, Conns outbound connections to Peer and Messages
// journal records of Size bytes, and `switchboard serve` (Exe) started on
// it Rounds times, alternating with a start on an empty data directory.
type RestartConfig struct {
	Exe       string
	Dir       string // scratch space: both data directories and the logs
	Peer      string // an MLLP peer that accepts connections
	Listeners int
	Conns     int
	Messages  int
	Size      int
	Rounds    int
	Progress  io.Writer
}

// Restart prepares the data directory, then times each start of the real
// binary from just before the process is started to the first gRPC health
// check answering SERVING (health is NOT_SERVING until the listeners and
// connections are restored), and checks what was restored. The records are
// appended directly with the journal's Append from 64 goroutines (Prefill),
// with no server running. It returns every round, the empty directory's
// first.
func Restart(ctx context.Context, cfg RestartConfig) ([]Result, error) {
	full, empty := filepath.Join(cfg.Dir, "restart-full"), filepath.Join(cfg.Dir, "restart-empty")
	if err := populate(ctx, cfg, full); err != nil {
		return nil, err
	}
	if _, err := timeRestart(ctx, cfg, empty, 0, 0, 0); err != nil { // create it
		return nil, fmt.Errorf("empty data directory: %w", err)
	}
	t0 := time.Now()
	if err := Prefill(ctx, full, cfg.Messages, cfg.Size); err != nil {
		return nil, fmt.Errorf("prefill: %w", err)
	}
	d := time.Since(t0)
	fmt.Fprintf(cfg.Progress, "  %d records appended in %.1f s (%.0f/s)\n", cfg.Messages, d.Seconds(), float64(cfg.Messages)/d.Seconds())
	targets := []struct {
		name, dir              string
		listeners, conns, msgs int
	}{
		{"empty", empty, 0, 0, 0},
		{fmt.Sprintf("%d+%d+%d", cfg.Listeners, cfg.Conns, cfg.Messages), full, cfg.Listeners, cfg.Conns, cfg.Messages},
	}
	var out []Result
	for round := range max(cfg.Rounds, 1) {
		for k := range targets {
			t := targets[(k+round)%len(targets)]
			secs, err := timeRestart(ctx, cfg, t.dir, t.listeners, t.conns, t.msgs)
			if err != nil {
				return out, fmt.Errorf("restart %s: %w", t.name, err)
			}
			fmt.Fprintf(cfg.Progress, "  restart    %-20s round %d: %.3f s to SERVING\n", t.name, round+1, secs)
			out = append(out, Result{Group: "restart", Target: t.name, Conns: t.conns, Size: cfg.Size, Msgs: uint64(t.msgs), Seconds: secs,
				Note: fmt.Sprintf("round %d: %d listeners, %d connections, %d records", round+1, t.listeners, t.conns, t.msgs)})
		}
	}
	return out, nil
}

// populate creates the listeners and connections through a server on dir,
// which then stops.
func populate(ctx context.Context, cfg RestartConfig, dir string) error {
	c, grpcAddr, err := serveChild(ctx, cfg.Exe, cfg.Dir, "restart-setup", dir)
	if err != nil {
		return err
	}
	defer c.stop()
	cc, err := dialGRPC(grpcAddr)
	if err != nil {
		return err
	}
	defer cc.Close()
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	for i := range cfg.Listeners {
		if _, err := client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: fmt.Sprintf("l-%03d", i),
			Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:0"}}); err != nil {
			return fmt.Errorf("StartListener: %w", err)
		}
	}
	for i := range cfg.Conns {
		if _, err := client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: fmt.Sprintf("c-%03d", i),
			Config: &switchboardv1.ConnectionConfig{Address: cfg.Peer}}); err != nil {
			return fmt.Errorf("Connect to %s: %w", cfg.Peer, err)
		}
	}
	return nil
}

// timeRestart starts serve on dir and returns the seconds until health is
// SERVING, after which it checks that the listeners are listening, the
// connections open and the last record readable, and stops the server.
func timeRestart(ctx context.Context, cfg RestartConfig, dir string, listeners, conns, msgs int) (float64, error) {
	// freeAddr's ports are free when picked, not when serve binds them: a
	// busy test machine can hand them to another socket in between. Such a
	// start fails at once and is tried again with fresh ports; its time is
	// not counted.
	for attempt := 1; ; attempt++ {
		secs, err := timeRestartOnce(ctx, cfg, dir, listeners, conns, msgs)
		var ee *exitedError
		if attempt < 3 && errors.As(err, &ee) && strings.Contains(ee.tail, "address already in use") {
			continue
		}
		return secs, err
	}
}

func timeRestartOnce(ctx context.Context, cfg RestartConfig, dir string, listeners, conns, msgs int) (float64, error) {
	grpcAddr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	// A short reconnect backoff: the first attempts fail until serve
	// listens, and grpc-go's default would wait a second after them.
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1, MaxDelay: 5 * time.Millisecond},
			MinConnectTimeout: time.Second}))
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	health := healthpb.NewHealthClient(cc)
	start := time.Now()
	adminAddr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	c, err := launch(cfg.Exe, cfg.Dir, "restart", "serve", "--grpc-addr", grpcAddr, "--admin-addr", adminAddr, "--data-dir", dir, "--log-level", "warn")
	if err != nil {
		return 0, err
	}
	defer c.stop()
	err = c.await(ctx, time.Minute, func() error {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := health.Check(hctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			err = fmt.Errorf("health %v", resp.GetStatus())
		}
		return err
	})
	secs := time.Since(start).Seconds()
	if err != nil {
		return 0, err
	}
	return secs, checkRestored(ctx, switchboardv1.NewSwitchboardServiceClient(cc), listeners, conns, msgs)
}

// checkRestored checks what a restarted server shows.
func checkRestored(ctx context.Context, client switchboardv1.SwitchboardServiceClient, listeners, conns, msgs int) error {
	ls, err := client.ListListeners(ctx, &switchboardv1.ListListenersRequest{PageSize: 1000})
	if err != nil {
		return err
	}
	up := 0
	for _, l := range ls.GetListeners() {
		if l.GetStatus().GetState() == switchboardv1.ListenerState_LISTENER_STATE_LISTENING {
			up++
		}
	}
	cs, err := client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{Direction: switchboardv1.Direction_DIRECTION_OUTBOUND, PageSize: 1000})
	if err != nil {
		return err
	}
	open := 0
	for _, c := range cs.GetConnections() {
		if c.GetStatus().GetState() == switchboardv1.ConnectionState_CONNECTION_STATE_OPEN {
			open++
		}
	}
	if len(ls.GetListeners()) != listeners || up != listeners || len(cs.GetConnections()) != conns || open != conns {
		return fmt.Errorf("at SERVING: %d of %d listeners listening (%d listed), %d of %d connections open (%d listed)",
			up, listeners, len(ls.GetListeners()), open, conns, len(cs.GetConnections()))
	}
	if msgs > 0 {
		if _, err := client.GetMessage(ctx, &switchboardv1.GetMessageRequest{MessageId: fmt.Sprintf("in-%d", msgs)}); err != nil {
			return fmt.Errorf("record %d: %w", msgs, err)
		}
	}
	return nil
}
