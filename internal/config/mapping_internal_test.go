package config

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	configv1 "github.com/switchboard-dev/switchboard/gen/switchboard/config/v1"
)

// TestEveryFieldIsMapped: every field of the schema's settings sections
// has a flag, and every mapping names a field that exists, once.
func TestEveryFieldIsMapped(t *testing.T) {
	mapped := map[string]string{}
	flags := map[string]bool{}
	for _, m := range mappings {
		if _, dup := mapped[m.Field]; dup || flags[m.Flag] {
			t.Errorf("mapping %v given twice", m)
		}
		mapped[m.Field], flags[m.Flag] = m.Flag, true
	}
	root := (&configv1.ServeConfig{}).ProtoReflect().Descriptor()
	var fields []string
	for i := range root.Fields().Len() {
		sec := root.Fields().Get(i)
		if sec.IsList() { // listeners, connections: resources, not settings
			continue
		}
		for j := range sec.Message().Fields().Len() {
			fd := sec.Message().Fields().Get(j)
			path := string(sec.Name()) + "." + string(fd.Name())
			fields = append(fields, path)
			if _, ok := mapped[path]; !ok {
				t.Errorf("field %s has no flag in mappings", path)
			}
			if !fd.HasPresence() && !fd.IsList() {
				t.Errorf("field %s has no presence: Settings could not tell it absent", path)
			}
			if fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() != "google.protobuf.Duration" {
				t.Errorf("field %s is a %s, which Settings cannot format", path, fd.Message().FullName())
			}
		}
	}
	for f := range mapped {
		if !slices.Contains(fields, f) {
			t.Errorf("mapping of %s names no field of the schema", f)
		}
	}
}

// TestFlagsAreServes: every flag Flags names is registered by
// cmd/switchboard, and every flag serve.go, security.go and cluster.go register is in
// Flags (or is --config). It reads the sources, since a main package
// cannot be imported.
func TestFlagsAreServes(t *testing.T) {
	dir := filepath.Join("..", "..", "cmd", "switchboard")
	registered := map[string]bool{} // anywhere in cmd/switchboard
	serveOwn := map[string]string{} // in serve.go and security.go
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || len(call.Args) < 2 || !(strings.HasSuffix(sel.Sel.Name, "Var") || strings.HasSuffix(sel.Sel.Name, "VarP")) {
				return true
			}
			lit, ok := call.Args[1].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			flag, _ := strconv.Unquote(lit.Value)
			registered[flag] = true
			if name == "serve.go" || name == "security.go" || name == "cluster.go" {
				serveOwn[flag] = name
			}
			return true
		})
	}
	if len(serveOwn) == 0 {
		t.Fatalf("found no flag registered in %s/serve.go or security.go; has serve moved?", dir)
	}
	for _, f := range Flags() {
		if !registered[f] {
			t.Errorf("Flags has %q, which cmd/switchboard does not register", f)
		}
	}
	for f, file := range serveOwn {
		if f != "config" && !slices.Contains(Flags(), f) {
			t.Errorf("%s registers --%s, which the config file cannot set (add it to the schema and mappings)", file, f)
		}
	}
}

// TestDocsListEverySetting: docs/configuration.md has a row for each
// setting, with its flag and its environment variable.
func TestDocsListEverySetting(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, m := range mappings {
		_, field, _ := strings.Cut(m.Field, ".")
		row := "| `" + field + "` | `--" + m.Flag + "` | `" + EnvName(m.Flag) + "` |"
		if !strings.Contains(doc, row) {
			t.Errorf("docs/configuration.md has no row starting %s", row)
		}
	}
}
