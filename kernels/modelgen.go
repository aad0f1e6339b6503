package kernels

import "github.com/deft-vk/deft/vk"

// WeightFillPush is weight_fill.comp's push block.
type WeightFillPush struct {
	Key      uint32 // modelgen.Params.Key
	Norm     uint32 // 1: a norm weight
	Exp      int32  // modelgen.Params.Exp
	ByteBase uint32 // tensor byte offset of output word 0
	Words    uint32 // 32-bit words to write
}

// WeightFill writes part of a random tensor's GGUF encoding, the same bytes
// as package modelgen's generator on the host (see shaders/weight_fill.comp);
// TYPE is the GGUF tensor type number. Grid-stride: at most GridStrideSteps
// words per invocation.
var WeightFill = register(&Contract{
	Name:     "weight_fill",
	Doc:      "a random tensor's GGUF bytes (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K), as modelgen generates them",
	Bindings: []Binding{{"Out", vk.Write}},
	Push:     WeightFillPush{},
	Spec:     []Spec{{0, "local_size_x"}, {1, "TYPE"}},
	Variants: []Variant{{Name: "scalar", Module: "weight_fill"}},
})
