package console_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
)

// The browser tests drive Debian's chromium (headless) with chromedp
// against a running console with real traffic, and check what a person
// would. They skip only when no chromium binary is found; CI installs it
// (.ci/run) and, with CI set, a missing browser fails them instead.

var screenshotPath = flag.String("screenshot", "", "TestConsoleScreenshot: also write the overview's screenshot (PNG) to this file, e.g. ../../docs/console.png")

// browserTimeout bounds each browser test, start-up included.
const browserTimeout = 60 * time.Second

// chromiumNames are the binaries tried, in order: Debian's chromium
// (/usr/bin/chromium) and its headless shell, then other common names.
var chromiumNames = []string{"chromium", "chromium-headless-shell", "/usr/lib/chromium/chromium-headless-shell", "chromium-browser", "google-chrome"}

func chromiumPath() string {
	for _, name := range chromiumNames {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newBrowser starts a headless chromium for the test and returns the
// context of its first tab. The browser is closed, and its process waited
// for, when the test ends.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("no chromium binary (tried %s); .ci/run installs Debian's chromium", strings.Join(chromiumNames, ", "))
		}
		t.Skipf("no chromium binary found (tried %s): install Debian's chromium (apt-get install -y chromium) to run the browser test; .ci/run does", strings.Join(chromiumNames, ", "))
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root, where chromium's sandbox will not start
		chromedp.DisableGPU,
		chromedp.WindowSize(1500, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		// Closes the browser gracefully and waits for it, then the
		// allocator waits for the process: no goroutine or process is
		// left for goleak or the next test.
		_ = chromedp.Cancel(bctx)
		bcancel()
		acancel()
		cancel()
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return bctx
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate %s: %v", url, err)
	}
}

func text(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		t.Fatalf("text of %s: %v", css, err)
	}
	return strings.TrimSpace(s)
}

// TestConsoleBrowser: in a real browser, against a server with traffic,
// the listener appears, its frame counter moves between two loads, an
// outbound connection whose peer is killed shows as backing off, and the
// overview shows the listener with JavaScript off.
func TestConsoleBrowser(t *testing.T) {
	ctx := newBrowser(t)
	e := newEnv(t, envOptions{})
	sctx := testCtx(t)
	p := dialPeer(t, e.listen(sctx, "adt"))
	for i := range 3 {
		p.send(hl7Message(fmt.Sprintf("B%d", i)))
	}
	e.waitListener(sctx, "adt", 3, 3)
	remote := startAckPeer(t)
	e.connect(sctx, "lab", remote.addr())
	for i := range 2 {
		if _, err := e.svc.Send(sctx, &switchboardv1.SendRequest{ConnectionId: "lab", Payload: oruMessage(fmt.Sprintf("L%d", i))}); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}

	overview := e.srv.URL + "/console/"
	navigate(t, ctx, overview)
	if title := must[string](t, "title")(chromedp.Run(ctx, chromedp.Title())); title != "Switchboard console" {
		t.Errorf("title %q", title)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-listener="adt"]`))); err != nil {
		t.Fatalf("the listener row is not visible: %v", err)
	}
	if got := text(t, ctx, `tr[data-listener="adt"] td.frames-in`); got != "3" {
		t.Errorf("frames in on the first load: %q, want 3", got)
	}
	if got := text(t, ctx, `tr[data-connection="lab"] .state`); got != "OPEN" {
		t.Errorf("lab is %q, want OPEN", got)
	}

	// More traffic; a person reloads and sees the counter move.
	for i := range 2 {
		p.send(hl7Message(fmt.Sprintf("B%d", 10+i)))
	}
	e.waitListener(sctx, "adt", 5, 5)
	navigate(t, ctx, overview)
	if got := text(t, ctx, `tr[data-listener="adt"] td.frames-in`); got != "5" {
		t.Errorf("frames in on the second load: %q, want 5", got)
	}
	if got := text(t, ctx, `tr[data-listener="adt"] td.rate-in`); got == "–" || got == "0/s" {
		t.Errorf("rate on the second load: %q, want a positive rate", got)
	}

	// Kill lab's peer; reload (bounded) until the page says it is down.
	remote.kill()
	var state string
	for deadline := time.Now().Add(20 * time.Second); ; {
		navigate(t, ctx, overview)
		state = text(t, ctx, `tr[data-connection="lab"] .state`)
		if state == "BACKING_OFF" || state == "CLOSED" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if state != "BACKING_OFF" && state != "CLOSED" {
		t.Errorf("lab is %q after its peer was killed, want BACKING_OFF or CLOSED", state)
	}
	if att := text(t, ctx, `#attention`); !strings.Contains(att, "Outbound connection lab") {
		t.Errorf("needs attention does not name lab: %q", att)
	}

	// JavaScript off, in a new tab: the overview is complete without it.
	tab, cancel := chromedp.NewContext(ctx)
	defer cancel()
	if err := chromedp.Do(tab, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	})); err != nil {
		t.Fatalf("disable JavaScript: %v", err)
	}
	// First, that it is off: a page whose script would retitle it.
	navigate(t, tab, "data:text/html,<title>script off</title><script>document.title='script ran'</script>")
	if title := must[string](t, "title")(chromedp.Run(tab, chromedp.Title())); title != "script off" {
		t.Fatalf("JavaScript is not off in the tab: the title is %q", title)
	}
	navigate(t, tab, overview+"?refresh=0")
	html := must[string](t, "outer HTML")(chromedp.Run(tab, chromedp.OuterHTML(chromedp.CSS(`tr[data-listener="adt"]`))))
	if !strings.Contains(html, ">adt<") || !strings.Contains(html, ">5<") {
		t.Errorf("with JavaScript off the listener row is %s", html)
	}
	if got := text(t, tab, `tr[data-connection="lab"] .state`); got != state && got != "CONNECTING" && got != "BACKING_OFF" {
		t.Errorf("with JavaScript off lab is %q", got)
	}
	_ = chromedp.Cancel(tab)
}

// TestConsoleScreenshot takes a full-page screenshot of the overview with
// traffic on two listeners, an open outbound connection and one whose peer
// was killed, with messages queued for it. It checks the picture is a PNG;
// with -screenshot=FILE it writes it there:
//
//	go test ./observe/console -run TestConsoleScreenshot -args -screenshot=../../docs/console.png
func TestConsoleScreenshot(t *testing.T) {
	ctx := newBrowser(t)
	e := newEnv(t, envOptions{})
	sctx := testCtx(t)
	adt := dialPeer(t, e.listen(sctx, "adt"))
	lab := dialPeer(t, e.listen(sctx, "lab-results"))
	e.listen(sctx, "pharmacy")
	up, down := startAckPeer(t), startAckPeer(t)
	e.connect(sctx, "ehr", up.addr())
	e.connect(sctx, "billing", down.addr())
	send := func(id string, n int) {
		for i := range n {
			if _, err := e.svc.Send(sctx, &switchboardv1.SendRequest{ConnectionId: id, Payload: oruMessage(fmt.Sprintf("%s%d", id, i))}); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
	}
	traffic := func(n int) {
		for i := range n {
			adt.send(hl7Message(fmt.Sprintf("ADT%04d", i)))
			if i%3 == 0 {
				lab.send(oruMessage(fmt.Sprintf("LAB%04d", i)))
			}
		}
		send("ehr", n/4)
	}
	traffic(40)
	send("billing", 5)
	down.kill()
	e.waitConn(sctx, "billing", switchboardv1.ConnectionState_CONNECTION_STATE_BACKING_OFF)
	for i := range 3 {
		if _, err := e.svc.Send(sctx, &switchboardv1.SendRequest{ConnectionId: "billing", Payload: oruMessage(fmt.Sprintf("BILL%d", i)), Queued: true}); err != nil {
			t.Fatalf("queued Send: %v", err)
		}
	}

	navigate(t, ctx, e.srv.URL+"/console/")
	// A second load a moment later, with traffic between, so the rates show.
	start := time.Now()
	traffic(60)
	time.Sleep(time.Until(start.Add(time.Second)))
	navigate(t, ctx, e.srv.URL+"/console/")
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-connection="billing"]`))); err != nil {
		t.Fatal(err)
	}
	img := must[[]byte](t, "screenshot")(chromedp.Run(ctx, chromedp.FullScreenshot(100)))
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	if cfg.Width < 1000 || cfg.Height < 500 {
		t.Errorf("screenshot %dx%d", cfg.Width, cfg.Height)
	}
	if *screenshotPath != "" {
		if err := os.WriteFile(*screenshotPath, img, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%dx%d)", *screenshotPath, cfg.Width, cfg.Height)
	}
}
