// Package faultproxy is a TCP proxy for tests that injects the faults a
// hostile or broken network brings between a peer and a server: a path
// that goes silent without closing (a half-open peer), resets of both
// sides, connections cut after some bytes, and added latency.
//
// It listens on 127.0.0.1 only, is meant for tests (every goroutine it
// starts ends when the test does) and never logs or keeps the bytes it
// forwards.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dialTimeout bounds the proxy's connect to its target.
const dialTimeout = 5 * time.Second

// Proxy forwards every connection it accepts to one target address. A
// connection through it is a link: the client's connection to the proxy
// and the proxy's connection to the target. Faults apply to links.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup // the accept loop and every link's pumps

	mu         sync.Mutex
	links      map[*link]struct{}
	blackholed bool
	resumed    chan struct{} // closed when the blackhole ends
	delay      time.Duration
	cutAfter   int64 // for links opened from now on; negative: none
	closed     bool

	accepted    atomic.Int64
	forwardedUp atomic.Int64 // client to target
	forwardedDn atomic.Int64 // target to client
}

// Start starts a proxy to target (host:port) on a free loopback port and
// stops it when the test ends (Close).
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("faultproxy: listen: %v", err)
	}
	p := &Proxy{target: target, ln: ln, links: map[*link]struct{}{}, cutAfter: -1}
	p.wg.Go(p.accept)
	t.Cleanup(p.Close)
	return p
}

// Addr is the address peers dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Blackhole stops forwarding, both ways, on every link open now and opened
// later, without closing anything: what a peer whose host or path died
// looks like from either end. Bytes, end of stream and resets that arrive
// meanwhile are held, not lost (TCP would retransmit them once the path is
// back), and delivered in order by Resume. Links are still accepted (and
// their targets dialled) while blackholed, as the kernel would complete the
// handshake of a host that went silent only afterwards.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.blackholed {
		p.blackholed = true
		p.resumed = make(chan struct{})
	}
}

// Resume ends a blackhole: held bytes flow again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blackholed {
		p.blackholed = false
		close(p.resumed)
	}
}

// Reset resets both sides of every open link (a TCP RST to the client and
// to the target, SO_LINGER 0), as a middlebox dropping its state would.
func (p *Proxy) Reset() {
	for _, l := range p.openLinks() {
		l.reset()
	}
}

// CutAfter makes every link opened from now on forward the first n bytes
// its client sends and then reset both sides, so the target sees a
// connection die at a chosen byte (in the middle of a frame, say). A
// negative n turns cutting off for new links.
func (p *Proxy) CutAfter(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutAfter = n
}

// SetDelay delays everything forwarded from now on, both ways, by d
// (latency, not a bandwidth limit: each read is held d before it is
// written on). Zero removes the delay.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// Links is the number of links open now.
func (p *Proxy) Links() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Accepted is the number of connections the proxy accepted.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Forwarded is how many bytes the proxy has written on: up from clients to
// the target, down from the target to clients.
func (p *Proxy) Forwarded() (up, down int64) {
	return p.forwardedUp.Load(), p.forwardedDn.Load()
}

// Close stops accepting, closes every link (an orderly close, not a
// reset) and waits for the proxy's goroutines. Idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, l := range p.openLinks() {
		l.close()
	}
	p.wg.Wait()
}

func (p *Proxy) openLinks() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	ls := make([]*link, 0, len(p.links))
	for l := range p.links {
		ls = append(ls, l)
	}
	return ls
}

func (p *Proxy) accept() {
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary (out of file descriptors, say): try again, briefly
			// later, as net/http does.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		p.accepted.Add(1)
		client := nc.(*net.TCPConn)
		// Dialled on its own goroutine: a target that does not answer must
		// not hold up the next client.
		p.wg.Go(func() { p.open(client) })
	}
}

// open dials the target for client and starts the link's pumps; a client
// whose target cannot be reached is reset, as a refused connect would be.
func (p *Proxy) open(client *net.TCPConn) {
	nc, err := net.DialTimeout("tcp", p.target, dialTimeout)
	if err != nil {
		_ = client.SetLinger(0)
		_ = client.Close()
		return
	}
	l := &link{p: p, client: client, target: nc.(*net.TCPConn), done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.closeConns()
		return
	}
	l.cut = p.cutAfter
	p.links[l] = struct{}{}
	p.mu.Unlock()
	l.halves.Store(2)
	p.wg.Go(func() { l.pump(l.client, l.target, true) })
	p.wg.Go(func() { l.pump(l.target, l.client, false) })
}

// link is one proxied connection.
type link struct {
	p              *Proxy
	client, target *net.TCPConn
	cut            int64        // bytes from the client to forward before a reset; negative: none
	sentUp         int64        // bytes forwarded from the client (its pump only)
	halves         atomic.Int32 // directions still open
	once           sync.Once
	done           chan struct{} // closed once the link is closed or reset
}

// pump copies src to dst. up: src is the client.
func (l *link) pump(src, dst *net.TCPConn, up bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !l.hold() {
				return
			}
			chunk := buf[:n]
			cutNow := false
			if up && l.cut >= 0 && l.sentUp+int64(n) >= l.cut {
				chunk, cutNow = chunk[:l.cut-l.sentUp], true
			}
			if len(chunk) > 0 {
				if _, werr := dst.Write(chunk); werr != nil {
					l.reset()
					return
				}
				if up {
					l.sentUp += int64(len(chunk))
					l.p.forwardedUp.Add(int64(len(chunk)))
				} else {
					l.p.forwardedDn.Add(int64(len(chunk)))
				}
			}
			if cutNow {
				l.reset()
				return
			}
		}
		if err != nil {
			// The end of the stream or a reset travels like bytes do: held
			// in a blackhole, delayed by the delay.
			if !l.hold() {
				return
			}
			if !errors.Is(err, io.EOF) {
				// A reset (or any other failure) of one side resets the
				// other: the target must not take a dead peer's end for an
				// orderly close.
				l.reset()
				return
			}
			// An orderly close is passed on as a half close, so a peer
			// that shuts down its writing side still gets the answers.
			_ = dst.CloseWrite()
			if l.halves.Add(-1) == 0 { // both directions ended
				l.close()
			}
			return
		}
	}
}

// hold waits while the proxy is blackholed, then for the delay; false when
// the link was closed meanwhile.
func (l *link) hold() bool {
	for {
		l.p.mu.Lock()
		blackholed, resumed, delay := l.p.blackholed, l.p.resumed, l.p.delay
		l.p.mu.Unlock()
		if !blackholed {
			return l.wait(delay)
		}
		select {
		case <-resumed:
		case <-l.done:
			return false
		}
	}
}

// wait waits d; false when the link was closed meanwhile.
func (l *link) wait(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	}
}

// reset ends the link with a TCP RST to both sides.
func (l *link) reset() {
	l.end(func() {
		_ = l.client.SetLinger(0)
		_ = l.target.SetLinger(0)
		l.closeConns()
	})
}

// close ends the link with an orderly close of both sides.
func (l *link) close() { l.end(l.closeConns) }

func (l *link) end(how func()) {
	l.once.Do(func() {
		l.p.mu.Lock()
		delete(l.p.links, l)
		l.p.mu.Unlock()
		close(l.done)
		how()
	})
}

func (l *link) closeConns() {
	_ = l.client.Close()
	_ = l.target.Close()
}
