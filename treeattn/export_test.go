package treeattn

import (
	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/vk"
)

// Test hooks for the external tests of this package.

// Meta returns the plan's metadata words (for inspection and tests).
func (p *Plan) Meta() []uint32 { return p.meta }

// Coverage calls f for every (query, slot) pair the plan computes as
// visible, once per time it is computed; tests use it to prove that every
// path token is covered exactly once and nothing else is.
func (p *Plan) Coverage(f func(query int, slot int32)) {
	for i := 0; i < p.Items; i++ {
		rec := p.item(i)
		slots := p.meta[rec.SlotsOff : rec.SlotsOff+rec.NumSlots]
		queries := p.meta[rec.QueriesOff : rec.QueriesOff+rec.NumQueries]
		for t, sl := range slots {
			for qi, q := range queries {
				if rec.MaskWords != 0 {
					word := p.meta[rec.MaskOff+uint32(t)*rec.MaskWords+uint32(qi/32)]
					if word>>(qi%32)&1 == 0 {
						continue
					}
				}
				f(int(q), int32(sl))
			}
		}
	}
}

// ItemTokens returns each work item's token count (tests check balance).
func (p *Plan) ItemTokens() []int {
	out := make([]int, p.Items)
	for i := range out {
		out[i] = int(p.item(i).NumSlots)
	}
	return out
}

// SharedBytes is the planner's figure of partial_attn's shared memory.
func (t Tiles) SharedBytes(dim int) int { return t.sharedBytes(dim) }

// Pipelines returns the plan's kernels.
func (p *Plan) Pipelines(d *vk.Device) (attn, reduce *kernels.Pipeline, err error) {
	return pipelines(d, p, defaultUpload)
}

// UploadWithCaps uploads p with its reduction scheduled in groups of at
// most fanIn partials, reduce_partials specialised to kernelFanIn and
// partial_attn to kernelMaxPasses (tests of deep reductions at small sizes,
// and of the kernels' own caps).
func UploadWithCaps(p *Plan, d *vk.Device, fanIn, kernelFanIn, kernelMaxPasses int) (*DevicePlan, error) {
	return p.upload(d, uploadOptions{fanIn: fanIn, kernelFanIn: kernelFanIn, kernelMaxPasses: kernelMaxPasses})
}

// WithKVWindow makes plans bind K and V in windows of slots slots (tests of
// pools beyond the storage-buffer range, at small sizes).
func WithKVWindow(l Limits, slots int) Limits {
	l.kvWindow = slots
	return l
}

// WithScalarClassRows makes scalar plans run items of at most rows rows as
// a class of their own, in a dispatch of smaller tiles (tests of item
// classes on devices without cooperative matrices).
func WithScalarClassRows(l Limits, rows int) Limits {
	l.scalarClassRows = rows
	return l
}

// Dispatches returns the plan's partial_attn dispatches as (window, class,
// first item, items).
func (p *Plan) Dispatches() [][4]int {
	out := make([][4]int, len(p.runs))
	for i, r := range p.runs {
		out[i] = [4]int{r.window, r.class, r.first, r.items}
	}
	return out
}

// ItemClass returns the class that runs item i.
func (p *Plan) ItemClass(i int) int { return p.itemClass(p.item(i)) }

// ClassPipelines returns partial_attn for each of the plan's item classes.
func (p *Plan) ClassPipelines(d *vk.Device) ([]*kernels.Pipeline, error) {
	attns, _, err := classPipelines(d, p, p.Classes, defaultUpload, nil)
	return attns, err
}

// CoopSharedBytes is the planner's figure of partial_attn_coopmat's shared memory.
func (t Tiles) CoopSharedBytes(dim int, cm CoopMat) int { return t.coopSharedBytes(dim, cm) }
