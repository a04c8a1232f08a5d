package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/switchboard-dev/switchboard/internal/netpolicy"
	"github.com/switchboard-dev/switchboard/internal/syslog"
	"github.com/switchboard-dev/switchboard/internal/tlsfiles"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/service/auth"
	"github.com/switchboard-dev/switchboard/transport"
)

// securityFlags are serve's flags of issue 11: TLS and authentication of
// the control plane, the data plane's TLS profiles, the address policy,
// per-identity limits and the audit trail. docs/security.md explains each.
type securityFlags struct {
	grpcTLSCert, grpcTLSKey, grpcClientCA string
	grpcRequireClientCert                 bool
	accessFile                            string
	insecureControlPlane, insecureAdmin   bool
	tlsProfiles                           string
	allowListen, allowDial, denyDial      ruleList
	rateLimit                             float64
	rateBurst, maxStreams                 int
	auditSyslog, auditSyslogProfile       string
	auditDataCalls                        bool
	maxConnectionsTotal                   int
}

// ruleList is a repeatable flag of comma-separated rules; nil until given,
// so the defaults apply only when the flag is absent.
type ruleList struct {
	rules []string
	set   bool
}

func (l *ruleList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.rules, ",")
}

func (l *ruleList) Set(s string) error {
	l.set = true
	for r := range strings.SplitSeq(s, ",") {
		if r = strings.TrimSpace(r); r != "" && r != "none" {
			l.rules = append(l.rules, r)
		}
	}
	return nil
}

// get is the rule list for netpolicy.New: nil (the default) when the flag
// was not given, and non-nil (possibly empty: "none") when it was.
func (l ruleList) get() []string {
	if !l.set {
		return nil
	}
	if l.rules == nil {
		return []string{}
	}
	return l.rules
}

func (s *securityFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.grpcTLSCert, "grpc-tls-cert", "", "PEM certificate (chain) of the gRPC control plane; with --grpc-tls-key it serves TLS 1.2+ only. Reloaded when the file changes")
	fs.StringVar(&s.grpcTLSKey, "grpc-tls-key", "", "PEM private key of --grpc-tls-cert")
	fs.StringVar(&s.grpcClientCA, "grpc-client-ca", "", "PEM CA bundle that control-plane client certificates must chain to (mutual TLS); a verified certificate is an identity the --access-file can give a role")
	fs.BoolVar(&s.grpcRequireClientCert, "grpc-require-client-cert", false, "refuse control-plane connections without a client certificate that chains to --grpc-client-ca (otherwise a bearer token is enough)")
	fs.StringVar(&s.accessFile, "access-file", "", "who may call the control plane, and with which role: bearer tokens (stored hashed; see 'switchboard token') and client-certificate names. Reloaded when it changes. Without it, every caller on the loopback control plane is an admin")
	fs.StringVar(&s.tlsProfiles, "tls-profiles", "", "directory of data-plane TLS profiles, one subdirectory per profile holding tls.crt and tls.key and/or ca.crt (the layout of a Kubernetes TLS secret); listeners and connections name a profile. Reloaded when the files change")
	fs.Float64Var(&s.rateLimit, "rate-limit", 50, "control calls per second each identity of the --access-file may make (Send, Ack and AnswerMessage are not counted); 0: no limit")
	fs.IntVar(&s.rateBurst, "rate-burst", 100, "calls above --rate-limit an identity may make in a burst")
	fs.IntVar(&s.maxStreams, "max-streams-per-identity", 32, "Receive and WatchEvents streams one identity of the --access-file may have open at once; 0: no limit")
	fs.StringVar(&s.auditSyslog, "audit-syslog", "", "also send audit records as RFC 5424 syslog over TLS (RFC 5425) to this HOST:PORT, as IHE ATNA asks; needs --audit-syslog-profile")
	fs.StringVar(&s.auditSyslogProfile, "audit-syslog-profile", "", "the --tls-profiles profile for --audit-syslog: its ca.crt verifies the collector, its tls.crt and tls.key (when present) are the client certificate")
	fs.BoolVar(&s.auditDataCalls, "audit-data-calls", false, "also audit every Send, Ack and AnswerMessage (by default only calls that change configuration, payload reads, Receive streams and every denied call)")
	fs.Var(&s.allowListen, "allow-listen", "addresses StartListener may bind, as HOST:PORTS rules (repeatable or comma-separated; HOST an IP, CIDR, [IPv6 CIDR], DNS name, *.suffix or *; PORTS N, LOW-HIGH or *). Default: *:1024-65535")
	fs.Var(&s.allowDial, "allow-dial", "destinations Connect may dial, as HOST:PORTS rules; names are checked as configured and their addresses after DNS at every connect. Default: *:1-65535")
	fs.Var(&s.denyDial, "deny-dial", "destinations Connect may never dial, whatever a name resolves to (none: no deny rules). Default: 0.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255, [::], [fe80::/10], [ff00::/8] on every port")
	fs.IntVar(&s.maxConnectionsTotal, "max-connections", 10000, "TCP connections all listeners together may have open, including ones still in their TLS or PROXY handshake; 0: no limit")
	fs.BoolVar(&s.insecureControlPlane, "insecure-control-plane", false, "UNSAFE: allow a non-loopback --grpc-addr without TLS and an --access-file (anyone who reaches the port can open ports, dial out and read messages)")
	fs.BoolVar(&s.insecureAdmin, "insecure-admin", false, "UNSAFE: allow a non-loopback --admin-addr (the admin server has no authentication: metrics, health, the console and pprof)")
}

// check enforces the start-up rules: the flags make sense together, and a
// control plane or admin server off loopback is protected or explicitly,
// loudly, not. warn receives the warnings to log at every start.
func (s *securityFlags) check(grpcAddr, adminAddr string, stderr io.Writer) (warn []string, err error) {
	fail := func(format string, args ...any) ([]string, error) {
		fmt.Fprintf(stderr, "serve: "+format+"\n", args...)
		return nil, errUsage
	}
	if (s.grpcTLSCert == "") != (s.grpcTLSKey == "") {
		return fail("--grpc-tls-cert and --grpc-tls-key go together")
	}
	tlsOn := s.grpcTLSCert != ""
	if s.grpcClientCA != "" && !tlsOn {
		return fail("--grpc-client-ca needs --grpc-tls-cert and --grpc-tls-key")
	}
	if s.grpcRequireClientCert && s.grpcClientCA == "" {
		return fail("--grpc-require-client-cert needs --grpc-client-ca")
	}
	if (s.auditSyslog == "") != (s.auditSyslogProfile == "") {
		return fail("--audit-syslog and --audit-syslog-profile go together")
	}
	if s.auditSyslogProfile != "" && s.tlsProfiles == "" {
		return fail("--audit-syslog-profile names a profile of --tls-profiles, which is not set")
	}
	if s.rateLimit < 0 || s.rateBurst < 0 || s.maxStreams < 0 || s.maxConnectionsTotal < 0 {
		return fail("--rate-limit, --rate-burst, --max-streams-per-identity and --max-connections must not be negative")
	}
	if s.rateLimit > 0 && s.rateBurst < 1 {
		return fail("--rate-burst must be at least 1 when --rate-limit is set")
	}
	if !isLoopback(grpcAddr) {
		switch {
		case tlsOn && s.accessFile != "":
		case s.insecureControlPlane:
			warn = append(warn, fmt.Sprintf("UNSAFE: the control plane on %s is not loopback and has %s: anyone who reaches it can open ports, dial out and read patient data (--insecure-control-plane)", grpcAddr, missing(tlsOn, s.accessFile != "")))
		default:
			return fail("--grpc-addr %s is not a loopback address, and the control plane has %s. Give --grpc-tls-cert, --grpc-tls-key and --access-file (docs/security.md), or --insecure-control-plane to run it unprotected (never in production)", grpcAddr, missing(tlsOn, s.accessFile != ""))
		}
	}
	if adminAddr != "" && !isLoopback(adminAddr) {
		if !s.insecureAdmin {
			return fail("--admin-addr %s is not a loopback address, and the admin server has no authentication. Keep it on loopback (scrape through a sidecar or an authenticating proxy), or give --insecure-admin", adminAddr)
		}
		warn = append(warn, fmt.Sprintf("UNSAFE: the admin server on %s is not loopback and has no authentication (--insecure-admin)", adminAddr))
	}
	return warn, nil
}

func missing(tlsOn, auth bool) string {
	switch {
	case !tlsOn && !auth:
		return "no TLS and no authentication"
	case !tlsOn:
		return "no TLS (tokens would cross the network in clear text)"
	}
	return "no authentication (--access-file)"
}

// isLoopback reports whether a listen address is on loopback only: an IP
// in 127.0.0.0/8 or ::1, or "localhost". An empty host (every interface)
// is not.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// grpcCredentials are the gRPC server options for the control plane's
// TLS: none without a certificate. The files are reloaded when they change
// (tlsfiles), so a rotated certificate is served without a restart.
func (s *securityFlags) grpcCredentials(logger *slog.Logger) ([]grpc.ServerOption, error) {
	if s.grpcTLSCert == "" {
		return nil, nil
	}
	src, err := tlsfiles.Load(tlsfiles.Files{Cert: s.grpcTLSCert, Key: s.grpcTLSKey, CA: s.grpcClientCA},
		tlsfiles.Options{Logger: logger.With("component", "grpc-tls")})
	if err != nil {
		return nil, fmt.Errorf("control-plane TLS: %w", err)
	}
	clientAuth := tls.NoClientCert
	switch {
	case s.grpcRequireClientCert:
		clientAuth = tls.RequireAndVerifyClientCert
	case s.grpcClientCA != "":
		clientAuth = tls.VerifyClientCertIfGiven
	}
	cfg, err := src.ServerConfig(clientAuth)
	if err != nil {
		return nil, fmt.Errorf("control-plane TLS: %w", err)
	}
	logger.Info("control plane TLS on", "cert", s.grpcTLSCert, "client_ca", s.grpcClientCA, "client_auth", clientAuth.String())
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}, nil
}

// authorizer builds the control plane's authentication, authorization,
// rate limits and audit trail (service/auth). Without an access file every
// caller is an anonymous admin: check allows that only on loopback or with
// --insecure-control-plane. The returned stop closes the authorizer and
// flushes the syslog writer, bounded by timeout.
func (s *securityFlags) authorizer(logger *slog.Logger, profiles *tlsfiles.Profiles, lookup auth.Lookup) (*auth.Authorizer, func(timeout time.Duration), error) {
	var w *syslog.Writer
	if s.auditSyslog != "" {
		src, err := profiles.Get(s.auditSyslogProfile)
		if err != nil {
			return nil, nil, fmt.Errorf("--audit-syslog-profile: %w", err)
		}
		host, _, _ := net.SplitHostPort(s.auditSyslog)
		w, err = syslog.Dial(syslog.Config{Addr: s.auditSyslog, TLS: src.ClientConfig(host), Logger: logger.With("component", "audit-syslog")})
		if err != nil {
			return nil, nil, fmt.Errorf("--audit-syslog: %w", err)
		}
		logger.Info("audit records also go to syslog over TLS", "collector", s.auditSyslog, "profile", s.auditSyslogProfile)
	}
	aud := auth.NewAuditor(auth.AuditConfig{Logger: logger.With("component", "audit"), Syslog: w, DataCalls: s.auditDataCalls})
	// Limits are per identity: without an access file every caller on the
	// host is the one identity "anonymous", and a limit would throttle all
	// local automation together.
	rate, burst, streams := s.rateLimit, s.rateBurst, s.maxStreams
	if s.accessFile == "" {
		rate, burst, streams = 0, 0, 0
	}
	a, err := auth.New(auth.Config{
		AccessFile: s.accessFile,
		Anonymous:  s.accessFile == "",
		RateLimit:  rate,
		RateBurst:  burst,
		MaxStreams: streams,
		Audit:      aud,
		Logger:     logger.With("component", "auth"),
		Lookup:     lookup,
	})
	if err != nil {
		if w != nil {
			_ = w.Close(context.Background())
		}
		return nil, nil, fmt.Errorf("--access-file: %w", err)
	}
	if s.accessFile == "" {
		logger.Info("no --access-file: every control-plane caller is an anonymous admin")
	} else {
		logger.Info("control plane authentication on", "access_file", s.accessFile)
	}
	return a, func(timeout time.Duration) {
		_ = a.Close()
		if w != nil {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if err := w.Close(ctx); err != nil {
				logger.Error("audit syslog: records left unsent at shutdown", "err", err, "dropped", w.Dropped())
			}
		}
	}, nil
}

// profiles opens --tls-profiles; nil without it.
func (s *securityFlags) profiles(logger *slog.Logger) (*tlsfiles.Profiles, error) {
	if s.tlsProfiles == "" {
		return nil, nil
	}
	p, err := tlsfiles.OpenProfiles(s.tlsProfiles, tlsfiles.Options{Logger: logger.With("component", "tls-profiles")})
	if err != nil {
		return nil, fmt.Errorf("--tls-profiles: %w", err)
	}
	logger.Info("TLS profiles loaded", "dir", s.tlsProfiles, "profiles", strings.Join(p.Names(), ","))
	return p, nil
}

// addressPolicy is the policy of --allow-listen, --allow-dial and
// --deny-dial (netpolicy's defaults for those not given).
func (s *securityFlags) addressPolicy(logger *slog.Logger) (*netpolicy.Policy, error) {
	p, err := netpolicy.New(s.allowListen.get(), s.allowDial.get(), s.denyDial.get())
	if err != nil {
		return nil, fmt.Errorf("address policy: %w", err)
	}
	listen, allow, deny := p.Describe()
	logger.Info("address policy", "allow_listen", listen, "allow_dial", allow, "deny_dial", deny)
	return p, nil
}

// connSlots is the cap of --max-connections; nil for none.
func (s *securityFlags) connSlots() *transport.ConnSlots {
	if s.maxConnectionsTotal <= 0 {
		return nil
	}
	return transport.NewConnSlots(s.maxConnectionsTotal)
}

// tlsProfiles is p as the service's TLSProfiles, nil (no profiles: a
// config naming one is refused) when p is.
func tlsProfiles(p *tlsfiles.Profiles) service.TLSProfiles {
	if p == nil {
		return nil
	}
	return p
}
