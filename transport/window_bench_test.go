package transport

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// ackServer answers every HL7 message it reads with AA at once, as fast as
// it reads them (a peer that accepts pipelining). It stops with the test.
func ackServer(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				f := mllpFraming.WithDefaults()
				dec := NewDecoder(nc, f)
				var out []byte
				for {
					msg, err := dec.Next()
					if err != nil {
						return
					}
					h, _ := hl7.ParseHeader(msg)
					out = f.AppendFrame(out[:0], hl7.AppendAck(nil, h, hl7.AckRequest{Code: hl7.AA, ControlID: "P", Time: time.Now()}))
					if _, err := nc.Write(out); err != nil {
						return
					}
				}
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func benchConn(b *testing.B) *Conn {
	c, err := Dial(context.Background(), DialConfig{ID: "bench", Address: ackServer(b), Sink: &memSink{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkSend is the one-in-flight path: write, wait for the ACK, repeat.
func BenchmarkSend(b *testing.B) {
	c := benchConn(b)
	msgs := make([][]byte, 1024)
	for i := range msgs {
		msgs[i] = hl7Msg("ADT^A01^ADT_A01", "B"+strconv.Itoa(i))
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := c.Send(context.Background(), msgs[i%len(msgs)], 10*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDispatch keeps a window of n messages in flight, as the outbox
// does with max_in_flight n.
func BenchmarkDispatch(b *testing.B) {
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("window=%d", n), func(b *testing.B) {
			c := benchConn(b)
			msgs := make([][]byte, 1024)
			for i := range msgs {
				msgs[i] = hl7Msg("ADT^A01^ADT_A01", "B"+strconv.Itoa(i))
			}
			window := make([]*InFlight, 0, n)
			b.ResetTimer()
			for i := range b.N {
				if len(window) == n {
					if _, err := window[0].Result(); err != nil {
						b.Fatal(err)
					}
					window = append(window[:0], window[1:]...)
				}
				f, err := c.Dispatch(context.Background(), msgs[i%len(msgs)], 10*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				window = append(window, f)
			}
			for _, f := range window {
				if _, err := f.Result(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
