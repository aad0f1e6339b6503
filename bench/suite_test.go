package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/replay"
	"github.com/deft-vk/deft/treeattn"
)

// tinyModel keeps lavapipe fast: 4 query heads over 2 KV heads (GQA), dim
// 64, 3 layers.
var tinyModel = Model{Name: "tiny", Shape: treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}, Layers: 3}

func tinyConfig(progress *int) Config {
	return Config{
		Model:    tinyModel,
		KV:       treeattn.KVF16,
		Methods:  treeattn.Methods,
		Options:  Options{Runs: 3, FlushBytes: 1 << 20, WarmUp: -1},
		Roofline: 1e9,
		Progress: func(Progress) { *progress++ },
	}
}

func TestMeasureWorkload(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	w, err := Sample("tiny-fewshot", "", func() (replay.Workload, error) { return replay.NewFewShot(48, 3, 9) }, 3, LayoutContiguous)
	require.NoError(t, err)
	calls := 0
	res, err := Measure(d, rng, w, tinyConfig(&calls))
	require.NoError(t, err)
	assert.Equal(t, 3*len(treeattn.Methods), calls, "one progress call per sampled step and method")
	assert.Equal(t, 9, res.DecodeSteps)
	assert.Equal(t, []int{1, 5, 9}, res.Sampled)
	assert.Empty(t, res.Failed())
	require.Len(t, res.Methods, len(treeattn.Methods))
	for _, m := range res.Methods {
		require.Empty(t, m.Error, m.Method)
		assert.True(t, m.Checked, m.Method)
		require.NotNil(t, m.RelL2, m.Method)
		assert.LessOrEqual(t, *m.RelL2, conformance.Tolerance(treeattn.KVF16), m.Method)
		require.Len(t, m.Steps, 3, m.Method)
		for i, s := range m.Steps {
			assert.Equal(t, res.Sampled[i], s.Step)
			assert.Equal(t, 3, s.Queries)
			assert.Equal(t, 48+3*s.Step, s.Tokens)
			assert.Positive(t, s.Layer, m.Method)
			assert.LessOrEqual(t, s.P10, s.Layer)
			assert.LessOrEqual(t, s.Layer, s.P90)
			assert.LessOrEqual(t, s.Reduce, s.Layer)
			assert.Equal(t, 3*s.Layer, s.StepTime, "a step is layers x one layer")
			assert.Positive(t, s.PlanTime)
			assert.Positive(t, s.PlanScratch)
			assert.Equal(t, int64(s.Tokens*2*64*2*2), s.IO.KVUniqueBytes, "K and V of every token, 2 KV heads, dim 64, fp16")
		}
		s := m.Summary
		require.NotNil(t, s, m.Method)
		assert.Equal(t, 3*s.Layer, s.Step)
		assert.Equal(t, time.Duration(float64(s.Step)*9), s.Total, "total = mean step x 9 decode steps")
		assert.LessOrEqual(t, s.StepP50, s.StepP90)
		assert.Positive(t, s.Bandwidth)
		assert.InDelta(t, s.Bandwidth/1e9, s.RooflineFraction, 1e-12)
		assert.Positive(t, s.SpeedUp)
		assert.Positive(t, s.IOReduction)
	}
	fd := res.Method(treeattn.MethodFlashDecoding).Summary
	assert.Equal(t, 1.0, fd.SpeedUp)
	assert.Equal(t, 1.0, fd.IOReduction)
	flat := res.Method(treeattn.MethodFlatten).Summary
	assert.Less(t, flat.KVPerStep, fd.KVPerStep, "flatten reads the shared prompt once, flashdecoding once per branch")
	assert.Equal(t, flat.UniqueKVPerStep, flat.KVPerStep)
}

func TestMeasureFailedMethodIsNotTimed(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	tr := treeattn.SpeculativeStar(40, 5)
	calls := 0
	cfg := tinyConfig(&calls)
	cfg.Methods = []treeattn.Method{treeattn.MethodFlatten, treeattn.MethodFlashDecoding}
	cfg.Tolerance = 1e-300 // no real output is this close to the float64 reference
	res, err := Measure(d, rng, SingleStep("star", "", tr), cfg)
	require.NoError(t, err)
	assert.Equal(t, 2, calls)
	assert.Equal(t, cfg.Methods, res.Failed())
	for _, m := range res.Methods {
		assert.True(t, m.Checked, m.Method)
		assert.Contains(t, m.Error, "differs from the CPU reference", m.Method)
		assert.Empty(t, m.Steps, "a failed method is not timed")
		assert.Nil(t, m.Summary)
	}
	r := &Report{Config: RunConfig{Model: tinyModel}, Workloads: []*WorkloadResult{res}}
	assert.Equal(t, []string{"star/flatten", "star/flashdecoding"}, r.Failed())
}

func TestMeasureSnapshotAndErrors(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	calls := 0
	cfg := tinyConfig(&calls)
	cfg.KV = treeattn.KVF32
	cfg.Methods = []treeattn.Method{treeattn.MethodNode, treeattn.MethodDenseMask}
	res, err := Measure(d, rng, SingleStep("fewshot", "tiny few-shot", treeattn.FewShotTree(30, 4, 6)), cfg)
	require.NoError(t, err)
	assert.Equal(t, 1, res.DecodeSteps)
	for _, m := range res.Methods {
		require.Empty(t, m.Error)
		require.NotNil(t, m.Summary)
		assert.Equal(t, m.Summary.Step, m.Summary.Total, "a single step's total is the step")
		assert.Equal(t, m.Summary.Step, m.Summary.StepP90)
		assert.Zero(t, m.Summary.SpeedUp, "no flashdecoding result to compare with")
	}

	bad := cfg
	bad.Methods = nil
	_, err = Measure(d, rng, SingleStep("x", "", treeattn.FewShotTree(30, 4, 6)), bad)
	assert.ErrorContains(t, err, "no methods")
	bad = cfg
	bad.Runs = MaxRuns + 1
	_, err = Measure(d, rng, SingleStep("x", "", treeattn.FewShotTree(30, 4, 6)), bad)
	assert.ErrorContains(t, err, "runs")
	bad = cfg
	bad.Model.Shape.HeadDim = 30
	_, err = Measure(d, rng, SingleStep("x", "", treeattn.FewShotTree(30, 4, 6)), bad)
	assert.ErrorContains(t, err, "not a multiple of 4")
	_, err = Measure(d, rng, &Sampled{Name: "empty"}, cfg)
	assert.ErrorContains(t, err, "no steps")
}

// TestMeasurePagedWorkload times a workload whose trees use a KV pool's
// paged slots: every method still matches the reference.
func TestMeasurePagedWorkload(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	w, err := Sample("tiny-fewshot", "", func() (replay.Workload, error) { return replay.NewFewShot(45, 3, 9) }, 2, LayoutPaged)
	require.NoError(t, err)
	calls := 0
	res, err := Measure(d, rng, w, tinyConfig(&calls))
	require.NoError(t, err)
	assert.Empty(t, res.Failed())
	for _, m := range res.Methods {
		require.Empty(t, m.Error, m.Method)
		require.NotNil(t, m.RelL2, m.Method)
		assert.LessOrEqual(t, *m.RelL2, conformance.Tolerance(treeattn.KVF16), m.Method)
	}
}
