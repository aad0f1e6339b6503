// Package genbench is the end-to-end tree-decoding benchmark, `deft bench
// generate`: one decoding step of a whole model (every layer, the logits)
// in the scenarios of the DeFT paper — a single sequence, few-shot
// branches, speculative token-tree verification, beam search — and prompt
// prefill, with attention by each method on the same model.
//
// A scenario's tree is built in a kvpool (Append, Fork, Draft) and its K/V
// pages are filled with random fp16 values instead of a real prefill of up
// to 24000 tokens: one layer's K and V are written from the host and
// copied to every other layer (attention reads the same bytes either way).
// The step's own tokens are then evaluated by model.Forward, which writes
// their K/V into their slots and returns the logits of every step token
// (what a decoder samples from); prefill evaluates the whole prompt
// (in chunks of the model's Options().ChunkTokens: model.DefaultChunkTokens,
// 2048, unless set) and returns the last row's logits.
// Rerunning a step rewrites the same slots, so every run does identical
// work.
//
// Times: after a warm-up, each run of a step takes the GPU time between a
// timestamp at the start and one at the end of each submission (summed
// over chunks) and the host wall time of the Forward call (planning,
// uploads, submission, waiting and reading the logits back); the median of
// the runs is reported. Attention's share comes from further runs with
// timestamps around every layer's attention dispatches (those waits slow
// the step a little, so they are kept out of the step time): the summed
// attention intervals over the GPU time of the same runs.
//
// The weight-read floor is the bytes of weights a step reads (every layer
// matrix and the output matrix; the token embedding is only gathered, a few
// rows) over the device bandwidth of `deft probe`; a step cannot take less
// time than reading its weights once.
//
// Before anything is timed, the model's shape and weight types are checked
// on a small slice (one block, a vocabulary of SliceVocab) against the
// float64 CPU reference, for every method (CheckSlice).
package genbench

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/deft-vk/deft/bench"
	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/replay"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// Scenario names, in report order.
const (
	Single  = "single"
	FewShot = "fewshot"
	Spec64  = "spec64"
	Spec256 = "spec256"
	Beams   = "beams"
	Prefill = "prefill"
)

// ScenarioNames lists every scenario.
func ScenarioNames() []string { return []string{Single, FewShot, Spec64, Spec256, Beams, Prefill} }

// Sizes are the token counts of the scenarios (the issue's, by default).
type Sizes struct {
	SingleContext int // single sequence: tokens before the step's
	Prompt        int // few-shot prompt
	Branches      int // few-shot branches
	BranchLen     int // tokens of each branch before the step's
	SpecContext   int // context under a speculative token tree
	BeamPrompt    int // beam search: prompt shared by every beam
	Beams         int // beams
	BeamLen       int // tokens of each beam before the step's (context = BeamPrompt + BeamLen)
	PrefillTokens int // prompt evaluated by prefill
}

// DefaultSizes are the issue's: context 4000; 4000-token prompt with 50
// branches of 400; token trees over 1000 tokens; 8 beams at context 2000
// (a 1500-token prompt and 500 tokens of their own); a 4000-token prefill.
var DefaultSizes = Sizes{SingleContext: 4000, Prompt: 4000, Branches: 50, BranchLen: 400, SpecContext: 1000,
	BeamPrompt: 1500, Beams: 8, BeamLen: 500, PrefillTokens: 4000}

// Scaled multiplies every length (not the counts of branches and beams, nor
// the token trees) by s, keeping each at least 1: small runs for tests and
// slow devices.
func (z Sizes) Scaled(s float64) Sizes {
	f := func(n int) int { return max(1, int(float64(n)*s+0.5)) }
	return Sizes{SingleContext: f(z.SingleContext), Prompt: f(z.Prompt), Branches: z.Branches, BranchLen: f(z.BranchLen),
		SpecContext: f(z.SpecContext), BeamPrompt: f(z.BeamPrompt), Beams: z.Beams, BeamLen: f(z.BeamLen), PrefillTokens: f(z.PrefillTokens)}
}

// SpecTrees are the token trees of the speculative scenarios, by name
// (Spec64, Spec256): parents[i] is -1 for the tree's root (the last
// accepted token) or an earlier index. Nil entries use GeneratedTree.
type SpecTrees map[string]*replay.SpecTree

// specSize is the candidate count of a speculative scenario.
func specSize(name string) int {
	if name == Spec64 {
		return 64
	}
	return 256
}

// GeneratedTree is the stand-in token tree of n tokens when DeFT's files
// are not at hand: the root and n-1 candidates as a 4-ary tree in
// breadth-first order (DeFT's APPS_tree_sizeN.json also holds N tokens,
// the root included).
func GeneratedTree(n int) []int {
	p := make([]int, n)
	p[0] = -1
	for i := 1; i < n; i++ {
		p[i] = (i - 1) / 4
	}
	return p
}

// Options control a run.
type Options struct {
	Methods []treeattn.Method // default flatten, flashdecoding
	Runs    int               // timed runs per scenario and method (default 10)
	// AttnRuns are extra runs with timestamps around attention (default
	// min(Runs, 5)).
	AttnRuns int
	// ProfileRuns are extra runs with a timestamp after every kind of work
	// of every layer (model.TimingKernels); 0: none.
	ProfileRuns int
	WarmUp      time.Duration // replay before timing (default bench.DefaultWarmUp; negative: none)
	Sizes       Sizes
	Specs       SpecTrees
	Seed        uint64
	// Progress, when set, is called after each scenario and method.
	Progress func(scenario string, method treeattn.Method, r *MethodResult)
}

func (o *Options) defaults() error {
	if len(o.Methods) == 0 {
		o.Methods = []treeattn.Method{treeattn.MethodFlatten, treeattn.MethodFlashDecoding}
	}
	if o.Runs == 0 {
		o.Runs = 10
	}
	if o.Runs < 1 || o.Runs > 1000 {
		return fmt.Errorf("runs %d: want 1..1000", o.Runs)
	}
	if o.AttnRuns == 0 {
		o.AttnRuns = min(o.Runs, 5)
	}
	if o.WarmUp == 0 {
		o.WarmUp = bench.DefaultWarmUp
	}
	if o.Sizes == (Sizes{}) {
		o.Sizes = DefaultSizes
	}
	z := o.Sizes
	for _, v := range []int{z.SingleContext, z.Prompt, z.Branches, z.BranchLen, z.SpecContext, z.BeamPrompt, z.Beams, z.BeamLen, z.PrefillTokens} {
		if v < 1 {
			return fmt.Errorf("sizes %+v: every count must be at least 1", z)
		}
	}
	return nil
}

// MethodResult is one scenario under one attention method. Durations are
// in nanoseconds in JSON.
type MethodResult struct {
	Method string `json:"method"`
	// StepGPU and StepWall are the medians of the runs: GPU time between
	// timestamps (0 without device timestamps) and host wall time of
	// Forward.
	StepGPU  time.Duration `json:"step_gpu_ns"`
	StepWall time.Duration `json:"step_wall_ns"`
	// Attention is the median attention GPU time of the attention runs,
	// AttentionShare the median of attention / step GPU time of those runs.
	Attention      time.Duration `json:"attention_gpu_ns"`
	AttentionShare float64       `json:"attention_share"`
	// FloorFraction is the step time (GPU, else wall) over the weight-read
	// floor (0 when the floor is unknown); 1.25 means 25% above it.
	FloorFraction float64 `json:"floor_fraction"`
	// TokensPerSec is the step's tokens over its wall time.
	TokensPerSec    float64 `json:"tokens_per_second"`
	TokensPerSecGPU float64 `json:"tokens_per_second_gpu"`
	// MemoryBytes is the device memory the run holds: weights, the KV pool
	// and the model's workspace.
	MemoryBytes    uint64 `json:"memory_bytes"`
	WorkspaceBytes uint64 `json:"workspace_bytes"`
	// Runs are the GPU (else wall) times of every timed run.
	Runs []time.Duration `json:"runs_ns"`
	// Profile is where the step's GPU time goes (Options.ProfileRuns):
	// each kind of work summed over layers, median of the profile runs.
	Profile []KernelTime `json:"profile,omitempty"`
}

// KernelTime is the GPU time of one kind of work in a step (JSON in
// nanoseconds).
type KernelTime struct {
	Name string        `json:"name"`
	GPU  time.Duration `json:"gpu_ns"`
}

// StepTime is the step's GPU time, or its wall time without timestamps.
func (r *MethodResult) StepTime() time.Duration {
	if r.StepGPU > 0 {
		return r.StepGPU
	}
	return r.StepWall
}

// ScenarioResult is one scenario under every method.
type ScenarioResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// StepTokens are the tokens the step evaluates (its queries), Context
	// the tokens in the KV cache the step's tree holds, theirs included.
	StepTokens int `json:"step_tokens"`
	Context    int `json:"context_tokens"`
	// LogitRows are the rows of logits the step returns.
	LogitRows int    `json:"logit_rows"`
	KVBytes   uint64 `json:"kv_pool_bytes"`
	// SpeedUp is flashdecoding's step time over flatten's (0 unless both
	// were run).
	SpeedUp float64         `json:"speedup_flatten_vs_flashdecoding"`
	Methods []*MethodResult `json:"methods"`
}

// Method returns the result of a method, or nil.
func (s *ScenarioResult) Method(m treeattn.Method) *MethodResult {
	for _, r := range s.Methods {
		if r.Method == string(m) {
			return r
		}
	}
	return nil
}

// setup is a scenario's pool and step.
type setup struct {
	pool    *kvpool.Pool
	batch   model.Batch
	desc    string
	context int
}

// build makes a scenario's tree in a fresh pool of the model's shape.
func build(m *model.Model, name string, z Sizes, specs SpecTrees, rng *rand.Rand) (*setup, error) {
	var need, nodes int // tokens and nodes, for the pool's size
	var specParents []int
	var specDesc string
	switch name {
	case Single:
		need, nodes = z.SingleContext+1, 1
	case FewShot:
		need, nodes = z.Prompt+z.Branches*(z.BranchLen+1), 1+z.Branches
	case Spec64, Spec256:
		n := specSize(name)
		if t := specs[name]; t != nil {
			specParents = t.Parents
			specDesc = fmt.Sprintf("DeFT's token tree %s (root + %d candidates, depth %d)", t.TreeID, len(t.Parents)-1, slices.Max(t.Depths()))
		} else {
			specParents = GeneratedTree(n)
			specDesc = fmt.Sprintf("a generated 4-ary token tree (root + %d candidates; DeFT's APPS_tree_size%d.json not found)", n-1, n)
		}
		need, nodes = z.SpecContext+len(specParents), 1
	case Beams:
		need, nodes = z.BeamPrompt+z.Beams*(z.BeamLen+1), 1+z.Beams
	case Prefill:
		need, nodes = z.PrefillTokens, 1
	default:
		return nil, fmt.Errorf("unknown scenario %q (want one of %v)", name, ScenarioNames())
	}
	pool, err := model.NewPool(m, need+nodes*kvpool.DefaultPageTokens)
	if err != nil {
		return nil, err
	}
	s := &setup{pool: pool}
	fail := func(err error) (*setup, error) {
		pool.Close()
		return nil, fmt.Errorf("%s: build the tree: %w", name, err)
	}
	var queries []kvpool.Query
	seq := pool.NewSequence()
	allRows := false
	switch name {
	case Single:
		if _, err := pool.Append(seq, z.SingleContext+1); err != nil {
			return fail(err)
		}
		queries = []kvpool.Query{kvpool.Last(seq)}
		s.desc = fmt.Sprintf("one sequence: 1 new token at context %d", z.SingleContext+1)
	case FewShot, Beams:
		prompt, count, own := z.Prompt, z.Branches, z.BranchLen
		if name == Beams {
			prompt, count, own = z.BeamPrompt, z.Beams, z.BeamLen
		}
		if _, err := pool.Append(seq, prompt); err != nil {
			return fail(err)
		}
		for range count {
			br, err := pool.Fork(seq)
			if err != nil {
				return fail(err)
			}
			if _, err := pool.Append(br, own+1); err != nil {
				return fail(err)
			}
			queries = append(queries, kvpool.Last(br))
		}
		allRows = true
		if name == FewShot {
			s.desc = fmt.Sprintf("few-shot: %d-token prompt, %d branches of %d tokens, 1 new token each", prompt, count, own)
		} else {
			s.desc = fmt.Sprintf("beam search: %d beams at context %d (a %d-token shared prompt, %d tokens each), 1 new token each",
				count, prompt+own+1, prompt, own)
		}
	case Spec64, Spec256:
		if _, err := pool.Append(seq, z.SpecContext); err != nil {
			return fail(err)
		}
		drafts, _, err := pool.Draft(seq, specParents)
		if err != nil {
			return fail(err)
		}
		for _, n := range drafts {
			queries = append(queries, kvpool.Query{Node: n, Offset: 0})
		}
		allRows = true
		s.desc = fmt.Sprintf("speculative verification of %s over %d tokens", specDesc, z.SpecContext)
	case Prefill:
		if _, err := pool.Append(seq, z.PrefillTokens); err != nil {
			return fail(err)
		}
		for i := range z.PrefillTokens {
			queries = append(queries, kvpool.Query{Node: seq, Offset: i})
		}
		s.desc = fmt.Sprintf("prefill of a %d-token prompt (chunks of %d), logits of the last token", z.PrefillTokens, m.Options().ChunkTokens)
	}
	step, err := pool.Tree(queries)
	if err != nil {
		return fail(err)
	}
	tokens := make([]int32, len(queries))
	for i := range tokens {
		tokens[i] = int32(rng.IntN(m.Config().Vocab))
	}
	s.batch = model.Batch{Tokens: tokens, Step: step}
	if allRows {
		s.batch.LogitRows = make([]int, len(tokens))
		for i := range tokens {
			s.batch.LogitRows[i] = i
		}
	} else {
		s.batch.LogitRows = []int{len(tokens) - 1}
	}
	for _, n := range step.Tree.Nodes {
		s.context += n.Tokens
	}
	if err := fillRandom(m.Device(), pool, rng); err != nil {
		return fail(err)
	}
	return s, nil
}

// fillRandom writes random values in [-1, 1] into layer 0's K and V and
// copies them to every other layer.
func fillRandom(d *vk.Device, pool *kvpool.Pool, rng *rand.Rand) error {
	c := pool.Config()
	k0, v0 := pool.K(0), pool.V(0)
	for _, b := range []*vk.Buffer{k0, v0} {
		if c.KV == treeattn.KVF16 {
			h := make([]uint16, b.Size()/2)
			for i := range h {
				h[i] = half.FromFloat32(2*rng.Float32() - 1)
			}
			if err := b.WriteF16(0, h); err != nil {
				return fmt.Errorf("fill the KV pool: %w", err)
			}
		} else {
			f := make([]float32, b.Size()/4)
			for i := range f {
				f[i] = 2*rng.Float32() - 1
			}
			if err := b.WriteF32(0, f); err != nil {
				return fmt.Errorf("fill the KV pool: %w", err)
			}
		}
	}
	if c.Layers == 1 {
		return nil
	}
	rec, err := d.NewRecorder()
	if err != nil {
		return err
	}
	defer rec.Close()
	for l := 1; l < c.Layers; l++ {
		if err := rec.CopyRange(pool.K(l), 0, k0, 0, k0.Size()); err != nil {
			return err
		}
		if err := rec.CopyRange(pool.V(l), 0, v0, 0, v0.Size()); err != nil {
			return err
		}
	}
	if err := rec.Submit(); err != nil {
		return fmt.Errorf("fill the KV pool: %w", err)
	}
	return nil
}

// poolBytes is the device memory of a pool's K and V buffers.
func poolBytes(p *kvpool.Pool) uint64 {
	var n uint64
	for l := range p.Config().Layers {
		n += p.K(l).Size() + p.V(l).Size()
	}
	return n
}

// Floor is the weight-read floor: the time to read the weights a step
// reads at the probe's bandwidth (0 when either is unknown).
func Floor(stepWeightBytes uint64, bytesPerSec float64) time.Duration {
	if bytesPerSec <= 0 || stepWeightBytes == 0 {
		return 0
	}
	return time.Duration(float64(stepWeightBytes) / bytesPerSec * 1e9)
}

// Run measures the scenarios on m (whose method is switched per method and
// left as it was). floor is the weight-read floor (0: unknown).
func Run(m *model.Model, scenarios []string, floor time.Duration, opts Options) ([]*ScenarioResult, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	orig := m.Options().Method
	defer m.SetMethod(orig)
	defer m.SetTiming(model.TimingOff)
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0xbe4c4))
	timestamps := m.Device().Info.Timestamps
	var out []*ScenarioResult
	for _, name := range scenarios {
		s, err := build(m, name, opts.Sizes, opts.Specs, rng)
		if err != nil {
			return out, err
		}
		res := &ScenarioResult{Name: name, Description: s.desc, StepTokens: len(s.batch.Tokens), Context: s.context,
			LogitRows: len(s.batch.LogitRows), KVBytes: poolBytes(s.pool)}
		for _, meth := range opts.Methods {
			r, err := measure(m, s, meth, timestamps, floor, opts)
			if err != nil {
				s.pool.Close()
				return out, fmt.Errorf("%s, %s: %w", name, meth, err)
			}
			res.Methods = append(res.Methods, r)
			if opts.Progress != nil {
				opts.Progress(name, meth, r)
			}
		}
		s.pool.Close()
		if f, fd := res.Method(treeattn.MethodFlatten), res.Method(treeattn.MethodFlashDecoding); f != nil && fd != nil && f.StepTime() > 0 {
			res.SpeedUp = float64(fd.StepTime()) / float64(f.StepTime())
		}
		out = append(out, res)
	}
	return out, nil
}

// profile runs a step runs times with a timestamp after every kind of work
// and returns each kind's median GPU time, in the order of the step.
func profile(m *model.Model, forward func() (time.Duration, error), runs int) ([]KernelTime, error) {
	if runs <= 0 {
		return nil, nil
	}
	m.SetTiming(model.TimingKernels)
	defer m.SetTiming(model.TimingOff)
	var names []string
	times := map[string][]time.Duration{}
	for range runs {
		if _, err := forward(); err != nil {
			return nil, err
		}
		for _, k := range m.LastTimes().Kernels {
			if _, ok := times[k.Name]; !ok {
				names = append(names, k.Name)
			}
			times[k.Name] = append(times[k.Name], k.Time)
		}
	}
	out := make([]KernelTime, 0, len(names))
	for _, n := range names {
		out = append(out, KernelTime{Name: n, GPU: median(times[n])})
	}
	return out, nil
}

// measure times one scenario under one method.
func measure(m *model.Model, s *setup, meth treeattn.Method, timestamps bool, floor time.Duration, opts Options) (*MethodResult, error) {
	if err := m.SetMethod(meth); err != nil {
		return nil, err
	}
	timing := model.TimingOff
	if timestamps {
		timing = model.TimingStep
	}
	m.SetTiming(timing)
	forward := func() (time.Duration, error) {
		t0 := time.Now()
		_, err := m.Forward(s.pool, s.batch)
		return time.Since(t0), err
	}
	// Warm-up: at least one run (pipelines, buffers), then until WarmUp.
	start := time.Now()
	for i := 0; i < 1 || time.Since(start) < opts.WarmUp; i++ {
		if _, err := forward(); err != nil {
			return nil, err
		}
	}
	var gpu, wall []time.Duration
	for range opts.Runs {
		w, err := forward()
		if err != nil {
			return nil, err
		}
		wall = append(wall, w)
		gpu = append(gpu, m.LastTimes().GPU)
	}
	r := &MethodResult{Method: string(meth), StepWall: median(wall)}
	r.Runs = wall
	if timestamps {
		r.StepGPU, r.Runs = median(gpu), gpu
		m.SetTiming(model.TimingAttention)
		var attn []time.Duration
		var share []float64
		for range opts.AttnRuns {
			if _, err := forward(); err != nil {
				return nil, err
			}
			t := m.LastTimes()
			if t.GPU <= 0 {
				return nil, errors.New("attention run without GPU time")
			}
			attn = append(attn, t.Attention)
			share = append(share, float64(t.Attention)/float64(t.GPU))
		}
		m.SetTiming(model.TimingOff)
		r.Attention = median(attn)
		slices.Sort(share)
		r.AttentionShare = share[len(share)/2]
		prof, err := profile(m, forward, opts.ProfileRuns)
		if err != nil {
			return nil, err
		}
		r.Profile = prof
	}
	n := float64(len(s.batch.Tokens))
	r.TokensPerSec = n / r.StepWall.Seconds()
	if r.StepGPU > 0 {
		r.TokensPerSecGPU = n / r.StepGPU.Seconds()
	}
	if floor > 0 {
		r.FloorFraction = float64(r.StepTime()) / float64(floor)
	}
	r.WorkspaceBytes = m.WorkspaceBytes()
	r.MemoryBytes = m.WeightBytes() + poolBytes(s.pool) + r.WorkspaceBytes
	return r, nil
}

func median(xs []time.Duration) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
