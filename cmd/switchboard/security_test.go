package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchboard-dev/switchboard/internal/tlstest"
)

// TestServeSecurityRules checks serve's start-up rules: off loopback, the
// control plane needs TLS and authentication or an explicit, warned-about
// insecure flag; flags that only make sense together are refused apart.
func TestServeSecurityRules(t *testing.T) {
	for _, c := range []struct {
		args []string
		ok   bool
		says string // in the error, or in the warnings when ok
	}{
		{[]string{"--grpc-addr", "127.0.0.1:0"}, true, ""},
		{[]string{"--grpc-addr", "[::1]:0"}, true, ""},
		{[]string{"--grpc-addr", "localhost:0"}, true, ""},
		{[]string{"--grpc-addr", ":50051"}, false, "not a loopback address, and the control plane has no TLS and no authentication"},
		{[]string{"--grpc-addr", "0.0.0.0:50051"}, false, "--insecure-control-plane"},
		{[]string{"--grpc-addr", "0.0.0.0:50051", "--grpc-tls-cert", "c", "--grpc-tls-key", "k"}, false, "no authentication"},
		{[]string{"--grpc-addr", "0.0.0.0:50051", "--insecure-control-plane"}, true, "UNSAFE: the control plane on 0.0.0.0:50051"},
		{[]string{"--grpc-tls-cert", "c"}, false, "--grpc-tls-cert and --grpc-tls-key go together"},
		{[]string{"--grpc-client-ca", "ca"}, false, "--grpc-client-ca needs --grpc-tls-cert"},
		{[]string{"--grpc-tls-cert", "c", "--grpc-tls-key", "k", "--grpc-require-client-cert"}, false, "--grpc-require-client-cert needs --grpc-client-ca"},
		{[]string{"--admin-addr", "0.0.0.0:9090"}, false, "the admin server has no authentication"},
		{[]string{"--admin-addr", "0.0.0.0:9090", "--insecure-admin"}, true, "UNSAFE: the admin server on 0.0.0.0:9090"},
	} {
		var stderr bytes.Buffer
		f, err := parseServeFlags(c.args, &stderr)
		if (err == nil) != c.ok {
			t.Errorf("serve %v: err = %v (%s), want ok=%v", c.args, err, stderr.String(), c.ok)
			continue
		}
		got := stderr.String()
		if c.ok {
			got = strings.Join(f.warnings, "\n")
		}
		if !strings.Contains(got, c.says) {
			t.Errorf("serve %v said %q, want it to contain %q", c.args, got, c.says)
		}
	}
}

// servedProcess is a `switchboard serve` child process.
type servedProcess struct {
	grpcAddr string
	logs     *bytes.Buffer // everything it logged, once it has exited
}

// startServe runs serve with args (plus a temp data dir, free ports and
// JSON logs) and returns once it logs "switchboard serving". The process is
// killed at cleanup.
func startServe(t *testing.T, args ...string) *servedProcess {
	t.Helper()
	all := append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "", "--data-dir", t.TempDir(), "--log-format", "json"}, args...)
	cmd := exec.Command(os.Args[0], all...)
	cmd.Env = append(os.Environ(), "SWITCHBOARD_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &servedProcess{logs: &bytes.Buffer{}}
	up := make(chan string, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.logs.Write(append(sc.Bytes(), '\n'))
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "switchboard serving" {
				addr, _ := rec["grpc_addr"].(string)
				up <- addr
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	select {
	case p.grpcAddr = <-up:
	case <-exited:
		t.Fatalf("serve exited before serving:\n%s", p.logs)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start within 30 s")
	}
	return p
}

// healthOver dials addr with creds and returns the health check's error.
func healthOver(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil && h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v", h.GetStatus())
	}
	return err
}

// TestControlPlaneMutualTLS runs serve with TLS and a required client
// certificate: a client with a certificate from the CA is served; one
// without a certificate, one with a certificate from another CA, and a
// plaintext client are refused. Then the server certificate is replaced on
// disk and the next connection gets the new one, without a restart.
func TestControlPlaneMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	ca := tlstest.NewCA(t, "control CA")
	dir := t.TempDir()
	files := tlstest.WriteFiles(t, dir, ca.Issue(t, tlstest.LeafOptions{}), ca)
	p := startServe(t, "--grpc-tls-cert", files.Cert, "--grpc-tls-key", files.Key, "--grpc-client-ca", files.CA, "--grpc-require-client-cert")

	client := ca.Issue(t, tlstest.LeafOptions{CommonName: "ops", Client: true})
	withCert := credentials.NewTLS(tlstest.ClientConfig(ca, client, "localhost"))
	if err := healthOver(t, p.grpcAddr, withCert); err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	if err := healthOver(t, p.grpcAddr, credentials.NewTLS(tlstest.ClientConfig(ca, nil, "localhost"))); err == nil {
		t.Error("client without a certificate was served")
	}
	other := tlstest.NewCA(t, "other CA")
	if err := healthOver(t, p.grpcAddr, credentials.NewTLS(tlstest.ClientConfig(ca, other.Issue(t, tlstest.LeafOptions{CommonName: "ops", Client: true}), "localhost"))); err == nil {
		t.Error("client with a certificate from another CA was served")
	}
	if err := healthOver(t, p.grpcAddr, insecure.NewCredentials()); err == nil {
		t.Error("plaintext client was served")
	}

	// Rotate: a new server certificate written over the old files. The
	// files are checked at most once a second, so poll, bounded.
	next := ca.Issue(t, tlstest.LeafOptions{})
	tlstest.WriteFiles(t, filepath.Join(t.TempDir(), "next"), next, nil)
	for _, f := range []struct {
		path string
		b    []byte
	}{{files.Cert, next.CertPEM}, {files.Key, next.KeyPEM}} {
		if err := os.WriteFile(f.path+".new", f.b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Key first, then certificate, each by rename: a half-rotated pair is
	// refused by the reload (and the old one kept) until both are there.
	for _, path := range []string{files.Key, files.Cert} {
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		served := servedSerial(t, p.grpcAddr, ca, client)
		if served == next.Cert.SerialNumber.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rotated certificate was not served within 10 s (still serial %s)", served)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// servedSerial is the serial number of the certificate the server presents.
func servedSerial(t *testing.T, addr string, ca *tlstest.CA, client *tlstest.Leaf) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{client.TLS}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}
