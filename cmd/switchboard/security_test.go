package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/transport"

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

// startServe runs serve with args (startServeChild); the process is
// killed at cleanup.
func startServe(t *testing.T, args ...string) *serveChild {
	t.Helper()
	return startServeChild(t, childOpts{kill: true}, args...)
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

// bearer is a token as per-RPC credentials (TLS only).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// reasonOf is the ErrorInfo reason of a status error.
func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetReason()
		}
	}
	return ""
}

// TestSecureEndToEnd runs serve as docs/security.md sets it up: TLS on the
// control plane with tokens made by `switchboard token`, and a mutual-TLS
// MLLP listener from a TLS profile. It checks who may call what, that
// silent connections in their TLS handshake hold a slot only until the
// handshake timeout, that only the allowed peer name is served, that the
// peer's identity is recorded with its message, that the address policy
// refuses a privileged port and the metadata address, and that each of
// these is in the audit trail, without the payload.
func TestSecureEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "hospital CA")
	grpcFiles := tlstest.WriteFiles(t, filepath.Join(dir, "grpc"), ca.Issue(t, tlstest.LeafOptions{}), nil)
	tlstest.WriteFiles(t, filepath.Join(dir, "profiles", "mllp"), ca.Issue(t, tlstest.LeafOptions{}), ca)
	access := filepath.Join(dir, "access")
	token := func(name, role string) bearer {
		code, out, errOut := runToken(t, "create", "--access-file", access, "--name", name, "--role", role)
		if code != 0 {
			t.Fatalf("token create %s: %s", name, errOut)
		}
		return bearer(strings.TrimSpace(out))
	}
	ops, viewer := token("ops", "operator"), token("dashboard", "viewer")
	p := startServe(t, "--grpc-tls-cert", grpcFiles.Cert, "--grpc-tls-key", grpcFiles.Key,
		"--access-file", access, "--tls-profiles", filepath.Join(dir, "profiles"), "--admin-addr", "127.0.0.1:0")

	dial := func(tok bearer) switchboardv1.SwitchboardServiceClient {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlstest.ClientConfig(ca, nil, "localhost")))}
		if tok != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(tok))
		}
		cc, err := grpc.NewClient(p.grpcAddr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return switchboardv1.NewSwitchboardServiceClient(cc)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := dial("").ListListeners(ctx, &switchboardv1.ListListenersRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v, want UNAUTHENTICATED", err)
	}
	listener := &switchboardv1.StartListenerRequest{ListenerId: "lab-results", Config: &switchboardv1.ListenerConfig{
		Address:        "127.0.0.1:0",
		MaxConnections: 3,
		Tls: &switchboardv1.ListenerTls{Profile: "mllp", ClientCertificate: switchboardv1.ClientCertificate_CLIENT_CERTIFICATE_REQUIRED,
			AllowedPeerNames: []string{"lis.hospital.example"}},
	}}
	if _, err := dial(viewer).StartListener(ctx, listener); status.Code(err) != codes.PermissionDenied || reasonOf(err) != "ROLE_REQUIRED" {
		t.Fatalf("viewer StartListener: %v, want PERMISSION_DENIED / ROLE_REQUIRED", err)
	}
	client := dial(ops)
	l, err := client.StartListener(ctx, listener)
	if err != nil {
		t.Fatal(err)
	}
	addr := l.GetListener().GetStatus().GetBoundAddress()
	for _, bad := range []*switchboardv1.StartListenerRequest{
		{ListenerId: "low", Config: &switchboardv1.ListenerConfig{Address: "127.0.0.1:80"}},
	} {
		if _, err := client.StartListener(ctx, bad); status.Code(err) != codes.PermissionDenied || reasonOf(err) != "ADDRESS_FORBIDDEN" {
			t.Errorf("StartListener %s: %v, want PERMISSION_DENIED / ADDRESS_FORBIDDEN", bad.GetConfig().GetAddress(), err)
		}
	}
	if _, err := client.Connect(ctx, &switchboardv1.ConnectRequest{ConnectionId: "meta", Config: &switchboardv1.ConnectionConfig{Address: "169.254.169.254:80"}}); status.Code(err) != codes.PermissionDenied || reasonOf(err) != "ADDRESS_FORBIDDEN" {
		t.Errorf("Connect to the metadata address: %v, want PERMISSION_DENIED / ADDRESS_FORBIDDEN", err)
	}

	// Three connections that never start their handshake take every slot;
	// a fourth is turned away at once; after the handshake timeout (10 s)
	// the three are closed and the slots free.
	for range 3 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
	}
	lis := ca.Issue(t, tlstest.LeafOptions{CommonName: "lis.hospital.example", DNSNames: []string{"lis.hospital.example"}, Client: true})
	peerCfg := tlstest.ClientConfig(ca, lis, "localhost")
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30 s", what)
			}
		}
	}
	waitFor("the silent connections hold the slots", func() bool { return listenerStatus(t, ctx, client, "lab-results").GetOpenConnectionCount() == 3 })
	if c, err := tls.Dial("tcp", addr, peerCfg); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if err == nil {
			t.Fatal("a fourth connection was served while three hold the slots")
		}
	}
	waitFor("the silent connections closed by the handshake timeout", func() bool {
		return listenerStatus(t, ctx, client, "lab-results").GetTlsFailedConnectionCount() == 3
	})

	const marker = "PHI-MARKER-7731"
	exchange := func(cfg *tls.Config) (hl7.Ack, error) {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			return hl7.Ack{}, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(hostileMLLP.AppendFrame(nil, hostileMessage("LAB-1"+marker))); err != nil {
			return hl7.Ack{}, err
		}
		f, err := transport.NewDecoder(c, hostileMLLP).Next()
		if err != nil {
			return hl7.Ack{}, err
		}
		return hl7.ParseAck(f)
	}
	if a, err := exchange(peerCfg); err != nil || a.Code != hl7.AA {
		t.Fatalf("the allowed peer: %v %v, want AA", a.Code, err)
	}
	other := ca.Issue(t, tlstest.LeafOptions{CommonName: "pharmacy.hospital.example", Client: true})
	if a, err := exchange(tlstest.ClientConfig(ca, other, "localhost")); err == nil {
		t.Fatalf("a peer whose name is not allowed got %s", a.Code)
	}
	waitFor("the refused peer counted", func() bool { return listenerStatus(t, ctx, client, "lab-results").GetPeerDeniedConnectionCount() == 1 })
	msgs, err := client.ListMessages(ctx, &switchboardv1.ListMessagesRequest{ListenerId: "lab-results"})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs.GetMessages()) != 1 || msgs.GetMessages()[0].GetPeerIdentity() != "lis.hospital.example" {
		t.Fatalf("stored messages %v; want one, from lis.hospital.example", msgs.GetMessages())
	}

	// The same counts in the metrics.
	var adminAddr string
	for line := range strings.SplitSeq(p.logged(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "admin serving" {
			adminAddr, _ = rec["admin_addr"].(string)
		}
	}
	metrics := scrape(t, "http://"+adminAddr+"/metrics")
	for _, want := range []string{
		`switchboard_connections_handshake_failed_total{listener="lab-results",reason="tls"} 3`,
		`switchboard_connections_handshake_failed_total{listener="lab-results",reason="peer_name"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}

	// The audit trail: who started the listener, who was refused.
	logs := p.logged()
	for _, want := range []string{`"who":"token:ops"`, `"target":"listener:lab-results"`, `"who":"token:dashboard"`, `"reason":"ROLE_REQUIRED"`, `"reason":"ADDRESS_FORBIDDEN"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the server's log has no %s", want)
		}
	}
	if strings.Contains(logs, marker) {
		t.Error("the server logged payload bytes")
	}
}

func listenerStatus(t *testing.T, ctx context.Context, c switchboardv1.SwitchboardServiceClient, id string) *switchboardv1.ListenerStatus {
	t.Helper()
	r, err := c.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetListener().GetStatus()
}
