// Package config reads the YAML configuration file of `switchboard serve`:
// one switchboard.config.v1.ServeConfig, parsed with protoyaml and checked
// with protovalidate, so the declared listeners and connections obey the
// API's own rules. It turns the file's settings into flag values (Settings,
// Apply: flag > environment > file > default) without depending on a flag
// library, and brings the declared listeners and connections into the
// service (Reconcile).
//
// It never starts anything by itself and never reads the environment or
// the flags directly: the caller hands it their accessors.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"buf.build/go/protovalidate"
	"buf.build/go/protoyaml"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	configv1 "github.com/switchboard-dev/switchboard/gen/switchboard/config/v1"
)

// MaxFileBytes bounds a configuration file: a real one is a few KiB, and
// the bound keeps a wrong path (a log, a journal file) from being read
// whole.
const MaxFileBytes = 4 << 20

// File is a loaded, valid configuration file.
type File struct {
	// Path is the file's name as given, used in every message about it.
	Path string
	// Config is its content.
	Config *configv1.ServeConfig
	// lines maps "section.field" to the line of its key.
	lines map[string]int
}

// Load reads and checks the configuration file at path. Its errors name
// the file, the line and column, and the field (protoyaml's format: one
// "path:line:col field: message" per problem, with the line quoted).
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("config file %s: larger than %d bytes", path, MaxFileBytes)
	}
	return Parse(path, data)
}

// Check loads the file at path and reports what is wrong with it, for
// `switchboard config check FILE`. It does not look at the flags, the
// environment or the data directory: a setting that needs another (a TLS
// key its certificate) is checked by serve once they are merged.
func Check(path string) error {
	_, err := Load(path)
	return err
}

// Parse checks data, the content of the file path. An empty document is a
// valid configuration that sets nothing. A non-nil error is an *Error.
func Parse(path string, data []byte) (*File, error) {
	root, p := parseYAML(data)
	if p == nil {
		p = oddLineBreak(data)
	}
	if p != nil {
		return nil, &Error{Path: path, Problems: []Problem{*p}, lines: strings.Split(string(data), "\n")}
	}
	cfg := &configv1.ServeConfig{}
	opts := protoyaml.UnmarshalOptions{Path: path, Validator: validator{}}
	if err := opts.Unmarshal(data, cfg); err != nil {
		return nil, newError(path, data, root, err)
	}
	return &File{Path: path, Config: cfg, lines: keyLines(root)}, nil
}

// parseYAML parses the one document data must hold, so that a syntax
// error is reported with the file's name, a second document is not
// ignored, and a key given twice is an error instead of the last one
// silently winning.
func parseYAML(data []byte) (*yaml.Node, *Problem) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		p := syntaxProblem(err)
		return nil, &p
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			p := syntaxProblem(err)
			return nil, &p
		}
		return nil, &Problem{Line: next.Line, Column: next.Column, Message: "a second YAML document; the file holds one"}
	}
	if p := duplicateKey(&root, "", 0); p != nil {
		return nil, p
	}
	return &root, nil
}

// duplicateKey finds a mapping that has a key twice.
func duplicateKey(n *yaml.Node, path string, depth int) *Problem {
	if depth > maxDepth {
		return &Problem{Line: n.Line, Column: n.Column, Field: path, Message: fmt.Sprintf("nested deeper than %d levels", maxDepth)}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if p := duplicateKey(c, path, depth+1); p != nil {
				return p
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if p := duplicateKey(c, fmt.Sprintf("%s[%d]", path, i), depth+1); p != nil {
				return p
			}
		}
	case yaml.MappingNode:
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := join(path, k.Value)
			if line, ok := seen[k.Value]; ok {
				return &Problem{Line: k.Line, Column: k.Column, Field: p, Message: fmt.Sprintf("given twice (first at line %d)", line)}
			}
			seen[k.Value] = k.Line
			if p := duplicateKey(n.Content[i+1], p, depth+1); p != nil {
				return p
			}
		}
	}
	return nil
}

// oddLineBreak finds a line break other than LF and CRLF: YAML counts a
// lone CR, NEL, LS and PS as line breaks too, editors mostly do not, so a
// position after one would point at the wrong line (and protoyaml, which
// splits lines on LF alone, indexes past its lines and panics).
func oddLineBreak(data []byte) *Problem {
	line := 1
	for i := 0; i < len(data); i++ {
		switch {
		case data[i] == '\n':
			line++
		case data[i] == '\r' && (i+1 == len(data) || data[i+1] != '\n'):
			return &Problem{Line: line, Message: "a carriage return without a line feed; use LF or CRLF line breaks"}
		case data[i] == 0xC2 && i+1 < len(data) && data[i+1] == 0x85,
			data[i] == 0xE2 && i+2 < len(data) && data[i+1] == 0x80 && (data[i+2] == 0xA8 || data[i+2] == 0xA9):
			return &Problem{Line: line, Message: "a Unicode line or paragraph separator (U+0085, U+2028, U+2029); use LF or CRLF line breaks"}
		}
	}
	return nil
}

// maxDepth bounds the nesting of a file (a real one nests about 6 levels),
// so hostile input cannot make the checks recurse without end.
const maxDepth = 64

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// keyLines maps "section.field" (and "section") to the line of its key.
func keyLines(root *yaml.Node) map[string]int {
	lines := map[string]int{}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return lines
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		sec, body := n.Content[i], n.Content[i+1]
		lines[sec.Value] = sec.Line
		if body.Kind != yaml.MappingNode {
			continue
		}
		for k := 0; k+1 < len(body.Content); k += 2 {
			lines[sec.Value+"."+body.Content[k].Value] = body.Content[k].Line
		}
	}
	return lines
}

// validator is protovalidate as protoyaml wants it.
type validator struct{}

func (validator) Validate(m proto.Message) error { return protovalidate.Validate(m) }
