package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite the outputs in docs/api.md and README.md with what their examples print now")

// apiDocPath is the API guide whose examples TestAPIDoc runs.
const apiDocPath = "../../docs/api.md"

// TestAPIDoc runs every example of docs/api.md, in order, against one real
// `switchboard serve` with grpcurl (a tool of tools/go.mod), and compares
// what each prints with the output shown under it, so the guide cannot rot.
// The rules the document follows (they are invisible when it is rendered):
//
//   - A ```sh block is run with bash. When a ```json or ```text block follows
//     it with nothing but blank lines between, that is its output (stdout
//     and stderr together); otherwise it must exit 0.
//   - <!-- apitest: skip --> before a block: not run (a command for the
//     reader's shell, such as starting serve).
//   - <!-- apitest: background --> before a ```sh block: it is started and
//     left running (a stream); its output is the next block marked
//     <!-- apitest: background output -->, and once it has printed as many
//     JSON values as that block holds it is stopped.
//   - <!-- apitest: retry --> before a ```sh block: run again (for up to a
//     minute) until its output matches, for a state the server reaches on
//     its own a moment later (a queued message delivered).
//
// 127.0.0.1:50051 in the commands is the server's address; every other
// 127.0.0.1:PORT (or "127.0.0.1 PORT", as nc takes it) is replaced with a
// free port, and the outputs are mapped back. Before comparing, times, durations with a fraction, generated
// connection and control ids, ephemeral ports, event sequences and the
// MSH-7 and MSH-10 of base64 HL7 acknowledgements are replaced with
// placeholders on both sides.
//
// go test ./cmd/switchboard -run 'TestAPIDoc|TestREADME' -update-docs
// writes the outputs the examples print now into the documents.
func TestAPIDoc(t *testing.T) { runDocExamples(t, apiDocPath) }

// TestREADMEExamples runs the README's walkthrough the same way; it sends
// over MLLP with nc (OpenBSD netcat), as the README does.
func TestREADMEExamples(t *testing.T) {
	if _, err := exec.LookPath("nc"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nc (netcat-openbsd) is missing; CI must run the README's walkthrough")
		}
		t.Skip("nc (netcat-openbsd) is missing")
	}
	runDocExamples(t, "../../README.md")
}

func runDocExamples(t *testing.T, path string) {
	name := strings.TrimPrefix(path, "../../")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	blocks, err := parseDocBlocks(doc)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	grpcurl := grpcurlDir(t)
	srv := startServe(t)

	// The doc's ports, each replaced by a free one.
	ports := newPortMap(t, srv.grpcAddr)
	for _, b := range blocks {
		if b.lang == "sh" && b.directive != "skip" {
			ports.collect(b.body)
		}
	}

	work := t.TempDir()
	env := append(os.Environ(), "PATH="+grpcurl+string(os.PathListSeparator)+os.Getenv("PATH"))
	var bg *backgroundCmd
	defer func() {
		if bg != nil {
			bg.stop()
		}
	}()
	type update struct {
		b   docBlock
		out string
	}
	var updates []update
	check := func(cmdBlock, want docBlock, got string) {
		got = ports.back(got)
		if *updateDocs {
			updates = append(updates, update{want, got})
			return
		}
		if n, g := normalizeOutput(want.body), normalizeOutput(got); n != g {
			t.Errorf("%s line %d: the output of\n%s\ndiffers from line %d's (normalized):\n%s\nwant:\n%s\ngot:\n%s\n"+
				"If the new output is right: go test ./cmd/switchboard -run 'TestAPIDoc|TestREADME' -update-docs",
				name, cmdBlock.line, cmdBlock.body, want.line, firstDiff(n, g), n, g)
		}
	}

	for i := 0; i < len(blocks); i++ {
		b := blocks[i]
		switch {
		case b.directive == "skip":
			continue
		case b.directive == "background output":
			if bg == nil {
				t.Fatalf("%s line %d: a background output with no background command before it", name, b.line)
			}
			out, err := bg.waitValues(countJSONValues(b.body))
			if err != nil {
				t.Fatalf("%s line %d: %v; printed so far:\n%s", name, bg.block.line, err, out)
			}
			check(bg.block, b, out)
			bg = nil
			continue
		case b.lang != "sh":
			continue
		}
		script := ports.forward(b.body)
		if b.directive == "background" {
			if bg != nil {
				t.Fatalf("%s line %d: a second background command before the first one's output", name, b.line)
			}
			bg = startBackground(t, b, script, work, env)
			continue
		}
		var want *docBlock
		if i+1 < len(blocks) && blocks[i+1].output() && blocks[i+1].adjacent && blocks[i+1].directive == "" {
			want = &blocks[i+1]
			i++
		}
		out, err := runDocScript(script, work, env)
		if b.directive == "retry" && want != nil {
			// Bounded: a minute, then the mismatch is reported as usual
			// (updating, 5 s, then the last output is written).
			bound := time.Minute
			if *updateDocs {
				bound = 5 * time.Second
			}
			for deadline := time.Now().Add(bound); normalizeOutput(want.body) != normalizeOutput(ports.back(out)) && time.Now().Before(deadline); {
				time.Sleep(100 * time.Millisecond)
				out, err = runDocScript(script, work, env)
			}
		}
		if want == nil {
			if err != nil {
				t.Fatalf("%s line %d: %v\n%s\noutput:\n%s", name, b.line, err, b.body, out)
			}
			continue
		}
		check(b, *want, out)
	}
	if bg != nil {
		t.Errorf("%s line %d: a background command whose output is never shown", name, bg.block.line)
	}
	if *updateDocs {
		// From the end, so the earlier offsets still hold.
		sort.Slice(updates, func(i, j int) bool { return updates[i].b.start > updates[j].b.start })
		for _, u := range updates {
			out := strings.TrimRight(u.out, "\n") + "\n"
			doc = doc[:u.b.start] + out + doc[u.b.end:]
		}
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %d outputs into %s", len(updates), name)
	}
}

// TestAPIDocCoversEveryRPC: every RPC of switchboard.v1 has an example in
// docs/api.md that the test runs.
func TestAPIDocCoversEveryRPC(t *testing.T) {
	raw, err := os.ReadFile(apiDocPath)
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseDocBlocks(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	var run strings.Builder
	for _, b := range blocks {
		if b.lang == "sh" && b.directive != "skip" {
			run.WriteString(b.body)
		}
	}
	proto, err := os.ReadFile("../../proto/switchboard/v1/switchboard.proto")
	if err != nil {
		t.Fatal(err)
	}
	rpcs := regexp.MustCompile(`(?m)^\s*rpc (\w+)\(`).FindAllStringSubmatch(string(proto), -1)
	if len(rpcs) == 0 {
		t.Fatal("no rpc found in switchboard.proto")
	}
	for _, m := range rpcs {
		if !strings.Contains(run.String(), "switchboard.v1.SwitchboardService/"+m[1]) {
			t.Errorf("docs/api.md runs no example of %s", m[1])
		}
	}
}

// docBlock is one fenced code block of the document.
type docBlock struct {
	lang      string // the fence's info string: sh, json, text, ...
	body      string
	directive string // from a <!-- apitest: ... --> line before the fence
	line      int    // the fence's line number
	// adjacent: only blank lines between the previous block and this one.
	adjacent   bool
	start, end int // the body's byte offsets in the document
}

func (b docBlock) output() bool { return b.lang == "json" || b.lang == "text" }

var directiveRE = regexp.MustCompile(`^<!-- apitest: ([a-z ]+) -->$`)

// parseDocBlocks returns the fenced blocks of a Markdown document.
func parseDocBlocks(doc string) ([]docBlock, error) {
	var blocks []docBlock
	directive := ""
	betweenBlank := false // only blank lines (and directives) since the last block
	inBlock := false
	var cur docBlock
	offset := 0
	for n, line := range strings.SplitAfter(doc, "\n") {
		lineStart := offset
		offset += len(line)
		text := strings.TrimRight(line, "\r\n")
		if inBlock {
			if text == "```" {
				cur.end = lineStart
				cur.body = doc[cur.start:cur.end]
				blocks = append(blocks, cur)
				inBlock = false
				betweenBlank = true
			}
			continue
		}
		switch {
		case strings.HasPrefix(text, "```"):
			cur = docBlock{lang: strings.TrimSpace(text[3:]), directive: directive, line: n + 1,
				adjacent: betweenBlank && len(blocks) > 0, start: offset}
			directive = ""
			inBlock = true
		case directiveRE.MatchString(text):
			directive = directiveRE.FindStringSubmatch(text)[1]
			switch directive {
			case "skip", "background", "background output", "retry":
			default:
				return nil, fmt.Errorf("line %d: unknown directive %q", n+1, directive)
			}
		case strings.TrimSpace(text) == "":
		default:
			if directive != "" {
				return nil, fmt.Errorf("line %d: a directive must come just before a code block", n)
			}
			betweenBlank = false
		}
	}
	if inBlock {
		return nil, fmt.Errorf("line %d: code block never closed", cur.line)
	}
	return blocks, nil
}

// grpcurlDir builds grpcurl, the tool pinned in tools/go.mod, into a new
// directory and returns it, for PATH. (go build -o, not "go tool -n": on a
// cold build cache that printed a path where no binary was left.)
func grpcurlDir(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, "go", "build", "-modfile=tools/go.mod", "-o", filepath.Join(dir, "grpcurl"), "github.com/fullstorydev/grpcurl/cmd/grpcurl")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build grpcurl (tools/go.mod): %v\n%s", err, out)
	}
	return dir
}

// runDocScript runs one block with bash, within a minute.
func runDocScript(script, dir string, env []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-eo", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("did not finish within a minute: %w", err)
	}
	return out.String(), err
}

// backgroundCmd is a stream left running while the blocks after it run.
type backgroundCmd struct {
	block  docBlock
	cmd    *exec.Cmd
	out    *notifyBuffer
	exited chan struct{}
}

func startBackground(t *testing.T, b docBlock, script, dir string, env []string) *backgroundCmd {
	t.Helper()
	cmd := exec.Command("bash", "-c", "exec "+strings.TrimSpace(script))
	cmd.Dir, cmd.Env = dir, env
	out := &notifyBuffer{changed: make(chan struct{}, 1)}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	bg := &backgroundCmd{block: b, cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		defer close(bg.exited)
		_ = cmd.Wait()
		out.notify()
	}()
	return bg
}

// waitValues waits until the command has printed n JSON values (at most a
// minute), stops it, and returns those values as printed.
func (bg *backgroundCmd) waitValues(n int) (string, error) {
	defer bg.stop()
	deadline := time.After(time.Minute)
	for {
		text := bg.out.String()
		if end, count := jsonValuesEnd(text, n); count >= n {
			return text[:end], nil
		}
		select {
		case <-bg.out.changed:
		case <-bg.exited:
			text := bg.out.String()
			if end, count := jsonValuesEnd(text, n); count >= n {
				return text[:end], nil
			}
			return text, fmt.Errorf("exited after %d of %d JSON values", countJSONValues(text), n)
		case <-deadline:
			return bg.out.String(), fmt.Errorf("printed fewer than %d JSON values within a minute", n)
		}
	}
}

func (bg *backgroundCmd) stop() {
	_ = bg.cmd.Process.Kill()
	<-bg.exited
}

// notifyBuffer is a buffer that says when it was written to.
type notifyBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (b *notifyBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	n, err := b.buf.Write(p)
	b.mu.Unlock()
	b.notify()
	return n, err
}

func (b *notifyBuffer) notify() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

func (b *notifyBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// jsonValuesEnd returns the offset just past the first n complete JSON
// values of text, and how many complete values it found (up to n).
func jsonValuesEnd(text string, n int) (int, int) {
	dec := json.NewDecoder(strings.NewReader(text))
	count := 0
	for count < n {
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			break
		}
		count++
	}
	return int(dec.InputOffset()), count
}

func countJSONValues(text string) int {
	_, n := jsonValuesEnd(text, 1<<20)
	return n
}

// portMap replaces the document's addresses with the real ones.
type portMap struct {
	t        *testing.T
	grpcAddr string
	fwd      map[string]string // doc port -> free port
	rev      map[string]string
}

func newPortMap(t *testing.T, grpcAddr string) *portMap {
	return &portMap{t: t, grpcAddr: grpcAddr, fwd: map[string]string{}, rev: map[string]string{}}
}

// docAddrRE: host:port, or host port as nc takes them.
var docAddrRE = regexp.MustCompile(`127\.0\.0\.1[: ](\d+)`)

func (p *portMap) collect(script string) {
	for _, m := range docAddrRE.FindAllStringSubmatch(script, -1) {
		port := m[1]
		if port == "50051" || p.fwd[port] != "" {
			continue
		}
		// A free port: bind :0, note it, release it for the server.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			p.t.Fatal(err)
		}
		free := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		_ = ln.Close()
		p.fwd[port], p.rev[free] = free, port
	}
}

func (p *portMap) forward(s string) string {
	return docAddrRE.ReplaceAllStringFunc(s, func(a string) string {
		sep, port := a[len("127.0.0.1"):len("127.0.0.1")+1], a[len("127.0.0.1")+1:]
		if port == "50051" && sep == ":" {
			return p.grpcAddr
		}
		if free, ok := p.fwd[port]; ok {
			return "127.0.0.1" + sep + free
		}
		return a
	})
}

func (p *portMap) back(s string) string {
	s = strings.ReplaceAll(s, p.grpcAddr, "127.0.0.1:50051")
	return docAddrRE.ReplaceAllStringFunc(s, func(a string) string {
		sep, port := a[len("127.0.0.1"):len("127.0.0.1")+1], a[len("127.0.0.1")+1:]
		if doc, ok := p.rev[port]; ok {
			return "127.0.0.1" + sep + doc
		}
		return a
	})
}

var (
	timeRE       = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	fracDurRE    = regexp.MustCompile(`"\d+\.\d+s"`)
	connIDRE     = regexp.MustCompile(`\bc-[0-9A-Z]{6,}\b`)
	ackIDRE      = regexp.MustCompile(`\bSB[0-9A-Z]{6,}\b`)
	ephemeralRE  = regexp.MustCompile(`127\.0\.0\.1:(\d{5})\b`)
	base64HL7RE  = regexp.MustCompile(`"(TVNI[A-Za-z0-9+/]*={0,2})"`)
	hl7TimeRE    = regexp.MustCompile(`\|\d{14}(\.\d+)?([+-]\d{4})?\|`)
	jsonColonRE  = regexp.MustCompile(`": +`)
	eventSeqRE   = regexp.MustCompile(`"sequence": "\d+",(\n\s*"time": )`)
	trailSpaceRE = regexp.MustCompile(`[ \t]+\n`)
)

// normalizeOutput replaces what changes from run to run with placeholders.
func normalizeOutput(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	// protojson varies the spaces after a colon from build to build.
	s = jsonColonRE.ReplaceAllString(s, `": `)
	s = base64HL7RE.ReplaceAllStringFunc(s, func(m string) string {
		raw, err := base64.StdEncoding.DecodeString(strings.Trim(m, `"`))
		if err != nil {
			return m
		}
		hl7 := strings.ReplaceAll(string(raw), "\r", `\r`)
		hl7 = hl7TimeRE.ReplaceAllString(hl7, "|<hl7-time>|")
		hl7 = ackIDRE.ReplaceAllString(hl7, "SB<id>")
		return `"<hl7:` + hl7 + `>"`
	})
	// An event's sequence counts every event the server published, and
	// some (connection events) race the examples.
	s = eventSeqRE.ReplaceAllString(s, `"sequence": "<event>",$1`)
	s = hl7TimeRE.ReplaceAllString(s, "|<hl7-time>|") // an ACK printed as text
	s = timeRE.ReplaceAllString(s, "<time>")
	s = fracDurRE.ReplaceAllString(s, `"<duration>"`)
	s = connIDRE.ReplaceAllString(s, "c-<id>")
	s = ackIDRE.ReplaceAllString(s, "SB<id>")
	s = ephemeralRE.ReplaceAllStringFunc(s, func(a string) string {
		if port, _ := strconv.Atoi(a[len("127.0.0.1:"):]); port >= 32768 && port != 50051 {
			return "127.0.0.1:<port>"
		}
		return a
	})
	s = trailSpaceRE.ReplaceAllString(s, "\n")
	return strings.TrimSpace(s)
}

// firstDiff names the first line where want and got differ.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return fmt.Sprintf("line %d of the output: want %q, got %q", i+1, a, b)
		}
	}
	return "no difference"
}
