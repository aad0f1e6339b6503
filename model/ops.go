package model

import (
	"fmt"
	"math"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/vk"
)

// weight is a weight matrix on the device in its GGUF encoding (Q8_0, Q4_0
// and Q6_K regrouped, see groupedType): rows of Cols elements, possibly
// split into parts of consecutive rows, each in its own buffer, so that no
// binding exceeds the device's maxStorageBufferRange.
type weight struct {
	name     string
	typ      gguf.TensorType
	wtype    uint32
	cols     int
	rows     int
	rowBytes int // on the device
	parts    []weightPart
	// regrouped: GGUF rows are rewritten into the grouped layout on
	// upload; dOff is the offset of a GGUF block's f16 scale.
	regrouped bool
	dOff      int
	// Stacked matrices (concatenated rows, one part): segs are their row
	// counts and views the matrices themselves, weights that bind their
	// rows of the stacked buffer (for gemm and for filling). glu means the
	// two segments are gate and up, multiplied with SwiGLU.
	segs  []int
	views []*weight
	glu   bool
	view  bool // a view: the buffer belongs to the stacked weight
}

type weightPart struct {
	buf  *vk.Buffer
	off  uint64 // byte offset of the part's row 0 in buf (views)
	row0 int
	rows int
}

// rng is the binding of a part of a weight with rows of rb bytes: its rows
// and the padding after them (for a view, the next rows).
func (p weightPart) rng(rb int) vk.Range {
	if p.off == 0 {
		return p.buf.All()
	}
	return p.buf.Sub(p.off, min(p.buf.Size()-p.off, (uint64(p.rows)*uint64(rb)+wordPad+15)&^15))
}

// wordPad is the padding after a weight's last row: block types read their
// unaligned words as two aligned ones, and matmul reads whole 16-byte words
// (include/weights.glsl).
const wordPad = 16

// uploadWeight copies a 2-D tensor to the device as it is encoded.
func uploadWeight(d *vk.Device, t gguf.Tensor) (*weight, error) {
	return uploadWeightParts(d, t, 0)
}

// uploadWeightParts is uploadWeight with parts of at most maxRows rows (0:
// as many as a binding holds); tests split small tensors with it.
func uploadWeightParts(d *vk.Device, t gguf.Tensor, maxRows uint64) (*weight, error) {
	return uploadWeightLayout(d, t, maxRows, true)
}

// uploadWeightLayout is uploadWeightParts; grouped false keeps Q8_0, Q4_0
// and Q6_K blocks in their GGUF layout (the kernels' slower quad path;
// tests check both).
func uploadWeightLayout(d *vk.Device, t gguf.Tensor, maxRows uint64, grouped bool) (*weight, error) {
	w, err := newWeightLayout(d, t.Name, t.Type, t.Dims, maxRows, grouped)
	if err != nil {
		return nil, err
	}
	if err := w.writeTensor(t.Data, nil); err != nil {
		w.close()
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	return w, nil
}

// ggufRowBytes is the bytes of one of w's rows in the GGUF file.
func (w *weight) ggufRowBytes() uint64 {
	rb, _ := w.typ.RowBytes(uint64(w.cols)) // checked by newWeight
	return rb
}

// writeTensor writes w's rows from data, the tensor's GGUF bytes.
func (w *weight) writeTensor(data []byte, prog *progress) error {
	frb := w.ggufRowBytes()
	if uint64(len(data)) < frb*uint64(w.rows) {
		return fmt.Errorf("%d bytes of data for %d rows of %d bytes", len(data), w.rows, frb)
	}
	for _, p := range w.parts {
		if err := w.writeRows(p, data[uint64(p.row0)*frb:uint64(p.row0+p.rows)*frb], prog); err != nil {
			return err
		}
	}
	return nil
}

// writeRows writes part p's rows from their GGUF bytes, regrouping them
// when w is regrouped, in chunks of about uploadChunkBytes.
func (w *weight) writeRows(p weightPart, data []byte, prog *progress) error {
	if !w.regrouped {
		return writeChunksAt(p.buf, p.off, data, prog)
	}
	frb, rb := w.ggufRowBytes(), uint64(w.rowBytes)
	rows := uint64(len(data)) / frb
	slabRows := max(1, uploadChunkBytes/rb)
	slab := make([]byte, min(slabRows, rows)*rb)
	for r0 := uint64(0); r0 < rows; r0 += slabRows {
		n := min(slabRows, rows-r0)
		for i := range n {
			groupRow(slab[i*rb:(i+1)*rb], data[(r0+i)*frb:(r0+i+1)*frb], w.typ.BlockBytes(), w.dOff)
		}
		if err := p.buf.Write(p.off+r0*rb, slab[:n*rb]); err != nil {
			return err
		}
		prog.add(n * frb)
	}
	return nil
}

// newWeight allocates the device buffers of a 2-D weight of type typ and
// dims [cols rows], in parts of at most maxRows rows (0: as many as a
// binding holds), without filling them; Q8_0, Q4_0 and Q6_K are regrouped.
func newWeight(d *vk.Device, name string, typ gguf.TensorType, dims []uint64, maxRows uint64) (*weight, error) {
	return newWeightLayout(d, name, typ, dims, maxRows, true)
}

// newWeightLayout is newWeight; grouped false keeps GGUF block layouts.
func newWeightLayout(d *vk.Device, name string, typ gguf.TensorType, dims []uint64, maxRows uint64, grouped bool) (*weight, error) {
	wt, ok := weightType(typ)
	if !ok {
		return nil, fmt.Errorf("%s: tensor type %s is not supported by the kernels (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)", name, typ)
	}
	parts, rb, err := planParts(d, name, typ, dims, maxRows)
	if err != nil {
		return nil, err
	}
	w := &weight{name: name, typ: typ, wtype: wt, cols: int(dims[0]), rows: int(dims[1]), rowBytes: int(rb)}
	if gwt, dOff, ok := groupedType(typ); ok && grouped {
		w.wtype, w.dOff, w.regrouped = gwt, dOff, true
		w.rowBytes = groupedRowBytes(int(rb)/typ.BlockBytes(), typ.BlockBytes())
		rb = uint64(w.rowBytes)
	}
	for _, p := range parts {
		buf, err := d.NewBuffer((uint64(p.rows)*rb + wordPad + 15) &^ 15) // whole 16-byte words
		if err != nil {
			w.close()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		p.buf = buf
		w.parts = append(w.parts, p)
	}
	return w, nil
}

// planParts checks a weight's dims and cuts its rows into parts that one
// binding covers; it returns the parts (without buffers) and the row bytes.
func planParts(d *vk.Device, name string, typ gguf.TensorType, dims []uint64, maxRows uint64) ([]weightPart, uint64, error) {
	if len(dims) != 2 {
		return nil, 0, fmt.Errorf("%s: %d dims, want 2", name, len(dims))
	}
	cols, rows := dims[0], dims[1]
	if cols == 0 || rows == 0 || cols > maxDim || rows > 1<<31-1 {
		return nil, 0, fmt.Errorf("%s: dims %v out of range", name, dims)
	}
	if cols%4 != 0 {
		return nil, 0, fmt.Errorf("%s: rows of %d elements; the kernels need a multiple of 4", name, cols)
	}
	rb, err := typ.RowBytes(cols)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", name, err)
	}
	limit := uint64(d.Info.MaxStorageBufferRange)
	grb := rb + 16 // a regrouped row is at most 16 bytes longer
	perPart := (limit - 2*wordPad) / grb
	if perPart == 0 {
		return nil, 0, fmt.Errorf("%s: one row of %d bytes exceeds the device's storage-buffer range %d", name, rb, limit)
	}
	// Byte offsets inside the kernels are 32-bit.
	perPart = min(perPart, (1<<32-1-2*wordPad)/grb)
	if maxRows > 0 {
		perPart = min(perPart, maxRows)
	}
	var parts []weightPart
	for r0 := uint64(0); r0 < rows; r0 += perPart {
		parts = append(parts, weightPart{row0: int(r0), rows: int(min(perPart, rows-r0))})
	}
	return parts, rb, nil
}

// dataBytes is the weight's encoded size without padding.
func (w *weight) dataBytes() uint64 { return uint64(w.rows) * uint64(w.rowBytes) }

func (w *weight) close() {
	if w.view {
		return
	}
	for _, p := range w.parts {
		p.buf.Close()
	}
	w.parts = nil
}

// bytes is the weight's device memory (none for a view).
func (w *weight) bytes() uint64 {
	if w.view {
		return 0
	}
	var n uint64
	for _, p := range w.parts {
		n += p.buf.Size()
	}
	return n
}

// ops records the model's kernels on one device, caching their pipelines
// (creating one through its contract on every dispatch costs more than the
// dispatch itself on a CPU device).
type ops struct {
	d       *vk.Device
	pipes   map[pipeKey]*kernels.Pipeline
	scratch *vk.Buffer  // gemm's split-K partial sums, grown on demand
	mm      matmulShape // zero: matmulShapeFor's choice per weight
}

// close frees the ops' buffers (pipelines belong to the device).
func (o *ops) close() {
	if o.scratch != nil {
		o.scratch.Close()
		o.scratch = nil
	}
}

type pipeKey struct {
	c       *kernels.Contract
	variant string // "" for the device's automatic choice
	spec    [16]uint32
}

func newOps(d *vk.Device) *ops { return &ops{d: d, pipes: map[pipeKey]*kernels.Pipeline{}} }

// pipeline returns c's pipeline for the named constants in order (a
// contract's constants are few; names are given in the contract's order).
func (o *ops) pipeline(c *kernels.Contract, spec kernels.SpecValues) (*kernels.Pipeline, error) {
	return o.pipelineVariant(c, "", spec)
}

// pipelineVariant is pipeline in a given variant ("": the device's choice).
func (o *ops) pipelineVariant(c *kernels.Contract, variant string, spec kernels.SpecValues) (*kernels.Pipeline, error) {
	k := pipeKey{c: c, variant: variant}
	if len(c.Spec) > len(k.spec) {
		return nil, fmt.Errorf("create pipeline %s: %d specialization constants, the cache keys %d", c.Name, len(c.Spec), len(k.spec))
	}
	for i, s := range c.Spec {
		k.spec[i] = spec[s.Name]
	}
	if p := o.pipes[k]; p != nil {
		return p, nil
	}
	var p *kernels.Pipeline
	var err error
	if variant == "" {
		p, err = c.Pipeline(o.d, spec)
	} else {
		p, err = c.PipelineVariant(o.d, variant, spec)
	}
	if err != nil {
		return nil, err
	}
	o.pipes[k] = p
	return p, nil
}

// Workgroup sizes (powers of two: the reductions halve them).
const (
	matmulMaxCols = 8 // activation rows per pass (NC) at most
	normGroup     = 64
	elemGroup     = 64
)

func nextPow2(v int) int {
	p := 1
	for p < v {
		p <<= 1
	}
	return p
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// spread lays n workgroups over x and z within the device's limits.
func spread(d *vk.Device, n, y int) ([3]uint32, error) {
	lim := d.Info.MaxWorkgroupCount
	if n < 1 {
		n = 1
	}
	x := min(n, int(lim[0]))
	z := ceilDiv(n, x)
	if z > int(lim[2]) || y > int(lim[1]) {
		return [3]uint32{}, fmt.Errorf("%d x %d workgroups exceed the device's limits %v", n, y, lim)
	}
	return [3]uint32{uint32(x), uint32(y), uint32(z)}, nil
}

// strideGrid sizes a grid-stride dispatch over total items.
func strideGrid(d *vk.Device, total, group int) ([3]uint32, error) {
	groups := min(ceilDiv(max(total, 1), group), int(d.Info.MaxWorkgroupCount[0]))
	if ceilDiv(total, groups*group) > kernels.GridStrideSteps {
		return [3]uint32{}, fmt.Errorf("%d items exceed a grid-stride dispatch", total)
	}
	return [3]uint32{uint32(groups), 1, 1}, nil
}

// matmulShape is the workgroup shape of matmul: output rows per workgroup
// and invocations at most (tests and benchmarks vary them), and the
// aligned chunks each invocation loads per loop iteration (0 or 1: one).
//
// byteConv selects the former conversion of quants to floats, byte by
// byte (QCONV = 0), instead of the positional one (QCONV = 1, fewer
// instructions, bit-identical results); benchmarks compare the two.
type matmulShape struct {
	rows, group, unroll int
	byteConv            bool
}

// defaultMatmulShape: 4 rows share each activation load, and 128
// invocations stream 2 KiB of weights per row and step. CPU devices use it
// for every matrix; GPUs start from it in matmulShapeFor.
var defaultMatmulShape = matmulShape{rows: 4, group: 128}

// matmulTargetGroups is the number of workgroups a GPU matmul dispatch
// should have at least: the device does not report its multiprocessors
// (an H200 has 132), and a GEMV only reaches the memory bandwidth with
// several resident workgroups on each of them to keep loads in flight;
// 1024 is about 8 per multiprocessor of the largest GPUs.
const matmulTargetGroups = 1024

// matmulStartRows is the rows per workgroup matmulShapeFor starts from:
// every activation load is shared by the rows of a workgroup. On the H200
// (BenchmarkDecodeMatmuls, session 5) 8 rows were fastest for floats
// (Llama-3-8B f16 matmuls of a step 4.33 ms against 4.45 at 4) and Q8_0
// (4.19 against 4.31), 4 for Q4_K (4.03 against 4.67 at 8); Q6_K keeps 4
// (48 bytes of quants and 16 of scales per row and chunk in registers),
// and so does Q5_K (unmeasured; Q4_K's chunks plus 16 bytes of fifth bits).
// Halved while rows x nc (the accumulators of an invocation) exceeds 32.
func matmulStartRows(wtype uint32, nc int) int {
	rows := 4
	switch wtype {
	case kernels.WeightF32, kernels.WeightF16, kernels.WeightBF16, kernels.WeightQ8_0, kernels.WeightQ8_0G, kernels.WeightQ4_0, kernels.WeightQ4_0G:
		rows = 8
	}
	for rows > 2 && rows*nc > 32 {
		rows /= 2
	}
	return rows
}

// matmulShapeFor chooses matmul's workgroup shape for a weight of outRows
// rows (all rows of a stacked or GLU weight: a workgroup covers `rows` of
// them either way) whose rows take steps aligned chunks (or quad units),
// for nc activation rows per pass, on a device of type typ, with
// maxInvocs invocations per workgroup at most:
//   - CPU devices: defaultMatmulShape (the tests' shapes; there is no
//     memory latency to hide);
//   - rows per workgroup start at matmulStartRows: 8 for floats, Q8_0
//     and Q4_0, 4 for the K-quants;
//   - the rows are halved (down to 2) while that leaves fewer than
//     matmulTargetGroups workgroups, so narrow matrices (K and V: 1024
//     rows) still spread over every multiprocessor;
//   - a matrix that still has fewer than half the target gets 256
//     invocations (when its rows have as many steps) and 2 chunks per
//     loop iteration, for more loads in flight per workgroup.
//
// The start rows are measured (matmulStartRows); the halving and the 256
// invocations are reasoned: BenchmarkDecodeMatmuls (docs/BENCHMARKS.md,
// "Decode matmuls") prints this choice ("auto") next to fixed shapes, per
// kind of matrix, to tune them.
func matmulShapeFor(typ vk.DeviceType, maxInvocs uint32, wtype uint32, outRows, steps, nc int) matmulShape {
	if typ == vk.TypeCPU {
		return defaultMatmulShape
	}
	// The byte-by-byte conversion of quants: on the H200 the positional one
	// (fewer instructions) made the q8_0 and q4_k_m steps slower (4.52 ms
	// against 4.19, 4.78 against 4.03).
	s := matmulShape{rows: matmulStartRows(wtype, nc), group: 128, unroll: 1, byteConv: true}
	for s.rows > 2 && ceilDiv(outRows, s.rows) < matmulTargetGroups {
		s.rows /= 2
	}
	if ceilDiv(outRows, s.rows) < matmulTargetGroups/2 {
		if steps >= 256 && maxInvocs >= 256 {
			s.group = 256
		}
		if steps >= 2*s.group {
			s.unroll = 2
		}
	}
	return s
}

// matmul records y[i][:] (+)= x[i][:] · Wᵀ for n activation rows: x is
// float32 [n][w.cols], y float32 [n][w.rows].
func (o *ops) matmul(rec *vk.Recorder, w *weight, x *vk.Buffer, n int, y *vk.Buffer, add bool) error {
	return o.matmulFused(rec, w, x, n, []*vk.Buffer{y}, add, nil, 0)
}

// matmulFused is matmul with the fusions of shaders/matmul.comp: with norm
// (float32 [w.cols]) the activation rows are first RMS-normalised (eps) and
// scaled by norm; a GLU weight (gate and up stacked) writes silu(gate)*up to
// ys[0], [n][w.rows/2]; another weight of stacked segments writes segment i
// to ys[i], [n][segs[i]].
func (o *ops) matmulFused(rec *vk.Recorder, w *weight, x *vk.Buffer, n int, ys []*vk.Buffer, add bool, norm *vk.Buffer, eps float64) error {
	return o.matmulEpilogue(rec, w, x, n, ys, add, norm, eps, nil)
}

// ropeWrite is matmul_rope's epilogue (matmulRoPE): RoPE by the positions
// pos (int32 per row) and inverse frequencies freq (float32 per rotated
// pair), and the K/V write into a pool layer.
type ropeWrite struct {
	kv                kvpool.FusedWrite
	pos, freq         *vk.Buffer
	headDim, ropeDims int
}

// ropeFusable reports whether matmulRoPE takes w: Q, K and V stacked in one
// part, K and V alike.
func ropeFusable(w *weight) bool {
	return w != nil && !w.glu && len(w.segs) == 3 && len(w.parts) == 1 && w.segs[1] == w.segs[2]
}

// matmulRoPE is matmulFused on a stacked Q/K/V weight (ropeFusable) with
// RoPE and the pool write fused: q (float32 [n][segs[0]]) gets Q rotated,
// and K rotated and V go into the pool's slots, bit-identical to
// matmulFused then kvpool.Pool.WriteRoPE (shaders/matmul_rope.comp).
func (o *ops) matmulRoPE(rec *vk.Recorder, w *weight, x *vk.Buffer, n int, q *vk.Buffer, norm *vk.Buffer, eps float64, rw ropeWrite) error {
	switch {
	case !ropeFusable(w):
		return fmt.Errorf("matmul %s with RoPE: needs Q, K and V stacked in one part, K and V alike", w.name)
	case rw.headDim < 2 || rw.headDim%2 != 0 || rw.ropeDims < 0 || rw.ropeDims%2 != 0 || rw.ropeDims > rw.headDim:
		return fmt.Errorf("matmul %s with RoPE: head dim %d and rotated dims %d must be even, rotated at most head", w.name, rw.headDim, rw.ropeDims)
	case w.segs[0]%rw.headDim != 0 || w.segs[1]%rw.headDim != 0:
		return fmt.Errorf("matmul %s with RoPE: segments %v are not whole heads of %d", w.name, w.segs, rw.headDim)
	case rw.kv.K == nil || rw.kv.V == nil || rw.kv.Slots == nil || rw.pos == nil || rw.freq == nil:
		return fmt.Errorf("matmul %s with RoPE: nil buffer", w.name)
	case rw.kv.RowElems != w.segs[1]:
		return fmt.Errorf("matmul %s with RoPE: pool slots of %d elements for K rows of %d", w.name, rw.kv.RowElems, w.segs[1])
	case rw.kv.Rows != n:
		return fmt.Errorf("matmul %s with RoPE: %d slots for %d rows", w.name, rw.kv.Rows, n)
	}
	elem := uint64(4)
	if rw.kv.F16 {
		elem = 2
	}
	if slots := rw.kv.K.Size() / (uint64(w.segs[1]) * elem); rw.kv.V.Size() < rw.kv.K.Size() || slots == 0 {
		return fmt.Errorf("matmul %s with RoPE: pool buffers of %d and %d bytes", w.name, rw.kv.K.Size(), rw.kv.V.Size())
	}
	if rw.pos.Size() < uint64(n)*4 || rw.freq.Size() < uint64(max(rw.ropeDims/2, 1))*4 {
		return fmt.Errorf("matmul %s with RoPE: %d positions and %d frequencies in %d and %d bytes", w.name, n, rw.ropeDims/2, rw.pos.Size(), rw.freq.Size())
	}
	return o.matmulEpilogue(rec, w, x, n, []*vk.Buffer{q}, false, norm, eps, &rw)
}

// matmulEpilogue is matmulFused, with rw (not nil) matmulRoPE's epilogue:
// ys is then Q alone.
func (o *ops) matmulEpilogue(rec *vk.Recorder, w *weight, x *vk.Buffer, n int, ys []*vk.Buffer, add bool, norm *vk.Buffer, eps float64, rw *ropeWrite) error {
	nseg := max(1, len(w.segs))
	if rw != nil {
		nseg = 1 // Q; K and V go to the pool
	}
	if w.glu {
		nseg = 1
		if len(w.segs) != 2 || w.segs[0] != w.segs[1] || len(w.parts) != 1 {
			return fmt.Errorf("matmul %s: a GLU weight needs gate and up rows in one part", w.name)
		}
	}
	if len(ys) != nseg || (add && nseg > 1) || (add && w.glu) {
		return fmt.Errorf("matmul %s: %d outputs for %d segments (add %v, glu %v)", w.name, len(ys), nseg, add, w.glu)
	}
	var steps int
	if ce := kernels.MatmulChunkElems(w.wtype); ce > 0 && w.rowBytes%16 == 0 {
		steps = ceilDiv(w.cols, ce)
	} else {
		unit := 4
		if w.wtype >= kernels.WeightQ8_0 {
			unit = 32
		}
		steps = w.cols / unit
	}
	shape := o.mm
	if shape.rows == 0 {
		conv := shape.byteConv
		shape = matmulShapeFor(o.d.Info.Type, o.d.Info.MaxWorkgroupInvocs, w.wtype, w.rows, steps, min(matmulMaxCols, nextPow2(n)))
		shape.byteConv = conv
	}
	if (w.glu || rw != nil) && shape.rows%2 != 0 {
		shape.rows++ // GLU: gate/up halves; RoPE: both rows of a pair in one workgroup
	}
	group := min(shape.group, nextPow2(steps))
	nc := min(matmulMaxCols, nextPow2(n))
	// Shared memory: (ROWS + NORM) x NC partial sums per invocation (+1
	// padding); halve the workgroup until it fits the device.
	slots := (shape.rows + 1) * nc
	for group > 1 && uint64(4*slots*(group+1)) > uint64(o.d.Info.MaxSharedMemory) {
		group /= 2
	}
	if ceilDiv(steps, group) > kernels.MatmulMaxUnitSteps {
		return fmt.Errorf("matmul %s: rows of %d elements are too long", w.name, w.cols)
	}
	passes := min(ceilDiv(n, nc), kernels.MatmulMaxPasses)
	gy := ceilDiv(n, nc*passes)
	b2u := func(b bool) uint32 {
		if b {
			return 1
		}
		return 0
	}
	spec := kernels.SpecValues{"local_size_x": uint32(group), "WTYPE": w.wtype,
		"ROWS": uint32(shape.rows), "NC": uint32(nc), "ADD": b2u(add), "NORM": b2u(norm != nil), "GLU": b2u(w.glu),
		"UNROLL": uint32(min(max(shape.unroll, 1), 8)), "QCONV": b2u(!shape.byteConv)}
	contract := kernels.Matmul
	if rw != nil {
		contract = kernels.MatmulRoPE
		spec["KV_F16"] = b2u(rw.kv.F16)
	}
	p, err := o.pipeline(contract, spec)
	if err != nil {
		return fmt.Errorf("matmul %s: %w", w.name, err)
	}
	push := kernels.MatmulPush{N: uint32(n), InDim: uint32(w.cols), RowBytes: uint32(w.rowBytes), YStride: uint32(w.rows),
		Passes: uint32(passes), Eps: float32(eps), Split1: math.MaxUint32, Split2: math.MaxUint32}
	bufs := []vk.Range{{}, x.All(), ys[0].All(), ys[0].All(), ys[0].All(), x.All()}
	if w.glu {
		push.YStride, push.Split1 = uint32(w.segs[0]), uint32(w.segs[0])
	} else if len(w.segs) > 0 {
		push.YStride = uint32(w.segs[0])
		push.Split1 = uint32(w.segs[0])
		if len(w.segs) > 1 {
			push.Stride1 = uint32(w.segs[1])
			push.Split2 = uint32(w.segs[0] + w.segs[1])
			if rw == nil {
				bufs[3] = ys[1].All()
			}
		}
		if len(w.segs) > 2 {
			push.Stride2 = uint32(w.segs[2])
			if rw == nil {
				bufs[4] = ys[2].All()
			}
		}
	}
	if norm != nil {
		bufs[5] = norm.All()
	}
	if rw != nil {
		// Y1buf and Y2buf are not written (Q's buffer stands in): K and V
		// go to the pool, rows of Stride1 and Stride2 elements per slot.
		bufs = append(bufs, rw.pos.All(), rw.freq.All(), rw.kv.Slots.All(), rw.kv.K.All(), rw.kv.V.All())
	}
	for _, part := range w.parts {
		groups := ceilDiv(part.rows, shape.rows)
		if w.glu {
			groups = ceilDiv(w.segs[0], shape.rows/2)
		}
		grid, err := spread(o.d, groups, gy)
		if err != nil {
			return fmt.Errorf("matmul %s: %w", w.name, err)
		}
		push.OutDim, push.YOff, push.GridX = uint32(part.rows), uint32(part.row0), grid[0]
		var pushAny any = push
		if rw != nil {
			pushAny = kernels.MatmulRoPEPush{N: push.N, InDim: push.InDim, OutDim: push.OutDim, RowBytes: push.RowBytes,
				YStride: push.YStride, YOff: push.YOff, GridX: push.GridX, Passes: push.Passes, Eps: push.Eps,
				Split1: push.Split1, Split2: push.Split2, Stride1: push.Stride1, Stride2: push.Stride2,
				HeadDim: uint32(rw.headDim), RopeDims: uint32(rw.ropeDims)}
		}
		bufs[0] = part.rng(w.rowBytes)
		if err := p.Dispatch(rec, grid, pushAny, bufs...); err != nil {
			return fmt.Errorf("matmul %s: %w", w.name, err)
		}
	}
	return nil
}

// embed records out[i][:] = row tokens[i] of w, as float32.
func (o *ops) embed(rec *vk.Recorder, w *weight, tokens *vk.Buffer, n int, out *vk.Buffer) error {
	p, err := o.pipeline(kernels.EmbedGather, kernels.SpecValues{"local_size_x": elemGroup, "WTYPE": w.wtype})
	if err != nil {
		return fmt.Errorf("embed %s: %w", w.name, err)
	}
	grid, err := strideGrid(o.d, n*w.cols/4, elemGroup)
	if err != nil {
		return fmt.Errorf("embed %s: %w", w.name, err)
	}
	for _, part := range w.parts {
		push := kernels.EmbedGatherPush{N: uint32(n), Dim: uint32(w.cols), RowBase: uint32(part.row0), Rows: uint32(part.rows),
			RowBytes: uint32(w.rowBytes)}
		if err := p.Dispatch(rec, grid, push, part.rng(w.rowBytes), tokens.All(), out.All()); err != nil {
			return fmt.Errorf("embed %s: %w", w.name, err)
		}
	}
	return nil
}

// rmsnorm records y = x / sqrt(mean(x²) + eps) * weight over n rows of dim.
func (o *ops) rmsnorm(rec *vk.Recorder, x, weight *vk.Buffer, n, dim int, eps float64, y *vk.Buffer) error {
	if ceilDiv(dim, normGroup) > kernels.RMSNormMaxSteps {
		return fmt.Errorf("rmsnorm: rows of %d elements are too long", dim)
	}
	p, err := o.pipeline(kernels.RMSNorm, kernels.SpecValues{"local_size_x": normGroup})
	if err != nil {
		return fmt.Errorf("rmsnorm: %w", err)
	}
	grid, err := spread(o.d, n, 1)
	if err != nil {
		return fmt.Errorf("rmsnorm: %w", err)
	}
	push := kernels.RMSNormPush{N: uint32(n), Dim: uint32(dim), Eps: float32(eps), GridX: grid[0]}
	if err := p.Dispatch(rec, grid, push, x.All(), weight.All(), y.All()); err != nil {
		return fmt.Errorf("rmsnorm: %w", err)
	}
	return nil
}

// ropeShape is what rope needs of a model.
type ropeShape struct {
	qHeads, kvHeads, headDim, ropeDims int
}

// rope records the rotation of n tokens' Q ([n][qHeads][headDim]) and K
// ([n][kvHeads][headDim]) by the positions in pos (int32 [n]) with the
// inverse frequencies in freq (float32 [ropeDims/2]).
func (o *ops) rope(rec *vk.Recorder, s ropeShape, q, k, pos, freq *vk.Buffer, n int) error {
	if s.ropeDims == 0 {
		return nil
	}
	p, err := o.pipeline(kernels.Rope, kernels.SpecValues{"local_size_x": elemGroup})
	if err != nil {
		return fmt.Errorf("rope: %w", err)
	}
	grid, err := strideGrid(o.d, n*(s.qHeads+s.kvHeads)*s.ropeDims/2, elemGroup)
	if err != nil {
		return fmt.Errorf("rope: %w", err)
	}
	push := kernels.RopePush{N: uint32(n), QHeads: uint32(s.qHeads), KvHeads: uint32(s.kvHeads), HeadDim: uint32(s.headDim),
		RopeDims: uint32(s.ropeDims)}
	if err := p.Dispatch(rec, grid, push, q.All(), k.All(), pos.All(), freq.All()); err != nil {
		return fmt.Errorf("rope: %w", err)
	}
	return nil
}

// swiglu records g = silu(g) * u over n elements.
func (o *ops) swiglu(rec *vk.Recorder, g, u *vk.Buffer, n int) error {
	p, err := o.pipeline(kernels.SwiGLU, kernels.SpecValues{"local_size_x": elemGroup})
	if err != nil {
		return fmt.Errorf("swiglu: %w", err)
	}
	grid, err := strideGrid(o.d, n, elemGroup)
	if err != nil {
		return fmt.Errorf("swiglu: %w", err)
	}
	if err := p.Dispatch(rec, grid, kernels.SwiGLUPush{N: uint32(n)}, g.All(), u.All()); err != nil {
		return fmt.Errorf("swiglu: %w", err)
	}
	return nil
}

// prefetchGroup is l2_prefetch's workgroup: one 16-byte load per invocation
// and step.
const prefetchGroup = 256

// prefetchSinks is how many l2_prefetch dispatches one attention step can
// overlap: each writes its own sink buffer, so that the recorder's hazard
// tracking (per buffer) puts no barrier between them.
const prefetchSinks = 4

// prefetchWeights records l2_prefetch over the weights ws in order (nil
// ones skipped), up to budget bytes in all: the rows a matmul's first
// workgroups read first. The dispatches write only their sinks, so no
// barrier separates them from the dispatch before (the one they overlap).
func (o *ops) prefetchWeights(rec *vk.Recorder, budget uint64, sinks []*vk.Buffer, ws ...*weight) error {
	p, err := o.pipeline(kernels.L2Prefetch, kernels.SpecValues{"local_size_x": prefetchGroup})
	if err != nil {
		return fmt.Errorf("prefetch weights: %w", err)
	}
	k := 0
	for _, w := range ws {
		if w == nil {
			continue
		}
		for _, part := range w.parts {
			if budget < 16 || k == len(sinks) {
				return nil
			}
			n := min(uint64(part.rows)*uint64(w.rowBytes), budget) / 16
			grid, err := strideGrid(o.d, int(n), prefetchGroup)
			if err != nil {
				return fmt.Errorf("prefetch weights: %w", err)
			}
			push := kernels.L2PrefetchPush{N: uint32(n), Magic: 0x9e3779b9}
			if err := p.Dispatch(rec, grid, push, part.rng(w.rowBytes), sinks[k].All()); err != nil {
				return fmt.Errorf("prefetch weights: %w", err)
			}
			budget -= 16 * n
			k++
		}
	}
	return nil
}
