package auth

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/switchboard-dev/switchboard/internal/tlsfiles"
)

// Identity is an authenticated caller.
type Identity struct {
	// Name is "token:<name>", "cert:<peer identity>" or "anonymous".
	Name  string
	Role  Role
	Scope Scope
	// Peer is the caller's network address.
	Peer string
}

type identityKey struct{}

// FromContext returns the identity the authentication interceptor put in
// a call's context.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Config configures New.
type Config struct {
	// AccessFile is the access file (see ParseAccessFile); "" for none.
	AccessFile string
	// Anonymous, without an access file, makes every caller the admin
	// "anonymous" (a loopback control plane, as before authentication).
	// Without both, New fails.
	Anonymous bool
	// RateLimit is the calls per second each identity may make, beyond
	// RateBurst at once (default: max(1, RateLimit)), to every method but
	// the data path (Send, Ack, AnswerMessage) and health. 0: no limit.
	RateLimit float64
	RateBurst int
	// MaxStreams bounds the Receive and WatchEvents streams one identity
	// may have open at once; 0: no bound.
	MaxStreams int
	// Audit records calls and denials; nil: none.
	Audit *Auditor
	// Logger gets reload warnings; nil discards them.
	Logger *slog.Logger
	// Lookup lets scope checks find an inbound connection's listener and a
	// consumer's filters; ServerLookup(svc) is the usual one. Nil: see
	// Lookup.
	Lookup Lookup
	// CheckEvery is how often (at most) the access file is stat'ed for
	// changes: on a call, and by a poller so open streams of a revoked
	// identity end without a call. 0: 1 s.
	CheckEvery time.Duration
}

// DefaultCheckEvery is how often the access file is checked by default.
// Revocation bound: a call that starts more than CheckEvery after the
// access file was replaced is judged by the new file, and a stream whose
// identity was revoked, or whose role or scope changed, ends within about
// CheckEvery (plus the time to read the file), with UNAUTHENTICATED.
const DefaultCheckEvery = time.Second

// maxLimiters bounds the per-identity rate limiters kept; beyond it, idle
// ones (full buckets) are dropped. Certificate identities matched by a
// wildcard are not bounded by the access file.
const maxLimiters = 4096

// Authorizer holds the access policy and makes the interceptors.
type Authorizer struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex // guards what follows
	pol       *policy
	info      os.FileInfo // of the loaded file
	failed    os.FileInfo // of the last file that failed to load (warn once)
	statErr   bool        // the last stat failed (warned)
	lastCheck time.Time
	reloading bool
	limiters  map[string]*rate.Limiter
	streams   map[string]int
	open      map[*openStream]struct{}

	stop chan struct{}
	done chan struct{}
}

// policy is one loaded access file.
type policy struct {
	tokens map[[sha256.Size]byte]*Entry
	certs  []*Entry // in file order: the first that matches wins
}

func newPolicy(f *AccessFile) *policy {
	p := &policy{tokens: map[[sha256.Size]byte]*Entry{}}
	for _, e := range f.Entries() {
		switch e.Kind {
		case KindToken:
			p.tokens[e.Hash] = e
		case KindCert:
			p.certs = append(p.certs, e)
		}
	}
	return p
}

// credential is what an identity was established by, to judge it again
// after a reload.
type credential struct {
	token [sha256.Size]byte
	cert  *x509.Certificate // nil for tokens
}

func (p *policy) resolve(c credential) (*Entry, Identity, bool) {
	if c.cert == nil {
		e := p.tokens[c.token]
		if e == nil {
			return nil, Identity{}, false
		}
		return e, Identity{Name: "token:" + e.Name, Role: e.Role, Scope: e.Scope}, true
	}
	for _, e := range p.certs {
		if tlsfiles.Match(c.cert, []string{e.Name}) {
			return e, Identity{Name: "cert:" + tlsfiles.Identity(c.cert), Role: e.Role, Scope: e.Scope}, true
		}
	}
	return nil, Identity{}, false
}

// New loads the access file (an error if it is missing or invalid) and
// starts its poller; Close stops it.
func New(cfg Config) (*Authorizer, error) {
	if cfg.AccessFile == "" && !cfg.Anonymous {
		return nil, fmt.Errorf("%w: neither an access file nor anonymous access", ErrInvalid)
	}
	if cfg.AccessFile != "" && cfg.Anonymous {
		return nil, fmt.Errorf("%w: an access file and anonymous access exclude each other", ErrInvalid)
	}
	if cfg.RateLimit < 0 || cfg.RateBurst < 0 || cfg.MaxStreams < 0 {
		return nil, fmt.Errorf("%w: negative rate limit, burst or stream cap", ErrInvalid)
	}
	if cfg.RateLimit > 0 && cfg.RateBurst == 0 {
		cfg.RateBurst = max(1, int(cfg.RateLimit))
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = DefaultCheckEvery
	}
	a := &Authorizer{
		cfg: cfg, log: cfg.Logger,
		limiters: map[string]*rate.Limiter{}, streams: map[string]int{}, open: map[*openStream]struct{}{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if cfg.AccessFile == "" {
		close(a.done)
		return a, nil
	}
	info, pol, err := loadAccessFile(cfg.AccessFile)
	if err != nil {
		return nil, err
	}
	a.info, a.pol, a.lastCheck = info, pol, time.Now()
	go a.poll()
	return a, nil
}

func loadAccessFile(path string) (os.FileInfo, *policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("access file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("access file: %w", err)
	}
	if info.Size() > maxAccessFileBytes {
		return nil, nil, fmt.Errorf("%w: access file %s is %d bytes, more than the %d allowed", ErrInvalid, path, info.Size(), maxAccessFileBytes)
	}
	data := make([]byte, info.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, nil, fmt.Errorf("access file %s: %w", path, err)
	}
	af, err := ParseAccessFile(data)
	if err != nil {
		return nil, nil, fmt.Errorf("access file %s: %w", path, err)
	}
	return info, newPolicy(af), nil
}

// Close stops the access file poller and ends nothing else.
func (a *Authorizer) Close() error {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
	return nil
}

func (a *Authorizer) poll() {
	defer close(a.done)
	t := time.NewTicker(max(a.cfg.CheckEvery, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.maybeReload()
		}
	}
}

// changed reports whether the file at the path is another one than info
// (replaced by rename, as Kubernetes and the token command do) or was
// written in place.
func changed(old, cur os.FileInfo) bool {
	return old == nil || !os.SameFile(old, cur) || !old.ModTime().Equal(cur.ModTime()) || old.Size() != cur.Size()
}

// maybeReload re-reads the access file when it changed, at most once per
// CheckEvery. A file that fails to load keeps the old policy, with one
// warning per change.
func (a *Authorizer) maybeReload() *policy {
	a.mu.Lock()
	pol := a.pol
	if a.cfg.AccessFile == "" || a.reloading || time.Since(a.lastCheck) < a.cfg.CheckEvery {
		a.mu.Unlock()
		return pol
	}
	a.reloading, a.lastCheck = true, time.Now()
	old, failed := a.info, a.failed
	a.mu.Unlock()

	var (
		newInfo os.FileInfo
		newPol  *policy
		failure os.FileInfo
		statErr bool
	)
	cur, err := os.Stat(a.cfg.AccessFile)
	switch {
	case err != nil:
		statErr = true
		if !a.statFailed() {
			a.log.Warn("access file unreadable; keeping the access policy loaded before", "file", a.cfg.AccessFile, "err", err)
		}
	case !changed(old, cur):
	case failed != nil && !changed(failed, cur):
		// Still the broken file already warned about.
		failure = failed
	default:
		info, p, err := loadAccessFile(a.cfg.AccessFile)
		if err != nil {
			a.log.Warn("access file changed but does not load; keeping the access policy loaded before", "file", a.cfg.AccessFile, "err", err)
			failure = cur
		} else {
			newInfo, newPol = info, p
			a.log.Info("access file reloaded", "file", a.cfg.AccessFile, "tokens", len(p.tokens), "certs", len(p.certs))
		}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	a.reloading, a.failed, a.statErr = false, failure, statErr
	if newPol != nil {
		a.info, a.pol = newInfo, newPol
		a.recheckStreams(newPol)
	}
	return a.pol
}

func (a *Authorizer) statFailed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.statErr
}

// current is the access policy to judge a call by.
func (a *Authorizer) current() *policy {
	return a.maybeReload()
}

// notHealth selects every call but health checks, which stay open for
// probes.
var notHealth = selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
	return c.Service != healthpb.Health_ServiceDesc.ServiceName
})

// limited selects the calls the rate limit applies to.
var limited = selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
	return c.Service != healthpb.Health_ServiceDesc.ServiceName && !ruleFor(c.FullMethod()).data
})

// UnaryInterceptors returns audit, authentication, authorization and the
// rate limit, in that order, for service.ServerOptions.UnaryInterceptors.
func (a *Authorizer) UnaryInterceptors() []grpc.UnaryServerInterceptor {
	out := []grpc.UnaryServerInterceptor{
		selector.UnaryServerInterceptor(a.auditUnary, notHealth),
		selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(a.authenticate), notHealth),
		selector.UnaryServerInterceptor(a.authorizeUnary, notHealth),
	}
	if a.cfg.RateLimit > 0 {
		out = append(out, selector.UnaryServerInterceptor(ratelimit.UnaryServerInterceptor(a), limited))
	}
	return out
}

// StreamInterceptors returns audit, authentication, authorization, the
// rate limit and the stream cap, for service.ServerOptions.StreamInterceptors.
func (a *Authorizer) StreamInterceptors() []grpc.StreamServerInterceptor {
	out := []grpc.StreamServerInterceptor{
		selector.StreamServerInterceptor(a.auditStream, notHealth),
		selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(a.authenticate), notHealth),
		selector.StreamServerInterceptor(a.authorizeStream, notHealth),
	}
	if a.cfg.RateLimit > 0 {
		out = append(out, selector.StreamServerInterceptor(ratelimit.StreamServerInterceptor(a), limited))
	}
	return append(out, selector.StreamServerInterceptor(a.trackStream, notHealth))
}

// authenticate is the go-grpc-middleware auth function: a bearer token
// when the call carries "authorization" metadata (an invalid one is
// refused, never passed over for the certificate), else a verified
// client certificate the access file maps to a role.
func (a *Authorizer) authenticate(ctx context.Context) (context.Context, error) {
	c := callFrom(ctx)
	id, cred, err := a.identify(ctx)
	if err != nil {
		c.deny(err)
		return nil, err
	}
	c.id, c.cred, c.authed = id, cred, true
	return context.WithValue(ctx, identityKey{}, id), nil
}

func (a *Authorizer) identify(ctx context.Context) (Identity, credential, error) {
	addr := peerAddr(ctx)
	if a.cfg.AccessFile == "" {
		return Identity{Name: "anonymous", Role: RoleAdmin, Peer: addr}, credential{}, nil
	}
	pol := a.current()
	if vals := metadata.ValueFromIncomingContext(ctx, "authorization"); len(vals) > 0 {
		if len(vals) > 1 {
			return Identity{}, credential{}, unauthenticated("more than one authorization header")
		}
		scheme, tok, ok := strings.Cut(vals[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || tok == "" {
			return Identity{}, credential{}, unauthenticated(`authorization metadata must be "Bearer <token>"`)
		}
		cred := credential{token: HashToken(strings.TrimSpace(tok))}
		_, id, ok := pol.resolve(cred)
		if !ok {
			return Identity{}, credential{}, unauthenticated("unknown or revoked token")
		}
		id.Peer = addr
		return id, cred, nil
	}
	if p, ok := peer.FromContext(ctx); ok {
		// Only a verified chain counts: a server configured to request
		// but not verify certificates must not let one name itself.
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.PeerCertificates) > 0 {
			cert := ti.State.PeerCertificates[0]
			cred := credential{cert: cert}
			_, id, ok := pol.resolve(cred)
			if !ok {
				return Identity{}, credential{}, unauthenticated(fmt.Sprintf("client certificate %q is not mapped to a role by the access file", tlsfiles.Identity(cert)))
			}
			id.Peer = addr
			return id, cred, nil
		}
	}
	return Identity{}, credential{}, unauthenticated(`no credentials: send "authorization: Bearer <token>" metadata or a client certificate the access file maps to a role`)
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// authorize checks the role and, for scoped identities, the request.
func (a *Authorizer) authorize(ctx context.Context, id Identity, method string, r rule, req any) error {
	need, why := r.role, ""
	if r.roleFor != nil && req != nil {
		need, why = r.roleFor(req)
	}
	if id.Role < need {
		return roleRequired(id, need, method, why)
	}
	if !id.Scope.Scoped() {
		return nil
	}
	c := &checker{ctx: ctx, id: id, lookup: a.cfg.Lookup}
	if r.denyScoped {
		return c.deny(shortMethod(method) + " is not in the role table; only an unscoped admin may call it")
	}
	if r.scope != nil && req != nil {
		return r.scope(c, req)
	}
	return nil
}

func (a *Authorizer) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	id, ok := FromContext(ctx)
	if !ok {
		return nil, unauthenticated("not authenticated")
	}
	c := callFrom(ctx)
	r := ruleFor(info.FullMethod)
	if err := a.authorize(ctx, id, info.FullMethod, r, req); err != nil {
		c.deny(err)
		return nil, err
	}
	resp, err := h(ctx, req)
	if err == nil && r.post != nil && id.Scope.Scoped() {
		if err := r.post(&checker{ctx: ctx, id: id, lookup: a.cfg.Lookup}, resp); err != nil {
			c.deny(err)
			return nil, err
		}
	}
	return resp, err
}

func (a *Authorizer) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx := ss.Context()
	id, ok := FromContext(ctx)
	if !ok {
		return unauthenticated("not authenticated")
	}
	c := callFrom(ctx)
	r := ruleFor(info.FullMethod)
	if err := a.authorize(ctx, id, info.FullMethod, r, nil); err != nil {
		c.deny(err)
		return err
	}
	// The request of a server-streaming call arrives with the first
	// RecvMsg, inside the handler: check it there.
	return h(srv, &checkedStream{ServerStream: ss, a: a, id: id, rule: r, method: info.FullMethod, call: c})
}

// checkedStream checks the first request of a stream.
type checkedStream struct {
	grpc.ServerStream
	a       *Authorizer
	id      Identity
	rule    rule
	method  string
	call    *call
	checked bool
}

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.checked {
		return nil
	}
	s.checked = true
	if s.rule.target != nil {
		s.call.target = s.rule.target(m)
	}
	if err := s.a.authorize(s.ServerStream.Context(), s.id, s.method, s.rule, m); err != nil {
		s.call.deny(err)
		return err
	}
	if s.rule.audit != nil && s.rule.audit(m) {
		s.a.cfg.Audit.streamOpened(s.ServerStream.Context(), s.call)
	}
	return nil
}

// Limit is the ratelimit.Limiter of go-grpc-middleware: a token bucket
// per identity. The middleware turns the error into a plain
// RESOURCE_EXHAUSTED; the audit interceptor puts back this status, with
// its ErrorInfo and RetryInfo.
func (a *Authorizer) Limit(ctx context.Context) error {
	id, ok := FromContext(ctx)
	if !ok {
		return nil
	}
	now := time.Now()
	a.mu.Lock()
	lim := a.limiters[id.Name]
	if lim == nil {
		if len(a.limiters) >= maxLimiters {
			for k, l := range a.limiters {
				if l.TokensAt(now) >= float64(l.Burst()) {
					delete(a.limiters, k)
				}
			}
		}
		lim = rate.NewLimiter(rate.Limit(a.cfg.RateLimit), a.cfg.RateBurst)
		a.limiters[id.Name] = lim
	}
	a.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		err := rateLimited(id, d)
		callFrom(ctx).deny(err)
		return err
	}
	return nil
}

// errRevoked ends the streams of an identity the access file no longer
// grants what the stream needed.
var errRevoked = errors.New("credentials revoked or changed")

type openStream struct {
	cred   credential
	id     Identity
	need   Role
	cancel context.CancelCauseFunc
}

// trackStream applies the stream cap to Receive and WatchEvents and ends
// any stream whose identity is revoked.
func (a *Authorizer) trackStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	id, ok := FromContext(ss.Context())
	if !ok {
		return unauthenticated("not authenticated")
	}
	c := callFrom(ss.Context())
	r := ruleFor(info.FullMethod)
	capped := r.stream && a.cfg.MaxStreams > 0
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	os := &openStream{cred: c.cred, id: id, need: r.role, cancel: cancel}
	a.mu.Lock()
	if capped && a.streams[id.Name] >= a.cfg.MaxStreams {
		a.mu.Unlock()
		err := tooManyStreams(id, a.cfg.MaxStreams)
		c.deny(err)
		return err
	}
	if capped {
		a.streams[id.Name]++
	}
	if a.cfg.AccessFile != "" {
		a.open[os] = struct{}{}
	}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		delete(a.open, os)
		if capped {
			if a.streams[id.Name]--; a.streams[id.Name] <= 0 {
				delete(a.streams, id.Name)
			}
		}
	}()
	err := h(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	if errors.Is(context.Cause(ctx), errRevoked) {
		err = unauthenticated("the access file no longer grants " + id.Name + " this stream (revoked, or its role or scope changed)")
		c.deny(err)
	}
	return err
}

// recheckStreams ends the open streams the new policy no longer allows.
// a.mu is held.
func (a *Authorizer) recheckStreams(p *policy) {
	for s := range a.open {
		_, id, ok := p.resolve(s.cred)
		if !ok || id.Role < s.need || id.Role != s.id.Role || !sameScope(id.Scope, s.id.Scope) {
			s.cancel(errRevoked)
		}
	}
}

func sameScope(a, b Scope) bool {
	return slices.Equal(a.Listeners, b.Listeners) && slices.Equal(a.Connections, b.Connections)
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }
