package auth

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of Switchboard's errors:
// the same string as service.ErrorDomain (a test checks), repeated here
// because service/auth must not import service (service's tests import
// this package).
const ErrorDomain = "github.com/switchboard-dev/switchboard"

func reasonName(r switchboardv1.ErrorReason) string {
	return strings.TrimPrefix(r.String(), "ERROR_REASON_")
}

func statusOf(code codes.Code, msg string, reason switchboardv1.ErrorReason, meta map[string]string, details ...protoadapt.MessageV1) error {
	st := status.New(code, msg)
	all := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reasonName(reason), Domain: ErrorDomain, Metadata: meta}}, details...)
	if d, err := st.WithDetails(all...); err == nil {
		return d.Err()
	}
	return st.Err()
}

func unauthenticated(msg string) error {
	return statusOf(codes.Unauthenticated, msg, switchboardv1.ErrorReason_ERROR_REASON_UNAUTHENTICATED, nil)
}

func roleRequired(id Identity, need Role, method string, why string) error {
	msg := fmt.Sprintf("%s needs role %s%s; %s has role %s", shortMethod(method), need, why, id.Name, id.Role)
	return statusOf(codes.PermissionDenied, msg, switchboardv1.ErrorReason_ERROR_REASON_ROLE_REQUIRED,
		map[string]string{"role": id.Role.String(), "required_role": need.String()})
}

func outOfScope(id Identity, msg string) error {
	return statusOf(codes.PermissionDenied, msg+" (scope of "+id.Name+": "+id.Scope.String()+")",
		switchboardv1.ErrorReason_ERROR_REASON_OUT_OF_SCOPE, map[string]string{"scope": id.Scope.String()})
}

func rateLimited(id Identity, wait time.Duration) error {
	return statusOf(codes.ResourceExhausted,
		fmt.Sprintf("rate limit of %s exceeded; retry after %v", id.Name, wait.Round(time.Millisecond)),
		switchboardv1.ErrorReason_ERROR_REASON_RATE_LIMITED, map[string]string{"retry_after_ms": strconv.FormatInt(wait.Milliseconds(), 10)},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)})
}

func tooManyStreams(id Identity, limit int) error {
	return statusOf(codes.ResourceExhausted,
		fmt.Sprintf("%s already has %d Receive and WatchEvents streams open, the most one identity may; close one first", id.Name, limit),
		switchboardv1.ErrorReason_ERROR_REASON_TOO_MANY_STREAMS, map[string]string{"limit": strconv.Itoa(limit)})
}

// shortMethod is "Receive" for "/switchboard.v1.SwitchboardService/Receive".
func shortMethod(full string) string {
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[i+1:]
	}
	return full
}
