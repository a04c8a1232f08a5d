package auth

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

const hashA = "sha256:" + "aa00000000000000000000000000000000000000000000000000000000000000"
const hashB = "sha256:" + "bb00000000000000000000000000000000000000000000000000000000000000"

func TestParseAccessFile(t *testing.T) {
	in := "# ops team\n\n" +
		"token ops admin " + hashA + "\n" +
		"  token adt-feed consumer " + hashB + " listeners=adt-,lab- connections=out-adt\n" +
		"cert *.hospital.example operator listeners=adt-\n" +
		"cert spiffe://hospital.example/ris viewer\n"
	f, err := ParseAccessFile([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	es := f.Entries()
	if len(es) != 4 {
		t.Fatalf("got %d entries", len(es))
	}
	if e := es[1]; e.Kind != KindToken || e.Name != "adt-feed" || e.Role != RoleConsumer || e.Line != 4 ||
		!reflect.DeepEqual(e.Scope, Scope{Listeners: []string{"adt-", "lab-"}, Connections: []string{"out-adt"}}) {
		t.Errorf("entry 1 = %+v", e)
	}
	if e := es[2]; e.Kind != KindCert || e.Name != "*.hospital.example" || e.Role != RoleOperator {
		t.Errorf("entry 2 = %+v", e)
	}
	if got := string(f.Format()); got != in {
		t.Errorf("Format changed the file:\n%s\nwant\n%s", got, in)
	}
}

func TestParseAccessFileErrors(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"bogus x y", "line 1: unknown kind"},
		{"# c\ntoken a admin", "line 2: want \"token <name>"},
		{"token a admin sha256:12", "line 1: token \"a\": hash must be"},
		{"token a boss " + hashA, "unknown role \"boss\""},
		{"token -a admin " + hashA, "token name \"-a\""},
		{"token a admin " + hashA + " listeners=", "empty prefix list"},
		{"token a admin " + hashA + " listeners=a listeners=b", "listeners given twice"},
		{"token a admin " + hashA + " colour=red", "unknown option \"colour=red\""},
		{"token a admin " + hashA + " listeners=a b", "unknown option \"b\""},
		{"token a admin " + hashA + " listeners=a,,b", "prefix \"\""},
		{"token a admin " + hashA + "\ntoken a viewer " + hashB, "line 2: token \"a\" already defined on line 1"},
		{"token a admin " + hashA + "\ntoken b viewer " + hashA, "line 2: token \"b\" has the same hash as line 1"},
		{"cert a*b viewer", "only allowed as the leftmost label"},
		{"cert *. viewer", "must be followed by a domain"},
		{"cert x viewer\ncert x admin", "line 2: cert \"x\" already defined"},
		{"cert x", "line 1: want \"cert"},
	} {
		_, err := ParseAccessFile([]byte(tt.in))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseAccessFile(%q) = %v, want an ErrInvalid containing %q", tt.in, err, tt.want)
		}
	}
}

func TestAccessFileEdit(t *testing.T) {
	in := "# keep me\ntoken ops admin " + hashA + "   # not a comment field\n"
	_, err := ParseAccessFile([]byte(in))
	if err == nil {
		t.Fatal("trailing text after the fields should be an error")
	}
	in = "# keep me\ntoken ops admin " + hashA + "\n\n# end\n"
	f, err := ParseAccessFile([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := f.AddToken("feed", RoleConsumer, Scope{Listeners: []string{"adt-"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "sbt_") || len(tok) != 4+43 {
		t.Errorf("token %q: want sbt_ and 43 base64url characters", tok)
	}
	if _, err := f.AddToken("feed", RoleViewer, Scope{}); !errors.Is(err, ErrExists) {
		t.Errorf("second AddToken: %v, want ErrExists", err)
	}
	if err := f.AddCert("ris.hospital.example", RoleViewer, Scope{}); err != nil {
		t.Fatal(err)
	}
	out := f.Format()
	if !bytes.HasPrefix(out, []byte(in)) {
		t.Errorf("existing lines changed:\n%s", out)
	}
	g, err := ParseAccessFile(out)
	if err != nil {
		t.Fatalf("reparse: %v\n%s", err, out)
	}
	e := g.Lookup(KindToken, "feed")
	if e == nil || e.Hash != HashToken(tok) || e.Role != RoleConsumer || e.Scope.String() != "listeners=adt-" {
		t.Fatalf("feed = %+v", e)
	}
	if bytes.Contains(out, []byte(tok)) {
		t.Error("the file holds the token itself")
	}
	if err := g.Remove(KindToken, "ops"); err != nil {
		t.Fatal(err)
	}
	if err := g.Remove(KindToken, "ops"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v, want ErrNotFound", err)
	}
	if got := string(g.Format()); !strings.HasPrefix(got, "# keep me\n\n# end\n") {
		t.Errorf("after Remove:\n%s", got)
	}
}

func FuzzParseAccessFile(f *testing.F) {
	f.Add([]byte("# c\n\ntoken ops admin " + hashA + " listeners=a,b connections=c\ncert *.x.example viewer\n"))
	f.Add([]byte("token a viewer " + hashB + "\r\n\tcert spiffe://x/y admin connections=out-\n"))
	f.Add([]byte("cert a*b viewer"))
	f.Add([]byte("\n\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAccessFile(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		out := a.Format()
		b, err := ParseAccessFile(out)
		if err != nil {
			t.Fatalf("formatted file does not parse: %v\n%q", err, out)
		}
		if !bytes.Equal(b.Format(), out) {
			t.Fatalf("format is not stable:\n%q\n%q", out, b.Format())
		}
		ea, eb := a.Entries(), b.Entries()
		if len(ea) != len(eb) {
			t.Fatalf("%d entries, then %d", len(ea), len(eb))
		}
		for i := range ea {
			x, y := *ea[i], *eb[i]
			x.Line, y.Line = 0, 0
			if !reflect.DeepEqual(x, y) || x.String() != y.String() {
				t.Fatalf("entry %d: %+v then %+v", i, x, y)
			}
			// Every entry formats to a line that parses back to itself.
			c, err := ParseAccessFile([]byte(ea[i].String()))
			if err != nil || len(c.Entries()) != 1 || c.Entries()[0].String() != ea[i].String() {
				t.Fatalf("entry %q does not round-trip: %v", ea[i].String(), err)
			}
		}
	})
}
