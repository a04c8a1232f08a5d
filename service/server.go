package service

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	grpcvalidate "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// MaxMessageBytes is the gRPC message size limit in both directions: the
// largest frame payload plus room for the message around it.
const MaxMessageBytes = transport.MaxFrameBytesLimit + 1<<20

// streamWorkers is the number of reusable goroutines serving calls.
const streamWorkers = 64

// ServerOptions configures NewGRPCServer. The zero value is the production
// setting without extra interceptors.
type ServerOptions struct {
	// Logger receives one line per call (not for health, reflection, or
	// Send below debug level) and panics. Nil discards them.
	Logger *slog.Logger
	// OuterUnaryInterceptors and OuterStreamInterceptors run first, around
	// everything else: metrics go here, so that they count every call with
	// the code its caller got, validation errors and recovered panics
	// (INTERNAL) included. They must not panic themselves.
	OuterUnaryInterceptors  []grpc.UnaryServerInterceptor
	OuterStreamInterceptors []grpc.StreamServerInterceptor
	// UnaryInterceptors and StreamInterceptors run after recovery and
	// logging and before request validation: authentication and
	// authorization go here, so denied calls are logged and an
	// unauthenticated caller learns nothing from validation errors.
	UnaryInterceptors  []grpc.UnaryServerInterceptor
	StreamInterceptors []grpc.StreamServerInterceptor
	// DisableReflection turns server reflection off (it is on by default,
	// for grpcurl, and serves the API's proto comments: reflection.go).
	DisableReflection bool
	// GRPCOptions are further options, such as credentials.
	GRPCOptions []grpc.ServerOption
}

// NewGRPCServer returns a gRPC server with svc registered behind the
// project's interceptors, plus grpc.health.v1 and (unless disabled) server
// reflection. The chain, outermost first:
//
//	outer        opts.OuterUnaryInterceptors / OuterStreamInterceptors (metrics)
//	recovery     a panic anywhere below becomes INTERNAL, logged with its stack
//	logging      one line per call with its code; never payloads
//	extra        opts.UnaryInterceptors / StreamInterceptors (auth)
//	validation   protovalidate rules from the proto: INVALID_ARGUMENT, with
//	             ErrorInfo and BadRequest added (errors.go)
//	cluster      in a cluster only: calls about a resource run on its
//	             owner (clustered.go)
//
// Health starts SERVING for the whole server and for SwitchboardService,
// and its Watch streams end when svc shuts down; the caller owns Serve,
// health changes and stopping.
func NewGRPCServer(svc *Service, opts ServerOptions) (*grpc.Server, *health.Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	v, err := protovalidate.New()
	if err != nil {
		return nil, nil, fmt.Errorf("create validator: %w", err)
	}
	rpcLog := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		logger.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	// Payload events are never enabled: payloads are patient data.
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	// Health probes and reflection would drown the log, and so would Send,
	// the data path (tens of thousands of calls a second; building a log
	// entry costs even when the level drops it): transport logs the Sends
	// that matter (in doubt, mismatched), and debug level logs them all.
	logged := selector.MatchFunc(func(ctx context.Context, c interceptors.CallMeta) bool {
		switch {
		case c.Service == healthpb.Health_ServiceDesc.ServiceName, strings.HasPrefix(c.Service, "grpc.reflection."):
			return false
		case c.Service == switchboardv1.SwitchboardService_ServiceDesc.ServiceName && c.Method == "Send":
			return logger.Enabled(ctx, slog.LevelDebug)
		}
		return true
	})
	onPanic := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "handler panic", "panic", p, "stack", string(debug.Stack()))
		return panicStatus()
	})
	unary := append([]grpc.UnaryServerInterceptor(nil), opts.OuterUnaryInterceptors...)
	unary = append(unary,
		recovery.UnaryServerInterceptor(onPanic),
		selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(rpcLog, logOpts...), logged),
	)
	unary = append(unary, opts.UnaryInterceptors...)
	unary = append(unary, validationDetailsUnary, grpcvalidate.UnaryServerInterceptor(v))
	if svc.node != nil {
		unary = append(unary, svc.clusterUnary) // clustered.go
	}
	stream := append([]grpc.StreamServerInterceptor(nil), opts.OuterStreamInterceptors...)
	stream = append(stream,
		recovery.StreamServerInterceptor(onPanic),
		selector.StreamServerInterceptor(logging.StreamServerInterceptor(rpcLog, logOpts...), logged),
	)
	stream = append(stream, opts.StreamInterceptors...)
	stream = append(stream, validationDetailsStream, grpcvalidate.StreamServerInterceptor(v))

	base := []grpc.ServerOption{
		// Reused handler goroutines keep their grown stacks; a fresh
		// goroutine per call spent a tenth of the Send path growing its
		// stack. Calls beyond the pool still get their own goroutine.
		// (grpc.NumStreamWorkers is marked experimental in grpc-go.)
		grpc.NumStreamWorkers(streamWorkers),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}
	s := grpc.NewServer(append(base, opts.GRPCOptions...)...)
	switchboardv1.RegisterSwitchboardServiceServer(s, svc)
	hs := health.NewServer()
	hs.SetServingStatus(switchboardv1.SwitchboardService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, watchEnds{Server: hs, svc: svc.ctx})
	if !opts.DisableReflection {
		if err := registerReflection(s); err != nil {
			return nil, nil, err
		}
	}
	return s, hs, nil
}

// watchEnds is the health service whose Watch streams end when the service
// has shut down, as Receive streams do; otherwise an open Watch would hold
// a graceful stop (and the process exit) for the whole shutdown timeout.
type watchEnds struct {
	*health.Server
	svc context.Context // ends when the service has shut down
}

func (w watchEnds) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(w.svc, cancel)()
	err := w.Server.Watch(req, ctxStream{Health_WatchServer: stream, ctx: ctx})
	if w.svc.Err() != nil {
		return shuttingDownStatus()
	}
	return err
}

// ctxStream replaces a stream's context.
type ctxStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }
