package treeattn_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// UploadReusing gives the same output as Upload, bit for bit, whether the
// previous plan's buffers are large enough or must grow.
func TestUploadReusing(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	shape := treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 16}
	lim := treeattn.LimitsOf(d.Info)
	const slots = 1024
	newBuf := func(v []float32) *vk.Buffer {
		b, err := d.NewBuffer(uint64(4 * len(v)))
		require.NoError(t, err)
		t.Cleanup(b.Close)
		require.NoError(t, b.WriteF32(0, v))
		return b
	}
	rnd := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	k := newBuf(rnd(slots * shape.KVHeads * shape.HeadDim))
	v := newBuf(rnd(slots * shape.KVHeads * shape.HeadDim))
	run := func(dp *treeattn.DevicePlan, qv []float32) []float32 {
		n := int(dp.QueryBytes() / 4)
		q := newBuf(qv)
		out := newBuf(make([]float32, n))
		var res [2][]float32
		for i := range res {
			require.NoError(t, out.FillF32(0, uint64(n), float32(math.NaN())))
			rec, err := d.NewRecorder()
			require.NoError(t, err)
			require.NoError(t, dp.Run(rec, q, k, v, out))
			require.NoError(t, rec.Submit())
			rec.Close()
			res[i] = make([]float32, n)
			require.NoError(t, out.ReadF32(0, res[i]))
			for j, x := range res[i] {
				require.False(t, math.IsNaN(float64(x)), "output %d not written", j)
			}
		}
		return res[0]
	}
	var prev *treeattn.DevicePlan
	for i, size := range []int{4, 40, 8, 60} { // grow, shrink, grow
		tree := treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: size, MaxNodeTokens: 30, MaxQueries: size, Kind: treeattn.KindRandom})
		tree.AssignContiguousSlots()
		plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: treeattn.MethodFlatten, Shape: shape, KV: treeattn.KVF32, Limits: lim})
		require.NoError(t, err)
		fresh, err := plan.Upload(d)
		require.NoError(t, err)
		reused, err := plan.UploadReusing(d, prev)
		require.NoError(t, err)
		qv := rnd(int(plan.QueryBytes() / 4))
		a := run(fresh, qv)
		b := run(reused, qv)
		require.Equal(t, a, b, "step %d", i)
		fresh.Close()
		prev = reused
	}
	prev.Close()
}
