package treeattn

import (
	"fmt"

	"github.com/deft-vk/deft/vk"
)

// UploadReusing is Upload that takes over the device buffers of prev, a
// plan of an earlier step whose work has finished, instead of allocating new
// ones: a buffer is only replaced when it is too small. prev must not be
// used afterwards (nor closed: its buffers now belong to the result). On
// error prev is closed. With prev nil it is Upload.
func (p *Plan) UploadReusing(d *vk.Device, prev *DevicePlan) (*DevicePlan, error) {
	if prev == nil {
		return p.Upload(d)
	}
	if prev.d != d {
		prev.Close()
		return p.Upload(d)
	}
	bufs := []*vk.Buffer{prev.meta, prev.partO, prev.partL}
	prev.meta, prev.partO, prev.partL = nil, nil, nil
	closeAll := func() {
		for _, b := range bufs {
			b.Close()
		}
	}
	// Upload without its allocations: borrow the sizing and kernels.
	dp, err := p.prepare(d)
	if err != nil {
		closeAll()
		return nil, err
	}
	rows := uint64(p.Partials) * uint64(p.Shape.QHeads)
	sizes := []uint64{uint64(len(p.meta)) * 4, rows * uint64(p.Shape.HeadDim) * 4, rows * 4}
	for i, dst := range []**vk.Buffer{&dp.meta, &dp.partO, &dp.partL} {
		if bufs[i] != nil && bufs[i].Size() >= sizes[i] {
			*dst, bufs[i] = bufs[i], nil
			continue
		}
		b, err := d.NewBuffer(max(sizes[i], 4) + sizes[i]/2) // headroom for the next steps
		if err != nil {
			closeAll()
			dp.Close()
			return nil, fmt.Errorf("upload plan: %w", err)
		}
		*dst = b
	}
	closeAll() // buffers too small to keep
	if err := dp.meta.WriteU32(0, p.meta); err != nil {
		dp.Close()
		return nil, fmt.Errorf("upload plan: %w", err)
	}
	return dp, nil
}
