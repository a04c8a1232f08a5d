package peersim

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-dev/switchboard/transport"
)

// Limits on a scenario, so that a typo cannot make the peer wait for a day
// or hold a million steps.
const (
	MaxSteps    = 10_000
	MaxCount    = 1_000_000
	MaxDuration = time.Hour
)

// Action is what the peer does with a message.
type Action int

// Actions.
const (
	// Answer writes an acknowledgement (after Step.Delay).
	Answer Action = iota + 1
	// Silence never answers the message. With Step.Pause the peer also
	// stops reading the connection for that long, as a hung peer would.
	Silence
	// Close closes the connection (FIN) without answering.
	Close
	// Reset resets the connection (RST) without answering.
	Reset
)

func (a Action) String() string {
	switch a {
	case Answer:
		return "answer"
	case Silence:
		return "silence"
	case Close:
		return "close"
	case Reset:
		return "reset"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Codes a step may answer with. The HL7 codes need the HL7 ack mode; ACK
// and NAK need a byte, MLLP commit or fixed mode.
var (
	hl7Codes  = []string{"AA", "AE", "AR", "CA", "CE", "CR"}
	byteCodes = []string{"ACK", "NAK"}
)

// Step is one entry of a scenario: what to do with the next Count messages.
type Step struct {
	// Line is where the step starts in its scenario file; 0 when built in code.
	Line   int
	Action Action
	// Code is the answer's code: AA, AE, AR, CA, CE, CR (HL7) or ACK, NAK.
	// Empty: the ack mode's positive code (AA or ACK).
	Code string
	// Text is MSA-3 (HL7 only).
	Text string
	// ErrorCode adds an ERR segment with this HL7 table 0357 code (HL7 only).
	ErrorCode string
	// ControlID, when set, is written as MSA-2 instead of the message's
	// MSH-10: the answer acknowledges another message (HL7 only).
	ControlID string
	// WrongControlID writes MSA-2 as the message's MSH-10 with "-WRONG"
	// appended (HL7 only).
	WrongControlID bool
	// Delay is waited before the action (answer, close or reset).
	Delay time.Duration
	// Pause is, for Silence, how long the connection is not read after the
	// message; 0: reading goes on at once.
	Pause time.Duration
	// Count is how many consecutive messages the step applies to; 0 means 1.
	Count int
}

// count returns Count with its default.
func (s Step) count() int { return max(s.Count, 1) }

// Describe says what the step does, for logs and the listen command's
// output, e.g. "answer AE after 2s" or "reset".
func (s Step) Describe(mode AckMode) string {
	var b strings.Builder
	b.WriteString(s.Action.String())
	if s.Action == Answer {
		b.WriteString(" " + s.code(mode))
		switch {
		case s.ControlID != "":
			fmt.Fprintf(&b, " with MSA-2 %q", s.ControlID)
		case s.WrongControlID:
			b.WriteString(" with the wrong MSA-2")
		}
	}
	if s.Action == Silence && s.Pause > 0 {
		fmt.Fprintf(&b, ", not reading for %s", s.Pause)
	}
	if s.Delay > 0 {
		fmt.Fprintf(&b, " after %s", s.Delay)
	}
	return b.String()
}

// code returns the code answered, with the mode's default.
func (s Step) code(mode AckMode) string {
	if s.Code != "" {
		return s.Code
	}
	return mode.positive()
}

// Scenario is a listen-mode script: its steps are applied in order, one
// message at a time across all connections (a reconnecting client goes on
// where the script was), Count messages per step. After the last step the
// script starts again if Repeat is set; otherwise every later message gets
// the mode's positive answer, as from a well-behaved peer.
type Scenario struct {
	// Name is the file it came from, for errors; may be empty.
	Name string
	// Framing and Ack are the scenario file's wire settings; nil when the
	// file does not set them (the command's flags or defaults apply).
	Framing *transport.Framing
	Ack     *AckMode
	Steps   []Step
	Repeat  bool
}

// Always returns the scenario that does step to every message.
func Always(step Step) *Scenario {
	step.Count = 1
	return &Scenario{Steps: []Step{step}, Repeat: true}
}

// Validate checks the scenario against the ack mode its answers are built
// for. Errors name the file and the step's line when known.
func (sc *Scenario) Validate(mode AckMode) error {
	if len(sc.Steps) > MaxSteps {
		return sc.errorf(0, "%d steps; at most %d", len(sc.Steps), MaxSteps)
	}
	if sc.Repeat && len(sc.Steps) == 0 {
		return sc.errorf(0, "repeat needs at least one step")
	}
	for i, s := range sc.Steps {
		if err := s.validate(mode); err != nil {
			return sc.errorf(s.Line, "step %d: %s", i+1, err)
		}
	}
	return nil
}

func (s Step) validate(mode AckMode) error {
	switch {
	case s.Action < Answer || s.Action > Reset:
		return fmt.Errorf("unknown action %d", int(s.Action))
	case s.Count < 0 || s.Count > MaxCount:
		return fmt.Errorf("count must be from 1 to %d", MaxCount)
	case s.Delay < 0 || s.Delay > MaxDuration:
		return fmt.Errorf("delay must be from 0 to %s", MaxDuration)
	case s.Pause < 0 || s.Pause > MaxDuration:
		return fmt.Errorf("silence must be from 0 to %s", MaxDuration)
	case s.Action != Silence && s.Pause > 0:
		return fmt.Errorf("a pause only goes with silence")
	case s.Action != Answer && (s.Code != "" || s.Text != "" || s.ErrorCode != "" || s.ControlID != "" || s.WrongControlID):
		return fmt.Errorf("answer, text, error_code, control_id and wrong_control_id only go with an answer, not with %s", s.Action)
	case s.ControlID != "" && s.WrongControlID:
		return fmt.Errorf("control_id and wrong_control_id exclude each other")
	case s.Action == Silence && s.Delay > 0:
		return fmt.Errorf("delay does not go with silence (use silence: DURATION to stop reading)")
	}
	if s.Action != Answer {
		return nil
	}
	switch mode.Kind {
	case AckHL7:
		if s.Code != "" && !contains(hl7Codes, s.Code) {
			return fmt.Errorf("answer %q: the hl7 ack mode answers %s", s.Code, strings.Join(hl7Codes, ", "))
		}
	case AckNone:
		return fmt.Errorf("the none ack mode answers nothing: use silence, close or reset")
	default:
		if s.Code != "" && !contains(byteCodes, s.Code) {
			return fmt.Errorf("answer %q: the %s ack mode answers ACK or NAK", s.Code, mode.Kind)
		}
		if s.Text != "" || s.ErrorCode != "" || s.ControlID != "" || s.WrongControlID {
			return fmt.Errorf("text, error_code, control_id and wrong_control_id need the hl7 ack mode, not %s", mode.Kind)
		}
		if mode.Kind == AckFixed && s.Code == "NAK" && len(mode.FixedNAK) == 0 {
			return fmt.Errorf("answer NAK needs a fixed NAK payload (nak in the file, --fixed-nak)")
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ScenarioError is an invalid scenario: the file, the line (0 if unknown)
// and what is wrong.
type ScenarioError struct {
	File string
	Line int
	Msg  string
}

func (e *ScenarioError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File + ": ")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (sc *Scenario) errorf(line int, format string, args ...any) error {
	return &ScenarioError{File: sc.Name, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// Turn is the scenario's decision for one message.
type Turn struct {
	// N counts messages from 1, across connections.
	N int
	// Step is what to do, and Index its position in the scenario (from 1;
	// 0 once a non-repeating script is over and the default answer applies).
	Step  Step
	Index int
	// Last is true for the last message of a non-repeating script.
	Last bool
}

// cursor hands out the steps of a scenario to messages as they arrive, from
// any number of connections.
type cursor struct {
	mu     sync.Mutex
	sc     *Scenario
	n      int // messages so far
	step   int // index into sc.Steps
	inStep int // messages of sc.Steps[step] used
}

func newCursor(sc *Scenario) *cursor { return &cursor{sc: sc} }

// next returns the turn of the next message.
func (c *cursor) next() Turn {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if c.step >= len(c.sc.Steps) {
		return Turn{N: c.n, Step: Step{Action: Answer}}
	}
	t := Turn{N: c.n, Step: c.sc.Steps[c.step], Index: c.step + 1}
	c.inStep++
	if c.inStep >= t.Step.count() {
		c.step, c.inStep = c.step+1, 0
		if c.step == len(c.sc.Steps) {
			if c.sc.Repeat {
				c.step = 0
			} else {
				t.Last = true
			}
		}
	}
	return t
}
