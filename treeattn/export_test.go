package treeattn

import "github.com/deft-vk/deft/vk"

// UploadWithCaps uploads p with its reduction scheduled in groups of at
// most fanIn partials, reduce_partials specialised to kernelFanIn and
// partial_attn to kernelMaxPasses (tests of deep reductions at small sizes,
// and of the kernels' own caps).
func UploadWithCaps(p *Plan, d *vk.Device, fanIn, kernelFanIn, kernelMaxPasses int) (*DevicePlan, error) {
	return p.upload(d, uploadOptions{fanIn: fanIn, kernelFanIn: kernelFanIn, kernelMaxPasses: kernelMaxPasses})
}
