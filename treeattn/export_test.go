package treeattn

import "github.com/deft-vk/deft/vk"

// UploadWithFanIn uploads p with its reduction scheduled in groups of at
// most fanIn partials and reduce_partials specialised to kernelFanIn (tests
// of deep reductions at small sizes, and of the kernel's cap).
func UploadWithFanIn(p *Plan, d *vk.Device, fanIn, kernelFanIn int) (*DevicePlan, error) {
	return p.upload(d, uploadOptions{fanIn: fanIn, kernelFanIn: kernelFanIn})
}

// UploadUnchecked uploads p without refusing items beyond partial_attn's
// pass cap (tests of the kernel's own cap).
func UploadUnchecked(p *Plan, d *vk.Device) (*DevicePlan, error) {
	return p.upload(d, uploadOptions{fanIn: MaxReduceFanIn, kernelFanIn: MaxReduceFanIn, unchecked: true})
}
