package peersim_test

import (
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/internal/peersim"
)

// TestSendToSimulator plays the issue's example ("answer the first 3 AA,
// then silence, then reset") to the simulator's own sender: three AA, then
// two messages in doubt, then AA again once the script is over.
func TestSendToSimulator(t *testing.T) {
	ctx := testCtx(t)
	sc, err := peersim.Load("testdata/three-aa-silence-reset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	peer := listen(t, peersim.ServerConfig{Scenario: sc})
	msgs, err := peersim.ReadMessages([]string{"testdata/messages", "testdata/messages"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var results []peersim.Result
	rep, err := peersim.Send(ctx, peersim.SendConfig{
		Address: peer.Addr().String(),
		// How long the sender waits for the answer the silent step never
		// sends; not a timing assertion.
		Timeout:  300 * time.Millisecond,
		OnResult: func(r peersim.Result) { results = append(results, r) },
	}, msgs[:7])
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 7 || rep.Codes["AA"] != 5 || rep.Accepted != 5 || rep.InDoubt != 2 ||
		rep.Failures["ack timeout"] != 1 || rep.Failures["connection lost"] != 1 || rep.AllPositive() {
		t.Errorf("report = %+v", rep)
	}
	for i, want := range []string{"AA", "AA", "AA", "ack timeout", "connection lost", "AA", "AA"} {
		got := results[i].Code
		if results[i].Err != nil {
			got = results[i].Failure()
		}
		if got != want {
			t.Errorf("message %d (%s): %s, want %s", i+1, results[i].Message.Source, got, want)
		}
	}
	<-peer.Done()
	_ = peer.Close() // the last answer may reach the sender before the peer counts it
	if st := peer.Stats(); st.Messages != 7 || st.Silent != 1 || st.Reset != 1 || st.Answers["AA"] != 5 || st.Connections != 3 {
		t.Errorf("peer stats = %+v", st)
	}
}

// TestSendConnectFails reports every message as not sent when nobody
// listens, and says so.
func TestSendConnectFails(t *testing.T) {
	peer := listen(t, peersim.ServerConfig{})
	addr := peer.Addr().String()
	_ = peer.Close()
	msgs := peersim.Split([]byte("MSH|^~\\&|A|||||||1|P|2.5\nMSH|^~\\&|A|||||||2|P|2.5\n"))
	rep, err := peersim.Send(testCtx(t), peersim.SendConfig{Address: addr}, []peersim.Message{{Payload: msgs[0]}, {Payload: msgs[1]}})
	if err == nil || rep.NotSent != 2 || rep.Failures["connect failed"] != 2 || rep.AllPositive() {
		t.Errorf("Send to a closed port = %+v, %v", rep, err)
	}
}

// TestSendInvalidPayload: without MSH-10 an HL7 ACK cannot be matched, so
// the message is not sent and the others go on.
func TestSendInvalidPayload(t *testing.T) {
	peer := listen(t, peersim.ServerConfig{})
	msgs := peersim.Split([]byte("MSH|^~\\&|A|||||||1|P|2.5\nMSH|^~\\&|A||||||||P|2.5\nMSH|^~\\&|A|||||||3|P|2.5\n"))
	var in []peersim.Message
	for _, m := range msgs {
		in = append(in, peersim.Message{Payload: m})
	}
	rep, err := peersim.Send(testCtx(t), peersim.SendConfig{Address: peer.Addr().String()}, in)
	if err != nil || rep.Accepted != 2 || rep.NotSent != 1 || rep.Failures["invalid payload"] != 1 {
		t.Errorf("report = %+v, %v", rep, err)
	}
}

// TestListenIgnoresACKs: an HL7 ACK sent to the peer is not answered (that
// would loop) and does not use up a step.
func TestListenIgnoresACKs(t *testing.T) {
	peer := listen(t, peersim.ServerConfig{Scenario: &peersim.Scenario{Steps: []peersim.Step{{Action: peersim.Answer, Code: "AE"}}}})
	ack := peersim.Message{Payload: []byte("MSH|^~\\&|A||||||ACK^A01^ACK|X1|P|2.5\rMSA|AA|Q1\r")}
	msg := peersim.Message{Payload: []byte("MSH|^~\\&|A||||||ADT^A01|Q2|P|2.5\r")}
	rep, err := peersim.Send(testCtx(t), peersim.SendConfig{Address: peer.Addr().String(), Timeout: 300 * time.Millisecond}, []peersim.Message{ack, msg})
	if err != nil || rep.InDoubt != 1 || rep.Codes["AE"] != 1 {
		t.Errorf("report = %+v, %v", rep, err)
	}
	_ = peer.Close()
	if st := peer.Stats(); st.Ignored != 1 || st.Answers["AE"] != 1 {
		t.Errorf("peer stats = %+v", st)
	}
}

// TestSilencePause: a silent step with a pause leaves its message
// unanswered and the connection unread for the pause; the next message
// (on the connection the sender opens after resetting the silent one) is
// answered.
func TestSilencePause(t *testing.T) {
	sc, err := peersim.Parse("pause.yaml", []byte("steps:\n  - silence: 50ms\n  - answer: AR\n"))
	if err != nil {
		t.Fatal(err)
	}
	peer := listen(t, peersim.ServerConfig{Scenario: sc})
	msgs := peersim.Split([]byte("MSH|^~\\&|A|||||||1|P|2.5\nMSH|^~\\&|A|||||||2|P|2.5\n"))
	rep, err := peersim.Send(testCtx(t), peersim.SendConfig{Address: peer.Addr().String(), Timeout: 300 * time.Millisecond},
		[]peersim.Message{{Payload: msgs[0]}, {Payload: msgs[1]}})
	if err != nil || rep.InDoubt != 1 || rep.Failures["ack timeout"] != 1 || rep.Codes["AR"] != 1 {
		t.Errorf("report = %+v, %v", rep, err)
	}
	<-peer.Done()
}
