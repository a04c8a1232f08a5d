package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/switchboard-dev/switchboard/transport"
)

// InboundConfig describes MLLP load against a listener: Conns connections,
// each with one message in flight (the MLLP rule).
type InboundConfig struct {
	Target string // label for the result
	Addr   string // the listener, host:port
	// TLS, when set, makes every connection a TLS client with this config.
	TLS   *tls.Config
	Conns int
	// Size is the HL7 message size in bytes (padded with an NTE segment).
	Size int
	// Duration of the measured phase, after Warmup. Ignored when Count > 0.
	Duration time.Duration
	Warmup   time.Duration
	// Count stops after this many messages in total (no warm-up).
	Count int
	// Rate paces the total load in messages/s (0: as fast as ACKs come).
	// Latency is measured from the write, not the schedule: timer slack in
	// this process (up to a millisecond) is not the server's. A server too
	// slow for the rate shows as a rate below it.
	Rate float64
	// AckTimeout bounds the wait for each ACK. Zero: 10 s.
	AckTimeout time.Duration
	// IDBase is added to each worker's message counter in MSH-10, so runs
	// with bases far enough apart (more than the messages a worker sends)
	// send different control ids: a listener suppressing duplicates
	// remembers the ids of earlier runs. Zero: every run sends the same
	// ids.
	IDBase int
}

func (c *InboundConfig) defaults() {
	c.Conns = max(c.Conns, 1)
	if c.Size <= 0 {
		c.Size = 260
	}
	if c.Duration <= 0 && c.Count <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 10 * time.Second
	}
}

var mllp = transport.Framing{Kind: transport.FramingMLLP}.WithDefaults()

// controlIDWidth is the fixed width of generated MSH-10 values, so every
// message has the same size and the id can be rewritten in place.
const controlIDWidth = 16

// Message returns an HL7 v2.5 ADT^A01 of size bytes whose MSH-10 is the 16
// bytes at the returned offset. It is never shorter than its MSH and PID
// segments (126 bytes), and a size less than 9 bytes above that, too small
// for the padding segment, gives those 126.
func Message(size int) (msg []byte, idOffset int) {
	head := "MSH|^~\\&|BENCH|LOAD|SWITCHBOARD|TEST|20261125000000||ADT^A01^ADT_A01|"
	msg = append(msg, head...)
	idOffset = len(msg)
	msg = append(msg, bytes.Repeat([]byte("0"), controlIDWidth)...)
	msg = append(msg, "|P|2.5\rPID|1||123456^^^HOSP^MR||DOE^JANE\r"...)
	if pad := size - len(msg) - len("NTE|1||\r"); pad > 0 {
		msg = append(msg, "NTE|1||"...)
		msg = append(msg, bytes.Repeat([]byte("x"), pad)...)
		msg = append(msg, '\r')
	}
	return msg, idOffset
}

// putID writes worker w's n-th control id into dst (controlIDWidth bytes,
// "W" 4 digits "N" 10 digits) without allocating.
func putID(dst []byte, w, n int) {
	dst[0], dst[5] = 'W', 'N'
	digits(dst[1:5], w)
	digits(dst[6:16], n)
}

func digits(dst []byte, v int) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

// Inbound runs MLLP load and checks every ACK: MSA-1 must be AA or CA and
// MSA-2 the sent MSH-10.
func Inbound(ctx context.Context, cfg InboundConfig) (Result, error) {
	cfg.defaults()
	res := Result{Group: "inbound", Target: cfg.Target, Conns: cfg.Conns, Size: cfg.Size, OfferedRate: cfg.Rate}
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	measureTo := measureFrom.Add(cfg.Duration)
	if cfg.Count > 0 {
		measureFrom, measureTo = start, time.Time{}
	}
	var remaining chan struct{}
	if cfg.Count > 0 {
		remaining = make(chan struct{}, cfg.Count)
		for range cfg.Count {
			remaining <- struct{}{}
		}
		close(remaining)
	}
	lats := make([]latencies, cfg.Conns)
	errs := make([]errCounter, cfg.Conns)
	var wg sync.WaitGroup
	for w := range cfg.Conns {
		errs[w] = errCounter{}
		wg.Go(func() {
			inboundWorker(ctx, cfg, w, remaining, measureFrom, measureTo, &lats[w], errs[w])
		})
	}
	wg.Wait()
	end := time.Now()
	if !measureTo.IsZero() && end.After(measureTo) {
		end = measureTo
	}
	return finish(res, end.Sub(measureFrom), lats, errs, "no message to "+cfg.Addr+" was acknowledged")
}

func inboundWorker(ctx context.Context, cfg InboundConfig, w int, remaining chan struct{}, from, to time.Time, lat *latencies, errs errCounter) {
	msg, idAt := Message(cfg.Size)
	frame := mllp.AppendFrame(nil, msg)
	idAt++ // the frame starts with 0x0B
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(cfg.Conns) / cfg.Rate * float64(time.Second))
	}
	next := time.Now().Add(time.Duration(w) * interval / time.Duration(cfg.Conns)) // spread the workers
	var nc net.Conn
	var dec *transport.Decoder
	defer func() {
		if nc != nil {
			nc.Close()
		}
	}()
	for n := 0; ; n++ {
		if ctx.Err() != nil {
			return
		}
		if remaining != nil {
			if _, ok := <-remaining; !ok {
				return
			}
		} else if time.Now().After(to) {
			return
		}
		if nc == nil {
			var err error
			nc, err = dialBench(ctx, cfg.Addr, cfg.TLS)
			if err != nil {
				errs["dial"]++
				time.Sleep(100 * time.Millisecond)
				continue
			}
			dec = transport.NewDecoder(nc, mllp)
		}
		if interval > 0 {
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			next = next.Add(interval)
		}
		sent := time.Now()
		putID(frame[idAt:], w, cfg.IDBase+n)
		_ = nc.SetDeadline(time.Now().Add(cfg.AckTimeout))
		if _, err := nc.Write(frame); err != nil {
			errs["write"]++
			nc.Close()
			nc = nil
			continue
		}
		ack, err := dec.Next()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				errs["ack_timeout"]++
			} else {
				errs["read"]++
			}
			nc.Close()
			nc = nil
			continue
		}
		done := time.Now()
		if kind := checkAck(ack, frame[idAt:idAt+controlIDWidth]); kind != "" {
			errs[kind]++
			continue
		}
		if !sent.Before(from) && (to.IsZero() || !done.After(to)) {
			*lat = append(*lat, done.Sub(sent))
		}
	}
}

// checkAck returns "" for a positive ACK of controlID, else an error kind.
func checkAck(ack, controlID []byte) string {
	i := bytes.Index(ack, []byte("\rMSA|"))
	if i < 0 {
		return "not_an_ack"
	}
	msa := ack[i+5:]
	if len(msa) < 3 || msa[2] != '|' {
		return "bad_msa"
	}
	code := string(msa[:2])
	if code != "AA" && code != "CA" {
		return "nack_" + code
	}
	id := msa[3:]
	if j := bytes.IndexAny(id, "|\r"); j >= 0 {
		id = id[:j]
	}
	if !bytes.Equal(id, controlID) {
		return "mismatch"
	}
	return ""
}
