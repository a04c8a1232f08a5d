package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/internal/config"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/observe"
	"github.com/switchboard-dev/switchboard/observe/console"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/service/auth"
	"github.com/switchboard-dev/switchboard/transport"
)

type serveFlags struct {
	grpcAddr        string
	dataDir         string
	logLevel        string
	logFormat       string
	drainTimeout    time.Duration
	shutdownTimeout time.Duration
	noFsync         bool
	adminAddr       string
	adminPprof      bool
	maxBuffered     int64
	memoryLimit     int64
	retainAge       time.Duration
	retainBytes     int64
	sec             securityFlags
	// warnings are logged at every start (insecure settings given on
	// purpose).
	warnings []string
	// configPath is --config; file is the loaded file (nil without one),
	// whose declared listeners and connections serve reconciles.
	configPath string
	file       *config.File
	// cluster: serve --cluster and its companions (cluster.go).
	cluster clusterFlags
}

// registerServeFlags defines serve's flags on fs, storing into f.
func registerServeFlags(fs *flag.FlagSet, f *serveFlags) {
	fs.StringVar(&f.configPath, "config", "", "YAML configuration file (docs/configuration.md); flags and SWITCHBOARD_* variables override it. Default: $SWITCHBOARD_CONFIG")
	fs.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:50051", "address of the gRPC control plane; loopback by default: off loopback it needs TLS and an --access-file (docs/security.md)")
	fs.StringVar(&f.dataDir, "data-dir", "switchboard-data", "directory of the durable journal (created if missing)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", transport.DefaultDrainTimeout, "on shutdown, how long listeners and connections may take to finish in-flight frames and acknowledgements")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 5*time.Second, "on shutdown, how long gRPC calls may take to finish after draining before they are cut")
	fs.BoolVar(&f.noFsync, "no-fsync", false, "UNSAFE: acknowledge frames once written to the OS, without fsync; a power loss can lose acknowledged messages (benchmarks and labs only)")
	fs.Int64Var(&f.maxBuffered, "max-buffered-bytes", service.DefaultMaxBufferedBytes, "memory all connections together may hold for messages being received; a message that cannot get memory is refused (negative ACK, resend later)")
	fs.Int64Var(&f.memoryLimit, "memory-limit", -1, "Go soft memory limit in bytes (runtime/debug.SetMemoryLimit), so garbage left by growing receive buffers is collected before the process grows far past its live memory; default --max-buffered-bytes + 256 MiB; 0: none; the GOMEMLIMIT environment variable, when set, wins")
	fs.DurationVar(&f.retainAge, "retain-age", pebblejournal.DefaultMaxAge, "how long received messages, and sent ones once accepted or failed, are kept; a negative value keeps them whatever their age")
	fs.Int64Var(&f.retainBytes, "retain-bytes", pebblejournal.DefaultMaxBytes, "disk space kept for received and sent messages; above it the oldest are deleted (queued messages never are); a negative value sets no bound")
	fs.StringVar(&f.adminAddr, "admin-addr", "127.0.0.1:9090", "address of the admin HTTP server: Prometheus /metrics, /healthz, /readyz, the console (loopback only unless --insecure-admin: it has no authentication); empty: no admin server and no metrics at all")
	f.sec.register(fs)
	f.cluster.register(fs)
	fs.BoolVar(&f.adminPprof, "admin-pprof", false, "also serve net/http/pprof (CPU, heap, block, mutex profiles; block and mutex sampling turned on) under /debug/pprof/ on the admin address")
}

// addGoFlags adds the flags of a standard library flag set to a cobra
// command, sharing their values. A value type pflag cannot name (a
// ruleList) is shown as "rules".
func addGoFlags(cmd *cobra.Command, fs *flag.FlagSet) {
	cmd.Flags().AddGoFlagSet(fs)
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		if fl.Value.Type() == "ruleList" {
			fl.Value = namedValue{fl.Value, "rules"}
		}
	})
}

// namedValue is a flag value shown with another type name.
type namedValue struct {
	pflag.Value
	name string
}

func (v namedValue) Type() string { return v.name }

// checkServeFlags checks the flags together once they are parsed.
func checkServeFlags(f *serveFlags, stderr io.Writer) error {
	if f.adminPprof && f.adminAddr == "" {
		fmt.Fprintln(stderr, "serve: --admin-pprof needs an --admin-addr")
		return errUsage
	}
	if err := f.cluster.check(); err != nil {
		fmt.Fprintf(stderr, "serve: %v\n", err)
		return errUsage
	}
	warnings, err := f.sec.check(f.grpcAddr, f.adminAddr, stderr)
	f.warnings = warnings
	return err
}

// parseServeFlags parses serve's command line outside cobra (tests).
func parseServeFlags(args []string, stderr io.Writer) (serveFlags, error) {
	var f serveFlags
	cmd := &cobra.Command{Use: "serve"}
	gofs := flag.NewFlagSet("serve", flag.ContinueOnError)
	registerServeFlags(gofs, &f)
	addGoFlags(cmd, gofs)
	if err := cmd.Flags().Parse(args); err != nil {
		fmt.Fprintf(stderr, "serve: %v\n", err)
		return f, errUsage
	}
	if cmd.Flags().NArg() > 0 {
		fmt.Fprintf(stderr, "serve: unexpected arguments: %s\n", strings.Join(cmd.Flags().Args(), " "))
		return f, errUsage
	}
	return f, checkServeFlags(&f, stderr)
}

const serveLong = `serve runs Switchboard: the gRPC control plane (--grpc-addr), the admin
HTTP server with metrics, health and the console (--admin-addr), and the
journal in --data-dir. Listeners and connections created through the API are
kept there and restored at the next start, before health reports SERVING.
SIGINT or SIGTERM shuts it down in order: listeners and connections drain,
Receive streams end with UNAVAILABLE, gRPC stops, the journal closes.

Off loopback, the control plane needs TLS and an --access-file
(docs/security.md).`

// newServeCmd is "switchboard serve".
func newServeCmd(env *cliEnv) *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Switchboard service",
		Long:  serveLong,
		Example: `  switchboard serve
  switchboard serve --data-dir /var/lib/switchboard --log-format json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The config file and the environment fill in the flags not
			// given here, before they are checked.
			file, err := config.Resolve(f.configPath, cmd.Flags().Changed, cmd.Flags().Set, os.LookupEnv)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			f.file = file
			if err := checkServeFlags(&f, env.stderr); err != nil {
				return err
			}
			return serve(f, env.stderr)
		},
	}
	gofs := flag.NewFlagSet("serve", flag.ContinueOnError)
	registerServeFlags(gofs, &f)
	addGoFlags(cmd, gofs)
	cmd.Flags().SortFlags = false
	return cmd
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: want text or json, got %q", format)
}

// serve restores the listeners and connections of the last run (health is
// NOT_SERVING until then), runs the service until SIGINT or SIGTERM, then
// shuts down in order: health NOT_SERVING, listeners and connections drain,
// Receive streams end with UNAVAILABLE, gRPC stops (bounded), the journal
// closes. While it serves, health follows the journal
// (followJournalHealth).
func serve(f serveFlags, stderr io.Writer) error {
	logger, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	for _, w := range f.warnings {
		logger.Warn(w)
	}
	if limit := memoryLimit(f); limit > 0 {
		debug.SetMemoryLimit(limit)
		logger.Info("memory limit set", "memory_limit_bytes", limit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	metrics, reg, err := newMetrics(f)
	if err != nil {
		return err
	}
	var j journal.Journal
	// stores fills in the stores that live with the journal: in its Pebble
	// database, or in the cluster's JetStream.
	var stores func(*service.Config)
	setFloor := func(func() uint64) {}
	var health healthSource
	if f.cluster.urls == "" {
		if err := os.MkdirAll(f.dataDir, 0o750); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		jopts := pebblejournal.Options{
			NoSync:   f.noFsync,
			Logger:   logger.With("component", "journal"),
			MaxAge:   f.retainAge,
			MaxBytes: f.retainBytes,
			// Retention waits for the consumers' floor (set below, once they
			// are loaded), so a restart after a long stop keeps what they
			// have not acked.
			AwaitRetentionFloor: true,
		}
		if metrics != nil {
			jopts.OnCommit = metrics.JournalCommitted
		}
		pj, err := pebblejournal.Open(f.dataDir, jopts)
		if err != nil {
			return fmt.Errorf("open journal: %w", err)
		}
		j = pj
		stores = func(c *service.Config) {
			c.State, c.Outbox, c.Consumers, c.Answers = pj.StateStore(), pj.Outbox(), pj.Consumers(), pj.Answers()
		}
		setFloor = pj.SetRetentionFloor
		health = pj
		if f.noFsync {
			logger.Warn("fsync is OFF: acknowledged messages can be lost on power loss")
		}
	} else {
		p, err := openCluster(ctx, f.cluster, f.retainAge, logger)
		if err != nil {
			return err
		}
		// Deferred before closeJournal, so it runs after it: the node
		// leaves the cluster once the service has stopped.
		defer p.close()
		j, stores = p.journal, p.cfg
		health = clusterHealth{j: p.journal, node: p.node}
		if err := registerClusterMetrics(reg, p.node); err != nil {
			return err
		}
	}
	defer closeJournal(j, f.shutdownTimeout, logger)
	ext, err := newObsExtras(ctx, logger, j)
	if err != nil {
		return err
	}
	defer ext.shutdown(f.shutdownTimeout)

	profiles, err := f.sec.profiles(logger)
	if err != nil {
		return err
	}
	policy, err := f.sec.addressPolicy(logger)
	if err != nil {
		return err
	}
	scfg := service.Config{
		Journal:          j,
		Logger:           logger,
		MaxBufferedBytes: f.maxBuffered,
		Observer:         observe.Join(append([]*transport.Observer{metricsObserver(metrics)}, ext.observers...)...),
		InboundSpan:      ext.inboundSpan,
		TLSProfiles:      tlsProfiles(profiles),
		AddressPolicy:    policy,
		ConnSlots:        f.sec.connSlots(),
	}
	stores(&scfg)
	svc, err := service.New(scfg)
	if err != nil {
		return err
	}
	// Retention by age keeps what a durable consumer has not acked.
	setFloor(svc.Consumers().Floor)
	creds, err := f.sec.grpcCredentials(logger)
	if err != nil {
		return err
	}
	authz, stopAuth, err := f.sec.authorizer(logger, profiles, auth.ServerLookup(svc))
	if err != nil {
		return err
	}
	// After gRPC has stopped (deferred earlier runs later): the last
	// calls' audit records are written.
	defer stopAuth(f.shutdownTimeout)
	sopts := service.ServerOptions{
		Logger:             logger,
		GRPCOptions:        append(ext.grpcOptions, creds...),
		UnaryInterceptors:  authz.UnaryInterceptors(),
		StreamInterceptors: authz.StreamInterceptors(),
	}
	if metrics != nil {
		unary, stream := metrics.GRPCInterceptors()
		sopts.OuterUnaryInterceptors = []grpc.UnaryServerInterceptor{unary}
		sopts.OuterStreamInterceptors = []grpc.StreamServerInterceptor{stream}
	}
	gs, hs, err := service.NewGRPCServer(svc, sopts)
	if err != nil {
		return err
	}
	if metrics != nil {
		metrics.InitializeGRPC(gs)
		metrics.SetSources(observe.Sources{Journal: j, Resources: svc.Registry(), Outbox: svc.Outbox(), Consumers: svc.Consumers()})
	}
	// NOT_SERVING until the desired state is back (Restore below): a
	// balancer or orchestrator must not send work to a server whose
	// listeners and connections are not up yet.
	setServing(hs, healthpb.HealthCheckResponse_NOT_SERVING)
	lis, err := net.Listen("tcp", f.grpcAddr)
	if err != nil {
		return fmt.Errorf("gRPC listen: %w", err)
	}
	// Served from before Restore, so /readyz tells an orchestrator when
	// the last run's listeners are back.
	life := &observe.Lifecycle{}
	if f.adminPprof {
		// The block and mutex profiles are empty unless sampled: blocking
		// events of 10 µs or more, one contended mutex event in 100. Only
		// with --admin-pprof, which is for profiling sessions.
		runtime.SetBlockProfileRate(10_000)
		runtime.SetMutexProfileFraction(100)
	}
	if f.adminAddr != "" {
		mux := observe.AdminMux(observe.AdminConfig{Gatherer: reg, Journal: j, Resources: svc.Registry(), Lifecycle: life, Pprof: f.adminPprof})
		ext.mount(mux, svc)
		stopAdmin, err := serveAdmin(f.adminAddr, mux, logger, f.adminPprof)
		if err != nil {
			_ = lis.Close()
			svc.Shutdown(context.Background())
			return err
		}
		// Last: /metrics and /readyz answer while the server drains.
		defer stopAdmin()
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	// Declared resources (--config) once the durable ones are back, before
	// SERVING; those that cannot be created yet are retried until
	// shutdown.
	var retry sync.WaitGroup
	rctx, stopRetry := context.WithCancel(ctx)
	defer func() { stopRetry(); retry.Wait() }()
	declare := func(ctx context.Context) error {
		if f.file == nil {
			return nil
		}
		rep, err := config.Reconcile(ctx, svc.Routed(), f.file.Config, logger.With("component", "config", "config_file", f.file.Path))
		if err != nil {
			return err
		}
		retry.Go(func() { rep.RetryPending(rctx) })
		return nil
	}
	if err := restoreThenServe(ctx, svc, hs, declare); err != nil && ctx.Err() == nil {
		svc.Shutdown(context.Background())
		gs.Stop()
		return err
	}
	life.SetRestored()
	hctx, stopHealth := context.WithCancel(context.Background())
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		followJournalHealth(hctx, health, hs, logger)
	}()
	// Stopped before hs.Shutdown below, so it cannot report SERVING again.
	defer func() { stopHealth(); <-healthDone }()

	last, _ := j.LastSeq(ctx)
	logger.Info("switchboard serving", "grpc_addr", lis.Addr().String(), "data_dir", f.dataDir, "last_seq", last)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("gRPC server: %w", err)
	}
	life.SetStopping()
	logger.Info("shutting down")
	stopHealth()
	<-healthDone
	hs.Shutdown()
	dctx, cancel := context.WithTimeout(context.Background(), f.drainTimeout)
	stopRetry()
	retry.Wait()
	svc.Shutdown(dctx)
	cancel()
	stopGRPC(gs, f.shutdownTimeout)
	logger.Info("stopped")
	return nil
}

// serveAdmin serves the admin mux on addr until the returned func stops
// it.
func serveAdmin(addr string, mux *http.ServeMux, logger *slog.Logger, pprof bool) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen (--admin-addr): %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server failed", "err", err)
		}
	}()
	logger.Info("admin serving", "admin_addr", ln.Addr().String(), "pprof", pprof)
	return func() {
		// A pprof profile may be under way: it is cut, not waited for.
		_ = srv.Close()
		<-done
	}, nil
}

// newMetrics makes the metrics and their registry, only when there is an
// admin address to serve them: without one there is no Metrics object at
// all, so no observer, interceptor or commit hook of theirs runs.
func newMetrics(f serveFlags) (*observe.Metrics, *prometheus.Registry, error) {
	if f.adminAddr == "" {
		return nil, nil, nil
	}
	reg := prometheus.NewRegistry()
	m, err := observe.NewMetrics(reg)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	return m, reg, nil
}

// metricsObserver is m's Observer, or nil without metrics.
func metricsObserver(m *observe.Metrics) *transport.Observer {
	if m == nil {
		return nil
	}
	return m.Observer()
}

// obsExtras are the parts of observability (issue 12) that serve wires in
// besides the metrics: the event bus's and tracing's transport Observers
// (joined after the metrics' one), their gRPC server options (otelgrpc's
// stats handler), the handlers they add to the admin mux (the console
// under /console/; mount is called only when there is an admin address),
// and how they stop (after gRPC and the service, before the journal
// closes).
type obsExtras struct {
	observers   []*transport.Observer
	grpcOptions []grpc.ServerOption
	inboundSpan func(seq uint64) trace.SpanContext
	mount       func(mux *http.ServeMux, svc *service.Service)
	shutdown    func(timeout time.Duration)
}

// newObsExtras builds them. The event bus is the service's own
// (service.New makes it, joins its Observer and follows the journal); the
// console reads it, the service and the journal. Tracing is off unless the
// OTEL_* environment configures an exporter.
func newObsExtras(ctx context.Context, logger *slog.Logger, j journal.Journal) (*obsExtras, error) {
	tr, err := observe.NewTracing(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing (OTEL_* environment): %w", err)
	}
	var inboundSpan func(uint64) trace.SpanContext
	if tr.Enabled() {
		logger.Info("tracing on", "exporter", tr.Exporter())
		inboundSpan = tr.InboundSpan
	}
	return &obsExtras{
		observers:   []*transport.Observer{tr.Observer()},
		grpcOptions: []grpc.ServerOption{tr.ServerOption()},
		inboundSpan: inboundSpan,
		mount: func(mux *http.ServeMux, svc *service.Service) {
			mux.Handle("/console/", console.Handler(console.Config{
				API:     svc,
				Events:  consoleEvents{svc.Events()},
				Journal: j,
				Logger:  logger.With("component", "console"),
			}))
		},
		// After gRPC and the service have stopped, so the last spans have
		// ended; bounded, so an unreachable collector cannot hold the exit.
		shutdown: func(timeout time.Duration) {
			sctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if err := tr.Shutdown(sctx); err != nil {
				logger.Error("flushing traces", "err", err)
			}
		},
	}, nil
}

// consoleEvents shows the event bus's recent events in the console.
type consoleEvents struct{ bus *observe.Bus }

// Recent returns the latest n events, newest first.
func (e consoleEvents) Recent(n int) []console.EventRow {
	evs := e.bus.Recent(n, nil)
	rows := make([]console.EventRow, 0, len(evs))
	for i := len(evs) - 1; i >= 0; i-- {
		ev := evs[i]
		detail := ev.GetDetail()
		if r := ev.GetCloseReason(); r != switchboardv1.CloseReason_CLOSE_REASON_UNSPECIFIED {
			detail = strings.TrimSpace(strings.TrimPrefix(r.String(), "CLOSE_REASON_") + " " + detail)
		}
		if c := ev.GetControlId(); c != "" {
			detail = strings.TrimSpace(detail + " control id " + c)
		}
		rows = append(rows, console.EventRow{
			Time:         ev.GetTime().AsTime().UTC().Format("2006-01-02 15:04:05.000"),
			Kind:         strings.TrimPrefix(ev.GetKind().String(), "EVENT_KIND_"),
			ListenerID:   ev.GetListenerId(),
			ConnectionID: ev.GetConnectionId(),
			Detail:       detail,
		})
	}
	return rows
}

// restoreThenServe brings back the last run's listeners and connections,
// then reports SERVING. Health answers NOT_SERVING meanwhile (gRPC is
// already serving); Restore is bounded, so a peer that does not answer
// cannot hold the restart up.
func restoreThenServe(ctx context.Context, svc interface{ Restore(context.Context) error }, hs *health.Server, declare func(context.Context) error) error {
	if err := svc.Restore(ctx); err != nil {
		return fmt.Errorf("restore listeners and connections: %w", err)
	}
	if err := declare(ctx); err != nil {
		return err
	}
	setServing(hs, healthpb.HealthCheckResponse_SERVING)
	return nil
}

// followJournalHealth keeps the gRPC health status in step with the
// journal: NOT_SERVING while it cannot store messages, SERVING again once it
// recovers. Each change is logged once, however many frames the journal
// refuses meanwhile. It returns when ctx ends or the journal closes.
func followJournalHealth(ctx context.Context, j healthSource, hs *health.Server, logger *slog.Logger) {
	failed := false
	for {
		err, changed := j.Health()
		if errors.Is(err, journal.ErrClosed) {
			return
		}
		switch {
		case err != nil && !failed:
			logger.Error("journal unavailable; health is NOT_SERVING until it recovers", "err", err)
			setServing(hs, healthpb.HealthCheckResponse_NOT_SERVING)
		case err == nil && failed:
			logger.Info("journal recovered; health is SERVING")
			setServing(hs, healthpb.HealthCheckResponse_SERVING)
		}
		failed = err != nil
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// healthSource is what health follows: the journal's Health, or in a
// cluster the journal's and the node's together (clusterHealth).
type healthSource interface {
	Health() (err error, changed <-chan struct{})
}

// setServing sets the overall status and Switchboard's own.
func setServing(hs *health.Server, st healthpb.HealthCheckResponse_ServingStatus) {
	hs.SetServingStatus("", st)
	hs.SetServingStatus(switchboardv1.SwitchboardService_ServiceDesc.ServiceName, st)
}

// memoryLimit is the soft memory limit serve sets: the buffered-frame
// budget bounds live frame memory, but each buffer growth leaves the smaller
// buffer as garbage, and with the default GC pacing the process could reach
// about twice the budget before collecting it. GOMEMLIMIT, when set, is left
// to the runtime.
func memoryLimit(f serveFlags) int64 {
	switch {
	case os.Getenv("GOMEMLIMIT") != "":
		return 0
	case f.memoryLimit >= 0:
		return f.memoryLimit
	}
	return f.maxBuffered + 256<<20
}

// closeJournal closes the journal, but does not wait longer than timeout:
// a commit stuck on a hung disk would otherwise keep the process from ever
// exiting. Exiting then is safe: no record whose commit did not return was
// acknowledged.
func closeJournal(j journal.Journal, timeout time.Duration, logger *slog.Logger) {
	done := make(chan error, 1)
	go func() { done <- j.Close() }()
	select {
	case err := <-done:
		if err != nil {
			logger.Error("closing the journal", "err", err)
		}
	case <-time.After(timeout):
		logger.Error("the journal did not close in time (a disk operation is stuck); exiting anyway", "timeout", timeout)
	}
}

// stopGRPC stops gracefully, but not for longer than timeout.
func stopGRPC(gs *grpc.Server, timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		gs.Stop()
		<-done
	}
}
