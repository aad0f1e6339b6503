package treeattn

import (
	"fmt"
	"math"

	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/vk"
)

// LimitsOf extracts the limits planning needs from a device.
func LimitsOf(info vk.DeviceInfo) Limits { return limitsOf(&info) }

// limitsOf is LimitsOf without copying the device's description (plans
// loaded step after step allocate nothing).
func limitsOf(info *vk.DeviceInfo) Limits {
	lim := Limits{
		SharedMemory:   int(info.MaxSharedMemory),
		MaxInvocations: int(info.MaxWorkgroupInvocs),
		MaxWorkgroupCount: [3]int{int(info.MaxWorkgroupCount[0]), int(info.MaxWorkgroupCount[1]),
			int(info.MaxWorkgroupCount[2])},
		MaxStorageRange:  uint64(info.MaxStorageBufferRange),
		StorageAlignment: info.MinStorageAlignment,
	}
	for _, v := range kernels.PartialAttn.Variants {
		if info.CooperativeMatrix && v.Name == VariantCoopMat && v.Requires(info) == nil {
			if cm, err := kernels.AttnCoopMatShape(info); err == nil {
				lim.CoopMat = CoopMat{M: int(cm.M), N: int(cm.N), K: int(cm.K), Subgroup: int(info.SubgroupSize)}
			}
		}
		if v.Name == VariantDecode && v.Requires(info) == nil {
			lim.Decode = true
		}
	}
	return lim
}

// DevicePlan is a Plan on a device with its metadata and partial-result
// buffers: prepared once per decoding step, run once per layer. It keeps a
// copy of the plan's figures, so the Planner may plan the next step while
// this one runs.
type DevicePlan struct {
	Plan
	d     *vk.Device
	meta  *vk.Buffer
	partO *vk.Buffer
	partL *vk.Buffer
	// counters are partial_attn's uint32 per (query, KV head) of the fused
	// reduction; zeroCounters says they must be zeroed before the next
	// dispatch (new memory).
	counters     *vk.Buffer
	zeroCounters bool
	// fused: partial_attn merges each query's partials itself
	// (fusedReduce); reduce_partials does not run.
	fused     bool
	owned     bool                // made by Upload: Close frees the buffers
	attns     []*kernels.Pipeline // partial_attn per item class
	reduce    *kernels.Pipeline
	windows   []Window    // one binding of K and V each: the plan's windows, or one over every slot
	classes   []Tiles     // the plan's item classes
	runs      []attnRun   // partial_attn dispatches (window, class, items)
	attnGrids [][3]uint32 // per run
	// passes of the reduction, each with its grid: one, or levels of
	// intermediate partials first for queries with more than
	// MaxReduceFanIn partials.
	passes   []reducePass
	redGrids [][3]uint32
	// unit is the scores' unit and scale the push constant scale/unit
	// (SetScoreBound).
	unit  float32
	scale float32
}

const reduceWorkgroup = 64

// attnUnroll is partial_attn's UNROLL: its loops over the head dim and a
// tile's tokens are unrolled 4 times (fully unrolled, the kernel took all
// 255 registers on the H100).
const attnUnroll = 4

// grid spreads n workgroups over x and z (y is used by heads) within the
// device's limits.
func grid(n, y int, lim Limits) ([3]uint32, error) {
	if y > lim.MaxWorkgroupCount[1] {
		return [3]uint32{}, fmt.Errorf("%d heads exceed the device's workgroup count limit %d", y, lim.MaxWorkgroupCount[1])
	}
	x := min(n, lim.MaxWorkgroupCount[0])
	z := (n + x - 1) / x
	if z > lim.MaxWorkgroupCount[2] {
		return [3]uint32{}, fmt.Errorf("%d workgroups exceed the device's limits", n)
	}
	return [3]uint32{uint32(x), uint32(y), uint32(z)}, nil
}

// Upload copies the plan's metadata to d into buffers of its own (Close
// frees them); decoding steps reuse a Workspace instead.
func (p *Plan) Upload(d *vk.Device) (*DevicePlan, error) {
	return p.upload(d, defaultUpload)
}

// uploadOptions let tests run small reduction levels and kernels whose caps
// the plan breaks.
type uploadOptions struct {
	fanIn           int // partials per group the reduction is scheduled with
	kernelFanIn     int // reduce_partials' FANIN
	kernelMaxPasses int // partial_attn's MAX_PASSES
}

var defaultUpload = uploadOptions{fanIn: MaxReduceFanIn, kernelFanIn: MaxReduceFanIn, kernelMaxPasses: MaxTilePasses}

func (p *Plan) upload(d *vk.Device, opts uploadOptions) (*DevicePlan, error) {
	dp := &DevicePlan{owned: true}
	extra, partials, err := dp.prepare(d, p, opts, true)
	if err != nil {
		return nil, fmt.Errorf("upload plan: %w", err)
	}
	fail := func(err error) (*DevicePlan, error) {
		dp.Close()
		return nil, fmt.Errorf("upload plan: %w", err)
	}
	if dp.meta, err = d.NewBuffer(uint64(len(p.meta)+len(extra)) * 4); err != nil {
		return fail(err)
	}
	if err := dp.meta.WriteU32(0, p.meta); err != nil {
		return fail(err)
	}
	if len(extra) > 0 {
		if err := dp.meta.WriteU32(uint64(len(p.meta)), extra); err != nil {
			return fail(err)
		}
	}
	outBytes, lseBytes := p.partialBytes(partials)
	if dp.partO, err = d.NewBuffer(outBytes); err != nil {
		return fail(err)
	}
	if dp.partL, err = d.NewBuffer(lseBytes); err != nil {
		return fail(err)
	}
	if dp.counters, err = d.NewBuffer(p.counterBytes()); err != nil {
		return fail(err)
	}
	dp.zeroCounters = true
	return dp, nil
}

// prepare checks p against d, copies its figures into dp and sets the
// grids, the reduction's passes and (with kernels) the pipelines. It
// returns the reduction's extra metadata (placed after the plan's) and the
// number of partial results including intermediate ones.
func (dp *DevicePlan) prepare(d *vk.Device, p *Plan, opts uploadOptions, withKernels bool) ([]uint32, int, error) {
	if lim := limitsOf(&d.Info); lim.SharedMemory < p.Limits.SharedMemory || lim.MaxInvocations < p.Tiles.Workgroup ||
		(IsCoopMat(p.Variant) && lim.CoopMat != p.Limits.CoopMat) || (p.Variant == VariantDecode && !lim.Decode) {
		return nil, 0, fmt.Errorf("planned for %+v, device %s has %+v", p.Limits, d.Info.Name, lim)
	}
	if err := p.checkPasses(); err != nil {
		return nil, 0, err
	}
	meta := dp.Plan.meta
	dp.Plan, dp.d = *p, d
	dp.Plan.meta = meta[:0] // the device copy is what runs
	dp.unit, dp.scale = 1, float32(p.Scale)
	dp.windows = append(dp.windows[:0], p.Windows...)
	if len(dp.windows) == 0 {
		dp.windows = append(dp.windows, Window{Slots: math.MaxInt32, Items: p.Items})
	}
	dp.classes = append(dp.classes[:0], p.Classes...)
	dp.runs = append(dp.runs[:0], p.runs...)
	if len(dp.runs) == 0 {
		// A plan made without the Planner: one class, one run per window.
		dp.classes = append(dp.classes[:0], p.Tiles)
		for i, w := range dp.windows {
			dp.runs = append(dp.runs, attnRun{window: i, first: w.FirstItem, items: w.Items})
		}
	}
	dp.attnGrids = dp.attnGrids[:0]
	for _, r := range dp.runs {
		g, err := grid(r.items, p.Shape.KVHeads, p.Limits)
		if err != nil {
			return nil, 0, err
		}
		dp.attnGrids = append(dp.attnGrids, g)
	}
	passes, extra, partials := p.reduceSchedule(opts.fanIn, dp.passes)
	if uint64(len(p.meta))+uint64(len(extra)) > math.MaxUint32/2 {
		return nil, 0, fmt.Errorf("metadata of %d words is too large", len(p.meta)+len(extra))
	}
	// K and V bind in windows; the other buffers must each fit one binding.
	if r := p.Limits.MaxStorageRange; r > 0 {
		out, _ := p.partialBytes(partials)
		switch {
		case p.QueryBytes() > r:
			return nil, 0, fmt.Errorf("%d queries x %d heads x %d dims of float32 Q (%d bytes) exceed the %d bytes a buffer binding may cover on this device: compute fewer queries per step",
				p.NumQueries, p.Shape.QHeads, p.Shape.HeadDim, p.QueryBytes(), r)
		case out > r:
			return nil, 0, fmt.Errorf("method %s makes %d partial results (%d bytes) for this tree, above the %d bytes a buffer binding may cover on this device: use method flatten, or fewer queries per step",
				p.Method, partials, out, r)
		case uint64(len(p.meta)+len(extra))*4 > r:
			return nil, 0, fmt.Errorf("the plan's metadata (%d bytes) exceeds the %d bytes a buffer binding may cover on this device: plan fewer queries per step",
				(len(p.meta)+len(extra))*4, r)
		}
	}
	dp.passes = passes
	dp.fused = len(passes) == 1 && opts.kernelMaxPasses == MaxTilePasses && p.fusedReduce()
	dp.redGrids = dp.redGrids[:0]
	for _, pass := range passes {
		g, err := grid(pass.groups, p.Shape.QHeads, p.Limits)
		if err != nil {
			return nil, 0, fmt.Errorf("reduction: %w", err)
		}
		dp.redGrids = append(dp.redGrids, g)
	}
	if withKernels {
		var err error
		if dp.attns, dp.reduce, err = classPipelines(d, p, dp.classes, opts, dp.attns); err != nil {
			return nil, 0, err
		}
	}
	return extra, partials, nil
}

// pipelines returns the plan's two kernels, partial_attn for its (largest)
// tiles.
func pipelines(d *vk.Device, p *Plan, opts uploadOptions) (attn, reduce *kernels.Pipeline, err error) {
	attns, reduce, err := classPipelines(d, p, []Tiles{p.Tiles}, opts, nil)
	if err != nil {
		return nil, nil, err
	}
	return attns[0], reduce, nil
}

// classPipelines returns partial_attn for each class of tiles (into dst)
// and the reduction.
func classPipelines(d *vk.Device, p *Plan, classes []Tiles, opts uploadOptions, dst []*kernels.Pipeline) (attns []*kernels.Pipeline, reduce *kernels.Pipeline, err error) {
	s := p.Shape
	f16 := uint32(0)
	if p.KV == KVF16 {
		f16 = 1
	}
	if err := kernels.OverrideError(); err != nil {
		return nil, nil, err
	}
	variant := p.Variant
	if variant == "" {
		variant = VariantScalar
	}
	cm := CoopMat{M: 16, N: 16, K: 16} // unused by the scalar variant
	if IsCoopMat(variant) {
		cm = p.Limits.CoopMat
	}
	attns = dst[:0]
	for _, t := range classes {
		attn, err := kernels.PartialAttn.PipelineVariant(d, variant, kernels.SpecValues{
			"local_size_x": uint32(t.Workgroup), "D": uint32(s.HeadDim), "B": uint32(t.Tokens),
			"R": uint32(t.Rows), "G": uint32(s.GroupSize()), "KVH": uint32(s.KVHeads), "KV_F16": f16,
			"UNROLL": attnUnroll, "MAX_PASSES": uint32(opts.kernelMaxPasses),
			"CM_M": uint32(cm.M), "CM_N": uint32(cm.N), "CM_K": uint32(cm.K),
		})
		if err != nil {
			return nil, nil, fmt.Errorf("partial_attn %s, tiles %+v: %w", variant, t, err)
		}
		attns = append(attns, attn)
	}
	reduce, err = kernels.ReducePartials.Pipeline(d, kernels.SpecValues{
		"local_size_x": reduceWorkgroup, "D": uint32(s.HeadDim), "QH": uint32(s.QHeads), "FANIN": uint32(opts.kernelFanIn),
	})
	return attns, reduce, err
}

// counterBytes is the size of the fused reduction's counters: a uint32
// per (query, KV head).
func (p *Plan) counterBytes() uint64 {
	return max(uint64(p.NumQueries)*uint64(p.Shape.KVHeads)*4, 4)
}

// fuseLoopBudget bounds the loop iterations one partial_attn invocation
// may spend merging queries in the fused reduction (lavapipe stops an
// invocation's loops after 65535 iterations in all; the partial attention
// itself takes a few thousand at most).
const fuseLoopBudget = 16384

// fusedReduce reports whether partial_attn merges the partials itself
// (see shaders/partial_attn.comp, pc.fuse): the scalar variant, unless
// Config.Reduce says separate, when every query's partials fit the kernel's
// scratch (the K/V tile and slot buffer: at most 2 x Tiles.Tokens
// partials) and no workgroup's merges, were it last for all
// of its queries, would loop more than fuseLoopBudget times.
func (p *Plan) fusedReduce() bool {
	if p.Reduce == ReduceSeparate || IsCoopMat(p.Variant) || p.Items == 0 {
		return false
	}
	s := p.Shape
	g, d4, wg := s.GroupSize(), s.HeadDim/4, p.Tiles.Workgroup
	scratch := p.Tiles.Tokens * (d4 + 1) * 4
	maxList := min((scratch-g)/g, 2*p.Tiles.Tokens)        // the kernel stages the list in its slot buffer
	perPartial := 1 + 2*ceilDiv(g, wg) + ceilDiv(g*d4, wg) // loop iterations per merged partial, at most
	offsets := p.meta[p.offsetsOff : p.offsetsOff+uint32(p.NumQueries)+1]
	for q := range p.NumQueries {
		if int(offsets[q+1]-offsets[q]) > maxList {
			return false
		}
	}
	for i := range p.Items {
		rec := p.item(i)
		merged := 0
		for _, q := range p.meta[rec.QueriesOff : rec.QueriesOff+rec.NumQueries] {
			merged += int(offsets[q+1] - offsets[q])
		}
		if int(rec.NumQueries)+1+merged*perPartial > fuseLoopBudget || (p.Reduce == ReduceAuto && merged > FuseAutoPartials) {
			return false
		}
	}
	return true
}

// partialBytes is the size of the partial output and log-sum-exp buffers
// for partials partial results.
func (p *Plan) partialBytes(partials int) (out, lse uint64) {
	rows := uint64(partials) * uint64(p.Shape.QHeads)
	return rows * uint64(p.Shape.HeadDim) * 4, rows * 4
}

// checkPasses verifies that no item needs more shared-memory passes than
// partial_attn's MAX_PASSES, which would poison its results instead.
func (p *Plan) checkPasses() error {
	for i := 0; i < p.Items; i++ {
		rec := p.item(i)
		rowTiles := ceilDiv(int(rec.NumQueries)*p.Shape.GroupSize(), p.Tiles.Rows)
		passes := rowTiles * max(ceilDiv(int(rec.NumSlots), p.Tiles.Tokens), 1)
		if passes > MaxTilePasses {
			return fmt.Errorf("item %d needs %d shared-memory passes (%d queries x %d tokens), more than the kernel's %d",
				i, passes, rec.NumQueries, rec.NumSlots, MaxTilePasses)
		}
	}
	return nil
}

// SetScoreBound prepares the kernels for scores scale·q·k up to bound in
// magnitude (ScoreBound computes one from the inputs). Up to 2^100, the
// default, nothing changes. Above, fp32 scores could overflow, so the
// kernels count scores in units of a power of two 2^e (scale/2^e on q·k,
// probabilities exp((s-max)·2^e)): the same softmax, finite. Scores too
// large even so, or a scale that would underflow, are an error. Without
// a bound, rows with non-finite scores come out NaN, never as a plausible
// number.
func (dp *DevicePlan) SetScoreBound(bound float64) error {
	unit, scale, err := scoreUnit(bound, dp.Scale)
	if err != nil {
		return fmt.Errorf("set score bound: %w", err)
	}
	dp.unit, dp.scale = float32(unit), scale
	return nil
}

// ScoreUnit is the unit the kernels count scores in (1 unless SetScoreBound
// raised it).
func (dp *DevicePlan) ScoreUnit() float64 { return float64(dp.unit) }

// ReducePasses is the number of reduce_partials dispatches per run: 0 when
// partial_attn merges the partials itself (Fused), 1, or more when some
// query has more than MaxReduceFanIn partials.
func (dp *DevicePlan) ReducePasses() int {
	if dp.fused {
		return 0
	}
	return len(dp.passes)
}

// Fused reports whether partial_attn merges each query's partials itself
// (the last workgroup of a query, by an integer counter), so that Run
// records one dispatch and no reduce_partials.
func (dp *DevicePlan) Fused() bool { return dp.fused }

// Close frees the buffers of an uploaded plan (kernels stay cached on the
// device); a workspace's plan only stops being usable.
func (dp *DevicePlan) Close() {
	if dp.owned {
		for _, b := range []*vk.Buffer{dp.meta, dp.partO, dp.partL, dp.counters} {
			b.Close()
		}
	}
	dp.meta, dp.partO, dp.partL, dp.counters = nil, nil, nil, nil
}

// QueryBytes is the size Run needs of Q and of the output, in bytes.
func (p *Plan) QueryBytes() uint64 {
	return uint64(p.NumQueries) * uint64(p.Shape.QHeads) * uint64(p.Shape.HeadDim) * 4
}

// KVRowBytes is the size of one slot of K (or V).
func (p *Plan) KVRowBytes() uint64 {
	return uint64(p.Shape.KVHeads) * uint64(p.Shape.HeadDim) * uint64(p.KV.Bytes())
}

// Run records one layer's tree attention: partial attention, then the
// reduction into out (in the same dispatch when Fused). q and out are [query][qhead][dim] float32; k and v are
// the KV pool [slot][kvhead][dim] of the plan's KV type.
func (dp *DevicePlan) Run(rec *vk.Recorder, q, k, v, out *vk.Buffer) error {
	if err := dp.RunPartial(rec, q, k, v, out); err != nil {
		return err
	}
	return dp.RunReduce(rec, out)
}

// RunPartial records the partial-attention kernel alone (benchmarks time
// the two phases separately); when Fused it writes out, and RunReduce
// records nothing.
func (dp *DevicePlan) RunPartial(rec *vk.Recorder, q, k, v, out *vk.Buffer) error {
	if dp.meta == nil {
		return fmt.Errorf("run %s: plan is closed", dp.Method)
	}
	if q == nil || k == nil || v == nil || out == nil {
		return fmt.Errorf("run %s: nil buffer", dp.Method)
	}
	if q.Size() < dp.QueryBytes() {
		return fmt.Errorf("run %s: Q has %d bytes, %d queries x %d heads x %d need %d", dp.Method, q.Size(), dp.NumQueries, dp.Shape.QHeads, dp.Shape.HeadDim, dp.QueryBytes())
	}
	if out.Size() < dp.QueryBytes() {
		return fmt.Errorf("run %s: output has %d bytes, need %d", dp.Method, out.Size(), dp.QueryBytes())
	}
	if k.Size() != v.Size() {
		return fmt.Errorf("run %s: K has %d bytes but V %d", dp.Method, k.Size(), v.Size())
	}
	if dp.fused && q == out {
		// Workgroups that merge write out while others still read Q.
		return fmt.Errorf("run %s: Q and the output must be different buffers", dp.Method)
	}
	row := dp.KVRowBytes()
	slots := k.Size() / row
	if slots < uint64(dp.NumSlots) {
		return fmt.Errorf("run %s: the tree uses slot %d but the KV pool holds %d slots", dp.Method, dp.NumSlots-1, slots)
	}
	// One dispatch per window of slots, each binding only its part of K
	// and V (a pool may be larger than one binding may cover).
	maxBind := slots * row
	if r := dp.Limits.MaxStorageRange; r > 0 {
		maxBind = min(maxBind, r/row*row)
	}
	if dp.zeroCounters {
		if err := rec.Fill(dp.counters, 0); err != nil {
			return fmt.Errorf("run %s: zero counters: %w", dp.Method, err)
		}
		dp.zeroCounters = false
	}
	fuse := uint32(0)
	if dp.fused {
		fuse = 1
	}
	// Within a window, one dispatch per item class (its specialization).
	for i, r := range dp.runs {
		w := dp.windows[r.window]
		base := uint64(w.SlotBase) * row
		size := min(uint64(w.Slots)*row, slots*row-base, maxBind)
		push := kernels.PartialAttnPush{NItems: uint32(r.items), ItemsOff: uint32(r.first * itemWords), GridX: dp.attnGrids[i][0],
			NumSlots: uint32(min(size/row, math.MaxUint32)), Scale: dp.scale, Unit: dp.unit,
			Fuse: fuse, OffsetsOff: dp.offsetsOff, ListOff: dp.listOff}
		if err := dp.attns[r.class].Dispatch(rec, dp.attnGrids[i], push, q.All(), k.Sub(base, size), v.Sub(base, size),
			dp.meta.All(), dp.partO.All(), dp.partL.All(), out.Sub(0, dp.QueryBytes()), dp.counters.All()); err != nil {
			return fmt.Errorf("run %s: window %d of %d, items of %d rows: %w", dp.Method, r.window+1, len(dp.windows), dp.classes[r.class].Rows, err)
		}
	}
	return nil
}

// RunReduce records the reduction of the partial results into out: one
// dispatch per level (see MaxReduceFanIn), the recorder's barriers between.
func (dp *DevicePlan) RunReduce(rec *vk.Recorder, out *vk.Buffer) error {
	if dp.meta == nil {
		return fmt.Errorf("run %s: plan is closed", dp.Method)
	}
	if out == nil || out.Size() < dp.QueryBytes() {
		return fmt.Errorf("run %s: output buffer missing or smaller than %d bytes", dp.Method, dp.QueryBytes())
	}
	if dp.fused {
		return nil // partial_attn wrote out
	}
	for i, pass := range dp.passes {
		push := kernels.ReducePartialsPush{NGroups: uint32(pass.groups), OffsetsOff: pass.offsetsOff, ListOff: pass.listOff,
			GridX: dp.redGrids[i][0], OutBase: pass.outBase, Unit: dp.unit}
		if pass.toPartials {
			push.ToPartials = 1
		}
		if err := dp.reduce.Dispatch(rec, dp.redGrids[i], push, dp.partO.All(), dp.partL.All(), dp.meta.All(), out.All()); err != nil {
			return fmt.Errorf("run %s: reduce pass %d of %d: %w", dp.Method, i+1, len(dp.passes), err)
		}
	}
	return nil
}

// KernelStats returns the driver's compiler statistics (registers, spills,
// shared memory; see vk.Kernel.Stats) of the plan's two kernels; with item
// classes, partial_attn's for the largest tiles, then each smaller class's
// with its name prefixed by "rows R: ".
func (dp *DevicePlan) KernelStats() (attn, reduce []vk.KernelStat, err error) {
	last := len(dp.attns) - 1
	if attn, err = dp.attns[last].Stats(); err != nil {
		return nil, nil, err
	}
	for c := 0; c < last; c++ {
		st, err := dp.attns[c].Stats()
		if err != nil {
			return nil, nil, err
		}
		for _, x := range st {
			x.Name = fmt.Sprintf("rows %d: %s", dp.classes[c].Rows, x.Name)
			attn = append(attn, x)
		}
	}
	if reduce, err = dp.reduce.Stats(); err != nil {
		return nil, nil, err
	}
	return attn, reduce, nil
}
