package service_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/journal/pebblejournal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/transport"
)

// The fuzz targets below drive arbitrary bytes through a real listener,
// the real journal and Receive, and check the promise F1 broke: whatever a
// peer was told is stored is delivered, byte for byte, and Receive never
// fails. Each target starts one Switchboard and reuses it for every input;
// each input gets its own TCP connection, which the peer half-closes after
// its frame, so reading to EOF collects every answer without a timeout.

// fuzzRig is one Switchboard with one listener and one Receive stream
// (from sequence 1) that every input of a fuzz target shares.
type fuzzRig struct {
	j       *pebblejournal.Journal
	addr    string            // the listener's address
	framing transport.Framing // the listener's framing
	stream  switchboardv1.SwitchboardService_ReceiveClient
}

func newFuzzRig(f *testing.F, cfg *switchboardv1.ListenerConfig, framing transport.Framing) *fuzzRig {
	f.Helper()
	// Without fsync, for speed: what is checked is that a stored record can
	// be delivered, not that it survives a power cut.
	j, err := pebblejournal.Open(f.TempDir(), pebblejournal.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	svc, err := service.New(service.Config{Journal: j})
	if err != nil {
		f.Fatal(err)
	}
	gs, _, err := service.NewGRPCServer(svc, service.ServerOptions{})
	if err != nil {
		f.Fatal(err)
	}
	bc := bufconn.Listen(1 << 20)
	go func() { _ = gs.Serve(bc) }()
	cc, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return bc.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(func() {
		cancel()
		sctx, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		svc.Shutdown(sctx)
		gs.Stop()
		_ = cc.Close()
		if err := j.Close(); err != nil {
			f.Errorf("journal.Close: %v", err)
		}
	})
	client := switchboardv1.NewSwitchboardServiceClient(cc)
	cfg.Address = "127.0.0.1:0"
	// No connection limits in the way: inputs come fast, one connection each.
	cfg.MaxConnections, cfg.MaxConnectionsPerSource = transport.MaxConnectionsLimit, transport.MaxConnectionsLimit
	resp, err := client.StartListener(ctx, &switchboardv1.StartListenerRequest{ListenerId: "fuzz", Config: cfg})
	if err != nil {
		f.Fatal(err)
	}
	stream, err := client.Receive(ctx, &switchboardv1.ReceiveRequest{StartSequence: proto.Uint64(1)})
	if err != nil {
		f.Fatal(err)
	}
	return &fuzzRig{j: j, addr: resp.GetListener().GetStatus().GetBoundAddress(), framing: framing, stream: stream}
}

// exchange sends payload as one frame on a new connection, half-closes it,
// and returns the answers the listener wrote before closing its end, and
// the records the frame added to the journal as Receive delivered them.
func (r *fuzzRig) exchange(t *testing.T, payload []byte) (answers [][]byte, stored []*switchboardv1.ReceivedMessage) {
	t.Helper()
	before := r.lastSeq(t)
	nc, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(r.framing.AppendFrame(nil, payload)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := nc.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	dec := transport.NewDecoder(nc, r.framing)
	for {
		a, err := dec.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading answers: %v", err)
		}
		answers = append(answers, bytes.Clone(a))
	}
	// The listener answered and closed only after the frame's append
	// returned, so the journal holds every record the frame made.
	for last := r.lastSeq(t); before < last; {
		resp, err := r.stream.Recv()
		if err != nil {
			t.Fatalf("Receive failed after sequence %d: %v", before, err)
		}
		for _, m := range resp.GetMessages() {
			if m.GetSequence() != before+1 {
				t.Fatalf("Receive delivered sequence %d after %d", m.GetSequence(), before)
			}
			before = m.GetSequence()
			stored = append(stored, m)
		}
	}
	return answers, stored
}

func (r *fuzzRig) lastSeq(t *testing.T) uint64 {
	t.Helper()
	seq, err := r.j.LastSeq(t.Context())
	if err != nil {
		t.Fatalf("journal LastSeq: %v", err)
	}
	return seq
}

// checkStored checks a record the listener stored for a frame whose payload
// was payload.
func checkStored(t *testing.T, m *switchboardv1.ReceivedMessage, payload []byte, kind switchboardv1.RecordKind) {
	t.Helper()
	checkValidUTF8(t, "ReceivedMessage", m)
	if !bytes.Equal(m.GetPayload(), payload) {
		t.Errorf("Receive delivered payload %q, want %q", m.GetPayload(), payload)
	}
	if m.GetKind() != kind {
		t.Errorf("Receive delivered kind %v, want %v", m.GetKind(), kind)
	}
	if m.GetListenerId() != "fuzz" || m.GetConnectionId() == "" {
		t.Errorf("Receive delivered listener %q connection %q", m.GetListenerId(), m.GetConnectionId())
	}
}

// FuzzInboundDelivered sends arbitrary bytes as one length-prefixed frame
// (which carries any bytes, 0x0B and 0x1C included) under the single-byte
// policy. Every frame is answered, except the bytes 0x06 and 0x15 alone,
// which are themselves acknowledgements nobody waited for (not stored,
// not answered); a frame answered 0x06 is delivered byte for byte, and a
// frame answered 0x15 that was stored anyway is delivered too.
func FuzzInboundDelivered(f *testing.F) {
	for _, seed := range [][]byte{
		{}, {0x06}, {0x15}, {0x06, 0x06}, {0x0b}, {0x1c, 0x0d}, {0}, {0xff},
		[]byte("not hl7 at all"),
		hl7Message("SEED-1"),
		hl7MessageWith([]byte("ADT^A08^M\xdcLLER"), []byte("M\xfcller-\xff")),
		hl7MessageWith([]byte("\x0bADT\x1c"), []byte("\x1c\x0d\x0b")),
		hl7MessageWith([]byte("ACK"), []byte("\x80")),
		mllp.AppendFrame(nil, hl7Message("FRAMED")),
		append([]byte("\xef\xbb\xbf"), hl7Message("BOM")...),
		[]byte("MSH|^~\\&|\xff|\xfe|\r"),
	} {
		f.Add(seed)
	}
	rig := newFuzzRig(f, &switchboardv1.ListenerConfig{
		Framing:   &switchboardv1.Framing{Kind: &switchboardv1.Framing_LengthPrefix{LengthPrefix: &switchboardv1.LengthPrefixFraming{}}},
		AckPolicy: &switchboardv1.AckPolicy{Kind: &switchboardv1.AckPolicy_SingleByte{SingleByte: &switchboardv1.SingleByteAckPolicy{}}},
	}, transport.Framing{Kind: transport.FramingLengthPrefix})
	f.Fuzz(func(t *testing.T, payload []byte) {
		answers, stored := rig.exchange(t, payload)
		if len(answers) > 1 || len(stored) > 1 {
			t.Fatalf("one frame got %d answers and %d records", len(answers), len(stored))
		}
		for _, m := range stored {
			checkStored(t, m, payload, switchboardv1.RecordKind_RECORD_KIND_MESSAGE)
		}
		byteAck := len(payload) == 1 && (payload[0] == 0x06 || payload[0] == 0x15)
		switch {
		case len(answers) == 0 && !byteAck:
			t.Errorf("frame %q was never answered", payload)
		case len(answers) == 0:
		case bytes.Equal(answers[0], []byte{0x06}):
			if len(stored) != 1 {
				t.Errorf("frame %q was acknowledged but Receive did not deliver it", payload)
			}
		case !bytes.Equal(answers[0], []byte{0x15}):
			t.Errorf("frame %q answered %q, want 0x06 or 0x15", payload, answers[0])
		}
	})
}

// FuzzInboundHeaderDelivered splices arbitrary bytes into MSH-9 and MSH-10
// of a valid HL7 message sent over MLLP (without 0x0B and 0x1C, which cannot
// stand inside an MLLP frame). Every such message is stored (kind ACK when
// its MSH-9 says ACK) and delivered byte for byte, with message_type and
// control_id the API's reading of the header fields; it is answered unless its header says not to (an ACK, or
// enhanced mode), and a positive answer always means it was delivered.
func FuzzInboundHeaderDelivered(f *testing.F) {
	for _, seed := range [][2]string{
		{"ADT^A01^ADT_A01", "SEED-1"},
		{"ADT^A08^M\xdcLLER", "M\xfcller-\xe9\xe8"},
		{"ADT^\x80\xbf", "\x80\x81\xbf"},
		{"\xff\xfe", "ID-\xff"},
		{"ADT^A01\xc3", "\xe2\x82"},
		{"\xc0\xaf", "\xed\xa0\x80"},
		{"ACK", "\xe9"},
		{"ACK^A01", ""},
		{"ADT^A01", ""},
		{"ADT^A01|X|P|2.5|||NE|AL", "\xfc"},
		{"ADT\rPID|1", "\xff"},
		{"ADT\nMSA|AA|\xff", "\n"},
		{"", "\x00"},
	} {
		f.Add([]byte(seed[0]), []byte(seed[1]))
	}
	rig := newFuzzRig(f, &switchboardv1.ListenerConfig{}, mllp)
	f.Fuzz(func(t *testing.T, messageType, controlID []byte) {
		messageType, controlID = withoutMLLPMarkers(messageType), withoutMLLPMarkers(controlID)
		msg := hl7MessageWith(messageType, controlID)
		h, err := hl7.ParseHeader(msg)
		if err != nil {
			t.Fatalf("ParseHeader: %v", err) // the message starts with a valid MSH
		}
		answers, stored := rig.exchange(t, msg)
		if len(answers) > 1 || len(stored) != 1 {
			t.Fatalf("message got %d answers and %d records; want at most 1 and exactly 1", len(answers), len(stored))
		}
		m := stored[0]
		kind := switchboardv1.RecordKind_RECORD_KIND_MESSAGE
		if h.IsAck() {
			kind = switchboardv1.RecordKind_RECORD_KIND_ACK // an acknowledgement nobody waited for
		}
		checkStored(t, m, msg, kind)
		// Fields shift when the spliced bytes hold a field or segment
		// separator; what the API reports is always the header as parsed.
		wantType, wantID := apiText([]byte(h.MessageType)), apiText([]byte(h.ControlID))
		if !bytes.ContainsAny(messageType, "|\r\n") && !bytes.ContainsAny(controlID, "|\r\n") {
			wantType, wantID = apiText(messageType), apiText(controlID)
		}
		if m.GetMessageType() != wantType || m.GetControlId() != wantID {
			t.Errorf("message_type %q control_id %q; want %q %q", m.GetMessageType(), m.GetControlId(), wantType, wantID)
		}
		if len(answers) == 0 && !h.IsAck() && !h.Enhanced() {
			t.Errorf("message with MSH-9 %q MSH-10 %q was never answered", h.MessageType, h.ControlID)
		}
		if len(answers) == 1 {
			if _, err := hl7.ParseAck(answers[0]); err != nil {
				t.Errorf("answer %q is not an HL7 ACK: %v", answers[0], err)
			}
		}
	})
}

// withoutMLLPMarkers returns b without the bytes 0x0B and 0x1C.
func withoutMLLPMarkers(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c != 0x0b && c != 0x1c {
			out = append(out, c)
		}
	}
	return out
}
