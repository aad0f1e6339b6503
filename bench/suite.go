package bench

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// Config is what Measure measures.
type Config struct {
	Model   Model
	KV      treeattn.KVType
	Methods []treeattn.Method
	// Variants are partial_attn variants to time side by side, each
	// method once per variant (nil: the one the device would choose).
	Variants []string
	Options
	// Roofline is the device's memory bandwidth from `deft probe` in
	// bytes per second; 0 when unknown.
	Roofline float64
	// FMAPeak is the device's fp32 FMA throughput from `deft probe` in
	// flop/s (the arithmetic floor); 0 when unknown.
	FMAPeak float64
	// Progress, when set, is called once per (sampled step, method),
	// measured, skipped or failed.
	Progress func(Progress)
}

// Progress is one finished (sampled step, method) of Measure.
type Progress struct {
	Workload    string
	Step, Steps int // 1-based among the sampled steps, and their number
	Method      treeattn.Method
	// Result is the step's measurement; nil when the method failed (Error)
	// on this or an earlier step.
	Result *StepResult
	Error  string
}

// StepResult is one method's measurement of one sampled step. Times and
// IO are per layer unless named per step.
type StepResult struct {
	Step    int `json:"step"`        // the workload's step index
	Decode  int `json:"decode_step"` // index among the decode steps
	Queries int `json:"queries"`
	Tokens  int `json:"tokens"`
	// PlanTime is host planning of the step after this one (StepTree.Next)
	// by the Planner that planned this one, as in decoding: with
	// PlanNext's promise when the next step extends this one (only what
	// changed is planned again). PlanScratch is the same step planned from
	// scratch (Plan) by that Planner.
	PlanTime    time.Duration `json:"plan_ns"`
	PlanScratch time.Duration `json:"plan_scratch_ns"`
	Layer       time.Duration `json:"layer_median_ns"`  // median over runs
	Reduce      time.Duration `json:"reduce_median_ns"` // of the runs, the reduction's median
	P10         time.Duration `json:"layer_p10_ns"`
	P90         time.Duration `json:"layer_p90_ns"`
	StepTime    time.Duration `json:"step_ns"` // Layers x Layer
	IO          treeattn.IO   `json:"io"`      // per layer
	Workgroups  int           `json:"workgroups"`
	// The plan's tiles, block (chunk) size in tokens, and whether
	// partial_attn merged the partials itself (no reduce_partials).
	Tiles       treeattn.Tiles `json:"tiles"`
	BlockTokens int            `json:"block_tokens"`
	FusedReduce bool           `json:"fused_reduce"`
}

// Summary aggregates a method's sampled steps.
type Summary struct {
	Layer   time.Duration `json:"layer_mean_ns"` // mean over steps of the per-layer median
	Step    time.Duration `json:"step_mean_ns"`  // Layers x Layer
	StepP50 time.Duration `json:"step_p50_ns"`   // over sampled steps (nearest rank)
	StepP90 time.Duration `json:"step_p90_ns"`
	// Total is Step x the workload's decode steps: extrapolated from the
	// sampled steps unless every step was sampled.
	Total time.Duration `json:"total_ns"`
	Plan  time.Duration `json:"plan_mean_ns"` // host planning per step (StepResult.PlanTime)
	// PlanScratch is the mean StepResult.PlanScratch.
	PlanScratch time.Duration `json:"plan_scratch_mean_ns"`
	// IOPerStep and KVPerStep are the mean bytes moved (all of treeattn.IO)
	// and K/V bytes read per step, over all layers; UniqueKVPerStep is the
	// K/V of every tree token once, the roofline's bytes.
	IOPerStep       float64 `json:"io_bytes_per_step"`
	KVPerStep       float64 `json:"kv_bytes_per_step"`
	UniqueKVPerStep float64 `json:"unique_kv_bytes_per_step"`
	// SpeedUp is flashdecoding's Step over this Step, IOReduction
	// flashdecoding's IOPerStep over this IOPerStep; 0 without a
	// flashdecoding result.
	SpeedUp     float64 `json:"speedup_vs_flashdecoding,omitempty"`
	IOReduction float64 `json:"io_reduction_vs_flashdecoding,omitempty"`
	// Bandwidth is the bytes moved over the GPU time, summed over sampled
	// steps; RooflineFraction is Bandwidth over the probe's.
	Bandwidth        float64 `json:"bytes_per_second"`
	RooflineFraction float64 `json:"roofline_fraction,omitempty"`
	// RooflineLayer is the mean unique K/V bytes of a layer over the
	// probe's bandwidth: the time one layer cannot beat.
	RooflineLayer time.Duration `json:"roofline_layer_ns,omitempty"`
	// FlopsPerSec is the arithmetic the kernels did (every computed
	// (query head, token) pair, masked or not, at 4 x head dim flops: Q K
	// and P V) over the GPU time; FMAFraction is it over the probe's fp32
	// FMA peak; ArithmeticLayer is the flops a layer needs (each query's
	// path once) over that peak: the other time a layer cannot beat.
	FlopsPerSec     float64       `json:"flops_per_second,omitempty"`
	FMAFraction     float64       `json:"fma_fraction,omitempty"`
	ArithmeticLayer time.Duration `json:"arithmetic_layer_ns,omitempty"`
}

// MethodResult is one method on one workload.
type MethodResult struct {
	Method treeattn.Method `json:"method"`
	// Variant is the partial_attn variant the method ran (the plan's);
	// Want is the one asked for ("": the device's choice).
	Variant string `json:"variant,omitempty"`
	Want    string `json:"-"`
	// Checked is set when the output on the first sampled step was
	// compared with the CPU reference; RelL2 is the relative L2 error
	// (nil when the output was not finite).
	Checked bool     `json:"checked"`
	RelL2   *float64 `json:"rel_l2,omitempty"`
	// Error is set when the method failed its check or could not run; a
	// failed method has no Steps and no Summary.
	Error string `json:"error,omitempty"`
	// Kernels are the driver's compiler statistics of the method's
	// kernels on the first sampled step, where the device reports them.
	Kernels map[string][]vk.KernelStat `json:"kernel_stats,omitempty"`
	Steps   []StepResult               `json:"steps,omitempty"`
	Summary *Summary                   `json:"summary,omitempty"`

	planner *treeattn.Planner // kept from step to step, as in decoding
}

// WorkloadResult is every method on one workload.
type WorkloadResult struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	DecodeSteps int            `json:"decode_steps"`
	Prefills    int            `json:"prefill_steps_skipped,omitempty"`
	Sampled     []int          `json:"sampled_steps"`
	Methods     []MethodResult `json:"methods"`
}

// Label names a result row: the method, and its variant when known.
func (m *MethodResult) Label() string {
	if m.Variant == "" {
		return string(m.Method)
	}
	return string(m.Method) + " [" + m.Variant + "]"
}

// Method returns the result of method m, or nil.
func (w *WorkloadResult) Method(m treeattn.Method) *MethodResult {
	for i := range w.Methods {
		if w.Methods[i].Method == m {
			return &w.Methods[i]
		}
	}
	return nil
}

// Failed lists the methods that failed.
func (w *WorkloadResult) Failed() []treeattn.Method {
	var f []treeattn.Method
	for _, m := range w.Methods {
		if m.Error != "" {
			f = append(f, m.Method)
		}
	}
	return f
}

// Measure times every method of cfg on the sampled steps of w. Methods are
// checked against the CPU reference on the first sampled step before they
// are timed; a method that fails (its check, its plan, or a run) is
// reported with Error and never timed. The error is for failures that
// concern every method (inputs, the flush buffer).
func Measure(d *vk.Device, rng *rand.Rand, w *Sampled, cfg Config) (*WorkloadResult, error) {
	if err := cfg.Model.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Options.defaults(d); err != nil {
		return nil, err
	}
	if len(w.Steps) == 0 {
		return nil, fmt.Errorf("workload %s: no steps to measure", w.Name)
	}
	if len(cfg.Methods) == 0 {
		return nil, errors.New("no methods to measure")
	}
	if !d.Info.Timestamps {
		return nil, fmt.Errorf("device %s has no compute timestamps", d.Info.Name)
	}
	res := &WorkloadResult{Name: w.Name, Description: w.Description, DecodeSteps: w.DecodeSteps, Prefills: w.Prefills}
	for _, st := range w.Steps {
		res.Sampled = append(res.Sampled, st.Step)
	}
	variants := cfg.Variants
	if len(variants) == 0 {
		variants = []string{""}
	}
	for _, m := range cfg.Methods {
		for _, v := range variants {
			res.Methods = append(res.Methods, MethodResult{Method: m, Want: v})
		}
	}
	flush, err := d.NewBuffer(cfg.FlushBytes)
	if err != nil {
		return nil, fmt.Errorf("flush buffer: %w", err)
	}
	defer flush.Close()
	shape := cfg.Model.Shape
	tol := cfg.Tolerance
	if tol == 0 {
		tol = conformance.Tolerance(cfg.KV)
	}
	for si, st := range w.Steps {
		if err := st.Tree.Validate(st.Tree.NumSlots()); err != nil {
			return nil, fmt.Errorf("workload %s step %d: %w", w.Name, st.Step, err)
		}
		in := conformance.NewInputs(rng, st.Tree, shape, cfg.KV)
		queryBytes := uint64(len(st.Tree.Queries)) * uint64(shape.QHeads) * uint64(shape.HeadDim) * 4
		b, err := upload(d, in, cfg.KV, queryBytes)
		if err != nil {
			return nil, fmt.Errorf("workload %s step %d: inputs: %w", w.Name, st.Step, err)
		}
		var want []float64
		for mi := range res.Methods {
			mr := &res.Methods[mi]
			if mr.Error == "" {
				if si == 0 && want == nil {
					scale := shape.DefaultScale()
					if want, err = treeattn.Reference(st.Tree, shape, in.Q, in.K, in.V, scale); err != nil {
						b.close()
						return nil, fmt.Errorf("workload %s step %d: reference: %w", w.Name, st.Step, err)
					}
				}
				sr, err := measureOne(d, st, mr, cfg, b, flush, si == 0, want, tol)
				if err != nil {
					mr.Error = fmt.Sprintf("step %d: %v", st.Step, err)
					mr.Steps = nil
				} else {
					mr.Steps = append(mr.Steps, sr)
				}
			}
			if cfg.Progress != nil {
				p := Progress{Workload: w.Name, Step: si + 1, Steps: len(w.Steps), Method: mr.Method, Error: mr.Error}
				if mr.Error == "" {
					p.Result = &mr.Steps[len(mr.Steps)-1]
				}
				cfg.Progress(p)
			}
		}
		b.close()
	}
	Summarize(res, cfg.Model, cfg.Roofline, cfg.FMAPeak)
	return res, nil
}

// planRuns is how many times a step is planned for its plan time.
const planRuns = 5

// planTimes returns the median times of planning st.Next after st.Tree,
// with PlanNext's promise when st.NextExtends (incr) and from scratch.
// Each timed plan follows an untimed plan of st.Tree, so that it starts
// from step n's state, not from a plan of the same tree (which would
// copy everything). Without a Next, both time Plan of st.Tree.
func planTimes(pl *treeattn.Planner, st StepTree, cfg treeattn.Config) (incr, scratch time.Duration, err error) {
	var ti, ts [planRuns]time.Duration
	for i := -1; i < planRuns; i++ {
		for k, times := range []*[planRuns]time.Duration{&ti, &ts} {
			if _, err := pl.Plan(st.Tree, cfg); err != nil {
				return 0, 0, err
			}
			start := time.Now()
			switch {
			case st.Next == nil:
				_, err = pl.Plan(st.Tree, cfg)
			case k == 0:
				_, err = pl.PlanNext(st.Next, cfg, st.NextExtends)
			default:
				_, err = pl.Plan(st.Next, cfg)
			}
			if err != nil {
				return 0, 0, fmt.Errorf("plan the next step: %w", err)
			}
			if i >= 0 {
				times[i] = time.Since(start)
			}
		}
	}
	slices.Sort(ti[:])
	slices.Sort(ts[:])
	return ti[planRuns/2], ts[planRuns/2], nil
}

func measureOne(d *vk.Device, st StepTree, mr *MethodResult, cfg Config, b *buffers, flush *vk.Buffer, first bool, want []float64, tol float64) (StepResult, error) {
	sr := StepResult{Step: st.Step, Decode: st.Decode, Queries: len(st.Tree.Queries), Tokens: st.Tree.TotalTokens()}
	pcfg := treeattn.Config{Method: mr.Method, Shape: cfg.Model.Shape, KV: cfg.KV, Limits: treeattn.LimitsOf(d.Info),
		BlockTokens: cfg.Block, MaxPasses: cfg.MaxPasses, Tiles: cfg.Tiles, KernelVariant: mr.Want, Reduce: cfg.Reduce}
	// Plan time as in decoding, where one Planner keeps its memory from
	// step to step and plans step n+1 after step n.
	if mr.planner == nil {
		mr.planner = new(treeattn.Planner)
	}
	var err error
	if sr.PlanTime, sr.PlanScratch, err = planTimes(mr.planner, st, pcfg); err != nil {
		return sr, err
	}
	plan, err := mr.planner.Plan(st.Tree, pcfg)
	if err != nil {
		return sr, err
	}
	mr.Variant = plan.Variant
	sr.IO = plan.IO
	sr.Workgroups = plan.Items * cfg.Model.Shape.KVHeads
	sr.Tiles, sr.BlockTokens = plan.Tiles, plan.BlockTokens
	dp, err := plan.Upload(d)
	if err != nil {
		return sr, err
	}
	defer dp.Close()
	sr.FusedReduce = dp.Fused()
	if first {
		if attn, reduce, err := dp.KernelStats(); err == nil {
			mr.Kernels = map[string][]vk.KernelStat{"partial_attn": attn, "reduce_partials": reduce}
		}
		rel, err := check(d, dp, b, want)
		if err != nil {
			return sr, err
		}
		mr.Checked = true
		if !math.IsInf(rel, 0) && !math.IsNaN(rel) {
			mr.RelL2 = &rel
		}
		if !(rel <= tol) {
			return sr, fmt.Errorf("output differs from the CPU reference: relative L2 %.3g > %.3g", rel, tol)
		}
	}
	lt, err := timeLayer(d, dp, b, flush, cfg.Options)
	if err != nil {
		return sr, err
	}
	sr.Layer, sr.Reduce, sr.P10, sr.P90 = lt.median, lt.reduce, lt.p10, lt.p90
	sr.StepTime = time.Duration(cfg.Model.Layers) * lt.median
	return sr, nil
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 1) of
// sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(k, 0), len(sorted)-1)]
}

// Summarize fills every successful method's Summary from its steps:
// layers scales per-layer figures to a step, roofline (bytes/s, 0 when
// unknown) gives the roofline columns, and flashdecoding's result, when
// present and successful, the speed-up and IO reduction.
// pairFlops is the arithmetic of one (query head, token) pair: Q K and P V
// at two flops per multiply-add each.
func pairFlops(m Model) float64 { return 4 * float64(m.Shape.HeadDim) * float64(m.Shape.QHeads) }

// Summarize fills every method's Summary from its steps: model m, the
// probe's bandwidth (bytes/s) and fp32 FMA peak (flop/s), 0 when unknown.
func Summarize(res *WorkloadResult, m Model, roofline, fmaPeak float64) {
	layers := m.Layers
	for i := range res.Methods {
		mr := &res.Methods[i]
		mr.Summary = nil
		if mr.Error != "" || len(mr.Steps) == 0 {
			continue
		}
		n := float64(len(mr.Steps))
		var layer, plan, planScratch, bytes, gpu, kv, unique, flops, pathFlops float64
		steps := make([]time.Duration, 0, len(mr.Steps))
		for _, s := range mr.Steps {
			layer += float64(s.Layer)
			plan += float64(s.PlanTime)
			planScratch += float64(s.PlanScratch)
			bytes += float64(s.IO.Total())
			kv += float64(s.IO.KVBytes)
			unique += float64(s.IO.KVUniqueBytes)
			flops += float64(s.IO.MaskedPairs) * pairFlops(m)
			pathFlops += float64(s.IO.PathTokens) * pairFlops(m)
			gpu += s.Layer.Seconds()
			steps = append(steps, time.Duration(layers)*s.Layer)
		}
		slices.Sort(steps)
		L := float64(layers)
		s := &Summary{
			Layer:           time.Duration(layer / n),
			Plan:            time.Duration(plan / n),
			PlanScratch:     time.Duration(planScratch / n),
			StepP50:         percentile(steps, 0.5),
			StepP90:         percentile(steps, 0.9),
			IOPerStep:       L * bytes / n,
			KVPerStep:       L * kv / n,
			UniqueKVPerStep: L * unique / n,
		}
		s.Step = time.Duration(layers) * s.Layer
		s.Total = time.Duration(float64(s.Step) * float64(res.DecodeSteps))
		if gpu > 0 {
			s.Bandwidth = bytes / gpu
			s.FlopsPerSec = flops / gpu
		}
		if fmaPeak > 0 {
			s.FMAFraction = s.FlopsPerSec / fmaPeak
			s.ArithmeticLayer = time.Duration(pathFlops / n / fmaPeak * 1e9)
		}
		if roofline > 0 {
			s.RooflineFraction = s.Bandwidth / roofline
			s.RooflineLayer = time.Duration(unique / n / roofline * 1e9)
		}
		mr.Summary = s
	}
	base := res.Method(treeattn.MethodFlashDecoding)
	if base == nil || base.Summary == nil {
		return
	}
	for i := range res.Methods {
		s := res.Methods[i].Summary
		if s == nil {
			continue
		}
		if s.Step > 0 {
			s.SpeedUp = float64(base.Summary.Step) / float64(s.Step)
		}
		if s.IOPerStep > 0 {
			s.IOReduction = base.Summary.IOPerStep / s.IOPerStep
		}
	}
}
