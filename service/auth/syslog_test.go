package auth_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/internal/syslog"
	"github.com/switchboard-dev/switchboard/internal/tlstest"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/service/auth"
)

// TestAuditToSyslog: audit records reach an RFC 5425 collector over TLS.
func TestAuditToSyslog(t *testing.T) {
	ca := tlstest.NewCA(t, "syslog CA")
	leaf := ca.Issue(t, tlstest.LeafOptions{CommonName: "collector", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlstest.ServerConfig(leaf, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	frames := make(chan string, 10)
	go func() {
		defer close(frames)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		for {
			l, err := r.ReadString(' ')
			if err != nil {
				return
			}
			n, _ := strconv.Atoi(strings.TrimSpace(l))
			buf := make([]byte, n)
			if _, err := io.ReadFull(r, buf); err != nil {
				return
			}
			frames <- string(buf)
		}
	}()
	w, err := syslog.Dial(syslog.Config{Addr: ln.Addr().String(), TLS: tlstest.ClientConfig(ca, nil, "127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	defer func() { _ = w.Close(ctx) }()

	j, err := pebblejournal.Open(t.TempDir(), pebblejournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Config{Journal: j})
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{Anonymous: true, Audit: auth.NewAuditor(auth.AuditConfig{Syslog: w})})
	if err != nil {
		t.Fatal(err)
	}
	gs, _, err := service.NewGRPCServer(svc, service.ServerOptions{UnaryInterceptors: a.UnaryInterceptors(), StreamInterceptors: a.StreamInterceptors()})
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(gl) }()
	defer func() {
		svc.Shutdown(ctx)
		gs.Stop()
		_ = a.Close()
		_ = j.Close()
	}()
	cc, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := switchboardv1.NewSwitchboardServiceClient(cc)
	if _, err := c.Disconnect(ctx, &switchboardv1.DisconnectRequest{ConnectionId: "gone"}); err == nil {
		t.Fatal("Disconnect of nothing succeeded")
	}
	select {
	case f := <-frames:
		for _, want := range []string{`[audit@32473 event="call" who="anonymous" role="admin"`, `method="/switchboard.v1.SwitchboardService/Disconnect"`, `target="connection:gone"`, `outcome="NOT_FOUND"`} {
			if !strings.Contains(f, want) {
				t.Errorf("frame %q lacks %q", f, want)
			}
		}
	case <-ctx.Done():
		t.Fatal("no syslog frame")
	}
}
