package peersim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchboard-dev/switchboard/transport"
)

// MaxScenarioBytes bounds a scenario file.
const MaxScenarioBytes = 1 << 20

// Load reads a scenario file (see Parse).
func Load(path string) (*Scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxScenarioBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse reads a YAML scenario; name is the file name for errors. Unknown
// keys, a value of the wrong type and a step that says two things are
// errors naming the line:
//
//	framing: mllp            # or length-prefix, or {kind: delimiter, delimiter: "\n"},
//	                         # or {kind: start-end, start: "\x02", end: "\x03"}
//	ack: hl7                 # or single-byte, mllp-commit, none, {kind: fixed, ack: OK, nak: ERR}
//	repeat: false            # start again after the last step
//	steps:
//	  - answer: AA           # AA AE AR CA CE CR (hl7), ACK NAK (the others)
//	    count: 3             # this many messages (default 1)
//	  - answer: AE
//	    text: unknown patient        # MSA-3
//	    error_code: "204"            # an ERR segment
//	    delay: 2s                    # answer late
//	  - answer: AA
//	    wrong_control_id: true       # MSA-2 is not the message's MSH-10 (or control_id: X)
//	  - silence: true        # never answer; silence: 5s also stops reading for 5 s
//	  - close: true          # close the connection (FIN)
//	  - reset: true          # reset it (RST)
//
// Parse checks the steps against the file's ack mode (HL7 when it has
// none); a caller that overrides the mode calls Validate again.
func Parse(name string, data []byte) (*Scenario, error) {
	sc := &Scenario{Name: name}
	if len(data) > MaxScenarioBytes {
		return nil, sc.errorf(0, "larger than %d bytes", MaxScenarioBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f fileYAML
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, sc.errorf(0, "empty scenario (want at least steps: or framing:)")
		}
		return nil, sc.wrap(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, sc.errorf(extra.Line, "a scenario file holds one YAML document")
	}
	sc.Repeat = f.Repeat
	if f.Framing != nil {
		fr := f.Framing.framing
		sc.Framing = &fr
	}
	mode := AckMode{Kind: AckHL7}
	if f.Ack != nil {
		mode = f.Ack.mode
		sc.Ack = &mode
	}
	if sc.Framing != nil {
		if err := mode.Validate(sc.Framing.WithDefaults()); err != nil {
			line := f.Framing.line
			if f.Ack != nil {
				line = f.Ack.line
			}
			return nil, sc.errorf(line, "%s", err)
		}
	}
	for _, s := range f.Steps {
		sc.Steps = append(sc.Steps, s.step)
	}
	if err := sc.Validate(mode); err != nil {
		return nil, err
	}
	return sc, nil
}

// wrap gives a decoding error the file name; yaml's own errors already
// name the line.
func (sc *Scenario) wrap(err error) error {
	var se *ScenarioError
	if errors.As(err, &se) {
		se.File = sc.Name
		return se
	}
	return &ScenarioError{File: sc.Name, Msg: err.Error()}
}

type fileYAML struct {
	Framing *framingYAML `yaml:"framing"`
	Ack     *ackYAML     `yaml:"ack"`
	Repeat  bool         `yaml:"repeat"`
	Steps   []stepYAML   `yaml:"steps"`
}

// checkKeys rejects keys of mapping n that are not in allowed (the
// decoder's KnownFields does not reach into custom unmarshalers).
func checkKeys(n *yaml.Node, what string, allowed ...string) error {
	if n.Kind != yaml.MappingNode {
		return &ScenarioError{Line: n.Line, Msg: what + " must be a mapping"}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !contains(allowed, k.Value) {
			return &ScenarioError{Line: k.Line, Msg: fmt.Sprintf("unknown %s key %q (known: %v)", what, k.Value, allowed)}
		}
	}
	return nil
}

// duration reads a YAML duration such as 500ms or 5s.
func duration(n *yaml.Node, key string) (time.Duration, error) {
	d, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return 0, &ScenarioError{Line: n.Line, Msg: fmt.Sprintf("%s: want a duration such as 500ms or 5s", key)}
	}
	return d, nil
}

type framingYAML struct {
	framing transport.Framing
	line    int
}

func (f *framingYAML) UnmarshalYAML(n *yaml.Node) error {
	f.line = n.Line
	var raw struct {
		Kind          string `yaml:"kind"`
		Strict        bool   `yaml:"strict"`
		Delimiter     string `yaml:"delimiter"`
		Start         string `yaml:"start"`
		End           string `yaml:"end"`
		MaxFrameBytes int    `yaml:"max_frame_bytes"`
	}
	if n.Kind == yaml.ScalarNode {
		raw.Kind = n.Value
	} else {
		if err := checkKeys(n, "framing", "kind", "strict", "delimiter", "start", "end", "max_frame_bytes"); err != nil {
			return err
		}
		if err := n.Decode(&raw); err != nil {
			return err
		}
	}
	k, err := ParseFramingKind(raw.Kind)
	if err != nil {
		return &ScenarioError{Line: n.Line, Msg: err.Error()}
	}
	f.framing = transport.Framing{Kind: k, Strict: raw.Strict, MaxFrameBytes: raw.MaxFrameBytes}
	if raw.Delimiter != "" {
		f.framing.Delimiter = []byte(raw.Delimiter)
	}
	if raw.Start != "" || raw.End != "" {
		f.framing.Start, f.framing.End = []byte(raw.Start), []byte(raw.End)
	}
	if err := f.framing.Validate(); err != nil {
		return &ScenarioError{Line: n.Line, Msg: err.Error()}
	}
	return nil
}

type ackYAML struct {
	mode AckMode
	line int
}

func (a *ackYAML) UnmarshalYAML(n *yaml.Node) error {
	a.line = n.Line
	var raw struct {
		Kind string `yaml:"kind"`
		Ack  string `yaml:"ack"`
		NAK  string `yaml:"nak"`
	}
	if n.Kind == yaml.ScalarNode {
		raw.Kind = n.Value
	} else {
		if err := checkKeys(n, "ack", "kind", "ack", "nak"); err != nil {
			return err
		}
		if err := n.Decode(&raw); err != nil {
			return err
		}
	}
	k, err := ParseAckKind(raw.Kind)
	if err != nil {
		return &ScenarioError{Line: n.Line, Msg: err.Error()}
	}
	a.mode = AckMode{Kind: k}
	if raw.Ack != "" {
		a.mode.FixedACK = []byte(raw.Ack)
	}
	if raw.NAK != "" {
		a.mode.FixedNAK = []byte(raw.NAK)
	}
	if k == AckFixed && len(a.mode.FixedACK) == 0 {
		return &ScenarioError{Line: n.Line, Msg: "the fixed ack mode needs an ack payload"}
	}
	return nil
}

type stepYAML struct{ step Step }

var stepKeys = []string{
	"answer", "text", "error_code", "control_id", "wrong_control_id", "delay",
	"silence", "close", "reset", "count",
}

func (s *stepYAML) UnmarshalYAML(n *yaml.Node) error {
	if err := checkKeys(n, "step", stepKeys...); err != nil {
		return err
	}
	var raw struct {
		Answer         string    `yaml:"answer"`
		Text           string    `yaml:"text"`
		ErrorCode      string    `yaml:"error_code"`
		ControlID      string    `yaml:"control_id"`
		WrongControlID bool      `yaml:"wrong_control_id"`
		Delay          yaml.Node `yaml:"delay"`
		Silence        yaml.Node `yaml:"silence"`
		Close          *bool     `yaml:"close"`
		Reset          *bool     `yaml:"reset"`
		Count          *int      `yaml:"count"`
	}
	if err := n.Decode(&raw); err != nil {
		return err
	}
	st := Step{
		Line: n.Line, Action: Answer, Code: raw.Answer, Text: raw.Text, ErrorCode: raw.ErrorCode,
		ControlID: raw.ControlID, WrongControlID: raw.WrongControlID,
	}
	fail := func(msg string) error { return &ScenarioError{Line: n.Line, Msg: msg} }
	var actions []string
	if raw.Answer != "" {
		actions = append(actions, "answer")
	}
	if raw.Silence.Kind != 0 {
		actions = append(actions, "silence")
		st.Action = Silence
		var on bool
		if err := raw.Silence.Decode(&on); err != nil {
			d, err := duration(&raw.Silence, "silence")
			if err != nil {
				return fail("silence: want true or a duration such as 5s")
			}
			st.Pause = d
		} else if !on {
			return fail("silence: false does nothing; leave it out")
		}
	}
	for _, b := range []struct {
		v      *bool
		name   string
		action Action
	}{{raw.Close, "close", Close}, {raw.Reset, "reset", Reset}} {
		if b.v == nil {
			continue
		}
		if !*b.v {
			return fail(b.name + ": false does nothing; leave it out")
		}
		actions = append(actions, b.name)
		st.Action = b.action
	}
	if len(actions) > 1 {
		return fail(fmt.Sprintf("a step does one thing; this one says %v", actions))
	}
	if raw.Delay.Kind != 0 {
		d, err := duration(&raw.Delay, "delay")
		if err != nil {
			return err
		}
		st.Delay = d
	}
	if raw.Count != nil {
		if *raw.Count < 1 {
			return fail("count must be at least 1")
		}
		st.Count = *raw.Count
	}
	s.step = st
	return nil
}
