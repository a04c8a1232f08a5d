package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// SuiteConfig sets up a full run: Switchboard and every baseline on this
// machine, measured in the same run so ratios hold on a noisy machine.
type SuiteConfig struct {
	// Exe is the switchboard binary; servers run as child processes of it.
	Exe string
	// Dir is scratch space (data directories and child logs).
	Dir      string
	Size     int
	Duration time.Duration
	Warmup   time.Duration
	// Rounds repeats each comparison, alternating targets; the median round
	// is reported.
	Rounds int
	// Conns are the connection counts of the inbound comparison.
	Conns []int
	// MetricsConns are those of the metrics on vs off comparison; default
	// 8 and 64.
	MetricsConns []int
	// ReceiveCount is how many 1 KiB messages the Receive test, and each
	// round of the consumer comparison, delivers.
	ReceiveCount int
	// DedupConns are the connection counts of the duplicate suppression
	// on vs off comparison; default 8 and 64.
	DedupConns []int
	// IdleConns is how many idle connections the memory test opens.
	IdleConns int
	// PipelineCount is how many messages each pipelining round queues.
	PipelineCount int
	// RestartResources is how many listeners, and how many outbound
	// connections, the restart test's data directory holds;
	// RestartMessages how many journal records.
	RestartResources, RestartMessages int
	// Only, when not empty, runs just these groups (see Groups).
	Only []string
	// Progress gets a line per measurement.
	Progress io.Writer
}

// Report is what a suite run produces (and `--json` writes).
type Report struct {
	Machine  Machine  `json:"machine"`
	Settings Settings `json:"settings"`
	Results  []Result `json:"results"`
}

// Machine describes where a report was measured.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	Date     string `json:"date"`
}

// Settings records the suite's parameters.
type Settings struct {
	Size     int    `json:"size"`
	Duration string `json:"duration"`
	Warmup   string `json:"warmup"`
	Rounds   int    `json:"rounds"`
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// child is a server running as a child process.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan error
	log  string // the file its output goes to
	// admin is serve's admin address (metrics), "" when it has none.
	admin string
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startChild runs exe args with its output in dir/name.log and waits until
// addr accepts connections.
func startChild(ctx context.Context, exe, dir, name, addr string, args ...string) (*child, error) {
	return startChildEnv(ctx, exe, dir, name, addr, nil, args...)
}

// startChildEnv is startChild with env added to the child's environment.
func startChildEnv(ctx context.Context, exe, dir, name, addr string, env []string, args ...string) (*child, error) {
	c, err := launchEnv(exe, dir, name, env, args...)
	if err != nil {
		return nil, err
	}
	if err := c.await(ctx, 15*time.Second, func() error { return dialOnce(addr) }); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// launch runs exe args with its output in dir/name.log.
func launch(exe, dir, name string, args ...string) (*child, error) {
	return launchEnv(exe, dir, name, nil, args...)
}

// launchEnv is launch with env added to the child's environment.
func launchEnv(exe, dir, name string, env []string, args ...string) (*child, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	c := &child{name: name, cmd: cmd, done: make(chan error, 1), log: logf.Name()}
	go func() {
		c.done <- cmd.Wait()
		logf.Close()
	}()
	return c, nil
}

// await polls ready every 5 ms until it returns nil, the child exits,
// timeout passes or ctx ends.
func (c *child) await(ctx context.Context, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case werr := <-c.done:
			c.done <- werr // for stop
			return &exitedError{name: c.name, err: werr, tail: lastLines(c.log, 5)}
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was not ready within %v: %v", c.name, timeout, err)
		}
	}
}

// exitedError is a child that exited before it was ready; tail is the
// end of its log.
type exitedError struct {
	name, tail string
	err        error
}

func (e *exitedError) Error() string {
	return fmt.Sprintf("%s exited before it was ready: %v; its log ends:\n%s", e.name, e.err, e.tail)
}

// lastLines returns the last n lines of file (what a child logged before
// it exited).
func lastLines(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

func dialOnce(addr string) error {
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		nc.Close()
	}
	return err
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the child to shut down and kills it if it does not.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// serveChild starts `switchboard serve` on dataDir and returns it with its
// gRPC address once that accepts connections. It serves metrics on an
// admin address of its own, as serve does by default (extra may say
// `--admin-addr ""` to run without).
func serveChild(ctx context.Context, exe, dir, name, dataDir string, extra ...string) (*child, string, error) {
	return serveChildEnv(ctx, exe, dir, name, dataDir, nil, extra...)
}

// serveChildEnv is serveChild with env added to the child's environment.
func serveChildEnv(ctx context.Context, exe, dir, name, dataDir string, env []string, extra ...string) (*child, string, error) {
	grpcAddr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	args := append([]string{"serve", "--grpc-addr", grpcAddr, "--admin-addr", adminAddr, "--data-dir", dataDir, "--log-level", "warn"}, extra...)
	for i, a := range extra { // the last one given wins, as for the flag
		if a == "--admin-addr" && i+1 < len(extra) {
			adminAddr = extra[i+1]
		}
	}
	c, err := startChildEnv(ctx, exe, dir, name, grpcAddr, env, args...)
	if err != nil {
		return nil, "", err
	}
	c.admin = adminAddr
	return c, grpcAddr, nil
}

// switchboard starts `switchboard serve` and a listener on it; it returns
// the child, its gRPC address and the listener's address.
func switchboard(ctx context.Context, cfg SuiteConfig, name, dataDir string, extra ...string) (*child, string, string, error) {
	return switchboardEnv(ctx, cfg, name, dataDir, nil, extra...)
}

// switchboardEnv is switchboard with env added to the server's
// environment.
func switchboardEnv(ctx context.Context, cfg SuiteConfig, name, dataDir string, env []string, extra ...string) (*child, string, string, error) {
	c, grpcAddr, err := serveChildEnv(ctx, cfg.Exe, cfg.Dir, name, dataDir, env, extra...)
	if err != nil {
		return nil, "", "", err
	}
	cc, err := dialGRPC(grpcAddr)
	if err != nil {
		c.stop()
		return nil, "", "", err
	}
	defer cc.Close()
	resp, err := switchboardv1.NewSwitchboardServiceClient(cc).StartListener(ctx, &switchboardv1.StartListenerRequest{
		ListenerId: "bench",
		Config:     listenerConfig(cfg),
	})
	if err != nil {
		c.stop()
		return nil, "", "", fmt.Errorf("StartListener on %s: %w", name, err)
	}
	return c, grpcAddr, resp.GetListener().GetStatus().GetBoundAddress(), nil
}

// withCPU runs f and adds the server process's CPU time per message.
func withCPU(pid int, f func() (Result, error)) (Result, error) {
	before, err := CPUTime(pid)
	if err != nil {
		return f()
	}
	r, err := f()
	n := r.Msgs
	if r.handled > 0 {
		n = r.handled
	}
	if after, cerr := CPUTime(pid); cerr == nil && n > 0 {
		r.ServerCPU = float64((after - before).Microseconds()) / float64(n)
	}
	return r, err
}

// contender is one target in an alternating comparison.
type contender struct {
	name string
	run  func() (Result, error)
}

// compare runs the contenders round by round, rotating who goes first, and
// keeps each one's median round by rate.
func compare(ctx context.Context, rounds int, progress io.Writer, cs ...contender) ([]Result, error) {
	return compareBy(ctx, rounds, progress, func(r Result) float64 { return r.Rate }, cs...)
}

// rateOrder and p99Order order results by rate and by p99.
func rateOrder(a, b Result) int { return cmp.Compare(a.Rate, b.Rate) }
func p99Order(a, b Result) int  { return cmp.Compare(a.P99, b.P99) }

// compareBy is compare with the median taken by key.
func compareBy(ctx context.Context, rounds int, progress io.Writer, key func(Result) float64, cs ...contender) ([]Result, error) {
	all := make([][]Result, len(cs))
	for round := range rounds {
		for k := range cs {
			i := (k + round) % len(cs)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			r, err := cs[i].run()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", cs[i].name, err)
			}
			r.Target = cs[i].name
			delivered := ""
			if r.DeliveredRate > 0 {
				delivered = fmt.Sprintf("  delivered %8.0f/s", r.DeliveredRate)
			}
			fmt.Fprintf(progress, "  %-10s %-20s conns=%-3d round %d: %8.0f msgs/s  p99 %6.0f µs%s\n", r.Group, r.Target, r.Conns, round+1, r.Rate, r.P99, delivered)
			all[i] = append(all[i], r)
		}
	}
	out := make([]Result, 0, len(cs))
	for _, rs := range all {
		slices.SortFunc(rs, func(a, b Result) int { return cmp.Compare(key(a), key(b)) })
		m := rs[len(rs)/2]
		if len(rs) > 1 {
			lo, hi := slices.MinFunc(rs, rateOrder).Rate, slices.MaxFunc(rs, rateOrder).Rate
			spread := fmt.Sprintf(" median of %d rounds (%.0f-%.0f msgs/s", len(rs), lo, hi)
			if p99 := slices.MaxFunc(rs, p99Order).P99; p99 > 0 {
				spread += fmt.Sprintf(", p99 %.0f-%.0f µs", slices.MinFunc(rs, p99Order).P99, p99)
			}
			m.Note = strings.TrimSpace(m.Note + spread + ")")
		}
		out = append(out, m)
	}
	return out, nil
}

// Suite runs everything and returns the report. Servers run as child
// processes on loopback; the load runs in this process.
func Suite(ctx context.Context, cfg SuiteConfig) (*Report, error) {
	rep := &Report{Machine: machine(), Settings: Settings{Size: cfg.Size, Duration: cfg.Duration.String(), Warmup: cfg.Warmup.String(), Rounds: cfg.Rounds}}
	p := cfg.Progress
	add := func(rs ...Result) { rep.Results = append(rep.Results, rs...) }
	dir := func(name string) string { return filepath.Join(cfg.Dir, name) }
	byRate := func(r Result) float64 { return r.Rate }
	byP99 := func(r Result) float64 { return r.P99 }
	// run runs one comparison, when its group is wanted, and files its
	// results under the group.
	run := func(group, title string, key func(Result) float64, cs ...contender) error {
		if !cfg.wants(group) {
			return nil
		}
		fmt.Fprintln(p, title)
		for i, c := range cs {
			cs[i].run = func() (Result, error) {
				r, err := c.run()
				r.Group = group
				return r, err
			}
		}
		rs, err := compareBy(ctx, cfg.Rounds, p, key, cs...)
		add(rs...)
		return err
	}

	// The storage engine alone: the ceiling and our group commit.
	for _, w := range cfg.Conns {
		if err := run("storage", fmt.Sprintf("storage, %d writers", w), byRate,
			contender{"pebble-sync", func() (Result, error) {
				return PebbleSync(ctx, StorageConfig{Dir: dir(fmt.Sprintf("pebble-%d-%d", w, time.Now().UnixNano())), Writers: w, Size: cfg.Size, Duration: cfg.Duration})
			}},
			contender{"journal-append", func() (Result, error) {
				return JournalAppend(ctx, StorageConfig{Dir: dir(fmt.Sprintf("journal-%d-%d", w, time.Now().UnixNano())), Writers: w, Size: cfg.Size, Duration: cfg.Duration})
			}}); err != nil {
			return rep, err
		}
	}

	// The servers.
	sb, sbGRPC, sbAddr, err := switchboard(ctx, cfg, "switchboard", dir("switchboard"))
	if err != nil {
		return rep, err
	}
	defer sb.stop()
	nofsync, nofsyncGRPC, nofsyncAddr, err := switchboard(ctx, cfg, "switchboard-nofsync", dir("switchboard-nofsync"), "--no-fsync")
	if err != nil {
		return rep, err
	}
	defer nofsync.stop()
	ackAddr, _ := freeAddr()
	bare, err := startChild(ctx, cfg.Exe, cfg.Dir, "bare-ack", ackAddr, "bench", "baseline", "--kind", "ack", "--addr", ackAddr)
	if err != nil {
		return rep, err
	}
	defer bare.stop()
	durAddr, _ := freeAddr()
	durable, err := startChild(ctx, cfg.Exe, cfg.Dir, "minimal-durable", durAddr, "bench", "baseline", "--kind", "durable", "--addr", durAddr, "--data-dir", dir("minimal-durable"))
	if err != nil {
		return rep, err
	}
	defer durable.stop()
	echoAddr, _ := freeAddr()
	echo, err := startChild(ctx, cfg.Exe, cfg.Dir, "grpc-echo", echoAddr, "bench", "baseline", "--kind", "echo", "--addr", echoAddr)
	if err != nil {
		return rep, err
	}
	defer echo.stop()

	inbound := func(name, addr string, pid, conns int, rate float64) contender {
		return contender{name, func() (Result, error) {
			return withCPU(pid, func() (Result, error) {
				return Inbound(ctx, InboundConfig{Addr: addr, Conns: conns, Size: cfg.Size, Duration: cfg.Duration, Warmup: cfg.Warmup, Rate: rate})
			})
		}}
	}
	for _, n := range cfg.Conns {
		if err := run("inbound", fmt.Sprintf("inbound, %d connections", n), byRate,
			inbound("switchboard", sbAddr, sb.pid(), n, 0),
			inbound("minimal-durable", durAddr, durable.pid(), n, 0),
			inbound("bare-ack", ackAddr, bare.pid(), n, 0)); err != nil {
			return rep, err
		}
	}
	if cfg.wants("tracing") {
		if err := tracingGroup(ctx, cfg, run, inbound); err != nil {
			return rep, err
		}
	}
	if err := run("inbound-nofsync", "inbound, fsync off", byRate,
		inbound("switchboard-nofsync", nofsyncAddr, nofsync.pid(), 8, 0),
		inbound("bare-ack", ackAddr, bare.pid(), 8, 0)); err != nil {
		return rep, err
	}
	if cfg.wants("metrics") {
		if err := metricsCost(ctx, cfg, run, inbound); err != nil {
			return rep, err
		}
	}
	if err := run("latency", "latency at 2,000 msgs/s over 8 connections", byP99,
		inbound("switchboard", sbAddr, sb.pid(), 8, 2000),
		inbound("minimal-durable", durAddr, durable.pid(), 8, 2000)); err != nil {
		return rep, err
	}
	plain := inbound("switchboard", sbAddr, sb.pid(), 8, 2000)
	if err := run("slow-receiver", "the same, with and without a stalled Receive client", byP99, plain,
		contender{"switchboard+stalled-receiver", func() (Result, error) {
			return withStalledReceiver(ctx, sbGRPC, plain.run)
		}}); err != nil {
		return rep, err
	}

	// send is Send load on a Switchboard (sb or nofsync) to the bare ACK
	// server.
	send := func(name string, srv *child, grpcAddr string, load OutboundConfig) contender {
		load.GRPCAddr, load.Peer, load.Size = grpcAddr, ackAddr, cfg.Size
		if load.Count == 0 {
			load.Duration, load.Warmup = cfg.Duration, cfg.Warmup
		}
		return contender{name, func() (Result, error) {
			return withCPU(srv.pid(), func() (Result, error) { return Outbound(ctx, load) })
		}}
	}
	const calls = 64
	direct := send("switchboard-send", sb, sbGRPC, OutboundConfig{Conns: calls, Calls: calls})
	if err := run("outbound", "outbound", byRate, direct,
		contender{"direct-tcp", func() (Result, error) {
			return Inbound(ctx, InboundConfig{Addr: ackAddr, Conns: calls, Size: cfg.Size, Duration: cfg.Duration, Warmup: cfg.Warmup})
		}},
		contender{"grpc-echo", func() (Result, error) {
			return withCPU(echo.pid(), func() (Result, error) {
				return Echo(ctx, EchoConfig{Addr: echoAddr, Calls: calls, Size: cfg.Size, Duration: cfg.Duration, Warmup: cfg.Warmup})
			})
		}}); err != nil {
		return rep, err
	}
	if err := run("queued", "queued vs direct Send, 64 calls over 64 connections, fsync on", byRate, direct,
		send("switchboard-queued", sb, sbGRPC, OutboundConfig{Conns: calls, Calls: calls, Queued: true})); err != nil {
		return rep, err
	}
	// One connection, a backlog of PipelineCount messages queued by 16
	// callers, delivered with a window of 1 and of 8.
	window := func(srv *child, grpcAddr string, n int) contender {
		return send(fmt.Sprintf("window-%d", n), srv, grpcAddr, OutboundConfig{Conns: 1, Calls: 16, Count: cfg.PipelineCount, Queued: true, MaxInFlight: n})
	}
	byDelivered := func(r Result) float64 { return r.DeliveredRate }
	if err := run("pipeline", "pipelining: one connection, max_in_flight 1 vs 8, fsync on", byDelivered,
		window(sb, sbGRPC, 1), window(sb, sbGRPC, 8)); err != nil {
		return rep, err
	}
	if err := run("pipeline-nofsync", "the same, fsync off", byDelivered,
		window(nofsync, nofsyncGRPC, 1), window(nofsync, nofsyncGRPC, 8)); err != nil {
		return rep, err
	}

	if cfg.wants("idle") {
		fmt.Fprintln(p, "idle connections")
		idle, err := Idle(ctx, IdleConfig{Target: "switchboard", Addr: sbAddr, Conns: cfg.IdleConns, PID: sb.pid(), Settle: 3 * time.Second})
		if err != nil {
			return rep, fmt.Errorf("idle: %w", err)
		}
		fmt.Fprintf(p, "  %d idle connections: %.0f bytes each (%s)\n", idle.Conns, idle.BytesPerConn, idle.Note)
		add(idle)
	}

	if cfg.wants("receive") {
		fmt.Fprintln(p, "receive")
		recvDir := dir("receive")
		if err := Prefill(ctx, recvDir, cfg.ReceiveCount, 1024); err != nil {
			return rep, fmt.Errorf("prefill: %w", err)
		}
		recv, recvGRPC, _, err := switchboard(ctx, cfg, "switchboard-receive", recvDir)
		if err != nil {
			return rep, err
		}
		defer recv.stop()
		for _, streams := range []int{1, 4} {
			r, err := Receive(ctx, ReceiveConfig{Target: "switchboard", GRPCAddr: recvGRPC, Streams: streams, Count: cfg.ReceiveCount, Size: 1024})
			if err != nil {
				return rep, fmt.Errorf("receive: %w", err)
			}
			fmt.Fprintf(p, "  %d stream(s): %.0f msgs/s\n", streams, r.Rate)
			add(r)
		}
	}

	if cfg.wants("consumer") {
		if err := consumerGroup(ctx, cfg, run); err != nil {
			return rep, fmt.Errorf("consumer: %w", err)
		}
	}
	if cfg.wants("app-ack") {
		err := appAckGroup(ctx, cfg, run)
		noteP99Difference(rep.Results, "app-ack", "automatic", "app-ack")
		if err != nil {
			return rep, fmt.Errorf("app-ack: %w", err)
		}
	}
	if cfg.wants("dedup") {
		if err := dedupGroup(ctx, cfg, run); err != nil {
			return rep, fmt.Errorf("dedup: %w", err)
		}
	}

	if cfg.wants("tls") || cfg.wants("tls-connect") {
		if err := tlsGroup(ctx, cfg, run); err != nil {
			return rep, fmt.Errorf("tls: %w", err)
		}
	}

	if cfg.wants("restart") {
		fmt.Fprintln(p, "restart to SERVING")
		rs, err := Restart(ctx, RestartConfig{Exe: cfg.Exe, Dir: cfg.Dir, Peer: ackAddr, Listeners: cfg.RestartResources,
			Conns: cfg.RestartResources, Messages: cfg.RestartMessages, Size: cfg.Size, Rounds: cfg.Rounds, Progress: p})
		add(rs...)
		if err != nil {
			return rep, fmt.Errorf("restart: %w", err)
		}
	}
	return rep, nil
}

// metricsCost compares inbound durable load on two fresh servers, one
// with metrics (an admin address, scraped every second as a busy
// Prometheus would) and one started with --admin-addr "" (no Metrics
// object, no observer, no gRPC interceptor), at cfg.MetricsConns.
func metricsCost(ctx context.Context, cfg SuiteConfig, run func(string, string, func(Result) float64, ...contender) error,
	inbound func(name, addr string, pid, conns int, rate float64) contender) error {
	dir := func(name string) string { return filepath.Join(cfg.Dir, name) }
	on, _, onAddr, err := switchboard(ctx, cfg, "switchboard-metrics-on", dir("metrics-on"))
	if err != nil {
		return err
	}
	defer on.stop()
	off, _, offAddr, err := switchboard(ctx, cfg, "switchboard-metrics-off", dir("metrics-off"), "--admin-addr", "")
	if err != nil {
		return err
	}
	defer off.stop()
	conns := cfg.MetricsConns
	if len(conns) == 0 {
		conns = []int{8, 64}
	}
	for _, n := range conns {
		if err := run("metrics", fmt.Sprintf("metrics on (scraped every second) vs off, %d connections, fsync on", n), func(r Result) float64 { return r.Rate },
			scraped(ctx, on.admin, time.Second, inbound("metrics-on", onAddr, on.pid(), n, 0)),
			inbound("metrics-off", offAddr, off.pid(), n, 0)); err != nil {
			return err
		}
	}
	return nil
}

// scraped runs c while GET http://admin/metrics runs every interval, and
// notes how many scrapes there were; a failed scrape is an error.
func scraped(ctx context.Context, admin string, interval time.Duration, c contender) contender {
	return contender{c.name, func() (Result, error) {
		sctx, cancel := context.WithCancel(ctx)
		var n, failed int
		done := make(chan struct{})
		go func() {
			defer close(done)
			client := &http.Client{Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-sctx.Done():
					return
				case <-t.C:
				}
				resp, err := client.Get("http://" + admin + "/metrics")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed++
				} else {
					n++
				}
			}
		}()
		r, err := c.run()
		cancel()
		<-done
		if failed > 0 {
			if r.Errors == nil {
				r.Errors = map[string]uint64{}
			}
			r.Errors["scrape"] += uint64(failed)
		}
		r.Note = strings.TrimSpace(r.Note + fmt.Sprintf(" /metrics scraped every %v (%d scrapes)", interval, n))
		return r, err
	}}
}

// wants reports whether the run includes group.
func (cfg SuiteConfig) wants(group string) bool {
	return len(cfg.Only) == 0 || slices.Contains(cfg.Only, group)
}

// Groups are the suite's result groups, in the order it runs them.
var Groups = []string{"storage", "inbound", "tracing", "inbound-nofsync", "metrics", "latency", "slow-receiver", "outbound", "queued",
	"pipeline", "pipeline-nofsync", "idle", "receive", "consumer", "app-ack", "dedup", "tls", "tls-connect", "restart"}

// withStalledReceiver runs f while a Receive stream replays the journal
// from sequence 1 and never reads: its flow-control window fills and the
// server must not let that slow anything else.
func withStalledReceiver(ctx context.Context, grpcAddr string, f func() (Result, error)) (Result, error) {
	cc, err := dialGRPC(grpcAddr)
	if err != nil {
		return Result{}, err
	}
	defer cc.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := switchboardv1.NewSwitchboardServiceClient(cc).Receive(sctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1)})
	if err != nil {
		return Result{}, err
	}
	if _, err := stream.Header(); err != nil {
		return Result{}, err
	}
	r, err := f()
	r.Note = strings.TrimSpace(r.Note + " a Receive stream from sequence 1 was open and never read")
	return r, err
}

// tracingGroup measures what tracing costs: durable inbound load on two
// fresh servers, one tracing every message (an inbound span each, through
// the batch span processor to the in-memory exporter that
// SWITCHBOARD_TRACE_EXPORTER=memory installs) and one with tracing off
// (no OTEL_* exporter), in alternating rounds.
func tracingGroup(ctx context.Context, cfg SuiteConfig, run func(group, title string, key func(Result) float64, cs ...contender) error,
	inbound func(name, addr string, pid, conns int, rate float64) contender) error {
	off := []string{"OTEL_TRACES_EXPORTER=none", "SWITCHBOARD_TRACE_EXPORTER="}
	plain, _, plainAddr, err := switchboardEnv(ctx, cfg, "switchboard-untraced", filepath.Join(cfg.Dir, "switchboard-untraced"), off)
	if err != nil {
		return err
	}
	defer plain.stop()
	traced, _, tracedAddr, err := switchboardEnv(ctx, cfg, "switchboard-traced", filepath.Join(cfg.Dir, "switchboard-traced"),
		[]string{"OTEL_TRACES_EXPORTER=none", "SWITCHBOARD_TRACE_EXPORTER=memory"})
	if err != nil {
		return err
	}
	defer traced.stop()
	for _, n := range cfg.Conns {
		on := inbound("tracing-memory", tracedAddr, traced.pid(), n, 0)
		measure := on.run
		on.run = func() (Result, error) {
			r, err := measure()
			r.Note = strings.TrimSpace(r.Note + " SWITCHBOARD_TRACE_EXPORTER=memory: a span per message, batch processor, in-memory exporter")
			return r, err
		}
		if err := run("tracing", fmt.Sprintf("inbound, %d connections, tracing to memory vs off", n), func(r Result) float64 { return r.Rate },
			inbound("tracing-off", plainAddr, plain.pid(), n, 0), on); err != nil {
			return err
		}
	}
	return nil
}
