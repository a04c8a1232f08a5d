package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Calls between instances are NATS requests to
// "switchboard.<cluster>.rpc.<instance>" with the gRPC method's full name
// in the header Sb-Method, the marshalled request as the body and the
// caller's remaining deadline in Sb-Timeout (milliseconds). The reply is
// the marshalled response, or, with the header Sb-Status set, a marshalled
// google.rpc.Status. Authentication and authorization happen once, on the
// instance the client called; the NATS account is the trust boundary
// between instances (docs/scale-out.md).
const (
	hdrMethod  = "Sb-Method"
	hdrTimeout = "Sb-Timeout"
	hdrStatus  = "Sb-Status"
)

// defaultCallTimeout bounds a call whose caller set no deadline.
const defaultCallTimeout = 30 * time.Second

// Handler answers a call from another instance: method is the gRPC full
// method name, req the marshalled request. It returns the marshalled
// response, or an error, which the caller receives as its gRPC status.
type Handler func(ctx context.Context, method string, req []byte) ([]byte, error)

func (n *Node) subject(instance string) string {
	return "switchboard." + n.cfg.Cluster + ".rpc." + instance
}

// Serve answers calls to this instance with h until Close. Each call runs
// in its own goroutine, bounded by the caller's deadline.
func (n *Node) Serve(h Handler) error {
	sub, err := n.cfg.Conn.Subscribe(n.subject(n.cfg.Instance), func(m *nats.Msg) {
		n.done.Add(1)
		go func() {
			defer n.done.Done()
			n.answer(m, h)
		}()
	})
	if err != nil {
		return fmt.Errorf("cluster: serve calls: %w", err)
	}
	// Once the server has the subscription, calls find it.
	if err := n.cfg.Conn.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("cluster: serve calls: %w", err)
	}
	n.mu.Lock()
	n.subs = append(n.subs, sub)
	n.mu.Unlock()
	return nil
}

func (n *Node) answer(m *nats.Msg, h Handler) {
	timeout := defaultCallTimeout
	if ms, err := strconv.ParseInt(m.Header.Get(hdrTimeout), 10, 64); err == nil && ms > 0 {
		timeout = time.Duration(ms) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	out, err := h(ctx, m.Header.Get(hdrMethod), m.Data)
	reply := nats.NewMsg(m.Reply)
	if err != nil {
		b, _ := proto.Marshal(status.Convert(err).Proto())
		reply.Header.Set(hdrStatus, "1")
		out = b
	}
	reply.Data = out
	if err := m.RespondMsg(reply); err != nil {
		n.log.Warn("could not answer a call from another instance", "method", m.Header.Get(hdrMethod), "err", err)
	}
}

// Call calls method on instance with the marshalled request and returns
// the marshalled response. Its error is a gRPC status error: the owner's,
// or UNAVAILABLE when the instance does not answer.
func (n *Node) Call(ctx context.Context, instance, method string, req []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultCallTimeout)
		defer cancel()
	}
	dl, _ := ctx.Deadline()
	m := nats.NewMsg(n.subject(instance))
	m.Header.Set(hdrMethod, method)
	m.Header.Set(hdrTimeout, strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10))
	m.Data = req
	if int64(len(req))+1024 > n.cfg.Conn.MaxPayload() {
		return nil, status.Errorf(codes.ResourceExhausted, "request of %d bytes is too large to route to instance %q (NATS max_payload %d)", len(req), instance, n.cfg.Conn.MaxPayload())
	}
	r, err := n.cfg.Conn.RequestMsgWithContext(ctx, m)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return nil, status.Errorf(codes.DeadlineExceeded, "instance %q did not answer in time", instance)
	case errors.Is(err, context.Canceled):
		return nil, status.FromContextError(err).Err()
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "instance %q is not answering: %v", instance, err)
	}
	if r.Header.Get(hdrStatus) != "" {
		var st spb.Status
		if err := proto.Unmarshal(r.Data, &st); err != nil {
			return nil, status.Errorf(codes.Internal, "unreadable error from instance %q: %v", instance, err)
		}
		return nil, status.ErrorProto(&st)
	}
	return r.Data, nil
}
