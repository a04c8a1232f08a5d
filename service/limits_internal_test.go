package service

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/transport"
)

// Defaults and limits are written once, in transport/limits.go (and the page
// sizes in pagination.go); the API states them again, as validation rules
// and in its comments. These tests make the copies agree.

// fieldRules returns the buf.validate rules of field name of m.
func fieldRules(t *testing.T, m proto.Message, name string) *validate.FieldRules {
	t.Helper()
	fd := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil {
		t.Fatalf("%s has no field %s", m.ProtoReflect().Descriptor().FullName(), name)
	}
	r, _ := proto.GetExtension(fd.Options(), validate.E_Field).(*validate.FieldRules)
	if r == nil {
		t.Fatalf("%s.%s has no validation rules", m.ProtoReflect().Descriptor().FullName(), name)
	}
	return r
}

// TestValidationLimits: the limits protovalidate enforces at the API are
// transport's.
func TestValidationLimits(t *testing.T) {
	for _, tc := range []struct {
		m     proto.Message
		field string
		got   func(*validate.FieldRules) int64
		want  int64
	}{
		{&switchboardv1.ListenerConfig{}, "max_frame_bytes", int32Lte, transport.MaxFrameBytesLimit},
		{&switchboardv1.ConnectionConfig{}, "max_frame_bytes", int32Lte, transport.MaxFrameBytesLimit},
		{&switchboardv1.SendRequest{}, "payload", bytesMaxLen, transport.MaxFrameBytesLimit},
		{&switchboardv1.DelimiterFraming{}, "delimiter", bytesMaxLen, transport.MaxMarkerBytes},
		{&switchboardv1.StartEndFraming{}, "start", bytesMaxLen, transport.MaxMarkerBytes},
		{&switchboardv1.StartEndFraming{}, "end", bytesMaxLen, transport.MaxMarkerBytes},
		{&switchboardv1.ListenerConfig{}, "max_connections", int32Lte, transport.MaxConnectionsLimit},
		{&switchboardv1.ListenerConfig{}, "max_connections_per_source", int32Lte, transport.MaxConnectionsLimit},
		{&switchboardv1.ListListenersRequest{}, "page_size", int32Lte, maxPageSize},
		{&switchboardv1.ListConnectionsRequest{}, "page_size", int32Lte, maxPageSize},
	} {
		name := string(tc.m.ProtoReflect().Descriptor().Name()) + "." + tc.field
		if got := tc.got(fieldRules(t, tc.m, tc.field)); got != tc.want {
			t.Errorf("%s: the API allows at most %d, Go says %d", name, got, tc.want)
		}
	}
}

func int32Lte(r *validate.FieldRules) int64    { return int64(r.GetInt32().GetLte()) }
func bytesMaxLen(r *validate.FieldRules) int64 { return int64(r.GetBytes().GetMaxLen()) }

// TestLargestMessagesFit: the largest response the service can build, from
// a frame of the largest size whose header fields take up all of it in bytes
// that are not UTF-8 (so each doubles as ISO-8859-1), fits in the gRPC
// message limit; otherwise such a record would be stored and acknowledged,
// and then every Receive that reaches it would fail, as in F1.
func TestLargestMessagesFit(t *testing.T) {
	if MaxMessageBytes <= transport.MaxFrameBytesLimit {
		t.Fatalf("MaxMessageBytes %d leaves no room around a %d-byte payload", MaxMessageBytes, transport.MaxFrameBytesLimit)
	}
	payload := strings.Repeat("\xe9", transport.MaxFrameBytesLimit)
	half := payload[:len(payload)/2]
	id := strings.Repeat("x", 64) // the longest id the API accepts
	rec := &journal.Record{
		Seq: 1<<64 - 1, Time: time.Now(), ListenerID: id, ConnectionID: id,
		RemoteAddr: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%interface-name]:65535",
		Payload:    []byte(payload), MessageType: half, ControlID: half,
	}
	recv := &switchboardv1.ReceiveResponse{Messages: []*switchboardv1.ReceivedMessage{recordToProto(rec)}}
	send := sendResultToProto(transport.SendResult{
		Outcome:       transport.OutcomeRejected,
		Ack:           transport.PeerAck{Code: transport.AckAE, Payload: []byte(payload), ControlID: half, Text: half},
		SentControlID: payload,
		RoundTrip:     time.Hour,
	})
	for name, m := range map[string]proto.Message{"ReceiveResponse": recv, "SendResponse": send} {
		if n := proto.Size(m); n > MaxMessageBytes {
			t.Errorf("largest %s is %d bytes, over MaxMessageBytes (%d)", name, n, MaxMessageBytes)
		}
	}
}

// TestStatedDefaults: where a comment in the proto states a default or a
// limit as a number, it is the number the code uses.
func TestStatedDefaults(t *testing.T) {
	comments := protoComments(t, filepath.Join("..", "proto", "switchboard", "v1", "switchboard.proto"))
	const (
		unset       = "Unset:"
		unsetOrZero = "Unset or zero:"
		atMost      = "At most"
	)
	for _, tc := range []struct {
		decl, phrase string
		want         int64 // bytes, a count, or nanoseconds
	}{
		{"ListenerConfig.max_frame_bytes", unsetOrZero, transport.DefaultMaxFrameBytes},
		{"ListenerConfig.max_frame_bytes", atMost, transport.MaxFrameBytesLimit},
		{"ListenerConfig.max_connections", unsetOrZero, transport.DefaultMaxConnections},
		{"ListenerConfig.max_connections", atMost, transport.MaxConnectionsLimit},
		{"ListenerConfig.frame_timeout", unset, int64(transport.DefaultFrameTimeout)},
		{"ListenerConfig.keepalive", unset, int64(transport.DefaultKeepalive)},
		{"ListenerConfig.max_junk_bytes", unsetOrZero, transport.DefaultMaxJunkBytes},
		{"StopListenerRequest.drain_timeout", unset, int64(transport.DefaultDrainTimeout)},
		{"ConnectionConfig.connect_timeout", unset, int64(transport.DefaultConnectTimeout)},
		{"ConnectionConfig.ack_timeout", unset, int64(transport.DefaultAckTimeout)},
		{"ConnectionConfig.max_frame_bytes", unsetOrZero, transport.DefaultMaxFrameBytes},
		{"ConnectionConfig.max_frame_bytes", atMost, transport.MaxFrameBytesLimit},
		{"ConnectionConfig.keepalive", unset, int64(transport.DefaultKeepalive)},
		{"SendRequest.ack_timeout", "ack_timeout (", int64(transport.DefaultAckTimeout)},
		{"DelimiterFraming.delimiter", atMost, transport.MaxMarkerBytes},
		{"StartEndFraming.start", atMost, transport.MaxMarkerBytes},
		{"StartEndFraming.end", atMost, transport.MaxMarkerBytes},
		{"ListListenersRequest.page_size", unsetOrZero, defaultPageSize},
		{"ListListenersRequest.page_size", atMost, maxPageSize},
		{"ListConnectionsRequest.page_size", unsetOrZero, defaultPageSize},
		{"ListConnectionsRequest.page_size", atMost, maxPageSize},
		{"SwitchboardService.Send", "at most", int64(sendDeadlineMargin)},
	} {
		comment, ok := comments[tc.decl]
		if !ok {
			t.Errorf("%s: not found in the proto", tc.decl)
			continue
		}
		got, ok := statedNumber(comment, tc.phrase)
		if !ok {
			t.Errorf("%s: no number after %q in its comment: %s", tc.decl, tc.phrase, comment)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: the comment says %q %d, the code uses %d", tc.decl, tc.phrase, got, tc.want)
		}
	}
}

// statedNumber finds phrase in comment and reads the number after it with
// its unit: "4 MiB", "64 KiB", "16 bytes", "30 s", "200 ms", "1,000,000".
func statedNumber(comment, phrase string) (int64, bool) {
	re := regexp.MustCompile(regexp.QuoteMeta(phrase) + `\s*([0-9][0-9,]*)(?:\s*(KiB|MiB|bytes|ms|s)\b)?`)
	m := re.FindStringSubmatch(comment)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(m[1], ",", ""), 10, 64)
	if err != nil {
		return 0, false
	}
	unit := map[string]int64{"": 1, "bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "ms": int64(time.Millisecond), "s": int64(time.Second)}
	return n * unit[m[2]], true
}

// protoComments returns the leading comment of every field, enum value and
// RPC in a .proto file, by "Message.field" or "Service.Method", with the
// comment's lines joined by spaces.
func protoComments(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		block   = regexp.MustCompile(`^(message|service|enum|oneof)\s+(\w+)\s*\{`)
		decl    = regexp.MustCompile(`^(?:(?:repeated|optional)\s+)?[\w.]+\s+(\w+)\s*=\s*\d+`)
		rpc     = regexp.MustCompile(`^rpc\s+(\w+)\s*\(`)
		out     = map[string]string{}
		scopes  []string // the enclosing message or service of each open brace ("" for others)
		comment []string
	)
	scope := func() string {
		for i := len(scopes) - 1; i >= 0; i-- {
			if scopes[i] != "" {
				return scopes[i]
			}
		}
		return ""
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if c, ok := strings.CutPrefix(line, "//"); ok {
			comment = append(comment, strings.TrimSpace(c))
			continue
		}
		var name string
		if m := rpc.FindStringSubmatch(line); m != nil {
			name = m[1]
		} else if m := decl.FindStringSubmatch(line); m != nil && !block.MatchString(line) {
			name = m[1]
		}
		if name != "" && len(comment) > 0 {
			out[scope()+"."+name] = strings.Join(comment, " ")
		}
		comment = nil
		opened := ""
		if m := block.FindStringSubmatch(line); m != nil {
			opened = m[2]
			if m[1] == "oneof" {
				opened = scope()
			}
		}
		for range strings.Count(line, "{") - strings.Count(line, "}") {
			scopes = append(scopes, opened)
		}
		for range strings.Count(line, "}") - strings.Count(line, "{") {
			scopes = scopes[:len(scopes)-1]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
