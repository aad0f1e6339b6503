package kernels

import (
	"fmt"

	"github.com/deft-vk/deft/vk"
)

// GemmPush is the push block of gemm.comp and gemm_coopmat.comp.
type GemmPush struct {
	N        uint32 // activation rows
	InDim    uint32 // elements per row
	OutDim   uint32 // weight rows bound
	RowBytes uint32 // bytes per weight row
	YStride  uint32 // floats per output row
	YOff     uint32 // output column of weight row 0
	KSteps   uint32 // TK steps of the input per split (grid z)
	Splits   uint32 // 1: write y; more: write each split's sums to Pbuf for GemmReduce
	PStride  uint32 // floats per split in Pbuf
	PRow     uint32 // floats per activation row in Pbuf (all outputs, stacked)
	Split1   uint32 // first output column written to Y1buf (columns before: Ybuf)
	Split2   uint32 // first output column written to Y2buf
	Stride1  uint32 // floats per output row of Y1buf
	Stride2  uint32 // floats per output row of Y2buf
}

// GemmMaxKTiles is the shaders' MAX_K_TILES: steps of TK input elements a
// workgroup makes at most (the host checks rows against it).
const GemmMaxKTiles = 32768

// GemmMaxSplits is gemm_reduce.comp's MAX_SPLITS: split-K partial sums per
// output at most.
const GemmMaxSplits = 64

// Gemm multiplies a batch of activation rows by the transpose of a weight
// matrix in its GGUF encoding, tiled for prefill and large trees: grid x
// walks tiles of TM activation rows, grid y tiles of TN weight rows, grid z
// splits of the input (split-K, summed by GemmReduce); the output columns
// of stacked weights (Q, K and V; gate and up) may go to up to three
// buffers (see shaders/gemm.comp and shaders/gemm_coopmat.comp).
var Gemm = register(&Contract{
	Name: "gemm",
	Doc:  "y (+)= x W^T for batches: TM x TN output tiles, GGUF weights dequantized while tiles load",
	Bindings: []Binding{{"Wbuf", vk.Read}, {"Xbuf", vk.Read}, {"Ybuf", vk.Write}, {"Pbuf", vk.Write},
		{"Y1buf", vk.Write}, {"Y2buf", vk.Write}},
	Push: GemmPush{},
	Spec: []Spec{
		{0, "local_size_x"}, {1, "WTYPE"}, {2, "ADD"},
		{3, "TM"}, {4, "TN"}, {5, "TK"}, // workgroup tile: rows x weight rows x input step
		{6, "SM"}, {7, "SN"}, // per subgroup (coopmat) or per invocation (scalar)
		{8, "CM_M"}, {9, "CM_N"}, {10, "CM_K"},
		{11, "STAGES"},   // shared-memory tile buffers of the coopmat variant: 1 or 2
		{12, "PROBE"},    // benchmarks only (coopmat): bit 0 skips global loads, bit 1 the MMA, 4: pure MMA, 8: matrix loads+MMA; 0 in the model
		{13, "AF16"},     // 1: Xbuf holds f16 activations (ToF16's output), 0: float32
		{14, "PREFETCH"}, // coopmat: steps the global loads run ahead, 1 or 2 (two register sets)
	},
	Variants: []Variant{
		{Name: "coopmat", Module: "gemm_coopmat", Requires: requiresGemmCoopMat},
		{Name: "scalar", Module: "gemm"},
	},
})

// GemmReducePush is gemm_reduce.comp's push block.
type GemmReducePush struct {
	Count   uint32 // elements of each split in Pbuf: rows x PRow
	Splits  uint32 // partial sums per element
	PStride uint32 // floats per split in Pbuf
	PRow    uint32 // floats per activation row in Pbuf
	YStride uint32 // floats per output row of Ybuf
	Split1  uint32 // as GemmPush's
	Split2  uint32
	Stride1 uint32
	Stride2 uint32
}

// GemmReduce sums gemm's split-K partial sums into y in split order (see
// shaders/gemm_reduce.comp).
var GemmReduce = register(&Contract{
	Name:     "gemm_reduce",
	Doc:      "y (+)= the sum of gemm's split-K partial sums, in split order",
	Bindings: []Binding{{"Pbuf", vk.Read}, {"Ybuf", vk.Write}, {"Y1buf", vk.Write}, {"Y2buf", vk.Write}},
	Push:     GemmReducePush{},
	Spec:     []Spec{{0, "local_size_x"}, {1, "ADD"}},
	Variants: []Variant{{Name: "scalar", Module: "gemm_reduce"}},
})

// GemmCoopMatShape is the cooperative-matrix shape gemm's coopmat variant
// uses on a device: a subgroup-scope f16 x f16 + f32 -> f32 shape the
// device reports with M, N and K of 8, 16 or 32 (they divide the 32- and
// 64-element tiles the host picks). 16x16x16 is preferred, then the
// largest.
func GemmCoopMatShape(info *vk.DeviceInfo) (vk.CoopMatShape, error) {
	return f16CoopMatShape(info, 0)
}

// requiresGemmCoopMat is what gemm_coopmat needs.
func requiresGemmCoopMat(info *vk.DeviceInfo) error {
	switch {
	case !info.CooperativeMatrix:
		return fmt.Errorf("device lacks VK_KHR_cooperative_matrix")
	case !info.ShaderFloat16:
		return fmt.Errorf("device lacks shaderFloat16")
	case !info.VulkanMemoryModel:
		return fmt.Errorf("device lacks the Vulkan memory model")
	case info.SubgroupSize == 0:
		return fmt.Errorf("device reports no subgroup size")
	}
	_, err := GemmCoopMatShape(info)
	return err
}
