package kernels

import "github.com/deft-vk/deft/vk"

// Weight encodings of include/weights.glsl (the WTYPE specialization
// constant of matmul and embed_gather).
const (
	WeightF32  = 0
	WeightF16  = 1
	WeightBF16 = 2
	WeightQ8_0 = 3
	WeightQ4_0 = 4
	WeightQ4_K = 5
	WeightQ6_K = 6
	// Grouped layouts of Q8_0, Q4_0 and Q6_K (include/weights.glsl): groups
	// of 8 blocks, a 16-byte header of their f16 scales, then the blocks
	// without them, so that every quant is 16-byte aligned.
	WeightQ8_0G = 7
	WeightQ4_0G = 8
	WeightQ6_KG = 9
	// Q5_K in its GGUF layout: its 176-byte blocks are 16-byte aligned
	// already, so it is not regrouped.
	WeightQ5_K = 10
)

// MatmulChunkElems is the number of elements of one aligned 16-byte chunk
// of matmul.comp's fast path for a weight type, 0 for types without one
// (GGUF Q8_0, Q4_0 and Q6_K blocks, which take the quad-by-quad path). The fast path also needs rows of a multiple of 16 bytes.
func MatmulChunkElems(wtype uint32) int {
	switch wtype {
	case WeightF32:
		return 4
	case WeightF16, WeightBF16:
		return 8
	case WeightQ8_0G:
		return 16
	case WeightQ4_0G, WeightQ4_K, WeightQ5_K:
		return 32
	case WeightQ6_KG:
		return 64
	}
	return 0
}

// MatmulMaxPasses is matmul.comp's MAX_PASSES: passes of NC activation rows
// one workgroup makes at most.
const MatmulMaxPasses = 64

// MatmulMaxUnitSteps is matmul.comp's MAX_STEPS: chunks or units (blocks
// or quads) of a weight row one invocation handles at most.
const MatmulMaxUnitSteps = 4096

// MatmulPush is matmul.comp's push block.
type MatmulPush struct {
	N        uint32  // activation rows
	InDim    uint32  // elements per row
	OutDim   uint32  // weight rows bound
	RowBytes uint32  // bytes per weight row
	YStride  uint32  // floats per output row of Ybuf
	YOff     uint32  // index of the bound part's row 0 in the whole matrix
	GridX    uint32  // workgroups along x; row group = x + z*GridX
	Passes   uint32  // passes of NC activation rows per workgroup
	Eps      float32 // NORM: added to mean(x^2)
	Split1   uint32  // first weight row written to Y1buf (rows before: Ybuf)
	Split2   uint32  // first weight row written to Y2buf
	Stride1  uint32  // floats per output row of Y1buf
	Stride2  uint32  // floats per output row of Y2buf
}

// Matmul multiplies activation rows by the transpose of a weight matrix in
// its GGUF encoding, dequantizing inside the kernel (see shaders/matmul.comp),
// with optional fusions: RMSNorm of the activation rows by the norm weight
// in Gbuf (NORM), SwiGLU of (gate, up) row pairs (GLU), the residual add
// (ADD), and rows split over three outputs (Q, K, V).
var Matmul = register(&Contract{
	Name: "matmul",
	Doc:  "y (+)= x W^T for GGUF weight rows (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, grouped Q8_0/Q4_0/Q6_K) dequantized in the kernel",
	Bindings: []Binding{{"Wbuf", vk.Read}, {"Xbuf", vk.Read}, {"Ybuf", vk.Write}, {"Y1buf", vk.Write}, {"Y2buf", vk.Write},
		{"Gbuf", vk.Read}},
	Push: MatmulPush{},
	Spec: []Spec{{0, "local_size_x"}, {1, "WTYPE"}, {2, "ROWS"}, {3, "NC"}, {4, "ADD"}, {5, "NORM"}, {6, "GLU"},
		{7, "UNROLL"}, {8, "QCONV"}},
	Variants: []Variant{{Name: "scalar", Module: "matmul"}},
})

// MatmulRoPEPush is matmul_rope.comp's push block: MatmulPush's fields,
// then the RoPE shape.
type MatmulRoPEPush struct {
	N        uint32
	InDim    uint32
	OutDim   uint32
	RowBytes uint32
	YStride  uint32
	YOff     uint32
	GridX    uint32
	Passes   uint32
	Eps      float32
	Split1   uint32 // first K row (rows before: Q, rotated into Ybuf)
	Split2   uint32 // first V row
	Stride1  uint32 // K rows: elements per pool slot (KV heads x head dim)
	Stride2  uint32 // V rows: the same
	HeadDim  uint32 // even
	RopeDims uint32 // rotated dims per head: even, at most HeadDim
}

// MatmulRoPE is Matmul on a decoding step's stacked Q/K/V weight with
// RoPE and the K/V pool write in its epilogue: Q rotated into Ybuf, K
// rotated and V into the token's slot of the KV pool (fp16 when KV_F16),
// bit-identical to Matmul then RopeKV (see shaders/matmul_rope.comp).
// Y1buf and Y2buf are not written.
var MatmulRoPE = register(&Contract{
	Name: "matmul_rope",
	Doc:  "Q/K/V = x W^T as matmul, with RoPE of Q and K and the K/V write into the KV pool's slots in the epilogue",
	Bindings: []Binding{{"Wbuf", vk.Read}, {"Xbuf", vk.Read}, {"Ybuf", vk.Write}, {"Y1buf", vk.Write}, {"Y2buf", vk.Write},
		{"Gbuf", vk.Read}, {"Pos", vk.Read}, {"Freq", vk.Read}, {"Slots", vk.Read}, {"PoolK", vk.Write}, {"PoolV", vk.Write}},
	Push: MatmulRoPEPush{},
	Spec: []Spec{{0, "local_size_x"}, {1, "WTYPE"}, {2, "ROWS"}, {3, "NC"}, {4, "ADD"}, {5, "NORM"}, {6, "GLU"},
		{7, "UNROLL"}, {8, "QCONV"}, {9, "KV_F16"}},
	Variants: []Variant{{Name: "scalar", Module: "matmul_rope"}},
})

// L2PrefetchPush is l2_prefetch.comp's push block.
type L2PrefetchPush struct {
	First uint32 // first 16-byte word of the range
	N     uint32 // 16-byte words
	Check uint32 // tests: XOR every invocation's sum into Sink
	Magic uint32 // otherwise only a sum of four equal words Magic is
}

// L2Prefetch reads a range of a buffer into the GPU's L2 cache beside a
// latency-bound dispatch, for a later one (see shaders/l2_prefetch.comp).
var L2Prefetch = register(&Contract{
	Name:     "l2_prefetch",
	Doc:      "read a buffer range (16-byte words) so that a later dispatch finds it in L2",
	Bindings: []Binding{{"Src", vk.Read}, {"Sink", vk.Write}},
	Push:     L2PrefetchPush{},
	Spec:     []Spec{{0, "local_size_x"}},
	Variants: []Variant{{Name: "scalar", Module: "l2_prefetch"}},
})

// GridStrideSteps is the loop bound of the grid-stride kernels (embed_gather,
// swiglu, rope, to_f16, l2_prefetch): the host sizes their grids so that no
// invocation needs more steps.
const GridStrideSteps = 1024

// EmbedGatherPush is embed_gather.comp's push block.
type EmbedGatherPush struct {
	N        uint32 // tokens
	Dim      uint32 // elements per row
	RowBase  uint32 // first matrix row of the bound part
	Rows     uint32 // rows of the bound part
	RowBytes uint32
}

// EmbedGather copies token-embedding rows, dequantized, into float32
// activations (see shaders/embed_gather.comp).
var EmbedGather = register(&Contract{
	Name:     "embed_gather",
	Doc:      "token-embedding rows (any weight type) to float32 activations",
	Bindings: []Binding{{"Wbuf", vk.Read}, {"Tokens", vk.Read}, {"Out", vk.Write}},
	Push:     EmbedGatherPush{},
	Spec:     []Spec{{0, "local_size_x"}, {1, "WTYPE"}},
	Variants: []Variant{{Name: "scalar", Module: "embed_gather"}},
})

// RMSNormMaxSteps is rmsnorm.comp's MAX_STEPS: a row has at most this many
// elements per invocation.
const RMSNormMaxSteps = 4096

// RMSNormPush is rmsnorm.comp's push block.
type RMSNormPush struct {
	N     uint32 // rows
	Dim   uint32
	Eps   float32
	GridX uint32 // row = x + z*GridX
}

// RMSNorm normalises rows by their root mean square and scales them by a
// weight vector (see shaders/rmsnorm.comp).
var RMSNorm = register(&Contract{
	Name:     "rmsnorm",
	Doc:      "y = x / sqrt(mean(x^2) + eps) * w, one workgroup per row",
	Bindings: []Binding{{"X", vk.Read}, {"Weight", vk.Read}, {"Y", vk.Write}},
	Push:     RMSNormPush{},
	Spec:     []Spec{{0, "local_size_x"}},
	Variants: []Variant{{Name: "scalar", Module: "rmsnorm"}},
})

// RopePush is rope.comp's push block.
type RopePush struct {
	N        uint32 // tokens
	QHeads   uint32
	KvHeads  uint32
	HeadDim  uint32
	RopeDims uint32
}

// Rope rotates adjacent pairs of Q and K heads by position (llama.cpp's
// normal mode; see shaders/rope.comp).
var Rope = register(&Contract{
	Name:     "rope",
	Doc:      "rotary position embedding of Q and K, adjacent pairs, positions from a buffer",
	Bindings: []Binding{{"Q", vk.Write}, {"K", vk.Write}, {"Pos", vk.Read}, {"Freq", vk.Read}},
	Push:     RopePush{},
	Spec:     []Spec{{0, "local_size_x"}},
	Variants: []Variant{{Name: "scalar", Module: "rope"}},
})

// ToF16Push is to_f16.comp's push block.
type ToF16Push struct {
	N uint32 // quads (4 elements)
}

// ToF16 converts float32 activations to f16 once per batch step, for gemm's
// AF16 = 1 (see shaders/to_f16.comp).
var ToF16 = register(&Contract{
	Name:     "to_f16",
	Doc:      "h = f16(x), 4 elements per item: gemm's f16 activations",
	Bindings: []Binding{{"X", vk.Read}, {"H", vk.Write}},
	Push:     ToF16Push{},
	Spec:     []Spec{{0, "local_size_x"}},
	Variants: []Variant{{Name: "scalar", Module: "to_f16"}},
})

// SwiGLUPush is swiglu.comp's push block.
type SwiGLUPush struct {
	N uint32 // elements
}

// SwiGLU computes g = silu(g) * u in place (see shaders/swiglu.comp).
var SwiGLU = register(&Contract{
	Name:     "swiglu",
	Doc:      "g = silu(g) * u, in place",
	Bindings: []Binding{{"Gate", vk.Write}, {"Up", vk.Read}},
	Push:     SwiGLUPush{},
	Spec:     []Spec{{0, "local_size_x"}},
	Variants: []Variant{{Name: "scalar", Module: "swiglu"}},
})
