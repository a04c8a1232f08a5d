package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/switchboard-dev/switchboard/internal/natstest"
)

// TestServeCluster: two `serve --cluster` processes on one nats-server
// (R1): a listener made through one is shown, with its instance, through
// the other, and a connection made through the second sends to it.
func TestServeCluster(t *testing.T) {
	srv := natstest.Start(t, server.Options{})
	args := func(name string) []string {
		return []string{"--cluster", srv.URL(), "--cluster-replicas", "1", "--instance", name, "--cluster-lease-ttl", "2s"}
	}
	a := startServeChild(t, childOpts{}, args("sba")...)
	b := startServeChild(t, childOpts{}, args("sbb")...)
	ca := &cliServer{addr: a.grpcAddr, env: map[string]string{"SWITCHBOARD_SERVER": a.grpcAddr}}
	cb := &cliServer{addr: b.grpcAddr, env: map[string]string{"SWITCHBOARD_SERVER": b.grpcAddr}}
	addr := freePort(t)
	ca.want(t, 0, "listen", "adt", addr)
	r := cb.want(t, 0, "ls")
	if !strings.Contains(r.stdout, "INSTANCE") || !strings.Contains(r.stdout, "sba") {
		t.Fatalf("ls through b does not show adt on sba:\n%s", r.stdout)
	}
	cb.want(t, 0, "connect", "lab", addr)
	msg := "MSH|^~\\&|A|B|C|D|20261202||ADT^A01|CLI1|P|2.5\rPID|1||1\r"
	r = runCLI(ca.env, msg, "send", "lab", "-")
	if r.code != 0 || !strings.Contains(r.stdout, "AA") {
		t.Fatalf("send through a on b's connection:\n%s", r)
	}
	// NATS gone: status says so instead of failing.
	srv.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r = ca.run("status")
		if r.code == 0 && strings.Contains(r.stdout, "NOT_SERVING") && strings.Contains(r.stdout, "Journal:      unavailable") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status without NATS, 20 s on:\n%s", r.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestServeClusterFlags: bad cluster flags are usage errors, before
// anything starts.
func TestServeClusterFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--cluster", "nats://127.0.0.1:1", "--instance", "a.b"},
		{"--cluster", "nats://127.0.0.1:1", "--instance", "a", "--cluster-replicas", "0"},
		{"--cluster", "nats://127.0.0.1:1", "--instance", "a", "--cluster-name", "has space"},
		{"--cluster", "nats://127.0.0.1:1", "--instance", "a", "--cluster-lease-ttl", "100ms"},
		{"--cluster", "nats://127.0.0.1:1", "--instance", "a", "--nats-tls-cert", "c.pem"},
		{"--nats-creds", "x.creds"},
	} {
		if _, err := parseServeFlags(args, io.Discard); err == nil {
			t.Errorf("serve %s: no usage error", strings.Join(args, " "))
		}
	}
	if _, err := parseServeFlags([]string{"--cluster", "nats://127.0.0.1:1", "--instance", "sb-1"}, io.Discard); err != nil {
		t.Errorf("good cluster flags refused: %v", err)
	}
}
