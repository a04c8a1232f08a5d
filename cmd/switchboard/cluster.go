package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-dev/switchboard/journal/jsjournal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/service/cluster"
)

// clusterFlags are serve's flags for running as one instance of a cluster
// on NATS JetStream (docs/scale-out.md).
type clusterFlags struct {
	urls     string
	name     string
	instance string
	replicas int
	leaseTTL time.Duration
	creds    string
	tlsCA    string
	tlsCert  string
	tlsKey   string
}

func (f *clusterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.urls, "cluster", "", "run as one instance of a cluster: NATS server URLs, comma-separated (nats://host1:4222,nats://host2:4222,...); the journal, desired state, outbox, consumers and answers then live in JetStream instead of --data-dir (docs/scale-out.md)")
	fs.StringVar(&f.name, "cluster-name", "switchboard", "the cluster's name: its JetStream stream and buckets are named after it; letters, digits, '-' and '_'")
	fs.StringVar(&f.instance, "instance", "", "this instance's name in the cluster, unique and stable across restarts; default: the host name")
	fs.IntVar(&f.replicas, "cluster-replicas", 3, "JetStream replicas of the cluster's stream and buckets (3 survives one NATS node down; 1 only for a single NATS server)")
	fs.DurationVar(&f.leaseTTL, "cluster-lease-ttl", cluster.DefaultLeaseTTL, "how long an instance may go unheard before the others take over its listeners and connections")
	fs.StringVar(&f.creds, "nats-creds", "", "NATS credentials file (JWT and NKey seed)")
	fs.StringVar(&f.tlsCA, "nats-tls-ca", "", "CA bundle that verifies the NATS servers (TLS); default: the system's")
	fs.StringVar(&f.tlsCert, "nats-tls-cert", "", "client certificate for NATS (mutual TLS), with --nats-tls-key")
	fs.StringVar(&f.tlsKey, "nats-tls-key", "", "client key for NATS, with --nats-tls-cert")
}

var validClusterName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// check checks the cluster flags together; it fills in the instance name.
func (f *clusterFlags) check() error {
	if f.urls == "" {
		for _, s := range []string{f.creds, f.tlsCA, f.tlsCert, f.tlsKey} {
			if s != "" {
				return errors.New("--nats-creds and --nats-tls-* need --cluster")
			}
		}
		return nil
	}
	if !validClusterName.MatchString(f.name) {
		return fmt.Errorf("--cluster-name %q: letters, digits, '-' and '_' only, at most 64", f.name)
	}
	if f.instance == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--instance not given and no host name: %w", err)
		}
		f.instance = h
	}
	if !validClusterName.MatchString(f.instance) {
		return fmt.Errorf("--instance %q: letters, digits, '-' and '_' only, at most 64", f.instance)
	}
	if f.replicas < 1 || f.replicas > 5 {
		return fmt.Errorf("--cluster-replicas %d: 1 to 5", f.replicas)
	}
	if f.leaseTTL < time.Second {
		return fmt.Errorf("--cluster-lease-ttl %v: at least 1s", f.leaseTTL)
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("--nats-tls-cert and --nats-tls-key go together")
	}
	return nil
}

// natsOptions are the connection options from the flags.
func (f *clusterFlags) natsOptions() []nats.Option {
	opts := []nats.Option{nats.Name("switchboard " + f.instance)}
	if f.creds != "" {
		opts = append(opts, nats.UserCredentials(f.creds))
	}
	if f.tlsCA != "" {
		opts = append(opts, nats.RootCAs(f.tlsCA))
	}
	if f.tlsCert != "" {
		opts = append(opts, nats.ClientCert(f.tlsCert, f.tlsKey))
	}
	return opts
}

// clusterParts is what serve runs on in a cluster.
type clusterParts struct {
	journal *jsjournal.Journal
	nc      *nats.Conn
	node    *cluster.Node
	cfg     func(*service.Config) // fills in the shared stores and the node
}

// close closes the node, then the connections (the journal is closed by
// serve's closeJournal).
func (p *clusterParts) close() {
	if p.node != nil {
		p.node.Close()
	}
	if p.nc != nil {
		p.nc.Close()
	}
}

// openCluster connects to NATS and opens the journal stream, the
// cluster's bucket and the answers bucket, and joins the cluster. Failure
// to reach a JetStream quorum at start is an error: serve exits, and its
// supervisor restarts it.
func openCluster(ctx context.Context, f clusterFlags, retainAge time.Duration, logger *slog.Logger) (*clusterParts, error) {
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	p := &clusterParts{}
	j, err := untilReady(ctx, logger, "journal stream", func(ctx context.Context) (*jsjournal.Journal, error) {
		return jsjournal.Open(ctx, jsjournal.Options{
			URL:         f.urls,
			Name:        f.name,
			Replicas:    f.replicas,
			Logger:      logger.With("component", "journal"),
			NATSOptions: f.natsOptions(),
		})
	})
	if err != nil {
		return nil, fmt.Errorf("cluster journal: %w", err)
	}
	p.journal = j
	fail := func(err error) (*clusterParts, error) {
		p.close()
		_ = j.Close()
		return nil, err
	}
	p.nc, err = nats.Connect(f.urls, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectBufSize(-1)}, f.natsOptions()...)...)
	if err != nil {
		return fail(fmt.Errorf("cluster: connect to NATS: %w", err))
	}
	js, err := jetstream.New(p.nc)
	if err != nil {
		return fail(fmt.Errorf("cluster: %w", err))
	}
	b, err := untilReady(ctx, logger, "state bucket", func(ctx context.Context) (*jsjournal.Bucket, error) {
		return jsjournal.OpenBucket(ctx, js, f.name+"-state", f.replicas, 0)
	})
	if err != nil {
		return fail(fmt.Errorf("cluster: %w", err))
	}
	if retainAge <= 0 {
		// Records are kept whatever their age: keep answers a decade.
		retainAge = 10 * 365 * 24 * time.Hour
	}
	answers, err := untilReady(ctx, logger, "answers bucket", func(ctx context.Context) (*jsjournal.AnswerStore, error) {
		return jsjournal.OpenAnswers(ctx, js, f.name+"-answers", f.replicas, retainAge)
	})
	if err != nil {
		return fail(fmt.Errorf("cluster: %w", err))
	}
	p.node, err = untilReady(ctx, logger, "cluster membership", func(ctx context.Context) (*cluster.Node, error) {
		return cluster.Start(ctx, cluster.Config{
			Bucket: b, Conn: p.nc, Cluster: f.name, Instance: f.instance,
			LeaseTTL: f.leaseTTL, Logger: logger,
		})
	})
	if err != nil {
		return fail(err)
	}
	p.cfg = func(c *service.Config) {
		c.State = jsjournal.NewStateStore(b)
		c.Outbox = jsjournal.NewOutbox(b, p.node.Fence)
		c.Consumers = jsjournal.NewConsumerStore(b)
		c.Answers = answers
		c.Cluster = p.node
	}
	logger.Info("joined the cluster", "cluster", f.name, "instance", f.instance, "nats", p.nc.ConnectedUrlRedacted(), "replicas", f.replicas, "lease_ttl", f.leaseTTL)
	return p, nil
}

// openTimeout bounds the whole start-up on the cluster; attemptTimeout
// each try of one step (a create that lost its answer is tried again).
const (
	openTimeout    = 2 * time.Minute
	attemptTimeout = 10 * time.Second
)

// untilReady retries open until it succeeds or ctx ends: instances started
// together with (or just after) their NATS cluster find its JetStream
// still electing leaders, and concurrent creations of a replicated stream
// can time out.
func untilReady[T any](ctx context.Context, logger *slog.Logger, what string, open func(context.Context) (T, error)) (T, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		v, err := open(actx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return v, err
		}
		logger.Warn("cluster not ready yet; retrying", "opening", what, "err", err)
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(time.Second):
		}
	}
}

// clusterHealth is NOT_SERVING while the journal cannot store (no JetStream
// quorum) and while this instance is cut off from the cluster (its
// heartbeat is not being stored, so it has let its resources go).
type clusterHealth struct {
	j    *jsjournal.Journal
	node *cluster.Node
}

func (h clusterHealth) Health() (error, <-chan struct{}) {
	err, jch := h.j.Health()
	nch := h.node.Changed()
	if err == nil && !h.node.Valid() {
		err = cluster.ErrNotValid
	}
	changed := make(chan struct{})
	go func() {
		select {
		case <-jch:
		case <-nch:
		}
		close(changed)
	}()
	return err, changed
}

// registerClusterMetrics adds the cluster's gauges to reg (nil: no
// metrics), read at scrape time.
func registerClusterMetrics(reg *prometheus.Registry, node *cluster.Node) error {
	if reg == nil {
		return nil
	}
	held := func() float64 {
		n := 0
		for _, l := range node.Leases() {
			if l.Owner == node.Instance() {
				n++
			}
		}
		return float64(n)
	}
	valid := func() float64 {
		if node.Valid() {
			return 1
		}
		return 0
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchboard_cluster_members", Help: "Live instances of the cluster this instance sees, itself included."},
			func() float64 { return float64(len(node.Members())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchboard_cluster_leases_held", Help: "Leases (listeners and outbound connections) this instance holds."}, held),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchboard_cluster_valid", Help: "1 while this instance's heartbeat is stored; 0 while it is cut off and has released its resources."}, valid),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("cluster metrics: %w", err)
		}
	}
	return nil
}
