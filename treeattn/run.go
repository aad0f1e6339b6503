package treeattn

import (
	"fmt"
	"math"

	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/vk"
)

// LimitsOf extracts the limits planning needs from a device.
func LimitsOf(info vk.DeviceInfo) Limits {
	return Limits{
		SharedMemory:   int(info.MaxSharedMemory),
		MaxInvocations: int(info.MaxWorkgroupInvocs),
		MaxWorkgroupCount: [3]int{int(info.MaxWorkgroupCount[0]), int(info.MaxWorkgroupCount[1]),
			int(info.MaxWorkgroupCount[2])},
	}
}

// DevicePlan is a Plan uploaded to a device with its scratch buffers:
// prepared once per decoding step, run once per layer.
type DevicePlan struct {
	*Plan
	d        *vk.Device
	meta     *vk.Buffer
	partO    *vk.Buffer
	partL    *vk.Buffer
	attn     *kernels.Pipeline
	reduce   *kernels.Pipeline
	attnGrid [3]uint32
	redGrid  [3]uint32
}

const reduceWorkgroup = 64

// attnUnroll is partial_attn's UNROLL: its loops over the head dim and a
// tile's tokens are unrolled 4 times (fully unrolled, the kernel took all
// 255 registers on the H100).
const attnUnroll = 4

// grid spreads n workgroups over x and z (y is used by heads) within the
// device's limits.
func grid(n, y int, lim Limits) ([3]uint32, error) {
	if y > lim.MaxWorkgroupCount[1] {
		return [3]uint32{}, fmt.Errorf("%d heads exceed the device's workgroup count limit %d", y, lim.MaxWorkgroupCount[1])
	}
	x := min(n, lim.MaxWorkgroupCount[0])
	z := (n + x - 1) / x
	if z > lim.MaxWorkgroupCount[2] {
		return [3]uint32{}, fmt.Errorf("%d workgroups exceed the device's limits", n)
	}
	return [3]uint32{uint32(x), uint32(y), uint32(z)}, nil
}

// Upload copies the plan's metadata to d and prepares kernels and scratch.
func (p *Plan) Upload(d *vk.Device) (*DevicePlan, error) {
	dp, err := p.prepare(d)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*DevicePlan, error) {
		dp.Close()
		return nil, fmt.Errorf("upload plan: %w", err)
	}
	if dp.meta, err = d.NewBuffer(uint64(len(p.meta)) * 4); err != nil {
		return fail(err)
	}
	if err := dp.meta.WriteU32(0, p.meta); err != nil {
		return fail(err)
	}
	rows := uint64(p.Partials) * uint64(p.Shape.QHeads)
	if dp.partO, err = d.NewBuffer(rows * uint64(p.Shape.HeadDim) * 4); err != nil {
		return fail(err)
	}
	if dp.partL, err = d.NewBuffer(rows * 4); err != nil {
		return fail(err)
	}
	return dp, nil
}

// prepare checks the device, sizes the grids and gets the kernels of a
// DevicePlan, without its buffers.
func (p *Plan) prepare(d *vk.Device) (*DevicePlan, error) {
	if lim := LimitsOf(d.Info); lim.SharedMemory < p.Limits.SharedMemory || lim.MaxInvocations < p.Tiles.Workgroup {
		return nil, fmt.Errorf("upload plan: planned for %+v, device %s has %+v", p.Limits, d.Info.Name, lim)
	}
	dp := &DevicePlan{Plan: p, d: d}
	var err error
	if dp.attnGrid, err = grid(p.Items, p.Shape.KVHeads, p.Limits); err != nil {
		return nil, fmt.Errorf("upload plan: %w", err)
	}
	if dp.redGrid, err = grid(p.NumQueries, p.Shape.QHeads, p.Limits); err != nil {
		return nil, fmt.Errorf("upload plan: %w", err)
	}
	s := p.Shape
	f16 := uint32(0)
	if p.KV == KVF16 {
		f16 = 1
	}
	dp.attn, err = kernels.PartialAttn.Pipeline(d, kernels.SpecValues{
		"local_size_x": uint32(p.Tiles.Workgroup), "D": uint32(s.HeadDim), "B": uint32(p.Tiles.Tokens),
		"R": uint32(p.Tiles.Rows), "G": uint32(s.GroupSize()), "KVH": uint32(s.KVHeads), "KV_F16": f16,
		"UNROLL": attnUnroll,
	})
	if err != nil {
		return nil, fmt.Errorf("upload plan: %w", err)
	}
	dp.reduce, err = kernels.ReducePartials.Pipeline(d, kernels.SpecValues{
		"local_size_x": reduceWorkgroup, "D": uint32(s.HeadDim), "QH": uint32(s.QHeads),
	})
	if err != nil {
		return nil, fmt.Errorf("upload plan: %w", err)
	}
	return dp, nil
}

// Close frees the plan's device buffers (kernels stay cached on the device).
func (dp *DevicePlan) Close() {
	for _, b := range []*vk.Buffer{dp.meta, dp.partO, dp.partL} {
		b.Close()
	}
	dp.meta, dp.partO, dp.partL = nil, nil, nil
}

// Sizes the buffers Run takes must have, in bytes.
func (p *Plan) QueryBytes() uint64 {
	return uint64(p.NumQueries) * uint64(p.Shape.QHeads) * uint64(p.Shape.HeadDim) * 4
}

// KVRowBytes is the size of one slot of K (or V).
func (p *Plan) KVRowBytes() uint64 {
	return uint64(p.Shape.KVHeads) * uint64(p.Shape.HeadDim) * uint64(p.KV.Bytes())
}

// Run records one layer's tree attention: partial attention, then the
// reduction into out. q and out are [query][qhead][dim] float32; k and v are
// the KV pool [slot][kvhead][dim] of the plan's KV type.
func (dp *DevicePlan) Run(rec *vk.Recorder, q, k, v, out *vk.Buffer) error {
	if err := dp.RunPartial(rec, q, k, v, out); err != nil {
		return err
	}
	return dp.RunReduce(rec, out)
}

// RunPartial records the partial-attention kernel alone (benchmarks time
// the two phases separately); out is only checked here.
func (dp *DevicePlan) RunPartial(rec *vk.Recorder, q, k, v, out *vk.Buffer) error {
	if dp.meta == nil {
		return fmt.Errorf("run %s: plan is closed", dp.Method)
	}
	if q == nil || k == nil || v == nil || out == nil {
		return fmt.Errorf("run %s: nil buffer", dp.Method)
	}
	if q.Size() < dp.QueryBytes() {
		return fmt.Errorf("run %s: Q has %d bytes, %d queries x %d heads x %d need %d", dp.Method, q.Size(), dp.NumQueries, dp.Shape.QHeads, dp.Shape.HeadDim, dp.QueryBytes())
	}
	if out.Size() < dp.QueryBytes() {
		return fmt.Errorf("run %s: output has %d bytes, need %d", dp.Method, out.Size(), dp.QueryBytes())
	}
	if k.Size() != v.Size() {
		return fmt.Errorf("run %s: K has %d bytes but V %d", dp.Method, k.Size(), v.Size())
	}
	slots := k.Size() / dp.KVRowBytes()
	if slots < uint64(dp.NumSlots) {
		return fmt.Errorf("run %s: the tree uses slot %d but the KV pool holds %d slots", dp.Method, dp.NumSlots-1, slots)
	}
	slots = min(slots, math.MaxUint32)
	push := kernels.PartialAttnPush{NItems: uint32(dp.Items), ItemsOff: 0, GridX: dp.attnGrid[0],
		NumSlots: uint32(slots), Scale: float32(dp.Scale)}
	return dp.attn.Dispatch(rec, dp.attnGrid, push, q.All(), k.All(), v.All(), dp.meta.All(), dp.partO.All(), dp.partL.All())
}

// RunReduce records the reduction of the partial results into out.
func (dp *DevicePlan) RunReduce(rec *vk.Recorder, out *vk.Buffer) error {
	if dp.meta == nil {
		return fmt.Errorf("run %s: plan is closed", dp.Method)
	}
	if out == nil || out.Size() < dp.QueryBytes() {
		return fmt.Errorf("run %s: output buffer missing or smaller than %d bytes", dp.Method, dp.QueryBytes())
	}
	push := kernels.ReducePartialsPush{NQueries: uint32(dp.NumQueries), OffsetsOff: dp.offsetsOff, ListOff: dp.listOff,
		GridX: dp.redGrid[0]}
	return dp.reduce.Dispatch(rec, dp.redGrid, push, dp.partO.All(), dp.partL.All(), dp.meta.All(), out.All())
}

// KernelStats returns the driver's compiler statistics (registers, spills,
// shared memory; see vk.Kernel.Stats) of the plan's two kernels.
func (dp *DevicePlan) KernelStats() (attn, reduce []vk.KernelStat, err error) {
	if attn, err = dp.attn.Stats(); err != nil {
		return nil, nil, err
	}
	if reduce, err = dp.reduce.Stats(); err != nil {
		return nil, nil, err
	}
	return attn, reduce, nil
}
