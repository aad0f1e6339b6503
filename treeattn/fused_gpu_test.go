package treeattn_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// TestFusedReductionAcrossLayers records three layers' attention in one
// command buffer, as a decoding step does, so each dispatch reuses the
// counters the one before reset; the outputs (poisoned with NaN first) must
// match the float64 reference and be bit-identical across layers and
// across two submissions, with the fused reduction and with
// reduce_partials.
func TestFusedReductionAcrossLayers(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	single := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: 500 + rng.IntN(500)}}}
	single.Queries = []treeattn.Query{{Node: 0, Offset: single.Nodes[0].Tokens - 1}}
	single.AssignContiguousSlots()
	random := treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 10, MaxNodeTokens: 60, MaxQueries: 12, Kind: treeattn.KindRandom, ShuffleSlots: true})
	shape := treeattn.Shape{QHeads: 8, KVHeads: 2, HeadDim: 64}
	for _, tree := range []*treeattn.Tree{single, random} {
		for _, m := range []treeattn.Method{treeattn.MethodFlatten, treeattn.MethodFlashDecoding, treeattn.MethodNode} {
			for _, separate := range []bool{false, true} {
				reduce := treeattn.ReduceFused
				if separate {
					reduce = treeattn.ReduceSeparate
				}
				plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: m, Shape: shape, KV: treeattn.KVF16,
					Limits: treeattn.LimitsOf(d.Info), Reduce: reduce})
				require.NoError(t, err)
				in := conformance.NewInputs(rng, tree, shape, treeattn.KVF16)
				want, err := treeattn.Reference(tree, shape, in.Q, in.K, in.V, plan.Scale)
				require.NoError(t, err)
				dp, err := plan.Upload(d)
				require.NoError(t, err)
				require.Equal(t, !separate, dp.Fused(), "%s, %d queries", m, len(tree.Queries))
				if dp.Fused() {
					require.Zero(t, dp.ReducePasses())
				}
				outs := layersTwice(t, d, dp, in, 3)
				for i, o := range outs {
					rel := treeattn.RelativeL2(o, want)
					require.LessOrEqual(t, rel, treeattn.TolF16, "%s separate=%v output %d", m, separate, i)
					require.True(t, bitsEqual(outs[0], o), "%s separate=%v: output %d differs from the first", m, separate, i)
				}
				t.Logf("%s, %d queries, separate reduce %v: rel L2 %.2g", m, len(tree.Queries), separate, treeattn.RelativeL2(outs[0], want))
				dp.Close()
			}
		}
	}
}

// layersTwice records dp layers times into as many outputs and submits the
// recording twice, poisoning the outputs before each; it returns every
// output of both submissions.
func layersTwice(t *testing.T, d *vk.Device, dp *treeattn.DevicePlan, in *conformance.Inputs, layers int) [][]float32 {
	t.Helper()
	qb, err := d.NewBuffer(dp.QueryBytes())
	require.NoError(t, err)
	defer qb.Close()
	require.NoError(t, qb.WriteF32(0, in.Q))
	kb, vb, err := in.Upload(d, dp.KV)
	require.NoError(t, err)
	defer kb.Close()
	defer vb.Close()
	outs := make([]*vk.Buffer, layers)
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	for i := range outs {
		outs[i], err = d.NewBuffer(dp.QueryBytes())
		require.NoError(t, err)
		defer outs[i].Close()
		require.NoError(t, dp.Run(rec, qb, kb, vb, outs[i]))
	}
	var got [][]float32
	for range 2 {
		for _, o := range outs {
			require.NoError(t, o.FillF32(0, dp.QueryBytes()/4, float32(math.NaN())))
		}
		require.NoError(t, rec.Submit())
		for _, o := range outs {
			r := make([]float32, dp.QueryBytes()/4)
			require.NoError(t, o.ReadF32(0, r))
			got = append(got, r)
		}
	}
	return got
}

// TestFusedReductionLongList: a query with more partials than the
// workgroup has invocations (16-invocation workgroups, 16-token blocks:
// 20 to 32 partials), merged by the fused reduction.
func TestFusedReductionLongList(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	tree := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: 320 + rng.IntN(190)}}}
	tree.Queries = []treeattn.Query{{Node: 0, Offset: tree.Nodes[0].Tokens - 1}}
	tree.AssignContiguousSlots()
	shape := treeattn.Shape{QHeads: 8, KVHeads: 2, HeadDim: 64}
	plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: treeattn.MethodFlatten, Shape: shape, KV: treeattn.KVF32,
		Limits: treeattn.LimitsOf(d.Info), BlockTokens: 16, Tiles: treeattn.Tiles{Workgroup: 16, Tokens: 16, Rows: 4}})
	require.NoError(t, err)
	require.Greater(t, plan.Partials, 16)
	in := conformance.NewInputs(rng, tree, shape, treeattn.KVF32)
	want, err := treeattn.Reference(tree, shape, in.Q, in.K, in.V, plan.Scale)
	require.NoError(t, err)
	dp, err := plan.Upload(d)
	require.NoError(t, err)
	defer dp.Close()
	require.True(t, dp.Fused())
	outs := layersTwice(t, d, dp, in, 2)
	for i, o := range outs {
		require.LessOrEqual(t, treeattn.RelativeL2(o, want), treeattn.TolF32, "output %d", i)
		require.True(t, bitsEqual(outs[0], o), "output %d differs from the first", i)
	}
}
