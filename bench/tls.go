package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/internal/devcerts"
	"github.com/switchboard-dev/switchboard/transport"
)

// tlsGroup measures what mutual TLS costs on the data plane: one server
// with two listeners, plain and mutual TLS (a devcerts profile: ECDSA P-256,
// client certificate required), inbound load on each in alternating rounds;
// then new connections per second, each opened (and, on the TLS listener,
// handshaken with a client certificate), carrying one message and closed.
func tlsGroup(ctx context.Context, cfg SuiteConfig, run runFunc) error {
	certs := filepath.Join(cfg.Dir, "tls-certs")
	if err := os.RemoveAll(certs); err != nil {
		return err
	}
	if err := devcerts.Write(certs, devcerts.Options{Clients: []string{"bench-peer"}}); err != nil {
		return err
	}
	sb, grpcAddr, plainAddr, err := switchboardEnv(ctx, cfg, "switchboard-tls", filepath.Join(cfg.Dir, "switchboard-tls"), nil,
		"--tls-profiles", filepath.Join(certs, "profiles"))
	if err != nil {
		return err
	}
	defer sb.stop()
	lc := listenerConfig(cfg)
	lc.Tls = &switchboardv1.ListenerTls{Profile: "mllp"} // the profile has a ca.crt: client certificates required
	tlsAddr, err := startListener(ctx, grpcAddr, "bench-tls", lc)
	if err != nil {
		return err
	}
	client, err := benchClientTLS(certs)
	if err != nil {
		return err
	}
	byRate := func(r Result) float64 { return r.Rate }
	inbound := func(name, addr string, c *tls.Config, conns int) contender {
		return contender{name, func() (Result, error) {
			return withCPU(sb.pid(), func() (Result, error) {
				return Inbound(ctx, InboundConfig{Addr: addr, TLS: c, Conns: conns, Size: cfg.Size, Duration: cfg.Duration, Warmup: cfg.Warmup})
			})
		}}
	}
	for _, n := range cfg.Conns {
		if err := run("tls", fmt.Sprintf("inbound, %d connections, mutual TLS vs plain TCP (same server)", n), byRate,
			inbound("plain", plainAddr, nil, n), inbound("mutual-tls", tlsAddr, client, n)); err != nil {
			return err
		}
	}
	handshakes := func(name, addr string, c *tls.Config) contender {
		return contender{name, func() (Result, error) {
			return withCPU(sb.pid(), func() (Result, error) {
				return NewConnections(ctx, addr, c, 8, cfg.Size, cfg.Duration)
			})
		}}
	}
	return run("tls-connect", "new connections per second, 8 at a time, one message each: TLS handshake vs TCP connect", byRate,
		handshakes("tcp-connect", plainAddr, nil), handshakes("tls-handshake", tlsAddr, client))
}

// benchClientTLS is the peer's TLS config: the devcerts CA and client
// certificate.
func benchClientTLS(certs string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s/ca.crt holds no certificate", certs)
	}
	dir := filepath.Join(certs, "clients", "bench-peer")
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{pair}}, nil
}

// dialBench connects to addr, over TLS when c is set (the handshake done
// before it returns).
func dialBench(ctx context.Context, addr string, c *tls.Config) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if c == nil {
		return d.DialContext(ctx, "tcp", addr)
	}
	return (&tls.Dialer{NetDialer: d, Config: c}).DialContext(ctx, "tcp", addr)
}

// NewConnections opens connections to addr, workers at a time, for
// duration: each connects (and handshakes, with c), sends one message,
// reads its ACK and closes. The rate is connections per second, the
// latencies those of the whole exchange.
func NewConnections(ctx context.Context, addr string, c *tls.Config, workers, size int, duration time.Duration) (Result, error) {
	res := Result{Group: "tls-connect", Conns: workers, Size: size}
	if c != nil {
		res.Note = "each connection: TLS handshake with a client certificate, one message, close"
	} else {
		res.Note = "each connection: TCP connect, one message, close"
	}
	start := time.Now()
	end := start.Add(duration)
	lats := make([]latencies, workers)
	errs := make([]errCounter, workers)
	var wg sync.WaitGroup
	for w := range workers {
		errs[w] = errCounter{}
		wg.Go(func() {
			msg, idAt := Message(size)
			frame := mllp.AppendFrame(nil, msg)
			idAt++
			for n := 0; time.Now().Before(end) && ctx.Err() == nil; n++ {
				began := time.Now()
				nc, err := dialBench(ctx, addr, c)
				if err != nil {
					errs[w]["dial"]++
					continue
				}
				putID(frame[idAt:], w, n)
				_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := nc.Write(frame); err != nil {
					errs[w]["write"]++
					nc.Close()
					continue
				}
				ack, err := transport.NewDecoder(nc, mllp).Next()
				nc.Close()
				switch {
				case err != nil:
					errs[w]["read"]++
				case checkAck(ack, frame[idAt:idAt+controlIDWidth]) != "":
					errs[w]["nak"]++
				default:
					lats[w] = append(lats[w], time.Since(began))
				}
			}
		})
	}
	wg.Wait()
	return finish(res, time.Since(start), lats, errs, "no connection to "+addr+" carried an acknowledged message")
}
