package peersim_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/internal/peersim"
	"github.com/switchboard-dev/switchboard/transport"
)

// TestExamplesLoad loads every example scenario: the docs point at them.
func TestExamplesLoad(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("examples: %v, %v", files, err)
	}
	for _, f := range files {
		if _, err := peersim.Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestLoadExample(t *testing.T) {
	sc, err := peersim.Load("testdata/three-aa-silence-reset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []peersim.Step{
		{Line: 4, Action: peersim.Answer, Code: "AA", Count: 3},
		{Line: 6, Action: peersim.Silence},
		{Line: 7, Action: peersim.Reset},
	}
	if len(sc.Steps) != len(want) || sc.Repeat || sc.Framing != nil || sc.Ack != nil {
		t.Fatalf("scenario = %+v", sc)
	}
	for i, s := range sc.Steps {
		if s != want[i] {
			t.Errorf("step %d = %+v, want %+v", i+1, s, want[i])
		}
	}

	sc, err = peersim.Load("testdata/fixed-delimiter.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Framing == nil || sc.Framing.Kind != transport.FramingDelimiter || string(sc.Framing.Delimiter) != "\n" ||
		sc.Ack == nil || sc.Ack.Kind != peersim.AckFixed || string(sc.Ack.FixedACK) != "OK" || string(sc.Ack.FixedNAK) != "ERR" {
		t.Errorf("fixed-delimiter: framing %+v, ack %+v", sc.Framing, sc.Ack)
	}

	sc, err = peersim.Load("testdata/flaky.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Steps[0].Delay != time.Second || sc.Steps[1].Action != peersim.Silence || sc.Steps[1].Pause != 5*time.Second {
		t.Errorf("flaky: %+v", sc.Steps)
	}
}

// TestScenarioErrors checks that a mistake in a scenario file is an error
// naming the file, the line and what is wrong.
func TestScenarioErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", "steps: []\nrepaet: true\n", "line 2: field repaet not found"},
		{"unknown step key", "steps:\n  - answer: AA\n  - anwser: AE\n", `line 3: unknown step key "anwser"`},
		{"two actions", "steps:\n  - answer: AA\n    reset: true\n", "line 2: a step does one thing; this one says [answer reset]"},
		{"bad code", "steps:\n  - answer: OK\n", `line 2: step 1: answer "OK": the hl7 ack mode answers AA, AE, AR, CA, CE, CR`},
		{"byte code in hl7", "steps:\n  - answer: NAK\n", `line 2: step 1: answer "NAK"`},
		{"hl7 code in byte mode", "ack: single-byte\nsteps:\n  - answer: AE\n", `line 3: step 1: answer "AE": the single-byte ack mode answers ACK or NAK`},
		{"text in byte mode", "ack: mllp-commit\nsteps:\n  - answer: NAK\n    text: x\n", "line 3: step 1: text, error_code"},
		{"bad duration", "steps:\n  - delay: soon\n", "line 2: delay: want a duration"},
		{"bad silence", "steps:\n  - silence: maybe\n", "line 2: silence: want true or a duration"},
		{"silence false", "steps:\n  - silence: false\n", "silence: false does nothing"},
		{"count zero", "steps:\n  - answer: AA\n    count: 0\n", "line 2: count must be at least 1"},
		{"count type", "steps:\n  - answer: AA\n    count: many\n", "line 3: cannot unmarshal"},
		{"count too big", "steps:\n  - answer: AA\n    count: 100000000\n", "count must be from 1 to"},
		{"delay too long", "steps:\n  - delay: 2h\n", "delay must be from 0 to 1h0m0s"},
		{"delay with silence", "steps:\n  - silence: true\n    delay: 1s\n", "delay does not go with silence"},
		{"text with reset", "steps:\n  - reset: true\n    text: x\n", "only go with an answer, not with reset"},
		{"unknown framing", "framing: mlp\n", `line 1: unknown framing "mlp"`},
		{"unknown framing key", "framing:\n  kind: delimiter\n  delim: x\n", `line 3: unknown framing key "delim"`},
		{"delimiter missing", "framing: delimiter\n", "line 1: transport: delimiter framing needs a non-empty Delimiter"},
		{"unknown ack", "ack: hl8\n", `line 1: unknown ack mode "hl8"`},
		{"fixed without ack", "ack: fixed\n", "line 1: the fixed ack mode needs an ack payload"},
		{"mllp-commit needs mllp", "framing: length-prefix\nack: mllp-commit\n", "line 2: the MLLP commit acknowledgement policy requires MLLP framing"},
		{"fixed NAK missing", "ack: {kind: fixed, ack: OK}\nsteps:\n  - answer: NAK\n", "answer NAK needs a fixed NAK payload"},
		{"steps not a list", "steps: AA\n", "line 1: cannot unmarshal"},
		{"step not a mapping", "steps:\n  - AA\n", "line 2: step must be a mapping"},
		{"repeat nothing", "repeat: true\n", "repeat needs at least one step"},
		{"empty", "", "empty scenario"},
		{"two documents", "steps: []\n---\nsteps: []\n", "line 2: a scenario file holds one YAML document"},
		{"duplicate key", "steps:\n  - answer: AA\n    answer: AE\n", `line 3: mapping key "answer" already defined at line 2`},
		{"syntax", "steps:\n  - answer: [AA\n", "yaml: line 1: did not find expected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := peersim.Parse("s.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse(%q) = nil error, want %q", tc.yaml, tc.want)
			}
			var se *peersim.ScenarioError
			if !errors.As(err, &se) || se.File != "s.yaml" || !strings.HasPrefix(err.Error(), "s.yaml: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse(%q) = %v, want a ScenarioError for s.yaml containing %q", tc.yaml, err, tc.want)
			}
		})
	}
}

// TestValidateAgainstOverride checks a scenario again when the command line
// changes the ack mode it was written for.
func TestValidateAgainstOverride(t *testing.T) {
	sc, err := peersim.Load("testdata/three-aa-silence-reset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = sc.Validate(peersim.AckMode{Kind: peersim.AckSingleByte})
	if err == nil || !strings.Contains(err.Error(), "three-aa-silence-reset.yaml: line 4: step 1: answer \"AA\"") {
		t.Errorf("Validate(single-byte) = %v", err)
	}
}

func TestLoadMissingAndHuge(t *testing.T) {
	if _, err := peersim.Load(filepath.Join(t.TempDir(), "none.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", peersim.MaxScenarioBytes)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := peersim.Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v", err)
	}
}

// FuzzParse feeds the scenario loader arbitrary bytes: it must never panic,
// and whatever it accepts must be a valid scenario within the limits.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"steps:\n  - answer: AA\n    count: 3\n  - silence: 5s\n  - reset: true\n",
		"framing: {kind: start-end, start: \"\\x02\", end: \"\\x03\", strict: true}\nack: single-byte\nsteps: [{answer: NAK}]\n",
		"a: &a [*a]\n", "steps: [&x {answer: AA}, *x]\n", "steps:\n  - {}\n", "- 1\n", "~\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := peersim.Parse("fuzz.yaml", data)
		if err != nil {
			var se *peersim.ScenarioError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a ScenarioError", err)
			}
			return
		}
		mode := peersim.AckMode{Kind: peersim.AckHL7}
		if sc.Ack != nil {
			mode = *sc.Ack
		}
		if err := sc.Validate(mode); err != nil {
			t.Fatalf("accepted scenario does not validate: %v", err)
		}
		if sc.Framing != nil {
			if err := mode.Validate(sc.Framing.WithDefaults()); err != nil {
				t.Fatalf("accepted framing does not validate: %v", err)
			}
		}
		for _, s := range sc.Steps {
			if s.Count > peersim.MaxCount || s.Delay > peersim.MaxDuration || s.Pause > peersim.MaxDuration {
				t.Fatalf("step beyond the limits: %+v", s)
			}
		}
	})
}

// TestDocScenarios parses every YAML block of docs/peer.md, so the guide's
// scenarios cannot rot.
func TestDocScenarios(t *testing.T) {
	doc, err := os.ReadFile("../../docs/peer.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(doc), "```yaml\n")[1:]
	if len(blocks) < 2 {
		t.Fatalf("docs/peer.md has %d YAML blocks", len(blocks))
	}
	for i, b := range blocks {
		b = b[:strings.Index(b, "```")]
		sc, err := peersim.Parse(fmt.Sprintf("docs/peer.md block %d", i+1), []byte(b))
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if len(sc.Steps) == 0 {
			t.Errorf("block %d has no steps", i+1)
		}
	}
}
