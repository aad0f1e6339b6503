package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/deft-vk/deft/probe"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// BuildInfo identifies the deft build that measured.
type BuildInfo struct {
	// Version is the main module's version ("(devel)" in a checkout).
	Version string `json:"version,omitempty"`
	// Revision is the commit, Modified whether the tree had changes.
	Revision string `json:"revision,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	// Source says where Revision came from: "buildinfo" (stamped by go
	// build) or "git" (git in the repository above the working directory
	// or the executable, for builds without a VCS stamp: go test, go run,
	// -buildvcs=false).
	Source string `json:"source,omitempty"`
}

// String formats the build, e.g. "(devel) df838f6a1b2c+dirty".
func (b BuildInfo) String() string {
	s := b.Version
	if b.Revision != "" {
		rev := b.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if b.Modified {
			rev += "+dirty"
		}
		s = strings.TrimSpace(s + " " + rev)
	}
	if s == "" {
		return "unknown"
	}
	return s
}

// DeftBuild returns the running build's version and commit from
// runtime/debug.ReadBuildInfo, or from git when the binary carries no VCS
// stamp and the working directory or the executable is inside this
// repository.
func DeftBuild() BuildInfo {
	var b BuildInfo
	if bi, ok := debug.ReadBuildInfo(); ok {
		b.Version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision, b.Source = s.Value, "buildinfo"
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Revision != "" {
		return b
	}
	root := ""
	if wd, err := os.Getwd(); err == nil {
		root = RepoRoot(wd)
	}
	if exe, err := os.Executable(); root == "" && err == nil {
		root = RepoRoot(filepath.Dir(exe))
	}
	if root == "" {
		return b
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		return b
	}
	b.Revision, b.Source = strings.TrimSpace(string(out)), "git"
	if st, err := exec.CommandContext(ctx, "git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
		b.Modified = len(strings.TrimSpace(string(st))) > 0
	}
	return b
}

// RunConfig is the configuration of a run, as recorded in the report.
type RunConfig struct {
	Model      Model             `json:"model"`
	KV         string            `json:"kv"`
	Methods    []treeattn.Method `json:"methods"`
	Runs       int               `json:"runs"`
	Sample     int               `json:"sample"` // sampled decode steps per workload (0: all)
	FlushBytes uint64            `json:"flush_bytes"`
	WarmUp     time.Duration     `json:"warm_up_ns"`
	Block      int               `json:"block_tokens,omitempty"`
	MaxPasses  int               `json:"max_passes,omitempty"`
	Tiles      treeattn.Tiles    `json:"tiles"`
	// Reduce is --reduce ("": auto).
	Reduce    string `json:"reduce,omitempty"`
	Seed      uint64 `json:"seed"`
	Workloads string `json:"workloads_dir,omitempty"`
	TraceTree int    `json:"trace_tree"`
	// KVLayout is where the workloads' K/V slots come from (Layout).
	KVLayout   Layout `json:"kv_layout,omitempty"`
	Validation bool   `json:"validation"`
	// LayerTiming states how per-step times are obtained.
	LayerTiming string `json:"layer_timing"`
}

// LayerTiming is RunConfig.LayerTiming.
const LayerTiming = "one layer is timed (GPU timestamps around partial attention and reduction, L2 flushed before each run, median of runs); " +
	"time per step = layers x that median, since every layer has the same shape and tree"

// Report is a whole `deft bench` run.
type Report struct {
	Date      time.Time         `json:"date"`
	Device    string            `json:"device"`
	Type      string            `json:"device_type"`
	Driver    string            `json:"driver"`
	DriverVer uint32            `json:"driver_version"`
	API       string            `json:"vulkan_api"`
	UUID      string            `json:"uuid"`
	Deft      BuildInfo         `json:"deft"`
	Go        string            `json:"go_version"`
	OS        string            `json:"os_arch"`
	Config    RunConfig         `json:"config"`
	Probe     *probe.Result     `json:"probe,omitempty"`
	Workloads []*WorkloadResult `json:"workloads"`
}

// NewReport starts a report for device info with the run's configuration.
func NewReport(info vk.DeviceInfo, cfg RunConfig, roof *probe.Result) *Report {
	cfg.LayerTiming = LayerTiming
	return &Report{
		Date:      time.Now().UTC().Truncate(time.Second),
		Device:    info.Name,
		Type:      fmt.Sprint(info.Type),
		Driver:    strings.TrimSpace(info.DriverName + " " + info.DriverInfo),
		DriverVer: info.DriverVersion,
		API:       info.APIVersion,
		UUID:      info.UUID,
		Deft:      DeftBuild(),
		Go:        runtime.Version(),
		OS:        runtime.GOOS + "/" + runtime.GOARCH,
		Config:    cfg,
		Probe:     roof,
	}
}

// Failed lists "workload/method" for every failed method.
func (r *Report) Failed() []string {
	var f []string
	for _, w := range r.Workloads {
		for _, m := range w.Failed() {
			f = append(f, w.Name+"/"+string(m))
		}
	}
	return f
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// LoadReport reads a report written by SaveJSON.
func LoadReport(path string) (*Report, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("read report %s: %w", path, err)
	}
	if len(r.Workloads) == 0 {
		return nil, fmt.Errorf("read report %s: no workloads (not a deft bench --json report?)", path)
	}
	// Summaries are recomputed, so reports saved before a column existed
	// print it too.
	var bw, fma float64
	if r.Probe != nil {
		bw, fma = r.Probe.BytesPerSec, r.Probe.FMAFlopsPerSec
	}
	for _, w := range r.Workloads {
		Summarize(w, r.Config.Model, bw, fma)
	}
	return &r, nil
}

// SaveJSON writes the report to path.
func (r *Report) SaveJSON(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := r.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// FormatDuration prints d with three significant digits in us, ms or s.
func FormatDuration(d time.Duration) string {
	us := float64(d) / 1e3
	switch {
	case us < 10:
		return fmt.Sprintf("%.2f us", us)
	case us < 1000:
		return fmt.Sprintf("%.1f us", us)
	case us < 1e6:
		return fmt.Sprintf("%.2f ms", us/1e3)
	default:
		return fmt.Sprintf("%.2f s", us/1e6)
	}
}

// FormatBytes prints a byte count in kB, MB or GB (powers of 10).
func FormatBytes(b float64) string {
	switch {
	case b < 1e6:
		return fmt.Sprintf("%.1f kB", b/1e3)
	case b < 1e9:
		return fmt.Sprintf("%.1f MB", b/1e6)
	default:
		return fmt.Sprintf("%.2f GB", b/1e9)
	}
}

// FormatFlops formats an arithmetic rate, e.g. "59.9 TFLOP/s" or
// "27.4 GFLOP/s" (CPU devices).
func FormatFlops(f float64) string {
	if f < 1e12 {
		return fmt.Sprintf("%.1f GFLOP/s", f/1e9)
	}
	return fmt.Sprintf("%.1f TFLOP/s", f/1e12)
}

func ratio(x float64) string {
	if x <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x)
}

// WriteTable prints the report as text: WriteHeader, then WriteWorkload
// for every workload.
func (r *Report) WriteTable(w io.Writer) error {
	r.WriteHeader(w)
	for _, wr := range r.Workloads {
		if err := r.WriteWorkload(w, wr); err != nil {
			return err
		}
	}
	return nil
}

// WriteWorkload prints one workload's table, after a blank line.
func (r *Report) WriteWorkload(w io.Writer, wr *WorkloadResult) error {
	fmt.Fprintln(w)
	return writeWorkloadTable(w, wr, r.Config.Model.Layers)
}

// WriteHeader prints the device, build, model, how times are taken and
// the roofline.
func (r *Report) WriteHeader(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "device %s (%s), deft %s, %s\n", r.Device, r.Driver, r.Deft, r.Go)
	fmt.Fprintf(w, "model %s, %s KV; %d runs per step and method, L2 flushed by a %d MiB fill before each run\n",
		c.Model, c.KV, c.Runs, c.FlushBytes>>20)
	fmt.Fprintf(w, "time per step = %d layers x one layer's median (every layer has the same shape and tree; one layer is timed)\n", c.Model.Layers)
	if c.KVLayout == LayoutPaged {
		fmt.Fprintln(w, "workload K/V slots: paged (a kvpool replay: pages of 8 slots, forks on fresh pages)")
	}
	if r.Probe != nil {
		fmt.Fprintf(w, "roofline %.1f GB/s (deft probe, %s)", r.Probe.BytesPerSec/1e9, r.Probe.When.Format(time.DateOnly))
		if r.Probe.FMAFlopsPerSec > 0 {
			fmt.Fprintf(w, ", fp32 FMA %s", FormatFlops(r.Probe.FMAFlopsPerSec))
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "roofline unknown: run `deft probe` on this device for the 'of probe' and 'roofline/layer' columns")
	}
}

func writeWorkloadTable(w io.Writer, wr *WorkloadResult, layers int) error {
	what := fmt.Sprintf("%d decode steps", wr.DecodeSteps)
	total := "total"
	if wr.DecodeSteps == 1 {
		what = "single step"
	} else if len(wr.Sampled) < wr.DecodeSteps {
		what += fmt.Sprintf(", %d sampled (steps %s); total = mean step x %d steps, extrapolated", len(wr.Sampled), intList(wr.Sampled, 8), wr.DecodeSteps)
		total = "total (extrap.)"
	} else {
		what += ", all timed"
	}
	if wr.Prefills > 0 {
		what += fmt.Sprintf("; %d prefill step(s) not timed", wr.Prefills)
	}
	fmt.Fprintf(w, "%s: %s\n  %s\n", wr.Name, wr.Description, what)
	for _, m := range wr.Methods {
		if len(m.Steps) == 0 {
			continue
		}
		q0, q1, t0, t1 := m.Steps[0].Queries, m.Steps[0].Queries, m.Steps[0].Tokens, m.Steps[0].Tokens
		for _, s := range m.Steps {
			q0, q1, t0, t1 = min(q0, s.Queries), max(q1, s.Queries), min(t0, s.Tokens), max(t1, s.Tokens)
		}
		if len(m.Steps) == 1 {
			fmt.Fprintf(w, "  %d queries, %d tree tokens\n", q0, t0)
		} else {
			fmt.Fprintf(w, "  %d..%d queries, %d..%d tree tokens over the sampled steps\n", q0, q1, t0, t1)
		}
		break
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "method\tlayer\tstep (x%d)\tp50\tp90\t%s\tvs flashdecoding\tIO/step\tIO cut\tKV/step\tplan/step (scratch)\tGB/s\tof probe\troofline/layer\tTFLOP/s\tof FMA\tflops floor/layer\tcheck\n", layers, total)
	for _, m := range wr.Methods {
		chk := "-"
		if m.Checked {
			if m.RelL2 != nil {
				chk = fmt.Sprintf("%.1e", *m.RelL2)
			} else {
				chk = "non-finite"
			}
		}
		if m.Error != "" || m.Summary == nil {
			msg := m.Error
			if msg == "" {
				msg = "no result"
			}
			fmt.Fprintf(tw, "%s\tFAILED (not timed): %s\n", m.Label(), msg)
			continue
		}
		s := m.Summary
		frac, roof := "-", "-"
		if s.RooflineFraction > 0 {
			frac = fmt.Sprintf("%.0f%%", 100*s.RooflineFraction)
		}
		if s.RooflineLayer > 0 {
			roof = FormatDuration(s.RooflineLayer)
		}
		fmaFrac, floor := "-", "-"
		if s.FMAFraction > 0 {
			fmaFrac = fmt.Sprintf("%.0f%%", 100*s.FMAFraction)
		}
		if s.ArithmeticLayer > 0 {
			floor = FormatDuration(s.ArithmeticLayer)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.3g\t%s\t%s\t%.3g\t%s\t%s\t%s\n", m.Label(),
			FormatDuration(s.Layer), FormatDuration(s.Step), FormatDuration(s.StepP50), FormatDuration(s.StepP90), FormatDuration(s.Total),
			ratio(s.SpeedUp), FormatBytes(s.IOPerStep), ratio(s.IOReduction), FormatBytes(s.KVPerStep), planCell(s),
			s.Bandwidth/1e9, frac, roof, s.FlopsPerSec/1e12, fmaFrac, floor, chk)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range wr.Methods {
		if st := m.Kernels["partial_attn"]; len(st) > 0 {
			var parts []string
			for _, x := range st {
				parts = append(parts, fmt.Sprintf("%s %.6g", x.Name, x.Value))
			}
			fmt.Fprintf(w, "  %s partial_attn: %s\n", m.Label(), strings.Join(parts, ", "))
		}
	}
	return nil
}

func intList(xs []int, limit int) string {
	var sb strings.Builder
	for i, x := range xs {
		if i == limit {
			fmt.Fprintf(&sb, ", ... (%d more)", len(xs)-limit)
			break
		}
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprint(&sb, x)
	}
	return sb.String()
}

// planCell is the plan/step column: host planning of a decoding step after
// the one before, and in parentheses the same step planned from scratch
// (absent from reports made before plans were timed both ways).
func planCell(s *Summary) string {
	if s.PlanScratch == 0 {
		return FormatDuration(s.Plan)
	}
	return FormatDuration(s.Plan) + " (" + FormatDuration(s.PlanScratch) + ")"
}
