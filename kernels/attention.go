package kernels

import "github.com/deft-vk/deft/vk"

// PartialAttnPush is partial_attn.comp's push block.
type PartialAttnPush struct {
	NItems   uint32  // work items
	ItemsOff uint32  // metadata word offset of the item table (a multiple of ItemRecordWords)
	GridX    uint32  // workgroups along x; item = x + z*GridX
	NumSlots uint32  // slots in the KV pool (bounds check)
	Scale    float32 // multiplies q·k
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
	},
	Push: PartialAttnPush{},
	Spec: []Spec{
		{0, "local_size_x"}, {1, "D"}, {2, "B"}, {3, "R"}, {4, "G"}, {5, "KVH"}, {6, "KV_F16"}, {7, "UNROLL"},
	},
	Records:  map[string]any{"ItemRecord": ItemRecord{}},
	Variants: []Variant{{Name: "scalar", Module: "partial_attn"}},
})

// ReducePartialsPush is reduce_partials.comp's push block.
type ReducePartialsPush struct {
	NQueries   uint32
	OffsetsOff uint32 // metadata offset of NQueries+1 offsets into the list
	ListOff    uint32 // metadata offset of the partial indices
	GridX      uint32 // query = x + z*GridX
}

// ReducePartials merges each query's partial results (see
// shaders/reduce_partials.comp).
var ReducePartials = register(&Contract{
	Name: "reduce_partials",
	Doc:  "merges each query's partial attention results, in a fixed order",
	Bindings: []Binding{
		{"PartO", vk.Read}, {"PartL", vk.Read}, {"Meta", vk.Read}, {"Out", vk.Write},
	},
	Push:     ReducePartialsPush{},
	Spec:     []Spec{{0, "local_size_x"}, {1, "D"}, {2, "QH"}},
	Variants: []Variant{{Name: "scalar", Module: "reduce_partials"}},
})
