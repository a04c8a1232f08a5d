package transport

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

// TestMessageWithMSAIsAnswered: with no Send waiting, whether a frame is an
// acknowledgement is decided by MSH-9 alone. An order or query response
// carrying MSA is a message: stored and answered like any other. An ACK is
// stored as one and never answered.
func TestMessageWithMSAIsAnswered(t *testing.T) {
	sink := &memSink{}
	opened := make(chan *Conn, 1)
	l := startListener(t, ListenerConfig{Sink: sink, OnOpen: func(c *Conn) { opened <- c }})
	p := dialRaw(t, l, mllpFraming)

	for _, m := range [][]byte{
		hl7.AppendAck(nil, mustHeader(t, adt), hl7.AckRequest{Code: hl7.AA, ControlID: "ACK-1", Time: time.Now()}),
		hl7Msg("ORL^O22^ORL_O22", "ORL-1", "MSA|AA|ORD-7", "PID|1||123"),
		hl7Msg("RSP^K22^RSP_K21", "RSP-1", "MSA|AA|QRY-3", "QAK|QRY-3|OK"),
		adt,
	} {
		p.send(m)
	}
	// The ACK got no answer: the first one is the ORL's.
	for _, id := range []string{"ORL-1", "RSP-1", "MSG00001"} {
		if a := p.ackOf(); a.Code != hl7.AA || a.ControlID != id {
			t.Errorf("answer %s for %q, want AA for %q", a.Code, a.ControlID, id)
		}
	}

	want := []struct {
		class FrameClass
		typ   string
	}{{FrameAck, "ACK^A01^ACK"}, {FrameMessage, "ORL^O22^ORL_O22"}, {FrameMessage, "RSP^K22^RSP_K21"}, {FrameMessage, "ADT^A01^ADT_A01"}}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.msgs) != len(want) {
		t.Fatalf("sink holds %d messages, want %d", len(sink.msgs), len(want))
	}
	for i, w := range want {
		if m := sink.msgs[i]; m.Class != w.class || m.MessageType != w.typ {
			t.Errorf("stored %d: %v %q, want %v %q", i, m.Class, m.MessageType, w.class, w.typ)
		}
	}
	c := <-opened
	// An answer is counted once written: the peer may read it first.
	waitUntil(t, func() bool { return c.Info().Counters.AcksSent[AckAA] == 3 })
	if k := c.Info().Counters; k.UnsolicitedAcks != 1 {
		t.Errorf("%d unsolicited acks, want 1", k.UnsolicitedAcks)
	}
}

func mustHeader(t *testing.T, msg []byte) hl7.Header {
	t.Helper()
	h, err := hl7.ParseHeader(msg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestQueryResponseWhileSendWaits: while a Send waits, a response carrying
// MSA is its reply only when MSA-2 is the sent MSH-10. A response to
// another message is stored and answered as a message, and the Send goes on
// waiting for its own.
func TestQueryResponseWhileSendWaits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	query := hl7Msg("QBP^Q22^QBP_Q21", "Q-1", "QPD|IHE PDQ Query|Q-1")
	other := hl7Msg("RSP^K22^RSP_K21", "RSP-1", "MSA|AA|Q-0", "QAK|Q-0|OK")
	reply := hl7Msg("RSP^K22^RSP_K21", "RSP-2", "MSA|AA|Q-1", "QAK|Q-1|OK")

	peerErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		peerErr <- func() error {
			nc, err := ln.Accept()
			if err != nil {
				return err
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
			f := mllpFraming.WithDefaults()
			d := NewDecoder(nc, f)
			if got, err := d.Next(); err != nil || !bytes.Equal(got, query) {
				return fmt.Errorf("peer read %q, %v; want the query", got, err)
			}
			if _, err := nc.Write(f.AppendFrame(nil, other)); err != nil {
				return err
			}
			got, err := d.Next()
			if err != nil {
				return err
			}
			if a, err := hl7.ParseAck(got); err != nil || a.Code != hl7.AA || a.ControlID != "RSP-1" {
				return fmt.Errorf("answer to the other response: %+v, %v; want AA for RSP-1", a, err)
			}
			_, err = nc.Write(f.AppendFrame(nil, reply))
			return err
		}()
	})
	defer wg.Wait()

	sink := &memSink{}
	c, err := Dial(context.Background(), DialConfig{ID: "out", Address: ln.Addr().String(), Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Send(context.Background(), query, 10*time.Second)
	if perr := <-peerErr; perr != nil {
		t.Fatalf("peer: %v (Send = %+v, %v)", perr, res, err)
	}
	if err != nil || res.Outcome != OutcomeAccepted || res.Ack.ControlID != "Q-1" || !bytes.Equal(res.Ack.Payload, reply) {
		t.Fatalf("Send = %+v, %v; want accepted with the matching response", res, err)
	}
	sink.mu.Lock()
	if len(sink.msgs) != 1 || sink.msgs[0].ControlID != "RSP-1" || sink.msgs[0].Class != FrameMessage {
		t.Errorf("sink = %+v, want the other response stored as a message", sink.msgs)
	}
	sink.mu.Unlock()
	if k := c.Info().Counters; k.AckMismatches != 0 || k.AcksSent[AckAA] != 1 || k.AcksReceived[AckAA] != 1 {
		t.Errorf("%d mismatches, %d AA sent, %d AA received; want 0, 1, 1", k.AckMismatches, k.AcksSent[AckAA], k.AcksReceived[AckAA])
	}
}
