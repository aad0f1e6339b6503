package kernels

import "github.com/deft-vk/deft/vk"

// CopyPush is copy.comp's push block.
type CopyPush struct {
	N uint32 // uvec4 elements
}

// Copy streams one buffer into another (the bandwidth probe).
var Copy = register(&Contract{
	Name:     "copy",
	Doc:      "grid-stride copy of 16-byte words (memory bandwidth probe)",
	Bindings: []Binding{{"Src", vk.Read}, {"Dst", vk.Write}},
	Push:     CopyPush{},
	Spec:     []Spec{{0, "local_size_x"}},
	Variants: []Variant{{Name: "scalar", Module: "copy"}},
})

// SaxpyPush is saxpy.comp's push block.
type SaxpyPush struct {
	N uint32
	A float32
}

// Saxpy computes y = a*x + y (the read-modify-write bandwidth probe).
var Saxpy = register(&Contract{
	Name:     "saxpy",
	Doc:      "y = a*x + y (read-modify-write bandwidth probe)",
	Bindings: []Binding{{"X", vk.Read}, {"Y", vk.Write}},
	Push:     SaxpyPush{},
	Spec:     []Spec{{0, "local_size_x"}},
	Variants: []Variant{{Name: "scalar", Module: "saxpy"}},
})

// FMAPeakPush is fma_peak.comp's push block.
type FMAPeakPush struct {
	Iters uint32
	A     float32
	B     float32
}

// FMAPeak runs register-only FMA chains (the fp32 arithmetic roofline).
var FMAPeak = register(&Contract{
	Name:     "fma_peak",
	Doc:      "register-only fp32 FMA chains (arithmetic roofline probe)",
	Bindings: []Binding{{"Out", vk.Write}},
	Push:     FMAPeakPush{},
	Spec:     []Spec{{0, "local_size_x"}},
	Variants: []Variant{{Name: "scalar", Module: "fma_peak"}},
})

// SpecPushPush is spec_push.comp's push block (a runtime test kernel).
type SpecPushPush struct {
	N      uint32
	Offset float32
	Step   float32
}

// SpecPush tests specialization constants and push constants of the runtime.
var SpecPush = register(&Contract{
	Name:     "spec_push",
	Doc:      "runtime test: o = v*SCALE + BIAS + offset + i*step",
	Bindings: []Binding{{"In", vk.Read}, {"Out", vk.Write}},
	Push:     SpecPushPush{},
	Spec:     []Spec{{0, "local_size_x"}, {1, "SCALE"}, {2, "BIAS"}},
	Variants: []Variant{{Name: "scalar", Module: "spec_push"}},
	TestOnly: true,
})

// SubgroupSumPush is subgroup_sum.comp's push block.
type SubgroupSumPush struct {
	N uint32
}

// SubgroupSum tests subgroup arithmetic of the runtime.
var SubgroupSum = register(&Contract{
	Name:     "subgroup_sum",
	Doc:      "runtime test: per-workgroup sums through subgroupAdd",
	Bindings: []Binding{{"In", vk.Read}, {"Out", vk.Write}},
	Push:     SubgroupSumPush{},
	Spec:     []Spec{{0, "local_size_x"}},
	Variants: []Variant{{Name: "scalar", Module: "subgroup_sum"}},
	TestOnly: true,
})
