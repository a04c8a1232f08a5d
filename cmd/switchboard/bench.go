package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-dev/switchboard/bench"
)

const benchLong = `bench measures Switchboard and the baselines it is compared with: MLLP load
against any listener, gRPC Send load through Switchboard to a peer, Receive
delivery rates, idle connection memory, restart time, and the whole suite
with its baselines in one run (docs/performance.md).`

// benchRun runs a bench subcommand once its flags are parsed.
type benchRun func(ctx context.Context, stdout, stderr io.Writer) error

// newBenchCmd is "switchboard bench".
func newBenchCmd(env *cliEnv) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load tool and baselines",
		Long:  benchLong,
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	for _, sub := range []struct {
		use, short string
		flags      func(fs *flag.FlagSet) benchRun
	}{
		{"inbound", "MLLP load against any listener", benchInbound},
		{"outbound", "gRPC Send load through Switchboard to a peer (--queued: through the outbox, timed to delivery)", benchOutbound},
		{"receive", "Receive delivery rate (--consumer NAME: a durable consumer acking each response)", benchReceive},
		{"echo", "Plain gRPC unary echo load (against bench baseline --kind echo)", benchEcho},
		{"jetstream", "JetStream's own synchronous publish rate (the baseline of serve --cluster)", benchJetStream},
		{"idle", "RSS per idle connection of process --pid", benchIdle},
		{"baseline", "Run a baseline server (ack, durable or echo) until interrupted", benchBaseline},
		{"restart", "Time serve's restart to SERVING on a full data directory", benchRestart},
		{"suite", "Everything, with baselines, in one run", benchSuite},
	} {
		gofs := flag.NewFlagSet("bench "+sub.use, flag.ContinueOnError)
		runner := sub.flags(gofs)
		c := &cobra.Command{
			Use:   sub.use,
			Short: sub.short,
			Args:  noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				ctx, stop := signalContext(cmd.Context())
				defer stop()
				return runner(ctx, env.stdout, env.stderr)
			},
		}
		addGoFlags(c, gofs)
		c.Flags().SortFlags = false
		cmd.AddCommand(c)
	}
	return cmd
}

// benchCmd runs "switchboard bench args..." (tests).
func benchCmd(args []string, stdout, stderr io.Writer) error {
	cmd := newBenchCmd(&cliEnv{stdin: os.Stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv})
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	return cmd.ExecuteContext(context.Background())
}

// output prints results as a table, or as JSON with --json.
type output struct {
	json bool
}

func (o *output) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
}

func (o *output) print(w io.Writer, results ...bench.Result) error {
	if o.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	return bench.WriteTable(w, results)
}

func benchInbound(fs *flag.FlagSet) benchRun {
	var cfg bench.InboundConfig
	var out output
	fs.StringVar(&cfg.Addr, "addr", "", "the MLLP listener to load (required)")
	fs.StringVar(&cfg.Target, "target", "peer", "label for the result")
	fs.IntVar(&cfg.Conns, "conns", 8, "connections, one message in flight each")
	fs.IntVar(&cfg.Size, "size", 260, "HL7 message size in bytes")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured time before it")
	fs.IntVar(&cfg.Count, "count", 0, "stop after this many messages instead (no warm-up)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "offered load in messages/s across all connections (0: as fast as ACKs come)")
	out.register(fs)
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if cfg.Addr == "" {
			fmt.Fprintln(stderr, "bench inbound: --addr is required")
			return errUsage
		}
		res, err := bench.Inbound(ctx, cfg)
		if err != nil {
			return err
		}
		return out.print(stdout, res)
	}
}

func benchBaseline(fs *flag.FlagSet) benchRun {
	var kind, addr, dataDir string
	fs.StringVar(&kind, "kind", "ack", "ack (HL7 ACK, no storage), durable (one synced Pebble write per frame, then ACK) or echo (gRPC unary echo)")
	fs.StringVar(&addr, "addr", "127.0.0.1:0", "listen address")
	fs.StringVar(&dataDir, "data-dir", "", "Pebble directory for --kind durable")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "baseline %s listening on %s\n", kind, ln.Addr())
		switch kind {
		case "ack":
			return bench.ServeACK(ctx, ln, nil)
		case "durable":
			if dataDir == "" {
				ln.Close()
				return errors.New("--kind durable needs --data-dir")
			}
			db, err := bench.OpenBaselineDB(dataDir)
			if err != nil {
				ln.Close()
				return err
			}
			defer db.Close()
			return bench.ServeACK(ctx, ln, db)
		case "echo":
			return bench.ServeEcho(ctx, ln)
		}
		ln.Close()
		return fmt.Errorf("unknown --kind %q", kind)
	}
}

func benchOutbound(fs *flag.FlagSet) benchRun {
	var cfg bench.OutboundConfig
	var out output
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:50051", "Switchboard's gRPC address")
	fs.StringVar(&cfg.Peer, "peer", "", "MLLP peer answering HL7 ACKs that Switchboard connects to (required)")
	fs.StringVar(&cfg.Target, "target", "switchboard-send", "label for the result")
	fs.IntVar(&cfg.Conns, "conns", 64, "connections Switchboard opens to the peer")
	fs.IntVar(&cfg.Calls, "calls", 64, "concurrent Send calls")
	fs.IntVar(&cfg.Size, "size", 260, "HL7 message size in bytes")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured time before it")
	fs.IntVar(&cfg.Count, "count", 0, "stop after this many Sends in all instead (no warm-up)")
	fs.BoolVar(&cfg.Queued, "queued", false, "queued Sends: a call is done when the message is in the outbox; then wait for the peer to accept them all and report that rate too")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, "the connections' outbox max_in_flight (0: the default, 1)")
	conns := fs.String("connection", "", "send on these existing connections (comma-separated ids; in a cluster they may be owned by another instance) instead of opening --conns new ones to --peer")
	out.register(fs)
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		for id := range strings.SplitSeq(*conns, ",") {
			if id = strings.TrimSpace(id); id != "" {
				cfg.Existing = append(cfg.Existing, id)
			}
		}
		if cfg.Queued && len(cfg.Existing) > 0 {
			fmt.Fprintln(stderr, "bench outbound: --queued counts deliveries on connections it opens; not with --connection")
			return errUsage
		}
		if cfg.Peer == "" && len(cfg.Existing) == 0 {
			fmt.Fprintln(stderr, "bench outbound: --peer or --connection is required")
			return errUsage
		}
		if cfg.Queued && cfg.Target == "switchboard-send" {
			cfg.Target = "switchboard-queued"
		}
		res, err := bench.Outbound(ctx, cfg)
		if err != nil {
			return err
		}
		return out.print(stdout, res)
	}
}

func benchJetStream(fs *flag.FlagSet) benchRun {
	var cfg bench.JetStreamConfig
	var out output
	fs.StringVar(&cfg.URL, "nats", "", "NATS server URLs, comma-separated (required)")
	fs.StringVar(&cfg.Target, "target", "", "label for the result (default: jetstream-rR)")
	fs.IntVar(&cfg.Conns, "conns", 8, "publishing goroutines, one synchronous publish in flight each")
	fs.IntVar(&cfg.NATSConns, "nats-conns", 1, "NATS connections the goroutines share, round robin (1: one shared, as the journal does)")
	fs.IntVar(&cfg.Replicas, "replicas", 1, "replicas of the fresh file-storage stream")
	fs.IntVar(&cfg.Size, "size", 260, "payload size in bytes")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured time before it")
	fs.IntVar(&cfg.Count, "count", 0, "stop after this many publishes in all instead (no warm-up)")
	fs.StringVar(&cfg.Stream, "stream", "", "stream name, created and deleted by the run (default: a new one)")
	fs.BoolVar(&cfg.Follow, "follow", false, "diagnostic: also run a headers-only ordered consumer of the stream, as the cluster journal does")
	out.register(fs)
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if cfg.URL == "" {
			fmt.Fprintln(stderr, "bench jetstream: --nats is required")
			return errUsage
		}
		res, err := bench.JetStream(ctx, cfg)
		if err != nil {
			return err
		}
		return out.print(stdout, res)
	}
}

func benchEcho(fs *flag.FlagSet) benchRun {
	var cfg bench.EchoConfig
	var out output
	fs.StringVar(&cfg.Addr, "addr", "", "address of a 'bench baseline --kind echo' server (required)")
	fs.StringVar(&cfg.Target, "target", "grpc-echo", "label for the result")
	fs.IntVar(&cfg.Calls, "calls", 64, "concurrent calls")
	fs.IntVar(&cfg.Size, "size", 260, "payload size in bytes")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured time before it")
	out.register(fs)
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if cfg.Addr == "" {
			fmt.Fprintln(stderr, "bench echo: --addr is required")
			return errUsage
		}
		res, err := bench.Echo(ctx, cfg)
		if err != nil {
			return err
		}
		return out.print(stdout, res)
	}
}

func benchReceive(fs *flag.FlagSet) benchRun {
	var cfg bench.ReceiveConfig
	var out output
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:50051", "Switchboard's gRPC address")
	fs.StringVar(&cfg.Target, "target", "switchboard", "label for the result")
	fs.IntVar(&cfg.Streams, "streams", 1, "concurrent Receive streams, each from sequence 1")
	fs.IntVar(&cfg.Count, "count", 100000, "messages each stream reads (the journal must hold at least this many)")
	fs.StringVar(&cfg.Consumer, "consumer", "", "measure a new durable consumer of this name (one stream, from sequence 1, deleted afterwards) instead of anonymous streams")
	ack := fs.String("ack", "through", "how the consumer acks: through (one Ack{through_sequence} per response, before reading on), each (one Ack{sequences} per response) or async (Ack{through_sequence} from a second goroutine, one call at a time, reading on meanwhile)")
	out.register(fs)
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		mode, err := bench.ParseAckMode(*ack)
		if err != nil {
			fmt.Fprintf(stderr, "bench receive: %v\n", err)
			return errUsage
		}
		cfg.Ack = mode
		res, err := bench.Receive(ctx, cfg)
		if err != nil {
			return err
		}
		return out.print(stdout, res)
	}
}

func benchIdle(fs *flag.FlagSet) benchRun {
	var cfg bench.IdleConfig
	var out output
	fs.StringVar(&cfg.Addr, "addr", "", "listener to open idle connections to (required)")
	fs.IntVar(&cfg.PID, "pid", 0, "process whose resident memory is measured (required; Linux)")
	fs.StringVar(&cfg.Target, "target", "switchboard", "label for the result")
	fs.IntVar(&cfg.Conns, "conns", 10000, "idle connections to open (the listener's max_connections must allow them)")
	fs.DurationVar(&cfg.Settle, "settle", 3*time.Second, "wait after connecting before reading memory")
	out.register(fs)
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if cfg.Addr == "" || cfg.PID == 0 {
			fmt.Fprintln(stderr, "bench idle: --addr and --pid are required")
			return errUsage
		}
		res, err := bench.Idle(ctx, cfg)
		if err != nil {
			return err
		}
		return out.print(stdout, res)
	}
}

func benchSuite(fs *flag.FlagSet) benchRun {
	var cfg bench.SuiteConfig
	var jsonPath, conns, metricsConns, dedupConns, only string
	fs.IntVar(&cfg.Size, "size", 260, "HL7 message size in bytes")
	fs.DurationVar(&cfg.Duration, "duration", 3*time.Second, "measured time of each run")
	fs.DurationVar(&cfg.Warmup, "warmup", 500*time.Millisecond, "unmeasured time before each run")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "rounds of each comparison, alternating targets; the median is reported")
	fs.StringVar(&conns, "conns", "1,8,64", "connection counts for the inbound and storage comparisons")
	fs.StringVar(&metricsConns, "metrics-conns", "8,64", "connection counts for the metrics on vs off comparison")
	fs.StringVar(&dedupConns, "dedup-conns", "8,64", "connection counts for the duplicate suppression on vs off comparison")
	fs.IntVar(&cfg.ReceiveCount, "receive-count", 200000, "1 KiB messages delivered by the Receive test and by each round of the consumer comparison")
	fs.IntVar(&cfg.IdleConns, "idle-conns", 10000, "idle connections in the memory test")
	fs.IntVar(&cfg.PipelineCount, "pipeline-count", 2000, "messages queued in each round of the pipelining test")
	fs.IntVar(&cfg.RestartResources, "restart-resources", 100, "listeners, and outbound connections, in the restart test's data directory")
	fs.IntVar(&cfg.RestartMessages, "restart-messages", 1000000, "journal records in the restart test's data directory")
	fs.StringVar(&only, "only", "", "run only these comma-separated groups: "+strings.Join(bench.Groups, ", "))
	fs.StringVar(&jsonPath, "json", "", "also write the report as JSON to this file")
	fs.StringVar(&cfg.Dir, "dir", "", "scratch directory (default: a new temporary one, removed afterwards)")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		for g := range strings.SplitSeq(only, ",") {
			if g = strings.TrimSpace(g); g == "" {
				continue
			}
			if !slices.Contains(bench.Groups, g) {
				fmt.Fprintf(stderr, "bench suite: unknown group %q in --only (groups: %s)\n", g, strings.Join(bench.Groups, ", "))
				return errUsage
			}
			cfg.Only = append(cfg.Only, g)
		}
		for _, c := range []struct {
			flag, list string
			to         *[]int
		}{{"--conns", conns, &cfg.Conns}, {"--metrics-conns", metricsConns, &cfg.MetricsConns}, {"--dedup-conns", dedupConns, &cfg.DedupConns}} {
			for _, v := range strings.Split(c.list, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil || n < 1 {
					fmt.Fprintf(stderr, "bench suite: bad %s %q\n", c.flag, c.list)
					return errUsage
				}
				*c.to = append(*c.to, n)
			}
		}
		exe, dir, cleanup, err := exeAndDir(cfg.Dir)
		if err != nil {
			return err
		}
		defer cleanup()
		cfg.Exe, cfg.Dir, cfg.Progress = exe, dir, stderr
		rep, err := bench.Suite(ctx, cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d CPUs, %s, kernel %s, %s, %s\n\n", rep.Machine.CPUs, rep.Machine.CPUModel, rep.Machine.Kernel, rep.Machine.Go, rep.Machine.Date)
		if err := bench.WriteTable(stdout, rep.Results); err != nil {
			return err
		}
		if jsonPath != "" {
			b, err := json.MarshalIndent(rep, "", "  ")
			if err != nil {
				return err
			}
			return os.WriteFile(jsonPath, append(b, '\n'), 0o644)
		}
		return nil
	}
}

// exeAndDir returns this binary, which the benchmarks start as servers,
// and dir, or a new temporary directory that cleanup removes.
func exeAndDir(dir string) (exe, scratch string, cleanup func(), err error) {
	exe, err = os.Executable()
	if err != nil {
		return "", "", nil, err
	}
	if dir != "" {
		return exe, dir, func() {}, nil
	}
	dir, err = os.MkdirTemp("", "switchboard-bench-")
	if err != nil {
		return "", "", nil, err
	}
	return exe, dir, func() { os.RemoveAll(dir) }, nil
}

func benchRestart(fs *flag.FlagSet) benchRun {
	var cfg bench.RestartConfig
	var out output
	var resources int
	fs.StringVar(&cfg.Peer, "peer", "", "MLLP peer the connections go to (default: a bare ACK server in this process)")
	fs.IntVar(&resources, "resources", 100, "listeners, and outbound connections, in the data directory")
	fs.IntVar(&cfg.Messages, "messages", 1000000, "journal records in the data directory")
	fs.IntVar(&cfg.Size, "size", 260, "HL7 message size in bytes")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "restarts of each data directory (a full one and an empty one, alternating)")
	fs.StringVar(&cfg.Dir, "dir", "", "scratch directory (default: a new temporary one, removed afterwards)")
	out.register(fs)
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		cfg.Listeners, cfg.Conns = resources, resources
		exe, dir, cleanup, err := exeAndDir(cfg.Dir)
		if err != nil {
			return err
		}
		defer cleanup()
		cfg.Exe, cfg.Dir, cfg.Progress = exe, dir, stderr
		if cfg.Peer == "" {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			pctx, stopPeer := context.WithCancel(ctx)
			served := make(chan error, 1)
			go func() { served <- bench.ServeACK(pctx, ln, nil) }()
			defer func() { stopPeer(); <-served }()
			cfg.Peer = ln.Addr().String()
		}
		rs, err := bench.Restart(ctx, cfg)
		if err != nil {
			return err
		}
		return out.print(stdout, rs...)
	}
}
