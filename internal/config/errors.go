package config

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is an invalid configuration file: every problem found in it, in
// the order of the file.
type Error struct {
	// Path is the file.
	Path     string
	Problems []Problem
	// lines are the file's lines, quoted under each problem.
	lines []string
}

// Problem is one thing wrong in a configuration file.
type Problem struct {
	// Line and Column locate it (1-based); 0 when unknown.
	Line, Column int
	// Field is the path of the field, as "listeners[0].config.address";
	// empty for a syntax error.
	Field string
	// Message says what is wrong, with the rule's id for a validation rule.
	Message string
}

// Error lists the problems as "path:line:col: field: message", each
// followed by its line and a caret under the column.
func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		switch {
		case p.Column > 0:
			fmt.Fprintf(&b, "%s:%d:%d: ", e.Path, p.Line, p.Column)
		case p.Line > 0:
			fmt.Fprintf(&b, "%s:%d: ", e.Path, p.Line)
		default:
			fmt.Fprintf(&b, "%s: ", e.Path)
		}
		if p.Field != "" {
			b.WriteString(p.Field + ": ")
		}
		b.WriteString(p.Message)
		if p.Line >= 1 && p.Line <= len(e.lines) {
			fmt.Fprintf(&b, "\n%5d | %s", p.Line, strings.TrimSuffix(e.lines[p.Line-1], "\r"))
			if p.Column >= 1 {
				fmt.Fprintf(&b, "\n      | %s^", strings.Repeat(" ", p.Column-1))
			}
		}
	}
	return b.String()
}

// protoyamlProblem is the first line of one of protoyaml's errors:
// "PATH:LINE:COL MESSAGE" (PATH stripped before matching).
var protoyamlProblem = regexp.MustCompile(`^(\d+):(\d+) (.*)$`)

// violationField is the field path a protovalidate violation starts with.
var violationField = regexp.MustCompile(`^([A-Za-z0-9_.\[\]"]+): (.*)$`)

// newError turns protoyaml's joined errors into Problems, naming the field
// of each from its position in root when protoyaml does not.
func newError(path string, data []byte, root *yaml.Node, err error) *Error {
	e := &Error{Path: path, lines: strings.Split(string(data), "\n")}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	fields := fieldsAt(root)
	for _, err := range errs {
		first, _, _ := strings.Cut(err.Error(), "\n")
		m := protoyamlProblem.FindStringSubmatch(strings.TrimPrefix(first, path+":"))
		if m == nil {
			e.Problems = append(e.Problems, Problem{Message: first})
			continue
		}
		p := Problem{Message: m[3]}
		p.Line, _ = strconv.Atoi(m[1])
		p.Column, _ = strconv.Atoi(m[2])
		if v := violationField.FindStringSubmatch(p.Message); v != nil && !strings.Contains(v[1], " ") {
			p.Field, p.Message = v[1], v[2]
		} else {
			p.Field = fields[[2]int{p.Line, p.Column}]
		}
		e.Problems = append(e.Problems, p)
	}
	slices.SortStableFunc(e.Problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	return e
}

// yamlSyntax is yaml.v3's message for a syntax error.
var yamlSyntax = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxProblem is a YAML syntax error as a Problem.
func syntaxProblem(err error) Problem {
	msg := err.Error()
	if m := yamlSyntax.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{Line: line, Message: "YAML syntax: " + m[2]}
	}
	return Problem{Message: msg}
}

// fieldsAt maps the position of every key and value node under root to
// the field path it is ("server.grpc_addr", "listeners[1].config").
func fieldsAt(root *yaml.Node) map[[2]int]string {
	out := map[[2]int]string{}
	var walk func(n *yaml.Node, path string, depth int)
	walk = func(n *yaml.Node, path string, depth int) {
		if n == nil || depth > maxDepth {
			return
		}
		pos := [2]int{n.Line, n.Column}
		if _, ok := out[pos]; !ok && path != "" {
			out[pos] = path
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path, depth+1)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i), depth+1)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				p := join(path, k.Value)
				out[[2]int{k.Line, k.Column}] = p
				walk(n.Content[i+1], p, depth+1)
			}
		}
	}
	walk(root, "", 0)
	return out
}
