package observe

import (
	"fmt"
	"testing"

	"github.com/switchboard-dev/switchboard/transport"
)

func TestJoin(t *testing.T) {
	if Join() != nil || Join(nil, nil) != nil {
		t.Error("Join of nothing is not nil")
	}
	one := &transport.Observer{}
	if Join(nil, one) != one {
		t.Error("Join of one Observer is not that Observer")
	}
	var calls []string
	a := &transport.Observer{
		AckSent:      func(_ *transport.Conn, code transport.AckCode) { calls = append(calls, fmt.Sprint("a:ack:", code)) },
		ConnRejected: func(l, r string, _ transport.RejectReason) { calls = append(calls, "a:rejected:"+l) },
	}
	c := &transport.Observer{
		FrameAnswered: func(_ *transport.Conn, in *transport.Frame, code transport.AckCode, _ error) {
			calls = append(calls, fmt.Sprint("c:answered:", in.Seq, ":", code))
		},
	}
	b := &transport.Observer{
		AckSent:    func(_ *transport.Conn, code transport.AckCode) { calls = append(calls, fmt.Sprint("b:ack:", code)) },
		ConnOpened: func(*transport.Conn) { calls = append(calls, "b:opened") },
	}
	j := Join(a, nil, b, c)
	j.AckSent(nil, transport.AckAA)
	j.ConnOpened(nil)
	j.ConnRejected("adt", "127.0.0.1:9", transport.RejectPerSource)
	j.FrameAnswered(nil, &transport.Frame{Seq: 7}, transport.AckAE, nil)
	if j.FrameReceived != nil || j.SendDone != nil || j.FramingError != nil || j.ConnClosed != nil {
		t.Error("Join set funcs no Observer has")
	}
	if got, want := fmt.Sprint(calls), "[a:ack:AA b:ack:AA b:opened a:rejected:adt c:answered:7:AE]"; got != want {
		t.Errorf("calls %s; want %s", got, want)
	}
}
