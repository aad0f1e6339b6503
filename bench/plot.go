package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// SavePlot draws the report to path, a .png or .svg file: one row per
// workload with the time per step (all layers) of each method, over the
// sampled steps (bars for a single-step workload), and the IO per step of
// each method as bars (K/V read, and all bytes moved). Failed methods are
// left out.
func (r *Report) SavePlot(path string) error {
	format := strings.ToLower(strings.TrimPrefix(filepath.Ext(path), "."))
	if format != "png" && format != "svg" {
		return fmt.Errorf("plot %s: want a .png or .svg file", path)
	}
	if len(r.Workloads) == 0 {
		return fmt.Errorf("plot %s: no workloads", path)
	}
	rows := make([][]*plot.Plot, len(r.Workloads))
	for i, w := range r.Workloads {
		tp, err := timePlot(w, r.Config.Model.Layers)
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		ip, err := ioPlot(w)
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		rows[i] = []*plot.Plot{tp, ip}
	}
	width, height := 12*vg.Inch, vg.Length(len(rows))*4*vg.Inch
	c, err := draw.NewFormattedCanvas(width, height, format)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: len(rows), Cols: 2, PadX: 8 * vg.Millimeter, PadY: 8 * vg.Millimeter,
		PadTop: 4 * vg.Millimeter, PadBottom: 4 * vg.Millimeter, PadLeft: 4 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	canvases := plot.Align(rows, tiles, dc)
	for i := range rows {
		for j, p := range rows[i] {
			p.Draw(canvases[i][j])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return f.Close()
}

// timed returns the methods with results, in order.
func timed(w *WorkloadResult) []MethodResult {
	var out []MethodResult
	for _, m := range w.Methods {
		if m.Error == "" && m.Summary != nil && len(m.Steps) > 0 {
			out = append(out, m)
		}
	}
	return out
}

func failedNote(w *WorkloadResult) string {
	if f := w.Failed(); len(f) > 0 {
		var s []string
		for _, m := range f {
			s = append(s, string(m))
		}
		return " (failed: " + strings.Join(s, ", ") + ")"
	}
	return ""
}

// timeUnit picks the unit of a time axis from its largest value.
func timeUnit(maxSeconds float64) (string, float64) {
	switch {
	case maxSeconds >= 10:
		return "s", 1
	case maxSeconds >= 10e-3:
		return "ms", 1e3
	default:
		return "us", 1e6
	}
}

// byteUnit picks the unit of a bytes axis from its largest value.
func byteUnit(maxBytes float64) (string, float64) {
	switch {
	case maxBytes >= 10e9:
		return "GB", 1e-9
	case maxBytes >= 10e6:
		return "MB", 1e-6
	default:
		return "kB", 1e-3
	}
}

func timePlot(w *WorkloadResult, layers int) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: attention time per step (%d layers)%s", w.Name, layers, failedNote(w))
	p.Y.Min = 0
	ms := timed(w)
	top := 0.0
	for _, m := range ms {
		for _, s := range m.Steps {
			top = max(top, s.StepTime.Seconds())
		}
	}
	unit, scale := timeUnit(top)
	p.Y.Label.Text = unit + " per step"
	if len(w.Sampled) <= 1 {
		vals := make(plotter.Values, len(ms))
		names := make([]string, len(ms))
		for i, m := range ms {
			vals[i] = m.Summary.Step.Seconds() * scale
			names[i] = m.Label()
		}
		if len(ms) > 0 {
			bars, err := plotter.NewBarChart(vals, 0.5*vg.Inch)
			if err != nil {
				return nil, err
			}
			bars.Color = plotutil.Color(0)
			p.Add(bars)
			p.NominalX(names...)
		}
		return p, nil
	}
	p.X.Label.Text = "decoding step"
	p.Y.Max = 1.4 * top * scale // room for the legend
	p.Legend.Top = true
	p.Legend.Left = true
	for i, m := range ms {
		xys := make(plotter.XYs, len(m.Steps))
		for j, s := range m.Steps {
			xys[j] = plotter.XY{X: float64(s.Step), Y: s.StepTime.Seconds() * scale}
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i)
		points.Color = plotutil.Color(i)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(m.Label(), line, points)
	}
	return p, nil
}

func ioPlot(w *WorkloadResult) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = w.Name + ": IO per step (all layers, mean of sampled steps)"
	p.Y.Min = 0
	ms := timed(w)
	if len(ms) == 0 {
		return p, nil
	}
	top := 0.0
	for _, m := range ms {
		top = max(top, m.Summary.KVPerStep, m.Summary.IOPerStep)
	}
	unit, scale := byteUnit(top)
	p.Y.Label.Text = unit + " per step"
	p.Y.Max = 1.35 * top * scale // room for the legend
	kv := make(plotter.Values, len(ms))
	all := make(plotter.Values, len(ms))
	names := make([]string, len(ms))
	for i, m := range ms {
		kv[i] = m.Summary.KVPerStep * scale
		all[i] = m.Summary.IOPerStep * scale
		names[i] = m.Label()
	}
	width := 0.3 * vg.Inch
	kvBars, err := plotter.NewBarChart(kv, width)
	if err != nil {
		return nil, err
	}
	kvBars.Color = plotutil.Color(1)
	kvBars.Offset = -width / 2
	allBars, err := plotter.NewBarChart(all, width)
	if err != nil {
		return nil, err
	}
	allBars.Color = plotutil.Color(2)
	allBars.Offset = width / 2
	p.Add(kvBars, allBars)
	if u := ms[0].Summary.UniqueKVPerStep * scale; u > 0 {
		roof := plotter.NewFunction(func(float64) float64 { return u })
		roof.Color = plotutil.Color(0)
		roof.Dashes = plotutil.Dashes(1)
		p.Add(roof)
		p.Legend.Add("unique K/V (roofline bytes)", roof)
	}
	p.Legend.Add("K/V read", kvBars)
	p.Legend.Add("all IO (K/V, mask, partials, metadata, Q, out)", allBars)
	p.Legend.Top = true
	p.NominalX(names...)
	return p, nil
}
