package genbench

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/deft-vk/deft/bench"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/probe"
	"github.com/deft-vk/deft/vk"
)

// Report is a whole `deft bench generate` run.
type Report struct {
	Date   time.Time       `json:"date"`
	Device string          `json:"device"`
	Driver string          `json:"driver"`
	UUID   string          `json:"uuid"`
	Deft   bench.BuildInfo `json:"deft"`
	// Model names the model ("llama3-8b f16" or a file) and Config its
	// hyper-parameters.
	Model  string       `json:"model"`
	Config llama.Config `json:"model_config"`
	KV     string       `json:"kv"`
	// WeightBytes are all weights on the device, StepWeightBytes those a
	// decoding step reads (without the token embedding, unless it is also
	// the output matrix).
	WeightBytes     uint64 `json:"weight_bytes"`
	StepWeightBytes uint64 `json:"step_weight_bytes"`
	// Bandwidth is the probe's (bytes/s; 0 if unknown) and BandwidthSource
	// says where it came from.
	Bandwidth       float64       `json:"bandwidth_bytes_per_second"`
	BandwidthSource string        `json:"bandwidth_source"`
	Probe           *probe.Result `json:"probe,omitempty"`
	// Floor is StepWeightBytes / Bandwidth.
	Floor    time.Duration `json:"weight_read_floor_ns"`
	Runs     int           `json:"runs"`
	AttnRuns int           `json:"attention_runs"`
	WarmUp   time.Duration `json:"warm_up_ns"`
	Sizes    Sizes         `json:"sizes"`
	Scale    float64       `json:"scale"`
	Seed     uint64        `json:"seed"`
	Timing   string        `json:"timing"`
	// Flags are the tuning flags the run was given (name -> value):
	// kernel variants, chunk, gemm inputs, prefetch.
	Flags     map[string]string `json:"flags,omitempty"`
	Check     []CheckResult     `json:"check"`
	Scenarios []*ScenarioResult `json:"scenarios"`
	// Targets are EvalTargets, filled in by SaveJSON.
	Targets []Target `json:"targets,omitempty"`
}

// NewReport starts a report for device info.
func NewReport(info vk.DeviceInfo) *Report {
	timing := "GPU timestamps per submission (start, end) and host wall time of model.Forward; attention share from separate runs with timestamps around every layer's attention"
	if !info.Timestamps {
		timing = "host wall time only: the device has no compute timestamps"
	}
	return &Report{Date: time.Now().UTC().Truncate(time.Second), Device: info.Name,
		Driver: strings.TrimSpace(info.DriverName + " " + info.DriverInfo), UUID: info.UUID, Deft: bench.DeftBuild(), Timing: timing}
}

// SaveJSON writes the report to path.
func (r *Report) SaveJSON(path string) error {
	r.Targets = r.EvalTargets()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("save report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save report: %w", err)
	}
	return nil
}

// LoadReport reads a report saved by SaveJSON.
func LoadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("load report %s: %w", path, err)
	}
	return &r, nil
}

func ms(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", float64(d)/1e6)
}

// WriteHeader prints the device, model, floor and how times are taken.
func (r *Report) WriteHeader(w io.Writer) {
	fmt.Fprintf(w, "device %s (%s), deft %s\n", r.Device, r.Driver, r.Deft)
	c := r.Config
	fmt.Fprintf(w, "model %s: %d blocks, embd %d, ffn %d, %d/%d heads x %d, vocab %d; %s KV\n",
		r.Model, c.Blocks, c.Embd, c.FFN, c.Heads, c.KVHeads, c.HeadDim, c.Vocab, r.KV)
	fmt.Fprintf(w, "weights %s on the device, %s read per decoding step\n", bench.FormatBytes(float64(r.WeightBytes)), bench.FormatBytes(float64(r.StepWeightBytes)))
	if r.Floor > 0 {
		fmt.Fprintf(w, "weight-read floor %s ms (%s at %.1f GB/s, %s)\n", ms(r.Floor), bench.FormatBytes(float64(r.StepWeightBytes)), r.Bandwidth/1e9, r.BandwidthSource)
	} else {
		fmt.Fprintf(w, "weight-read floor unknown (%s)\n", r.BandwidthSource)
	}
	fmt.Fprintf(w, "%d runs per scenario and method after a %v warm-up, median; %s\n", r.Runs, r.WarmUp, r.Timing)
	if r.Scale != 1 && r.Scale != 0 {
		fmt.Fprintf(w, "lengths scaled by %g\n", r.Scale)
	}
	for _, c := range r.Check {
		fmt.Fprintf(w, "check %s: 1-block slice, max relative L2 error %.2g against the float64 reference (tolerance %.0g)\n", c.Method, c.MaxErr, c.Tol)
	}
}

// WriteScenario prints one scenario's table after a blank line.
func (r *Report) WriteScenario(w io.Writer, s *ScenarioResult) error {
	fmt.Fprintf(w, "\n%s: %s\n  %d step tokens (%d logit rows), %d KV tokens in the tree, KV pool %s\n",
		s.Name, s.Description, s.StepTokens, s.LogitRows, s.Context, bench.FormatBytes(float64(s.KVBytes)))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  method\tms/step GPU\tms/step wall\tattention\tx floor\ttok/s GPU\ttok/s wall\tmemory\t")
	for _, m := range s.Methods {
		share, floor := "-", "-"
		if m.AttentionShare > 0 {
			share = fmt.Sprintf("%.1f%%", 100*m.AttentionShare)
		}
		if m.FloorFraction > 0 {
			floor = fmt.Sprintf("%.2fx", m.FloorFraction)
		}
		tpsGPU := "-"
		if m.TokensPerSecGPU > 0 {
			tpsGPU = fmt.Sprintf("%.0f", m.TokensPerSecGPU)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t\n", m.Method, ms(m.StepGPU), ms(m.StepWall), share, floor,
			tpsGPU, m.TokensPerSec, bench.FormatBytes(float64(m.MemoryBytes)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if s.SpeedUp > 0 {
		fmt.Fprintf(w, "  flatten vs flashdecoding: %.2fx per step\n", s.SpeedUp)
	}
	for _, m := range s.Methods {
		writeProfile(w, m)
	}
	return nil
}

// writeProfile prints where a method's step time goes, when profiled.
func writeProfile(w io.Writer, m *MethodResult) {
	if len(m.Profile) == 0 {
		return
	}
	var total time.Duration
	for _, k := range m.Profile {
		total += k.GPU
	}
	parts := make([]string, 0, len(m.Profile))
	for _, k := range m.Profile {
		parts = append(parts, fmt.Sprintf("%s %s (%.0f%%)", k.Name, ms(k.GPU), 100*float64(k.GPU)/float64(total)))
	}
	fmt.Fprintf(w, "  %s profile, ms (timestamp after every kind of work; %s in all): %s\n", m.Method, ms(total), strings.Join(parts, ", "))
}

// WriteTable prints the whole report.
func (r *Report) WriteTable(w io.Writer) error {
	r.WriteHeader(w)
	for _, s := range r.Scenarios {
		if err := r.WriteScenario(w, s); err != nil {
			return err
		}
	}
	r.WriteTargets(w)
	return nil
}

// Target is one of the performance targets, as measured.
type Target struct {
	What  string  `json:"what"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	// AtMost says the value must not exceed Limit (else be at least it).
	AtMost bool `json:"at_most"`
	Met    bool `json:"met"`
}

// EvalTargets evaluates the targets that the report's scenarios
// cover (GPU step times of flatten; prefill in tokens/s of GPU time).
func (r *Report) EvalTargets() []Target {
	find := func(name string) *ScenarioResult {
		for _, s := range r.Scenarios {
			if s.Name == name {
				return s
			}
		}
		return nil
	}
	flat := func(name string) *MethodResult {
		if s := find(name); s != nil {
			return s.Method("flatten")
		}
		return nil
	}
	var out []Target
	add := func(what string, v, limit float64, atMost bool) {
		met := v >= limit
		if atMost {
			met = v <= limit
		}
		out = append(out, Target{What: what, Value: v, Limit: limit, AtMost: atMost, Met: met})
	}
	if f := flat(Single); f != nil && f.FloorFraction > 0 {
		add("single sequence: flatten step / weight-read floor", f.FloorFraction, 1.25, true)
	}
	if f, s := flat(FewShot), flat(Single); f != nil && s != nil && s.StepTime() > 0 {
		add("few-shot b=50 step / single-sequence step (flatten)", float64(f.StepTime())/float64(s.StepTime()), 1.6, true)
	}
	for _, name := range []string{FewShot, Spec256} {
		if s := find(name); s != nil && s.SpeedUp > 0 {
			add(name+": flatten vs flashdecoding per step", s.SpeedUp, 1.5, false)
		}
	}
	if f := flat(Prefill); f != nil {
		tps := f.TokensPerSecGPU
		if tps == 0 {
			tps = f.TokensPerSec
		}
		add("prefill tokens/s (flatten, GPU time; the target is for f16 weights)", tps, 10000, false)
	}
	return out
}

// WriteTargets prints EvalTargets, if any.
func (r *Report) WriteTargets(w io.Writer) {
	ts := r.EvalTargets()
	if len(ts) == 0 {
		return
	}
	fmt.Fprintln(w, "\ntargets (issue 13; set for Llama-3-8B on an H200):")
	for _, t := range ts {
		op, verdict := ">=", "met"
		if t.AtMost {
			op = "<="
		}
		if !t.Met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "  %s: %.3g (target %s %g) %s\n", t.What, t.Value, op, t.Limit, verdict)
	}
}

// SavePlot draws ms per step of each method, one panel per scenario (each
// with its own scale: a prefill takes far longer than a decoding step), to a
// .png or .svg file.
func (r *Report) SavePlot(path string) error {
	format := strings.ToLower(strings.TrimPrefix(filepath.Ext(path), "."))
	if format != "png" && format != "svg" {
		return fmt.Errorf("plot %s: want a .png or .svg file", path)
	}
	if len(r.Scenarios) == 0 {
		return fmt.Errorf("plot %s: no scenarios", path)
	}
	const cols = 3
	rows := (len(r.Scenarios) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, s := range r.Scenarios {
		p, err := scenarioPlot(s)
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		grid[i/cols][i%cols] = p
	}
	width, height := vg.Length(cols)*4*vg.Inch, vg.Length(rows)*3.5*vg.Inch+0.4*vg.Inch
	c, err := draw.NewFormattedCanvas(width, height, format)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	dc := draw.New(c)
	title := fmt.Sprintf("deft bench generate: %s on %s (GPU ms per step)", r.Model, r.Device)
	dc.FillText(draw.TextStyle{Color: color.Black, Font: font.From(plot.DefaultFont, 12), Handler: plot.DefaultTextHandler, XAlign: draw.XCenter},
		vg.Point{X: width / 2, Y: height - 0.3*vg.Inch}, title)
	dc.Rectangle.Max.Y -= 0.4 * vg.Inch
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: 8 * vg.Millimeter, PadY: 8 * vg.Millimeter,
		PadTop: 4 * vg.Millimeter, PadBottom: 4 * vg.Millimeter, PadLeft: 4 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	canvases := plot.Align(grid, tiles, dc)
	for i := range grid {
		for j, p := range grid[i] {
			if p != nil {
				p.Draw(canvases[i][j])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return f.Close()
}

// scenarioPlot is one scenario's bars, one per method.
func scenarioPlot(s *ScenarioResult) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = s.Name
	if s.Name == Prefill {
		p.Title.Text += ", whole prompt"
	}
	if s.SpeedUp > 0 {
		p.Title.Text += fmt.Sprintf(" (flatten %.2fx)", s.SpeedUp)
	}
	p.Y.Label.Text = "ms"
	p.Y.Min = 0
	var names []string
	for j, m := range s.Methods {
		bars, err := plotter.NewBarChart(plotter.Values{float64(m.StepTime()) / 1e6}, vg.Points(40))
		if err != nil {
			return nil, err
		}
		bars.XMin = float64(j)
		bars.Color = plotutil.Color(j)
		bars.LineStyle.Width = 0
		p.Add(bars)
		names = append(names, m.Method)
	}
	p.NominalX(names...)
	return p, nil
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
