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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/transport"
)

// MaxMessageBytes is the gRPC message size limit in both directions: the
// largest frame payload plus room for the message around it.
const MaxMessageBytes = transport.MaxFrameBytesLimit + 1<<20

// streamWorkers is the number of reusable goroutines serving calls.
const streamWorkers = 64

// NewGRPCServer returns a gRPC server with svc registered behind the
// project's interceptors (logging without payloads, request validation,
// panic recovery), plus grpc.health.v1 and server reflection. Health starts
// SERVING for the whole server and for SwitchboardService; the caller owns
// Serve, health changes and GracefulStop.
func NewGRPCServer(svc *Service, logger *slog.Logger, opts ...grpc.ServerOption) (*grpc.Server, *health.Server, error) {
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
		return status.Error(codes.Internal, "internal error")
	})
	base := []grpc.ServerOption{
		// Reused handler goroutines keep their grown stacks; a fresh
		// goroutine per call spent a tenth of the Send path growing its
		// stack. Calls beyond the pool still get their own goroutine.
		grpc.NumStreamWorkers(streamWorkers),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(
			selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(rpcLog, logOpts...), logged),
			grpcvalidate.UnaryServerInterceptor(v),
			recovery.UnaryServerInterceptor(onPanic),
		),
		grpc.ChainStreamInterceptor(
			selector.StreamServerInterceptor(logging.StreamServerInterceptor(rpcLog, logOpts...), logged),
			grpcvalidate.StreamServerInterceptor(v),
			recovery.StreamServerInterceptor(onPanic),
		),
	}
	s := grpc.NewServer(append(base, opts...)...)
	switchboardv1.RegisterSwitchboardServiceServer(s, svc)
	hs := health.NewServer()
	hs.SetServingStatus(switchboardv1.SwitchboardService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s, hs, nil
}
