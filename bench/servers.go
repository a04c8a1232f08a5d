package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/switchboard-dev/switchboard/hl7"
)

// ServeACK runs a baseline MLLP server on ln until ctx ends: for each frame
// it reads the HL7 header and writes a proper ACK. When db is non-nil it
// first writes the frame to db with one synced Set (the minimal durable
// server: nothing else between the read and the ACK). Compare Switchboard
// with it to see what the journal, bookkeeping and gRPC plumbing cost.
func ServeACK(ctx context.Context, ln net.Listener, db *pebble.DB) error {
	var seq atomic.Uint64
	var wg sync.WaitGroup
	conns := map[net.Conn]struct{}{}
	var mu sync.Mutex
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	defer wg.Wait()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		mu.Lock()
		conns[nc] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, nc)
				mu.Unlock()
				nc.Close()
			}()
			serveACKConn(nc, db, &seq)
		})
	}
}

// serveACKConn is the simplest correct MLLP server, line by line as
// docs/performance.md describes it: read one frame with a bufio.Reader
// (skip to 0x0B, read to 0x1C, read the 0x0D), store it with one synced
// Pebble Set under the next sequence (durable only), build the HL7 ACK
// (MSA-2 = MSH-10), write it framed. No limits, no bookkeeping, no
// goroutine besides the connection's.
func serveACKConn(nc net.Conn, db *pebble.DB, seq *atomic.Uint64) {
	r := bufio.NewReader(nc)
	var ack, out []byte
	var key [8]byte
	prefix := "B" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	for {
		frame, err := readMLLP(r)
		if err != nil {
			return
		}
		n := seq.Add(1)
		if db != nil {
			binary.BigEndian.PutUint64(key[:], n)
			if err := db.Set(key[:], frame, pebble.Sync); err != nil {
				return
			}
		}
		h, _ := hl7.ParseHeader(frame)
		ack = hl7.AppendAck(ack[:0], h, hl7.AckRequest{Code: hl7.AA, ControlID: prefix + strconv.FormatUint(n, 36), Time: time.Now()})
		out = mllp.AppendFrame(out[:0], ack)
		if _, err := nc.Write(out); err != nil {
			return
		}
	}
}

// readMLLP returns the next MLLP payload read from r, valid until the
// next read: bytes before 0x0B are skipped, the payload ends at 0x1C, and
// the byte after it (0x0D) is consumed.
func readMLLP(r *bufio.Reader) ([]byte, error) {
	for {
		_, err := r.ReadSlice(0x0b)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
	var frame []byte
	for {
		p, err := r.ReadSlice(0x1c)
		if err == nil {
			if frame == nil {
				frame = p[:len(p)-1]
			} else {
				frame = append(frame, p[:len(p)-1]...)
			}
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
		frame = append(frame, p...) // longer than the buffer: copy
	}
	if _, err := r.ReadByte(); err != nil {
		return nil, err
	}
	return frame, nil
}

// OpenBaselineDB opens a bare Pebble database for the minimal durable
// server, with Pebble's default options: the simplest correct server does
// not tune its storage engine (a 64 MiB memtable, as the suite used before
// 2026-12-02, made it 5-10% slower at 8 connections).
func OpenBaselineDB(dir string) (*pebble.DB, error) {
	return pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)           {}
func (quietLogger) Errorf(string, ...any)          {}
func (quietLogger) Fatalf(format string, a ...any) { panic("pebble: fatal: " + format) }

// EchoServer is the plain grpc-go unary echo the gRPC path is compared with:
// grpc-go's own benchmark service, answering each call with its payload.
type EchoServer struct {
	testpb.UnimplementedBenchmarkServiceServer
}

// UnaryCall echoes the request payload.
func (EchoServer) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

// ServeEcho serves EchoServer on ln until ctx ends.
func ServeEcho(ctx context.Context, ln net.Listener) error {
	s := grpc.NewServer()
	testpb.RegisterBenchmarkServiceServer(s, EchoServer{})
	stop := context.AfterFunc(ctx, s.Stop)
	defer stop()
	return s.Serve(ln)
}
