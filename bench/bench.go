// Package bench times tree-attention methods on a device: one layer's
// partial attention and reduction between GPU timestamps, with the L2 cache
// flushed before every timed run so K/V come from memory as in a real model.
package bench

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// Model is an attention shape preset.
type Model struct {
	Name   string
	Shape  treeattn.Shape
	Layers int
}

// Models are the presets.
var Models = []Model{
	{"llama3-8b", treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}, 32},
	{"llama2-7b", treeattn.Shape{QHeads: 32, KVHeads: 32, HeadDim: 128}, 32},
}

// FindModel returns a preset by name.
func FindModel(name string) (Model, error) {
	for _, m := range Models {
		if m.Name == name {
			return m, nil
		}
	}
	return Model{}, fmt.Errorf("unknown model %q", name)
}

// Snapshot is a named single-step tree.
type Snapshot struct {
	Name        string
	Description string
	Build       func() *treeattn.Tree
}

// Snapshots are the single-step trees of the DeFT paper's evaluation.
var Snapshots = []Snapshot{
	{"fewshot-b50", "few-shot: 4000-token prompt, 50 branches of 400 tokens", func() *treeattn.Tree { return treeattn.FewShotTree(4000, 50, 400) }},
	{"fewshot-b20", "few-shot: 4000-token prompt, 20 branches of 400 tokens", func() *treeattn.Tree { return treeattn.FewShotTree(4000, 20, 400) }},
	{"spec-star-256", "speculative star: 1000-token root, 256 one-token leaves", func() *treeattn.Tree { return treeattn.SpeculativeStar(1000, 256) }},
}

// FindSnapshot returns a snapshot tree by name.
func FindSnapshot(name string) (*treeattn.Tree, error) {
	for _, s := range Snapshots {
		if s.Name == name {
			return s.Build(), nil
		}
	}
	return nil, fmt.Errorf("unknown tree %q", name)
}

// Options control a measurement.
type Options struct {
	Runs       int    // timed runs, median reported (default 20)
	FlushBytes uint64 // L2 flush buffer (default 256 MiB, less on small devices)
	Check      bool   // compare with the CPU reference first
	Block      int    // treeattn.Config.BlockTokens (0: automatic)
	MaxPasses  int    // treeattn.Config.MaxPasses (0: default)
	Tiles      treeattn.Tiles
}

// Result is one method's timing on one tree.
type Result struct {
	Method    treeattn.Method `json:"method"`
	PlanTime  time.Duration   `json:"plan_ns"`
	Median    time.Duration   `json:"median_ns"`
	Reduce    time.Duration   `json:"reduce_median_ns"` // of Median, the reduction's share
	P10       time.Duration   `json:"p10_ns"`
	P90       time.Duration   `json:"p90_ns"`
	IO        treeattn.IO     `json:"io"`
	RelL2     float64         `json:"rel_l2,omitempty"`
	Checked   bool            `json:"checked"`
	Error     string          `json:"error,omitempty"`
	Workgroup int             `json:"workgroups"`
}

// Run plans and times method on tree.
func Run(d *vk.Device, rng *rand.Rand, tree *treeattn.Tree, shape treeattn.Shape, kv treeattn.KVType, method treeattn.Method, opts Options) Result {
	res := Result{Method: method}
	if err := run(d, rng, tree, shape, kv, method, opts, &res); err != nil {
		res.Error = err.Error()
	}
	return res
}

func run(d *vk.Device, rng *rand.Rand, tree *treeattn.Tree, shape treeattn.Shape, kv treeattn.KVType, method treeattn.Method, opts Options, res *Result) error {
	if opts.Runs <= 0 {
		opts.Runs = 20
	}
	start := time.Now()
	plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: method, Shape: shape, KV: kv, Limits: treeattn.LimitsOf(d.Info),
		BlockTokens: opts.Block, MaxPasses: opts.MaxPasses, Tiles: opts.Tiles})
	if err != nil {
		return err
	}
	res.PlanTime = time.Since(start)
	res.IO = plan.IO
	res.Workgroup = plan.Items * shape.KVHeads
	in := conformance.NewInputs(rng, tree, shape, kv)
	dp, err := plan.Upload(d)
	if err != nil {
		return err
	}
	defer dp.Close()
	var bufs []*vk.Buffer
	defer func() {
		for _, b := range bufs {
			b.Close()
		}
	}()
	q, err := d.NewBuffer(plan.QueryBytes())
	if err != nil {
		return err
	}
	bufs = append(bufs, q)
	if err := q.WriteF32(0, in.Q); err != nil {
		return err
	}
	k, v, err := in.Upload(d, kv)
	if err != nil {
		return err
	}
	bufs = append(bufs, k, v)
	out, err := d.NewBuffer(plan.QueryBytes())
	if err != nil {
		return err
	}
	bufs = append(bufs, out)
	rec, err := d.NewRecorder()
	if err != nil {
		return err
	}
	defer rec.Close()
	if opts.Check {
		if err := dp.Run(rec, q, k, v, out); err != nil {
			return err
		}
		if err := rec.Submit(); err != nil {
			return err
		}
		got := make([]float32, plan.QueryBytes()/4)
		if err := out.ReadF32(0, got); err != nil {
			return err
		}
		want, err := treeattn.Reference(tree, shape, in.Q, in.K, in.V, plan.Scale)
		if err != nil {
			return err
		}
		res.RelL2 = treeattn.RelativeL2(got, want)
		res.Checked = true
		if !(res.RelL2 <= conformance.Tolerance(kv)) {
			return fmt.Errorf("output differs from the reference: relative L2 %.3g", res.RelL2)
		}
		if err := rec.Reset(); err != nil {
			return err
		}
	}
	flushBytes := opts.FlushBytes
	if flushBytes == 0 {
		flushBytes = min(256<<20, uint64(d.Info.MaxStorageBufferRange)&^3)
	}
	flush, err := d.NewBuffer(flushBytes)
	if err != nil {
		return err
	}
	bufs = append(bufs, flush)
	for i := 0; i < opts.Runs; i++ {
		rec.Barrier()
		if err := rec.Fill(flush, uint32(i)); err != nil {
			return err
		}
		rec.Barrier()
		if err := rec.Timestamp("start"); err != nil {
			return err
		}
		if err := dp.RunPartial(rec, q, k, v, out); err != nil {
			return err
		}
		if err := rec.Timestamp("partial"); err != nil {
			return err
		}
		if err := dp.RunReduce(rec, out); err != nil {
			return err
		}
		if err := rec.Timestamp("end"); err != nil {
			return err
		}
	}
	// Warm up: GPUs lower their clocks while the CPU reference runs, so
	// replay the recorded runs for a while before the timed replay.
	for warm := time.Now(); time.Since(warm) < 300*time.Millisecond; {
		if err := rec.Submit(); err != nil {
			return err
		}
	}
	if err := rec.Submit(); err != nil {
		return err
	}
	ts, err := rec.Timestamps()
	if err != nil {
		return err
	}
	var times, reduce []time.Duration
	for i := 0; i+2 < len(ts); i += 3 {
		times = append(times, time.Duration(ts[i+2]-ts[i]))
		reduce = append(reduce, time.Duration(ts[i+2]-ts[i+1]))
	}
	sort.Slice(times, func(a, b int) bool { return times[a] < times[b] })
	sort.Slice(reduce, func(a, b int) bool { return reduce[a] < reduce[b] })
	res.Reduce = reduce[len(reduce)/2]
	res.Median = times[len(times)/2]
	res.P10 = times[len(times)/10]
	res.P90 = times[len(times)*9/10]
	return nil
}
