package model

import (
	"fmt"
	"math"
	"slices"

	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/vk"
)

// Batches of at least this many activation rows go to gemm instead of
// matmul. With tensor cores (gemm's coopmat variant) a 16-row matrix costs
// about what one row costs and every weight tile is read once for up to TM
// rows, so gemm wins as soon as a whole 16-row fragment is filled. The fp32
// scalar variant only beats matmul's NC=8 column passes once its 32-row
// tiles are mostly full.
const (
	gemmMinRowsCoopMat = 16
	gemmMinRowsScalar  = 32
)

// Split-K (grid z) gives a dispatch of few output tiles over a long input
// about this many workgroups (two per SM of an H200's 132), keeping at
// least gemmMinSplitSteps input steps per split so that the partial sums'
// traffic and the reduction stay small next to the weights read.
const (
	gemmTargetGroups  = 264
	gemmMinSplitSteps = 16
	// gemmMaxScratch bounds the split-K partial sums (bytes).
	gemmMaxScratch = 256 << 20
)

// gemmTiles is a gemm workgroup tile (see kernels.Gemm): TM activation rows
// x TN weight rows, input steps of TK, SM x SN per subgroup (coopmat) or
// per invocation (scalar); Split splits of the input (0: chosen from the
// workgroup count, 1: none); Stages shared-memory tile buffers of the
// coopmat variant (0: two when they fit, else one); A16 and Prefetch below.
//
// Probe is the coopmat shader's PROBE (benchmarks only: bit 0 skips the
// global loads, bit 1 the MMA, 4 alone runs only the MMA on fragments
// loaded once, 8 alone only the shared-memory matrix loads and the MMA;
// the results are garbage).
type gemmTiles struct {
	TM, TN, TK, SM, SN int
	Split              int
	Stages             int
	Probe              int
	CMN                int // benchmarks only: cooperative-matrix N (0: kernels.GemmCoopMatShape's)
	// A16: x holds f16 activations (toF16's output) instead of float32.
	A16 bool
	// Prefetch is the steps the coopmat variant's global loads run ahead
	// of its MMAs (0 or 1: one; 2: two, in two register sets).
	Prefetch int
}

func (t gemmTiles) String() string {
	s := fmt.Sprintf("%dx%dx%d_%dx%d", t.TM, t.TN, t.TK, t.SM, t.SN)
	if t.Stages != 0 {
		s += fmt.Sprintf("_s%d", t.Stages)
	}
	if t.Split != 0 {
		s += fmt.Sprintf("_k%d", t.Split)
	}
	if t.CMN != 0 {
		s += fmt.Sprintf("_cmn%d", t.CMN)
	}
	if t.Probe != 0 {
		s += fmt.Sprintf("_probe%d", t.Probe)
	}
	if t.Prefetch > 1 {
		s += fmt.Sprintf("_p%d", t.Prefetch)
	}
	if t.A16 {
		s += "_a16"
	}
	return s
}

// gemmSplits is the number of input splits for groups output tiles over
// steps input steps (t.Split when given), within the scratch limit for
// partial sums of floats each.
func (o *ops) gemmSplits(t gemmTiles, groups, steps, floats int) int {
	splits := t.Split
	if splits <= 0 {
		splits = min(ceilDiv(gemmTargetGroups, max(groups, 1)), steps/gemmMinSplitSteps)
	}
	limit := min(uint64(o.d.Info.MaxStorageBufferRange), gemmMaxScratch) / 4
	splits = min(splits, steps, kernels.GemmMaxSplits, int(limit/uint64(max(floats, 1))))
	if splits <= 1 {
		return 1
	}
	return ceilDiv(steps, ceilDiv(steps, splits)) // no empty split
}

// gemmScratch returns a buffer of at least floats floats for partial sums.
func (o *ops) gemmScratch(floats int) (*vk.Buffer, error) {
	need := uint64(4 * floats)
	if o.scratch != nil && o.scratch.Size() >= need {
		return o.scratch, nil
	}
	if o.scratch != nil {
		o.scratch.Close()
		o.scratch = nil
	}
	b, err := o.d.NewBuffer(need)
	if err != nil {
		return nil, err
	}
	o.scratch = b
	return b, nil
}

// gemmVariant is the gemm variant the device runs (or the forced one).
func (o *ops) gemmVariant() (string, error) {
	ch, err := kernels.Gemm.Choose(&o.d.Info)
	if err != nil {
		return "", err
	}
	return ch.Variant.Name, nil
}

// defaultGemmTiles picks the tile of variant for n activation rows of
// weights of type wtype (W_* of shaders/include/weights.glsl), from the
// fastest tiles BenchmarkGemm measured on the H200 at Llama-3-8B shapes.
func defaultGemmTiles(variant string, n int, wtype uint32) gemmTiles {
	if variant == "coopmat" {
		// From BenchmarkGemmInputs on the H200 (session 5; Llama-3-8B
		// shapes, f16 inputs, the default): for n <= 64, 64 x 256 tiles of
		// four 32 x 64 subgroups with tiles fetched two steps ahead (n =
		// 50: 43, 148 and 129 us on 4096x4096, 4096x14336 and 14336x4096,
		// against 47, 166 and 144 without the prefetch); from n = 256 on,
		// 128 x 256 tiles of 64 x 64 subgroups (eight subgroups share each
		// tile: 1.3-1.5x faster than 64 x 256 with f16 inputs, 108-163
		// TFLOP/s at n = 256-2048), which quantized weights also ran best
		// with.
		if n > 64 {
			return gemmTiles{TM: 128, TN: 256, TK: 32, SM: 64, SN: 64}
		}
		return gemmTiles{TM: 64, TN: 256, TK: 32, SM: 32, SN: 64, Prefetch: 2}
	}
	// 128 invocations of 4 x 4 outputs.
	return gemmTiles{TM: 32, TN: 64, TK: 32, SM: 4, SN: 4}
}

// linear records y[i][:] (+)= x[i][:] · Wᵀ for n activation rows (x float32
// [n][w.cols], y float32 [n][w.rows]), with gemm for batches and matmul
// for the few rows of a decoding step.
func (o *ops) linear(rec *vk.Recorder, w *weight, x *vk.Buffer, n int, y *vk.Buffer, add bool) error {
	return o.linearIn(rec, w, gemmIn{x: x}, n, y, add)
}

// gemmIn is the activations a linear reads: float32 rows, or (f16) their
// f16 copy, which only gemm reads (batches).
type gemmIn struct {
	x   *vk.Buffer
	f16 bool
}

// linearIn is linear from activations in.
func (o *ops) linearIn(rec *vk.Recorder, w *weight, in gemmIn, n int, y *vk.Buffer, add bool) error {
	variant, batch, err := o.gemmFor(n)
	if err != nil {
		return fmt.Errorf("linear %s: %w", w.name, err)
	}
	if !batch {
		if in.f16 {
			return fmt.Errorf("linear %s: %d rows go to matmul, which reads float32 activations", w.name, n)
		}
		return o.matmul(rec, w, in.x, n, y, add)
	}
	t := defaultGemmTiles(variant, n, w.wtype)
	t.A16 = in.f16
	return o.gemm(rec, variant, t, w, in.x, n, y, add)
}

// Options.GemmInputs values.
const (
	GemmInputsAuto = ""
	GemmInputsF16  = "f16"
	GemmInputsF32  = "f32"
)

// gemmF16Inputs reports whether batches of a model with Options.GemmInputs
// mode feed gemm f16 activations, converted once per step by toF16: by
// default where gemm runs cooperative matrices, which round their operands
// to f16 anyway (the same products; each workgroup then loads half the
// bytes and converts nothing), and not for the scalar fp32 variant, whose
// results would lose precision.
func (o *ops) gemmF16Inputs(mode string) (bool, error) {
	switch mode {
	case GemmInputsF16:
		return true, nil
	case GemmInputsF32:
		return false, nil
	case GemmInputsAuto:
		variant, err := o.gemmVariant()
		return variant == "coopmat", err
	}
	return false, fmt.Errorf("gemm inputs %q: want %q, %q or %q (automatic)", mode, GemmInputsF16, GemmInputsF32, GemmInputsAuto)
}

// toF16 records h = f16(x) for elems elements (a multiple of 4): x float32,
// h f16 (2 bytes each).
func (o *ops) toF16(rec *vk.Recorder, x, h *vk.Buffer, elems int) error {
	if elems%4 != 0 {
		return fmt.Errorf("to f16: %d elements, not whole quads", elems)
	}
	p, err := o.pipeline(kernels.ToF16, kernels.SpecValues{"local_size_x": elemGroup})
	if err != nil {
		return fmt.Errorf("to f16: %w", err)
	}
	grid, err := strideGrid(o.d, elems/4, elemGroup)
	if err != nil {
		return fmt.Errorf("to f16: %w", err)
	}
	if err := p.Dispatch(rec, grid, kernels.ToF16Push{N: uint32(elems / 4)}, x.All(), h.All()); err != nil {
		return fmt.Errorf("to f16: %w", err)
	}
	return nil
}

// gemmFor reports whether linear runs n activation rows through gemm
// (batch) and in which variant; otherwise matmul.
func (o *ops) gemmFor(n int) (variant string, batch bool, err error) {
	variant, err = o.gemmVariant()
	if err != nil {
		return "", false, err
	}
	minRows := gemmMinRowsScalar
	if variant == "coopmat" {
		minRows = gemmMinRowsCoopMat
	}
	return variant, n >= minRows, nil
}

// gemm records y[i][:] (+)= x[i][:] · Wᵀ with gemm's variant and tile t.
func (o *ops) gemm(rec *vk.Recorder, variant string, t gemmTiles, w *weight, x *vk.Buffer, n int, y *vk.Buffer, add bool) error {
	return o.gemmSegs(rec, variant, t, w, x, n, []*vk.Buffer{y}, add)
}

// linearSegs records ys[s][i][:] = x[i][:] · W_sᵀ for the stacked
// segments W_s of w (w.segs: Q, K and V, or gate and up) with one gemm
// over the whole stack: a batch's full-width tiles in one dispatch rather
// than a narrow one per matrix. Batches only (decoding steps use
// matmulFused, which fuses more).
func (o *ops) linearSegs(rec *vk.Recorder, w *weight, in gemmIn, n int, ys []*vk.Buffer) error {
	variant, batch, err := o.gemmFor(n)
	if err != nil {
		return fmt.Errorf("linear %s: %w", w.name, err)
	}
	if !batch {
		return fmt.Errorf("linear %s: %d rows are no batch for gemm", w.name, n)
	}
	t := defaultGemmTiles(variant, n, w.wtype)
	t.A16 = in.f16
	return o.gemmSegs(rec, variant, t, w, in.x, n, ys, false)
}

// gemmSegs is gemm with one output buffer per stacked segment of w (ys[s]
// gets segment s, rows of w.segs[s] floats), or a single one for all of
// w's rows.
func (o *ops) gemmSegs(rec *vk.Recorder, variant string, t gemmTiles, w *weight, x *vk.Buffer, n int, ys []*vk.Buffer, add bool) error {
	if len(ys) == 0 {
		return fmt.Errorf("gemm %s: no output", w.name)
	}
	// Output columns from split1 on go to ys[1], from split2 on to ys[2].
	split1, split2 := uint32(math.MaxUint32), uint32(math.MaxUint32)
	yStride, stride1, stride2 := uint32(w.rows), uint32(0), uint32(0)
	yb := []*vk.Buffer{ys[0], ys[0], ys[0]}
	switch {
	case len(ys) == 1:
	case len(ys) == len(w.segs) && len(ys) <= 3 && !add:
		yStride, split1, stride1 = uint32(w.segs[0]), uint32(w.segs[0]), uint32(w.segs[1])
		yb[1] = ys[1]
		if len(ys) == 3 {
			split2, stride2 = split1+stride1, uint32(w.segs[2])
			yb[2] = ys[2]
		}
	default:
		return fmt.Errorf("gemm %s: %d outputs for %d segments (add %v)", w.name, len(ys), len(w.segs), add)
	}
	p, err := o.gemmPipeline(variant, t, w.wtype, add)
	if err != nil {
		return fmt.Errorf("gemm %s: %w", w.name, err)
	}
	steps := ceilDiv(w.cols, t.TK)
	if steps > kernels.GemmMaxKTiles {
		return fmt.Errorf("gemm %s: rows of %d elements are too long", w.name, w.cols)
	}
	groups := 0
	for _, part := range w.parts {
		groups += ceilDiv(n, t.TM) * ceilDiv(part.rows, t.TN)
	}
	pStride := n * w.rows
	splits := o.gemmSplits(t, groups, steps, pStride)
	kSteps := ceilDiv(steps, splits)
	partial := ys[0]
	if splits > 1 {
		if partial, err = o.gemmScratch(splits * pStride); err != nil {
			return fmt.Errorf("gemm %s: %w", w.name, err)
		}
	}
	for _, part := range w.parts {
		grid := [3]uint32{uint32(ceilDiv(n, t.TM)), uint32(ceilDiv(part.rows, t.TN)), uint32(splits)}
		lim := o.d.Info.MaxWorkgroupCount
		if grid[0] > lim[0] || grid[1] > lim[1] || grid[2] > lim[2] {
			return fmt.Errorf("gemm %s: %v workgroups exceed the device's limits %v", w.name, grid, lim)
		}
		push := kernels.GemmPush{N: uint32(n), InDim: uint32(w.cols), OutDim: uint32(part.rows), RowBytes: uint32(w.rowBytes),
			YStride: yStride, YOff: uint32(part.row0), KSteps: uint32(kSteps), Splits: uint32(splits), PStride: uint32(pStride),
			PRow: uint32(w.rows), Split1: split1, Split2: split2, Stride1: stride1, Stride2: stride2}
		if err := p.Dispatch(rec, grid, push, part.rng(w.rowBytes), x.All(), yb[0].All(), partial.All(), yb[1].All(), yb[2].All()); err != nil {
			return fmt.Errorf("gemm %s: %w", w.name, err)
		}
	}
	if splits == 1 {
		return nil
	}
	addv := uint32(0)
	if add {
		addv = 1
	}
	red, err := o.pipeline(kernels.GemmReduce, kernels.SpecValues{"local_size_x": reduceGroup, "ADD": addv})
	if err != nil {
		return fmt.Errorf("gemm %s: %w", w.name, err)
	}
	grid, err := strideGrid(o.d, pStride, reduceGroup)
	if err != nil {
		return fmt.Errorf("gemm %s: %w", w.name, err)
	}
	push := kernels.GemmReducePush{Count: uint32(pStride), Splits: uint32(splits), PStride: uint32(pStride), PRow: uint32(w.rows),
		YStride: yStride, Split1: split1, Split2: split2, Stride1: stride1, Stride2: stride2}
	if err := red.Dispatch(rec, grid, push, partial.All(), yb[0].All(), yb[1].All(), yb[2].All()); err != nil {
		return fmt.Errorf("gemm %s: %w", w.name, err)
	}
	return nil
}

// coopMatGroup is the coopmat variant's workgroup size for tile t: a
// subgroup per sub-tile, doubled (extra subgroups only fetch) while an
// invocation would hold more than gemmMaxOctets octets (8 halves, named
// registers in the shader) of a step's activation or weight tile.
func coopMatGroup(t gemmTiles, subgroup, maxGroup int) (int, error) {
	group := (t.TM / t.SM) * (t.TN / t.SN) * subgroup
	octets := func(g int) int { return ceilDiv(max(t.TM, t.TN)*t.TK/8, g) }
	for octets(group) > gemmMaxOctets && 2*group <= maxGroup {
		group *= 2
	}
	if octets(group) > gemmMaxOctets {
		return 0, fmt.Errorf("tile %s: more than %d octets of a tile per invocation with %d invocations", t, gemmMaxOctets, group)
	}
	return group, nil
}

// gemmMaxFragments is the coopmat shader's MAXF: A matrices (rows) and B
// matrices (columns) of a subgroup's sub-tile.
const gemmMaxFragments = 4

// gemmMaxOctets is the coopmat shader's MAXL: 16-byte octets of the
// activation or weight tile that one invocation fetches per step.
const gemmMaxOctets = 8

// reduceGroup is gemm_reduce's workgroup size.
const reduceGroup = 256

// gemmPipeline checks tile t against the variant's rules and the device's
// limits and returns its pipeline.
func (o *ops) gemmPipeline(variant string, t gemmTiles, wtype uint32, add bool) (*kernels.Pipeline, error) {
	info := &o.d.Info
	if t.TM <= 0 || t.TN <= 0 || t.TK <= 0 || t.SM <= 0 || t.SN <= 0 || t.TM%t.SM != 0 || t.TN%t.SN != 0 || t.TK%4 != 0 {
		return nil, fmt.Errorf("tile %s: TM, TN must be multiples of SM, SN and TK of 4", t)
	}
	if t.Prefetch < 0 || t.Prefetch > 2 {
		return nil, fmt.Errorf("tile %s: prefetch %d (0, 1 or 2 steps)", t, t.Prefetch)
	}
	cm := vk.CoopMatShape{M: 16, N: 16, K: 16} // unused by the scalar variant
	stages := 1                                // unused by the scalar variant
	var group, shared int
	switch variant {
	case "coopmat":
		var err error
		if cm, err = kernels.GemmCoopMatShape(info); err != nil {
			return nil, err
		}
		if t.CMN != 0 {
			// A benchmark's forced matrix width: the device must list it.
			want := cm
			want.N = uint32(t.CMN)
			if !slices.Contains(info.CoopMatShapes, want) {
				return nil, fmt.Errorf("tile %s: the device lists no %s cooperative matrix", t, want)
			}
			cm = want
		}
		if t.SM%int(cm.M) != 0 || t.SN%int(cm.N) != 0 || t.TK%int(cm.K) != 0 {
			return nil, fmt.Errorf("tile %s does not divide into %dx%dx%d matrices", t, cm.M, cm.N, cm.K)
		}
		// The shader names its fragments: at most 4 x 4 accumulators.
		if t.SM/int(cm.M) > gemmMaxFragments || t.SN/int(cm.N) > gemmMaxFragments {
			return nil, fmt.Errorf("tile %s: more than %d %dx%d matrices per subgroup row or column", t, gemmMaxFragments, cm.M, cm.N)
		}
		subTiles := (t.TM / t.SM) * (t.TN / t.SN)
		if group, err = coopMatGroup(t, int(info.SubgroupSize), int(min(info.MaxWorkgroupInvocs, info.MaxWorkgroupSize[0]))); err != nil {
			return nil, err
		}
		// f16 tile rows of TK/8 16-byte octets and one of padding, and
		// a staging matrix of f32 outputs per sub-tile.
		bytes := func(stages int) int { return stages*(t.TM+t.TN)*(t.TK/8+1)*16 + subTiles*int(cm.M*cm.N)*4 }
		switch t.Stages {
		case 0:
			stages = 2
			if bytes(2) > int(info.MaxSharedMemory) {
				stages = 1
			}
		case 1, 2:
			stages = t.Stages
		default:
			return nil, fmt.Errorf("tile %s: %d stages (1 or 2)", t, t.Stages)
		}
		shared = bytes(stages)
	case "scalar":
		group = (t.TM / t.SM) * (t.TN / t.SN)
		shared = t.TK * (t.TM + t.TN + 2) * 4
	default:
		return nil, fmt.Errorf("no gemm variant %q", variant)
	}
	if group > int(info.MaxWorkgroupInvocs) || group > int(info.MaxWorkgroupSize[0]) {
		return nil, fmt.Errorf("tile %s: %d invocations exceed the device's limit %d", t, group, info.MaxWorkgroupInvocs)
	}
	if shared > int(info.MaxSharedMemory) {
		return nil, fmt.Errorf("tile %s: %d bytes of shared memory exceed the device's %d", t, shared, info.MaxSharedMemory)
	}
	addv, a16 := uint32(0), uint32(0)
	if add {
		addv = 1
	}
	if t.A16 {
		a16 = 1
	}
	return o.pipelineVariant(kernels.Gemm, variant, kernels.SpecValues{
		"local_size_x": uint32(group), "WTYPE": wtype, "ADD": addv,
		"TM": uint32(t.TM), "TN": uint32(t.TN), "TK": uint32(t.TK), "SM": uint32(t.SM), "SN": uint32(t.SN),
		"CM_M": cm.M, "CM_N": cm.N, "CM_K": cm.K, "STAGES": uint32(stages), "PROBE": uint32(t.Probe), "AF16": a16,
		"PREFETCH": uint32(max(t.Prefetch, 1)),
	})
}

// BatchTolerance is the relative error to expect of batches of n tokens
// against the float64 reference: batches that the cooperative-matrix gemm
// evaluates have f16 operands (about 2^-11 relative rounding per product,
// a few 1e-4 over a layer), and so do batches whose gemm inputs are f16
// (Options.GemmInputs); everything else computes in fp32.
func (m *Model) BatchTolerance(n int) (float64, error) {
	variant, batch, err := m.ops.gemmFor(n)
	if err != nil {
		return 0, fmt.Errorf("model: batch tolerance: %w", err)
	}
	f16, err := m.ops.gemmF16Inputs(m.opts.GemmInputs)
	if err != nil {
		return 0, fmt.Errorf("model: batch tolerance: %w", err)
	}
	if batch && (variant == "coopmat" || f16) {
		return CoopMatTolerance, nil
	}
	return FP32Tolerance, nil
}

// Tolerances of BatchTolerance: relative L2 of logits, and the absolute
// difference of log-probabilities tests accept between two evaluations of
// the same token (one batched, one not).
const (
	FP32Tolerance    = 1e-4
	CoopMatTolerance = 5e-3
)
