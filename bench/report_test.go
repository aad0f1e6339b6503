package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/probe"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

func step(s int, layer time.Duration, io treeattn.IO) StepResult {
	return StepResult{Step: s, Decode: s - 1, Queries: 2, Tokens: 100 + s, Layer: layer, StepTime: 4 * layer, PlanTime: time.Millisecond, IO: io}
}

// syntheticWorkload has flashdecoding, flatten and a failed densemask over
// two sampled steps of a 10-step workload, for a 4-layer model.
func syntheticWorkload() *WorkloadResult {
	fdIO := treeattn.IO{KVBytes: 8000, KVUniqueBytes: 2000, PartialWrite: 1000, PartialRead: 1000, MaskedPairs: 80, PathTokens: 80}
	flIO := treeattn.IO{KVBytes: 2000, KVUniqueBytes: 2000, MaskBytes: 500, PartialWrite: 250, PartialRead: 250, MaskedPairs: 100, PathTokens: 80}
	rel := 1e-7
	w := &WorkloadResult{Name: "synthetic", Description: "two sampled steps", DecodeSteps: 10, Prefills: 1, Sampled: []int{1, 10},
		Methods: []MethodResult{
			{Method: treeattn.MethodFlatten, Checked: true, RelL2: &rel, Steps: []StepResult{step(1, 50*time.Microsecond, flIO), step(10, 100*time.Microsecond, flIO)}},
			{Method: treeattn.MethodFlashDecoding, Checked: true, RelL2: &rel, Steps: []StepResult{step(1, 100*time.Microsecond, fdIO), step(10, 300*time.Microsecond, fdIO)}},
			{Method: treeattn.MethodDenseMask, Checked: true, Error: "step 1: output differs from the CPU reference: relative L2 0.5 > 0.002"},
		}}
	Summarize(w, synthModel, 1e9, 1e12)
	return w
}

// synthModel: 2 query heads of dim 64, so a (query, token) pair is 512 flops.
var synthModel = Model{Name: "m", Shape: treeattn.Shape{QHeads: 2, KVHeads: 2, HeadDim: 64}, Layers: 4}

func TestSummarize(t *testing.T) {
	w := syntheticWorkload()
	fl := w.Method(treeattn.MethodFlatten).Summary
	fd := w.Method(treeattn.MethodFlashDecoding).Summary
	require.NotNil(t, fl)
	require.NotNil(t, fd)
	assert.Nil(t, w.Method(treeattn.MethodDenseMask).Summary, "a failed method has no summary")

	assert.Equal(t, 75*time.Microsecond, fl.Layer)
	assert.Equal(t, 300*time.Microsecond, fl.Step, "4 layers")
	assert.Equal(t, 200*time.Microsecond, fl.StepP50, "nearest rank of 2 values")
	assert.Equal(t, 400*time.Microsecond, fl.StepP90)
	assert.Equal(t, 3*time.Millisecond, fl.Total, "mean step x 10 decode steps")
	assert.Equal(t, time.Millisecond, fl.Plan)
	assert.Equal(t, 4.0*3000, fl.IOPerStep, "K/V, mask and partials")
	assert.Equal(t, 4.0*2000, fl.KVPerStep)
	assert.Equal(t, 4.0*2000, fl.UniqueKVPerStep)
	assert.InDelta(t, 800.0/300, fl.SpeedUp, 1e-12, "flashdecoding 800 us per step")
	assert.InDelta(t, 40000.0/12000, fl.IOReduction, 1e-12)
	assert.InDelta(t, 6000/150e-6, fl.Bandwidth, 1e-3, "bytes over GPU time of the sampled layers")
	assert.InDelta(t, 6000/150e-6/1e9, fl.RooflineFraction, 1e-12)
	assert.Equal(t, 2*time.Microsecond, fl.RooflineLayer, "2000 unique bytes at 1 GB/s")
	assert.InDelta(t, 2*100*512/150e-6, fl.FlopsPerSec, 1e-3, "100 computed pairs x 512 flops, two steps over 150 us")
	assert.InDelta(t, 2*100*512/150e-6/1e12, fl.FMAFraction, 1e-15)
	assert.Equal(t, 40*time.Nanosecond, fl.ArithmeticLayer, "80 path tokens x 512 flops at 1 TFLOP/s: 40.96 ns")
	assert.InDelta(t, 2*80*512/400e-6, fd.FlopsPerSec, 1e-3)
	assert.Equal(t, 1.0, fd.SpeedUp)
	assert.Equal(t, 1.0, fd.IOReduction)

	// Without a roofline or a flashdecoding result those columns are empty.
	w.Methods = w.Methods[:1]
	Summarize(w, synthModel, 0, 0)
	s := w.Methods[0].Summary
	assert.Zero(t, s.SpeedUp)
	assert.Zero(t, s.RooflineFraction)
	assert.Zero(t, s.RooflineLayer)
	assert.Zero(t, s.FMAFraction)
	assert.Zero(t, s.ArithmeticLayer)
	assert.Positive(t, s.FlopsPerSec, "achieved flops need no probe")
	assert.Equal(t, 300*time.Microsecond, s.Step)
}

func syntheticReport() *Report {
	info := vk.DeviceInfo{Name: "Test GPU", DriverName: "testdrv", DriverInfo: "1.2.3", UUID: "abcd", APIVersion: "1.3.0"}
	roof := &probe.Result{Device: "Test GPU", UUID: "abcd", BytesPerSec: 1e9, FMAFlopsPerSec: 1e12, When: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)}
	r := NewReport(info, RunConfig{Model: synthModel,
		KV: "f16", Methods: treeattn.Methods, Runs: 5, Sample: 2, FlushBytes: 16 << 20, Seed: 7}, roof)
	single := &WorkloadResult{Name: "snap", Description: "one tree", DecodeSteps: 1, Sampled: []int{0},
		Methods: []MethodResult{
			{Method: treeattn.MethodFlatten, Checked: true, Steps: []StepResult{step(0, 40*time.Microsecond, treeattn.IO{KVBytes: 100, KVUniqueBytes: 100})}},
			{Method: treeattn.MethodFlashDecoding, Checked: true, Steps: []StepResult{step(0, 90*time.Microsecond, treeattn.IO{KVBytes: 400, KVUniqueBytes: 100})}},
		}}
	Summarize(single, synthModel, 1e9, 0)
	r.Workloads = []*WorkloadResult{syntheticWorkload(), single}
	return r
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, syntheticReport().WriteTable(&b))
	out := b.String()
	for _, want := range []string{
		"device Test GPU (testdrv 1.2.3)",
		"model m (2 q heads, 2 kv heads, dim 64, 4 layers), f16 KV; 5 runs",
		"time per step = 4 layers x one layer's median",
		"roofline 1.0 GB/s (deft probe, 2026-11-25), fp32 FMA 1.0 TFLOP/s",
		"10 decode steps, 2 sampled (steps 1, 10); total = mean step x 10 steps, extrapolated; 1 prefill step(s) not timed",
		"total (extrap.)",
		"densemask      FAILED (not timed): step 1: output differs",
		"snap: one tree\n  single step\n  2 queries, 100 tree tokens",
	} {
		assert.Contains(t, out, want)
	}
	var flat string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "flatten") && flat == "" {
			flat = line
		}
	}
	assert.Equal(t, []string{"flatten", "75.0", "us", "300.0", "us", "200.0", "us", "400.0", "us", "3.00", "ms", "2.67x", "12.0", "kB", "3.33x",
		"8.0", "kB", "1.00", "ms", "0.04", "4%", "2.00", "us", "0.000683", "0%", "0.04", "us", "1.0e-07"}, strings.Fields(flat))
}

func TestFormat(t *testing.T) {
	assert.Equal(t, "1.50 us", FormatDuration(1500*time.Nanosecond))
	assert.Equal(t, "205.0 us", FormatDuration(205*time.Microsecond))
	assert.Equal(t, "1.23 ms", FormatDuration(1234*time.Microsecond))
	assert.Equal(t, "12.00 s", FormatDuration(12*time.Second))
	assert.Equal(t, "1.5 kB", FormatBytes(1500))
	assert.Equal(t, "24.6 MB", FormatBytes(24.6e6))
	assert.Equal(t, "3.10 GB", FormatBytes(3.1e9))
	assert.Equal(t, "59.9 TFLOP/s", FormatFlops(59.93e12))
	assert.Equal(t, "27.4 GFLOP/s", FormatFlops(27.4e9))
}

func TestReportJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.json")
	require.NoError(t, syntheticReport().SaveJSON(path))
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var doc struct {
		Device    string `json:"device"`
		Driver    string `json:"driver"`
		Go        string `json:"go_version"`
		Deft      map[string]any
		Config    map[string]any `json:"config"`
		Probe     map[string]any `json:"probe"`
		Workloads []struct {
			Name        string `json:"name"`
			DecodeSteps int    `json:"decode_steps"`
			Sampled     []int  `json:"sampled_steps"`
			Methods     []struct {
				Method  string           `json:"method"`
				Error   string           `json:"error"`
				Steps   []map[string]any `json:"steps"`
				Summary map[string]float64
			} `json:"methods"`
		} `json:"workloads"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	assert.Equal(t, "Test GPU", doc.Device)
	assert.Equal(t, "testdrv 1.2.3", doc.Driver)
	assert.True(t, strings.HasPrefix(doc.Go, "go"))
	assert.NotNil(t, doc.Deft)
	assert.Equal(t, float64(4), doc.Config["model"].(map[string]any)["layers"])
	assert.Equal(t, LayerTiming, doc.Config["layer_timing"])
	assert.Equal(t, float64(7), doc.Config["seed"])
	assert.Equal(t, 1e9, doc.Probe["bytes_per_second"])
	require.Len(t, doc.Workloads, 2)
	w := doc.Workloads[0]
	assert.Equal(t, "synthetic", w.Name)
	assert.Equal(t, 10, w.DecodeSteps)
	assert.Equal(t, []int{1, 10}, w.Sampled)
	require.Len(t, w.Methods, 3)
	assert.Equal(t, float64(300_000), w.Methods[0].Summary["step_mean_ns"])
	assert.Equal(t, float64(3_000_000), w.Methods[0].Summary["total_ns"])
	assert.InDelta(t, 800.0/300, w.Methods[0].Summary["speedup_vs_flashdecoding"], 1e-9)
	assert.Len(t, w.Methods[0].Steps, 2)
	assert.Equal(t, float64(50_000), w.Methods[0].Steps[0]["layer_median_ns"])
	assert.Contains(t, w.Methods[2].Error, "differs")
	assert.Nil(t, w.Methods[2].Summary)
}

func TestDeftBuild(t *testing.T) {
	b := DeftBuild()
	// Test binaries carry no VCS stamp, so the revision comes from git in
	// this repository when git is installed.
	if _, err := exec.LookPath("git"); err != nil {
		assert.Empty(t, b.Revision)
		assert.Equal(t, "unknown", BuildInfo{}.String())
		return
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	require.NoError(t, err)
	assert.Equal(t, strings.TrimSpace(string(head)), b.Revision)
	assert.Equal(t, "git", b.Source)
	assert.Equal(t, "(devel) 0123456789ab+dirty", BuildInfo{Version: "(devel)", Revision: "0123456789abcdef", Modified: true}.String())
}

func TestSavePlot(t *testing.T) {
	dir := t.TempDir()
	r := syntheticReport()
	png := filepath.Join(dir, "bench.png")
	require.NoError(t, r.SavePlot(png))
	b, err := os.ReadFile(png)
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")), "a PNG file")

	svg := filepath.Join(dir, "bench.SVG")
	require.NoError(t, r.SavePlot(svg))
	b, err = os.ReadFile(svg)
	require.NoError(t, err)
	assert.Contains(t, string(b), "<svg")
	for _, want := range []string{"synthetic", "flatten", "flashdecoding", "densemask", "K/V read"} {
		assert.Contains(t, string(b), want, "the SVG names %s", want)
	}

	assert.ErrorContains(t, r.SavePlot(filepath.Join(dir, "bench.pdf")), "want a .png or .svg file")
	assert.ErrorContains(t, (&Report{}).SavePlot(filepath.Join(dir, "empty.png")), "no workloads")
}

// TestLoadReportRecomputesSummaries: a report saved without summaries (or
// before a column existed) gets them from its steps and probe on load.
func TestLoadReportRecomputesSummaries(t *testing.T) {
	r := syntheticReport()
	want := *r.Workloads[0].Method(treeattn.MethodFlatten).Summary
	for _, w := range r.Workloads {
		for i := range w.Methods {
			w.Methods[i].Summary = nil
		}
	}
	path := filepath.Join(t.TempDir(), "r.json")
	require.NoError(t, r.SaveJSON(path))
	got, err := LoadReport(path)
	require.NoError(t, err)
	s := got.Workloads[0].Method(treeattn.MethodFlatten).Summary
	require.NotNil(t, s)
	assert.Equal(t, want.Layer, s.Layer)
	assert.InDelta(t, want.FlopsPerSec, s.FlopsPerSec, 1e-6)
	assert.InDelta(t, want.FMAFraction, s.FMAFraction, 1e-15, "the saved probe's FMA peak")
	assert.Equal(t, want.ArithmeticLayer, s.ArithmeticLayer)
	assert.InDelta(t, want.SpeedUp, s.SpeedUp, 1e-12)
	assert.Nil(t, got.Workloads[0].Method(treeattn.MethodDenseMask).Summary, "a failed method stays without one")

	_, err = LoadReport(filepath.Join(t.TempDir(), "missing.json"))
	require.Error(t, err)
}

func TestPlanCell(t *testing.T) {
	assert.Equal(t, "1.00 ms", planCell(&Summary{Plan: time.Millisecond}), "reports saved before plans were timed both ways")
	assert.Equal(t, "20.0 us (35.0 us)", planCell(&Summary{Plan: 20 * time.Microsecond, PlanScratch: 35 * time.Microsecond}))
}
