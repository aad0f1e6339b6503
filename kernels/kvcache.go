package kernels

import "github.com/deft-vk/deft/vk"

// KVScatterMoves is how many (from, to) slot pairs one move dispatch takes.
const KVScatterMoves = 15

// KVScatterPush is kv_scatter.comp's push block (128 bytes, the Vulkan
// minimum of maxPushConstantsSize).
type KVScatterPush struct {
	N     uint32 // rows (scatter) or pairs (move)
	Pad   uint32
	Pairs [2 * KVScatterMoves]uint32
}

// KVScatter writes a step's K/V rows into pool slots (MODE 0) or moves pool
// rows (MODE 1, speculative accept); see shaders/kv_scatter.comp.
var KVScatter = register(&Contract{
	Name: "kv_scatter",
	Doc:  "writes K/V rows into KV-pool slots, or moves pool rows",
	Bindings: []Binding{
		{"SrcK", vk.Read}, {"SrcV", vk.Read}, {"Slots", vk.Read}, {"PoolK", vk.Write}, {"PoolV", vk.Write},
	},
	Push:     KVScatterPush{},
	Spec:     []Spec{{0, "local_size_x"}, {1, "ROW_WORDS"}, {2, "KV_F16"}, {3, "MODE"}},
	Variants: []Variant{{Name: "scalar", Module: "kv_scatter"}},
})

// RopeKVPush is rope_kv.comp's push block.
type RopeKVPush struct {
	N        uint32 // tokens
	QHeads   uint32
	KvHeads  uint32
	HeadDim  uint32 // even
	RopeDims uint32 // rotated dims per head: even, at most HeadDim
}

// RopeKV is Rope fused with KVScatter's MODE 0: it rotates Q in place and
// writes the rotated K and V of a step's rows into their KV-pool slots
// (see shaders/rope_kv.comp).
var RopeKV = register(&Contract{
	Name: "rope_kv",
	Doc:  "rotary position embedding of Q in place, and of K on its way into the KV pool's slots with V",
	Bindings: []Binding{
		{"Q", vk.Write}, {"K", vk.Read}, {"V", vk.Read}, {"Pos", vk.Read}, {"Freq", vk.Read}, {"Slots", vk.Read},
		{"PoolK", vk.Write}, {"PoolV", vk.Write},
	},
	Push:     RopeKVPush{},
	Spec:     []Spec{{0, "local_size_x"}, {1, "KV_F16"}},
	Variants: []Variant{{Name: "scalar", Module: "rope_kv"}},
})
