package model

import (
	"fmt"
	"math"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/vk"
)

// weight is a weight matrix on the device in its GGUF encoding: rows of
// Cols elements, possibly split into parts of consecutive rows, each in its
// own buffer, so that no binding exceeds the device's maxStorageBufferRange.
type weight struct {
	name     string
	typ      gguf.TensorType
	wtype    uint32
	cols     int
	rows     int
	rowBytes int
	parts    []weightPart
	// Fused layouts (concatenated at load): glu means rows are (gate, up)
	// pairs and matmul writes silu(gate)*up, rows/2 outputs; segs, when
	// set, are the row counts of up to 3 matrices stacked (Q, K, V), each
	// written to its own output.
	glu  bool
	segs []int
}

type weightPart struct {
	buf  *vk.Buffer
	row0 int
	rows int
}

// wordPad is the padding after a weight's last row: block types read their
// unaligned words as two aligned ones, and the matmul kernel reads whole
// 16-byte words around a block (include/weights.glsl).
const wordPad = 16

// uploadWeight copies a 2-D tensor to the device as it is encoded.
func uploadWeight(d *vk.Device, t gguf.Tensor) (*weight, error) {
	return uploadWeightParts(d, t, 0)
}

// uploadWeightParts is uploadWeight with parts of at most maxRows rows (0:
// as many as a binding holds); tests split small tensors with it.
func uploadWeightParts(d *vk.Device, t gguf.Tensor, maxRows uint64) (*weight, error) {
	return uploadWeightLayout(d, t, maxRows, true, false)
}

// uploadWeightLayout is uploadWeightParts; grouped false keeps Q8_0, Q4_0
// and Q6_K blocks in their GGUF layout (the kernels' slower quad path;
// tests check both); pairs keeps row pairs (GLU weights) in one part.
func uploadWeightLayout(d *vk.Device, t gguf.Tensor, maxRows uint64, grouped, pairs bool) (*weight, error) {
	wt, ok := weightType(t.Type)
	if !ok {
		return nil, fmt.Errorf("%s: tensor type %s is not supported by the kernels (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)", t.Name, t.Type)
	}
	if len(t.Dims) != 2 {
		return nil, fmt.Errorf("%s: %d dims, want 2", t.Name, len(t.Dims))
	}
	cols, rows := t.Dims[0], t.Dims[1]
	if cols == 0 || rows == 0 || cols > maxDim || rows > 1<<31-1 {
		return nil, fmt.Errorf("%s: dims %v out of range", t.Name, t.Dims)
	}
	if cols%4 != 0 {
		return nil, fmt.Errorf("%s: rows of %d elements; the kernels need a multiple of 4", t.Name, cols)
	}
	fileRB, err := t.Type.RowBytes(cols)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	if uint64(len(t.Data)) < fileRB*rows {
		return nil, fmt.Errorf("%s: %d bytes of data for %d rows of %d bytes", t.Name, len(t.Data), rows, fileRB)
	}
	rb := fileRB
	gwt, dOff, regroup := groupedType(t.Type)
	regroup = regroup && grouped
	if regroup {
		wt = gwt
		rb = uint64(groupedRowBytes(int(fileRB)/t.Type.BlockBytes(), t.Type.BlockBytes()))
	}
	w := &weight{name: t.Name, typ: t.Type, wtype: wt, cols: int(cols), rows: int(rows), rowBytes: int(rb), glu: pairs}
	limit := uint64(d.Info.MaxStorageBufferRange)
	perPart := (limit - 2*wordPad) / rb
	if perPart == 0 {
		return nil, fmt.Errorf("%s: one row of %d bytes exceeds the device's storage-buffer range %d", t.Name, rb, limit)
	}
	// Byte offsets inside the kernels are 32-bit.
	perPart = min(perPart, (1<<32-1-2*wordPad)/rb)
	if maxRows > 0 {
		perPart = min(perPart, maxRows)
	}
	if pairs {
		if rows%2 != 0 || perPart < 2 {
			return nil, fmt.Errorf("%s: %d rows do not make whole (gate, up) pairs in parts of %d", t.Name, rows, perPart)
		}
		perPart &^= 1
	}
	// Regrouped rows go up in slabs of about 16 MiB.
	slabRows := max(1, (16<<20)/rb)
	var slab []byte
	for r0 := uint64(0); r0 < rows; r0 += perPart {
		n := min(perPart, rows-r0)
		buf, err := d.NewBuffer((n*rb + wordPad + 15) &^ 15) // whole 16-byte words
		if err != nil {
			w.close()
			return nil, fmt.Errorf("%s: %w", t.Name, err)
		}
		w.parts = append(w.parts, weightPart{buf: buf, row0: int(r0), rows: int(n)})
		if !regroup {
			err = buf.Write(0, t.Data[r0*fileRB:(r0+n)*fileRB])
		}
		for s0 := uint64(0); regroup && err == nil && s0 < n; s0 += slabRows {
			sn := min(slabRows, n-s0)
			if slab == nil {
				slab = make([]byte, min(slabRows, perPart, rows)*rb)
			}
			for i := range sn {
				src := (r0 + s0 + i) * fileRB
				groupRow(slab[i*rb:(i+1)*rb], t.Data[src:src+fileRB], t.Type.BlockBytes(), dOff)
			}
			err = buf.Write(s0*rb, slab[:sn*rb])
		}
		if err != nil {
			w.close()
			return nil, fmt.Errorf("%s: %w", t.Name, err)
		}
	}
	return w, nil
}

func (w *weight) close() {
	for _, p := range w.parts {
		p.buf.Close()
	}
	w.parts = nil
}

// bytes is the weight's device memory.
func (w *weight) bytes() uint64 {
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
	d     *vk.Device
	pipes map[pipeKey]*kernels.Pipeline
	mm    matmulShape // zero: defaultMatmulShape
}

type pipeKey struct {
	c    *kernels.Contract
	spec [8]uint32
}

func newOps(d *vk.Device) *ops { return &ops{d: d, pipes: map[pipeKey]*kernels.Pipeline{}} }

// pipeline returns c's pipeline for the named constants in order (a
// contract's constants are few; names are given in the contract's order).
func (o *ops) pipeline(c *kernels.Contract, spec kernels.SpecValues) (*kernels.Pipeline, error) {
	k := pipeKey{c: c}
	for i, s := range c.Spec {
		k.spec[i] = spec[s.Name]
	}
	if p := o.pipes[k]; p != nil {
		return p, nil
	}
	p, err := c.Pipeline(o.d, spec)
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
// and invocations at most (tests and benchmarks vary them).
type matmulShape struct{ rows, group int }

// defaultMatmulShape: 4 rows share each activation load, and 128
// invocations stream 2 KiB of weights per row and step.
var defaultMatmulShape = matmulShape{rows: 4, group: 128}

// matmul records y[i][:] (+)= x[i][:] · Wᵀ for n activation rows: x is
// float32 [n][w.cols], y float32 [n][w.rows].
func (o *ops) matmul(rec *vk.Recorder, w *weight, x *vk.Buffer, n int, y *vk.Buffer, add bool) error {
	return o.matmulFused(rec, w, x, n, []*vk.Buffer{y}, add, nil, 0)
}

// matmulFused is matmul with the fusions of shaders/matmul.comp: with norm
// (float32 [w.cols]) the activation rows are first RMS-normalised (eps) and
// scaled by norm; a GLU weight writes silu(gate)*up, [n][w.rows/2]; a
// weight of stacked segments writes segment i to ys[i], [n][segs[i]].
func (o *ops) matmulFused(rec *vk.Recorder, w *weight, x *vk.Buffer, n int, ys []*vk.Buffer, add bool, norm *vk.Buffer, eps float64) error {
	shape := o.mm
	if shape.rows == 0 {
		shape = defaultMatmulShape
	}
	if w.glu && shape.rows%2 != 0 {
		shape.rows++
	}
	nseg := max(1, len(w.segs))
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
	p, err := o.pipeline(kernels.Matmul, kernels.SpecValues{"local_size_x": uint32(group), "WTYPE": w.wtype,
		"ROWS": uint32(shape.rows), "NC": uint32(nc), "ADD": b2u(add), "NORM": b2u(norm != nil), "GLU": b2u(w.glu)})
	if err != nil {
		return fmt.Errorf("matmul %s: %w", w.name, err)
	}
	push := kernels.MatmulPush{N: uint32(n), InDim: uint32(w.cols), RowBytes: uint32(w.rowBytes), YStride: uint32(w.rows),
		Passes: uint32(passes), Eps: float32(eps), Split1: math.MaxUint32, Split2: math.MaxUint32}
	bufs := []vk.Range{{}, x.All(), ys[0].All(), ys[0].All(), ys[0].All(), x.All()}
	if w.glu {
		push.YStride = uint32(w.rows / 2)
	}
	if len(w.segs) > 0 {
		push.YStride = uint32(w.segs[0])
		push.Split1 = uint32(w.segs[0])
		if len(w.segs) > 1 {
			push.Stride1 = uint32(w.segs[1])
			push.Split2 = uint32(w.segs[0] + w.segs[1])
			bufs[3] = ys[1].All()
		}
		if len(w.segs) > 2 {
			push.Stride2 = uint32(w.segs[2])
			bufs[4] = ys[2].All()
		}
	}
	if norm != nil {
		bufs[5] = norm.All()
	}
	for _, part := range w.parts {
		grid, err := spread(o.d, ceilDiv(part.rows, shape.rows), gy)
		if err != nil {
			return fmt.Errorf("matmul %s: %w", w.name, err)
		}
		push.OutDim, push.YOff, push.GridX = uint32(part.rows), uint32(part.row0), grid[0]
		bufs[0] = part.buf.All()
		if err := p.Dispatch(rec, grid, push, bufs...); err != nil {
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
		if err := p.Dispatch(rec, grid, push, part.buf.All(), tokens.All(), out.All()); err != nil {
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
