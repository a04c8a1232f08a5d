package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// ErrProxyHeader: a connection from a trusted proxy did not start with a
// valid PROXY protocol header in time, or one from another address did.
var ErrProxyHeader = errors.New("PROXY protocol header")

// preamble runs on a new connection's own goroutine, holding its place in
// the listener's caps: it reads the PROXY header (from a trusted proxy),
// checks the real peer's address, runs the TLS handshake and checks the
// client certificate, all within HandshakeTimeout, then becomes the
// connection's read loop. On any failure the connection is closed and
// counted. src is the per-source key already counted ("" when proxied:
// counted once the header names the peer).
func (l *Listener) preamble(nc net.Conn, src string, proxied bool) {
	raw := nc
	served := false
	defer func() {
		if served {
			return
		}
		l.mu.Lock()
		delete(l.pre, raw)
		if !proxied {
			l.unsource(src)
		}
		l.mu.Unlock()
		l.cfg.Slots.release()
		l.preWG.Done()
	}()
	deadline := time.Now().Add(l.cfg.HandshakeTimeout)
	_ = nc.SetDeadline(deadline)
	if proxied {
		pc, err := readProxyHeader(nc)
		if err != nil {
			l.preambleFailed(&l.proxyFailures, &l.logs.proxy, nc.RemoteAddr().String(), "no valid PROXY protocol header from a trusted proxy; closed", err)
			resetConn(raw)
			return
		}
		nc = pc
		peer := addrOf(nc.RemoteAddr())
		if !l.allowed(peer) {
			l.deny(raw, nc.RemoteAddr().String())
			return
		}
		l.mu.Lock()
		key := peer.String()
		if l.bySource[key] >= l.cfg.MaxConnectionsPerSource {
			l.mu.Unlock()
			l.reject(nc.RemoteAddr().String(), RejectPerSource)
			resetConn(raw)
			return
		}
		l.bySource[key]++
		src, proxied = key, false // counted now: the deferred cleanup gives it back
		l.mu.Unlock()
	}
	var info *TLSInfo
	if l.cfg.TLS != nil {
		tc := tls.Server(nc, l.cfg.TLS)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.preambleFailed(&l.tlsFailures, &l.logs.handshake, nc.RemoteAddr().String(), "TLS handshake failed; closed",
				fmt.Errorf("%w: %w", ErrTLSHandshake, err))
			_ = raw.Close()
			return
		}
		cs := tc.ConnectionState()
		if err := checkPeer(cs, l.cfg.PeerNames); err != nil {
			l.preambleFailed(&l.peerDenied, &l.logs.peerDenied, nc.RemoteAddr().String(), "client certificate not allowed; closed", err)
			_ = tc.Close()
			return
		}
		info = tlsInfoOf(cs)
		nc = tc
	}
	_ = raw.SetDeadline(time.Time{})
	l.mu.Lock()
	if l.state != ListenerListening {
		l.mu.Unlock()
		_ = nc.Close()
		return
	}
	delete(l.pre, raw)
	c := l.newConn(nc, src, info)
	l.mu.Unlock()
	served = true
	l.preWG.Done()
	l.opened(c)
	c.startHere()
}

// preambleFailed counts and logs (sampled) a connection given up in its
// preamble.
func (l *Listener) preambleFailed(counter interface{ Add(int64) int64 }, s *sampler, remote, msg string, err error) {
	select {
	case <-l.quit:
		return // closed by Stop, not the peer's failure
	default:
	}
	counter.Add(1)
	if ok, suppressed := s.allow(); ok {
		l.log.Warn(msg, "remote_addr", remote, "err", err, "suppressed", suppressed)
	}
}

// maxProxyHeader bounds what is buffered while a PROXY header is read; a
// v2 header with TLVs can be longer, and is read through all the same
// (bufio.Reader.Discard), but the real peers' first bytes fit.
const maxProxyHeader = 4 << 10

// readProxyHeader reads a PROXY protocol (v2 or v1) header from nc and
// returns a connection whose RemoteAddr is the peer it names; the bytes
// after the header are read from the same buffer. A LOCAL header (the
// proxy's own health check) keeps the proxy's address.
func readProxyHeader(nc net.Conn) (net.Conn, error) {
	br := bufio.NewReaderSize(nc, maxProxyHeader)
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	pc := &proxiedConn{Conn: nc, r: br, remote: nc.RemoteAddr()}
	if h.Command.IsLocal() {
		return pc, nil
	}
	src, _, ok := h.TCPAddrs()
	if !ok {
		return nil, fmt.Errorf("%w: not a TCP source address (%v)", ErrProxyHeader, h.TransportProtocol)
	}
	ap := src.AddrPort()
	if !ap.Addr().IsValid() {
		return nil, fmt.Errorf("%w: invalid source address", ErrProxyHeader)
	}
	pc.remote = net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	return pc, nil
}

// proxiedConn is a connection behind a PROXY header: its remote address is
// the header's, its reads drain the buffer the header was read with.
type proxiedConn struct {
	net.Conn
	r      *bufio.Reader
	remote net.Addr
}

func (c *proxiedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *proxiedConn) RemoteAddr() net.Addr       { return c.remote }
