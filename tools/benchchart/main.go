// Command benchchart draws the chart in docs/performance.md from the JSON that
// `switchboard bench suite --json` writes:
//
//	go -C tools/benchchart run . -in "$PWD/results.json" -out "$PWD/docs/performance.png"
//
// (from the repository root; benchchart is its own module, so that gonum/plot
// stays out of the product's module graph, and `go -C` runs it in its
// directory, hence the absolute paths).
//
// The PNG has two panels over the inbound rows: messages/s and p99 ACK
// latency, each against the connection count, one line per target. Repeated
// rounds of one (target, conns) are reduced to their median.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/switchboard-dev/switchboard/bench"
)

// Size of the PNG in pixels, at vgimg's default 96 dpi.
const widthPx, heightPx = 1400, 560

// suite is the document `switchboard bench suite --json` writes.
type suite struct {
	Machine struct {
		CPUs     int    `json:"cpus"`
		CPUModel string `json:"cpu_model"`
		Date     string `json:"date"`
	} `json:"machine"`
	Settings struct {
		Size     int    `json:"size"`
		Duration string `json:"duration"`
		Rounds   int    `json:"rounds"`
	} `json:"settings"`
	Results []bench.Result `json:"results"`
}

// Line styles, by order of first appearance of the target in the results:
// colour (Okabe–Ito), dash pattern and marker all differ, so the chart also
// reads in grayscale.
var (
	colors = []color.Color{
		color.RGBA{0, 114, 178, 255}, color.RGBA{213, 94, 0, 255}, color.RGBA{0, 158, 115, 255},
		color.RGBA{204, 121, 167, 255}, color.RGBA{230, 159, 0, 255}, color.Black,
	}
	dashes = [][]vg.Length{nil, {vg.Points(8), vg.Points(4)}, {vg.Points(2), vg.Points(3)}, {vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)}}
	shapes = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.CrossGlyph{}, draw.RingGlyph{}, draw.PlusGlyph{}}
)

func main() {
	in := flag.String("in", "results.json", "JSON written by `switchboard bench suite --json`")
	out := flag.String("out", "docs/performance.png", "PNG to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "benchchart:", err)
		os.Exit(1)
	}
}

// run reads the suite JSON at in and writes the two-panel chart to out.
func run(in, out string) error {
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var s suite
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("%s: not valid bench suite JSON: %w", in, err)
	}
	// rows[target][conns] holds every round of that configuration.
	rows := map[string]map[int][]bench.Result{}
	var conns []int
	var names []string // targets in order of first appearance
	for _, r := range s.Results {
		if r.Group != "inbound" {
			continue
		}
		if r.Conns < 1 {
			return fmt.Errorf("%s: inbound row for %q has conns=%d", in, r.Target, r.Conns)
		}
		if rows[r.Target] == nil {
			rows[r.Target] = map[int][]bench.Result{}
			names = append(names, r.Target)
		}
		rows[r.Target][r.Conns] = append(rows[r.Target][r.Conns], r)
		if !slices.Contains(conns, r.Conns) {
			conns = append(conns, r.Conns)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("%s: no inbound results to chart", in)
	}
	slices.Sort(conns)

	date := s.Machine.Date
	if t, err := time.Parse(time.RFC3339, date); err == nil {
		date = t.UTC().Format("2006-01-02")
	}
	rate := newPanel(fmt.Sprintf("Inbound MLLP throughput (higher is better)\n%d CPUs, %s, %s",
		s.Machine.CPUs, s.Machine.CPUModel, date), "messages/s", conns)
	rate.Y.Min = 0
	lat := newPanel(fmt.Sprintf("p99 ACK latency (lower is better)\n%d-byte messages, median round of %d × %s",
		s.Settings.Size, s.Settings.Rounds, s.Settings.Duration), "p99 latency, ms", conns)

	minLat, maxLat := math.Inf(1), math.Inf(-1)
	for i, name := range names {
		var rateXY, latXY plotter.XYs
		for _, c := range conns {
			rs, ok := rows[name][c]
			if !ok {
				continue
			}
			x := math.Log2(float64(c))
			rateXY = append(rateXY, plotter.XY{X: x, Y: median(rs, func(r bench.Result) float64 { return r.Rate })})
			if p99 := median(rs, func(r bench.Result) float64 { return r.P99 }); p99 > 0 {
				latXY = append(latXY, plotter.XY{X: x, Y: p99 / 1000})
				minLat, maxLat = min(minLat, p99/1000), max(maxLat, p99/1000)
			}
		}
		if err := addLine(rate, name, i, rateXY); err != nil {
			return err
		}
		if err := addLine(lat, name, i, latXY); err != nil {
			return err
		}
	}
	if minLat <= maxLat { // any latency at all: log scale, whole decades
		lat.Y.Scale, lat.Y.Tick.Marker = plot.LogScale{}, plot.TickerFunc(logTicks)
		lat.Y.Label.Text += " (log scale)"
		lat.Y.Min = math.Pow10(int(math.Floor(math.Log10(minLat))))
		lat.Y.Max = max(math.Pow10(int(math.Ceil(math.Log10(maxLat)))), 10*lat.Y.Min)
	}

	img := vgimg.NewWith(vgimg.UseWH(widthPx*vg.Inch/vgimg.DefaultDPI, heightPx*vg.Inch/vgimg.DefaultDPI), vgimg.UseDPI(vgimg.DefaultDPI))
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(30), PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(12)}
	plots := [][]*plot.Plot{{rate, lat}}
	for i, c := range plot.Align(plots, tiles, draw.New(img))[0] {
		plots[0][i].Draw(c)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", out, err)
	}
	return f.Close()
}

// newPanel returns a plot whose x axis shows the connection counts evenly
// spaced (their log2) and labelled with the counts themselves.
func newPanel(title, ylabel string, conns []int) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text = "concurrent connections"
	p.Y.Label.Text = ylabel
	var ticks plot.ConstantTicks
	for _, c := range conns {
		ticks = append(ticks, plot.Tick{Value: math.Log2(float64(c)), Label: strconv.Itoa(c)})
	}
	p.X.Tick.Marker = ticks
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.ThumbnailWidth = vg.Points(30)
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(10), vg.Points(-6)
	return p
}

// logTicks labels 1, 2 and 5 of every decade from min to max.
func logTicks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		for m := 1.0; m < 10; m++ {
			v := m * math.Pow10(int(e))
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', 6, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// addLine adds the points of target i to p as a styled line with markers.
func addLine(p *plot.Plot, name string, i int, xys plotter.XYs) error {
	if len(xys) == 0 {
		return nil
	}
	l, s, err := plotter.NewLinePoints(xys)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	l.Color, l.Width, l.Dashes = colors[i%len(colors)], vg.Points(2), dashes[i%len(dashes)]
	s.Color, s.Radius, s.Shape = colors[i%len(colors)], vg.Points(4), shapes[i%len(shapes)]
	p.Add(l, s)
	p.Legend.Add(name, l, s)
	return nil
}

// median returns the median of f over rs.
func median(rs []bench.Result, f func(bench.Result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}
