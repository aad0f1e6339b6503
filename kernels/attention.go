package kernels

import (
	"fmt"
	"slices"

	"github.com/deft-vk/deft/vk"
)

// PartialAttnPush is partial_attn.comp's push block.
type PartialAttnPush struct {
	NItems   uint32  // work items
	ItemsOff uint32  // metadata word offset of the item table (a multiple of ItemRecordWords)
	GridX    uint32  // workgroups along x; item = x + z*GridX
	NumSlots uint32  // slots in the KV pool (bounds check)
	Scale    float32 // multiplies q·k: the softmax scale divided by Unit
	// Unit is the unit of scores, a power of two: 1, or larger when the
	// host scales scores down so that they stay finite in fp32.
	Unit float32
	// Fuse 1: the workgroup that writes a query's last partial (per KV
	// head, counted in Counters) merges its partials into Out, in the
	// order of the inverse index at OffsetsOff/ListOff; reduce_partials
	// does not run. The scalar variant only; 0 in the coopmat variant.
	Fuse       uint32
	OffsetsOff uint32 // metadata offset of NumQueries+1 offsets into the list
	ListOff    uint32 // metadata offset of each query's partial indices
}

// ItemRecord is one work item of a tree-attention plan in the metadata
// buffer (GLSL struct ItemRecord): a run of KV slots, the queries that see
// them, their optional visibility bitmask and where their partial results go.
type ItemRecord struct {
	SlotsOff    uint32 // metadata offset of the slot list
	NumSlots    uint32
	QueriesOff  uint32 // metadata offset of the query list
	NumQueries  uint32
	MaskOff     uint32 // metadata offset of [token][MaskWords] bits; 0 words: no mask
	MaskWords   uint32
	PartialBase uint32 // first partial result index of the item's queries
	Reserved    uint32
}

// ItemRecordWords is the size of an ItemRecord in 32-bit words.
const ItemRecordWords = 8

// PartialAttn computes partial tree attention for work items (see
// shaders/partial_attn.comp).
var PartialAttn = register(&Contract{
	Name: "partial_attn",
	Doc:  "partial tree attention per work item and KV head: normalised output and log-sum-exp per (query, head)",
	Bindings: []Binding{
		{"Qbuf", vk.Read}, {"K16", vk.Read}, {"V16", vk.Read}, {"Meta", vk.Read},
		{"PartO", vk.Write}, {"PartL", vk.Write},
		// Fused reduction only: the output and a zeroed uint32 counter
		// per (query, KV head), left zero by each dispatch.
		{"Out", vk.Write}, {"Counters", vk.Write},
	},
	Push: PartialAttnPush{},
	Spec: []Spec{
		{0, "local_size_x"}, {1, "D"}, {2, "B"}, {3, "R"}, {4, "G"}, {5, "KVH"}, {6, "KV_F16"}, {7, "UNROLL"},
		{8, "MAX_PASSES"}, // items of more passes are not computed but poisoned
		{9, "CM_M"}, {10, "CM_N"}, {11, "CM_K"},
	},
	Records: map[string]any{"ItemRecord": ItemRecord{}},
	Variants: []Variant{
		{Name: "coopmat", Module: "partial_attn_coopmat", Requires: requiresCoopMatF16},
		// The first cooperative-matrix kernel, kept selectable until the
		// item classes of "coopmat" are proven on GPUs.
		{Name: "coopmat_v1", Module: "partial_attn_coopmat_v1", Requires: requiresCoopMatF16},
		// Items of one query (decoding steps): the planner picks it for
		// plans whose items all have one query, scalar otherwise.
		{Name: "decode", Module: "partial_attn_decode", Requires: requiresSubgroupArithmetic},
		{Name: "scalar", Module: "partial_attn"},
	},
})

// requiresSubgroupArithmetic is what partial_attn_decode needs: subgroup
// maxima (any subgroup size).
func requiresSubgroupArithmetic(info *vk.DeviceInfo) error {
	if !slices.Contains(info.SubgroupOps, "basic") || !slices.Contains(info.SubgroupOps, "arithmetic") {
		return fmt.Errorf("device lacks subgroup arithmetic")
	}
	return nil
}

// AttnCoopMatShape is the cooperative-matrix shape partial_attn's coopmat
// variant uses on a device: a subgroup-scope f16 x f16 + f32 -> f32 shape
// the device reports, with M, N and K of 8, 16 or 32 (so that they divide
// the kernel's 32-token tiles and head dims that are multiples of 32) and
// M at most the subgroup size (softmax lanes own rows). 16x16x16 is
// preferred, then the largest.
func AttnCoopMatShape(info *vk.DeviceInfo) (vk.CoopMatShape, error) {
	return f16CoopMatShape(info, info.SubgroupSize)
}

// requiresCoopMatF16 is what partial_attn_coopmat (and _v1) needs.
func requiresCoopMatF16(info *vk.DeviceInfo) error {
	switch {
	case !info.CooperativeMatrix:
		return fmt.Errorf("device lacks VK_KHR_cooperative_matrix")
	case !info.ShaderFloat16:
		return fmt.Errorf("device lacks shaderFloat16")
	case !info.Storage16Bit:
		return fmt.Errorf("device lacks 16-bit storage buffers")
	case !info.VulkanMemoryModel:
		return fmt.Errorf("device lacks the Vulkan memory model")
	case !slices.Contains(info.SubgroupOps, "shuffle"):
		return fmt.Errorf("device lacks subgroup shuffles")
	case !slices.Contains(info.SubgroupOps, "vote"):
		return fmt.Errorf("device lacks subgroup votes")
	}
	_, err := AttnCoopMatShape(info)
	return err
}

// ReducePartialsPush is reduce_partials.comp's push block.
type ReducePartialsPush struct {
	NGroups    uint32 // lists of partials to merge (queries in the final pass)
	OffsetsOff uint32 // metadata offset of NGroups+1 offsets into the list
	ListOff    uint32 // metadata offset of the partial indices
	GridX      uint32 // group = x + z*GridX
	// ToPartials 0: group g is query g, merged into the output; 1: merged
	// into the intermediate partial OutBase+g (a level of a deep query).
	ToPartials uint32
	OutBase    uint32
	Unit       float32 // score unit of the log-sum-exps (PartialAttnPush.Unit)
}

// ReducePartials merges lists of partial results: each query's, or chunks
// of at most FANIN of a deep query's into intermediate partials (see
// shaders/reduce_partials.comp).
var ReducePartials = register(&Contract{
	Name: "reduce_partials",
	Doc:  "merges each query's partial attention results (in levels of at most FANIN), in a fixed order",
	Bindings: []Binding{
		{"PartO", vk.Write}, {"PartL", vk.Write}, {"Meta", vk.Read}, {"Out", vk.Write},
	},
	Push:     ReducePartialsPush{},
	Spec:     []Spec{{0, "local_size_x"}, {1, "D"}, {2, "QH"}, {3, "FANIN"}},
	Variants: []Variant{{Name: "scalar", Module: "reduce_partials"}},
})
