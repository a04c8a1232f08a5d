package peersim

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/switchboard-dev/switchboard/transport"
)

// AckKind names an acknowledgement mode; the names are those of the API's
// AckPolicy kinds.
type AckKind string

// Ack kinds.
const (
	AckHL7        AckKind = "hl7"
	AckSingleByte AckKind = "single-byte"
	AckMLLPCommit AckKind = "mllp-commit"
	AckFixed      AckKind = "fixed"
	AckNone       AckKind = "none"
)

// AckKinds lists the kinds, for help texts.
func AckKinds() []AckKind {
	return []AckKind{AckHL7, AckSingleByte, AckMLLPCommit, AckFixed, AckNone}
}

// AckMode is how the peer acknowledges (listen) or what it expects back
// (send): one of the API's acknowledgement policies.
type AckMode struct {
	Kind AckKind
	// FixedACK and FixedNAK are the fixed policy's payloads.
	FixedACK, FixedNAK []byte
}

// ParseAckKind reads an ack kind name.
func ParseAckKind(s string) (AckKind, error) {
	for _, k := range AckKinds() {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown ack mode %q (want %s)", s, joinKinds())
}

func joinKinds() string {
	var names []string
	for _, k := range AckKinds() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

// Policy returns transport's policy for the mode.
func (m AckMode) Policy() transport.AckPolicy {
	switch m.Kind {
	case AckSingleByte:
		return transport.SingleByteAck()
	case AckMLLPCommit:
		return transport.MLLPCommitAck()
	case AckFixed:
		return transport.FixedAck(m.FixedACK, m.FixedNAK)
	case AckNone:
		return transport.NoAck()
	}
	return transport.HL7Ack()
}

// Validate reports whether the mode can be used with framing f.
func (m AckMode) Validate(f transport.Framing) error {
	if _, err := ParseAckKind(string(m.Kind)); err != nil {
		return err
	}
	if m.Kind != AckFixed && (len(m.FixedACK) > 0 || len(m.FixedNAK) > 0) {
		return errors.New("fixed ACK and NAK payloads need the fixed ack mode")
	}
	if err := f.Validate(); err != nil {
		return err
	}
	return m.Policy().Validate(f)
}

// positive is the mode's positive code.
func (m AckMode) positive() string {
	if m.Kind == AckHL7 {
		return "AA"
	}
	return "ACK"
}

// errNAK makes transport's policies build their negative answer: they
// answer NAK to a frame that could not be stored.
var errNAK = errors.New("peersim: the scenario says NAK")

// byteAnswer builds a byte or fixed policy's ACK or NAK for payload, with
// transport's own code. close is true when the policy has no NAK and closes
// the connection instead (fixed without a NAK payload).
func (m AckMode) byteAnswer(payload []byte, nak bool) (answer []byte, close bool) {
	in := &transport.Frame{Payload: payload, NewControlID: func() string { return "" }}
	if nak {
		in.StoreErr = errNAK
	}
	r := m.Policy().Reply(context.Background(), nil, in)
	return r.Payload, r.Close
}

// Framing kinds by name, as in transport.FramingKind.String.
var framingKinds = []transport.FramingKind{
	transport.FramingMLLP, transport.FramingLengthPrefix, transport.FramingDelimiter, transport.FramingStartEnd,
}

// ParseFramingKind reads a framing name: mllp, length-prefix, delimiter or
// start-end.
func ParseFramingKind(s string) (transport.FramingKind, error) {
	var names []string
	for _, k := range framingKinds {
		if k.String() == s {
			return k, nil
		}
		names = append(names, k.String())
	}
	return 0, fmt.Errorf("unknown framing %q (want %s)", s, strings.Join(names, ", "))
}

// Unescape reads a marker or payload given on a command line with Go
// escapes, e.g. `\n`, `\r\n` or `\x02`.
func Unescape(s string) ([]byte, error) {
	if !strings.Contains(s, `\`) {
		return []byte(s), nil
	}
	u, err := strconv.Unquote(`"` + strings.ReplaceAll(s, `"`, `\"`) + `"`)
	if err != nil {
		return nil, fmt.Errorf("%q: not a valid escaped string (use Go escapes such as \\n, \\r, \\x02)", s)
	}
	return []byte(u), nil
}
