// Package natstest starts real nats-server instances with JetStream in the
// test process, on loopback and in temporary directories: one server, or a
// three-node cluster. Servers can be stopped and started again on the same
// port and store directory, as a crashed and restarted server would be.
package natstest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an in-process nats-server with JetStream on loopback.
type Server struct {
	t    testing.TB
	opts server.Options
	mu   sync.Mutex
	s    *server.Server
}

// Start starts a server with JetStream in a fresh directory (unless
// opts.StoreDir names one), synced on every write so that a PubAck means
// durable, and shuts it down when the test ends.
func Start(t testing.TB, opts server.Options) *Server {
	t.Helper()
	opts.JetStream = true
	opts.SyncAlways = true
	opts.Host = "127.0.0.1"
	if opts.Port == 0 {
		opts.Port = -1
	}
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	opts.NoLog, opts.NoSigs = true, true
	ts := &Server{t: t, opts: opts}
	ts.Restart()
	// Keep the port the server picked, so that a restart reuses it.
	ts.opts.Port = ts.s.Addr().(*net.TCPAddr).Port
	t.Cleanup(ts.Stop)
	return ts
}

// Restart starts the server (again), on its port and store directory.
func (ts *Server) Restart() {
	ts.t.Helper()
	opts := ts.opts // the server keeps and changes what it is given
	s, err := server.NewServer(&opts)
	if err != nil {
		ts.t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		ts.t.Fatal("nats-server did not start")
	}
	ts.mu.Lock()
	ts.s = s
	ts.mu.Unlock()
}

// Stop shuts the server down and waits; stopping a stopped server does
// nothing.
func (ts *Server) Stop() {
	ts.mu.Lock()
	s := ts.s
	ts.s = nil
	ts.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// URL is the server's client URL.
func (ts *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", ts.opts.Port) }

// StoreDir is the server's JetStream directory.
func (ts *Server) StoreDir() string { return ts.opts.StoreDir }

// FreePorts returns n TCP ports on loopback that were free a moment ago.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// Cluster starts three servers with JetStream, routed to each other on
// loopback (cluster "sb", servers n1, n2, n3).
func Cluster(t testing.TB) []*Server {
	t.Helper()
	ports := FreePorts(t, 6)
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[3+i]))
	}
	var nodes []*Server
	for i := range 3 {
		nodes = append(nodes, Start(t, server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Port:       ports[i],
			Cluster:    server.ClusterOpts{Name: "sb", Host: "127.0.0.1", Port: ports[3+i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}))
	}
	return nodes
}

// URLs is the client URLs of nodes, separated by commas.
func URLs(nodes []*Server) string {
	var us []string
	for _, n := range nodes {
		us = append(us, n.URL())
	}
	return strings.Join(us, ",")
}
