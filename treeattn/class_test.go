package treeattn_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/treeattn"
)

// Items in classes by rows run in one dispatch per class and window, each
// with its own specialization of partial_attn (the coopmat variant's small
// workgroups for one-query items). Lavapipe has no cooperative matrices,
// so the scalar variant is given a class of 4-row tiles here: the plan's
// item order, dispatch ranges and per-class pipelines must still give the
// reference's output, with and without K/V windows.
func TestItemClassesOnDevice(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	shape := treeattn.Shape{QHeads: 8, KVHeads: 2, HeadDim: 64} // GQA 4: one query is 4 rows
	trees := []*treeattn.Tree{treeattn.FewShotTree(150, 6, 40),
		treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 12, MaxNodeTokens: 40, MaxQueries: 16, ShuffleSlots: true})}
	for ti, tree := range trees {
		for _, kv := range []treeattn.KVType{treeattn.KVF32, treeattn.KVF16} {
			in := conformance.NewInputs(rng, tree, shape, kv)
			want, err := treeattn.Reference(tree, shape, in.Q, in.K, in.V, shape.DefaultScale())
			require.NoError(t, err)
			for _, window := range []int{0, max(1, tree.NumSlots()/3)} {
				lim := treeattn.WithScalarClassRows(treeattn.LimitsOf(d.Info), 4)
				if window > 0 {
					lim = treeattn.WithKVWindow(lim, window)
				}
				for _, m := range treeattn.Methods {
					ctx := fmt.Sprintf("tree %d %s %s, window %d", ti, m, kv, window)
					// 10-token blocks (within nodes of the few-shot tree): automatic
					// blocks are at least 8 tiles, which would give the
					// few-shot tree no one-query items.
					plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: m, Shape: shape, KV: kv, Limits: lim,
						KernelVariant: treeattn.VariantScalar, BlockTokens: 10})
					require.NoError(t, err, ctx)
					if m == treeattn.MethodFlashDecoding || len(tree.Queries) == 1 {
						// One query's rows per item: its few-row tiles are the 4-row class.
						require.Len(t, plan.Classes, 1, ctx)
					} else {
						require.Len(t, plan.Classes, 2, ctx)
					}
					require.Equal(t, 4, plan.Classes[0].Rows, ctx)
					classes := map[int]int{}
					for _, r := range plan.Dispatches() {
						classes[r[1]] += r[3]
					}
					if ti == 0 && m == treeattn.MethodFlatten {
						require.Len(t, classes, 2, "%s: both classes have items", ctx)
					}
					got := runWindowed(t, d, plan, in, kv)
					rel := treeattn.RelativeL2(got, want)
					require.LessOrEqual(t, rel, kv.Tolerance(), ctx)
					t.Logf("%s: %d dispatches, items per class %v, rel L2 %.2g", ctx, len(plan.Dispatches()), classes, rel)
				}
			}
		}
	}
}

// The coopmat variant's item classes on a device with cooperative matrices
// (the H200; lavapipe has none and skips with a message): trees whose
// items fall in each class, with items of many tiles (the 64- and 128-row
// classes keep two tiles in flight), against the reference, twice
// bit-identically, and the same trees with coopmat_v1 for comparison. A
// failure names the plan's classes and dispatches; go test -v logs them
// for every case.
func TestCoopMatClassesOnDevice(t *testing.T) {
	d := gputest.Device(t)
	lim := treeattn.LimitsOf(d.Info)
	if lim.CoopMat.M == 0 {
		t.Skipf("%s has no cooperative matrices for partial_attn's coopmat variant; run on the GPU", d.Info.Name)
	}
	rng := gputest.Rand(t)
	trees := map[string]*treeattn.Tree{
		"few-shot":  treeattn.FewShotTree(700+rng.IntN(300), 24, 150+rng.IntN(100)),
		"spec-star": treeattn.SpeculativeStar(300+rng.IntN(300), 200),
		"random":    treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 30, MaxNodeTokens: 300, MaxQueries: 40, ShuffleSlots: true}),
		"chain":     treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 6, MaxNodeTokens: 500, MaxQueries: 6, Kind: treeattn.KindChain}),
	}
	shapes := []treeattn.Shape{{QHeads: 32, KVHeads: 8, HeadDim: 128}, {QHeads: 8, KVHeads: 2, HeadDim: 64},
		{QHeads: 4, KVHeads: 4, HeadDim: 128}, {QHeads: 8, KVHeads: 2, HeadDim: 256}}
	for name, tree := range trees {
		if !tree.SlotsAssigned() {
			tree.AssignContiguousSlots()
		}
		for _, shape := range shapes {
			in := conformance.NewInputs(rng, tree, shape, treeattn.KVF16)
			want, err := treeattn.Reference(tree, shape, in.Q, in.K, in.V, shape.DefaultScale())
			require.NoError(t, err)
			for _, m := range []treeattn.Method{treeattn.MethodFlatten, treeattn.MethodNode, treeattn.MethodFlashDecoding} {
				for _, variant := range []string{treeattn.VariantCoopMat, treeattn.VariantCoopMatV1} {
					plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: m, Shape: shape, KV: treeattn.KVF16, Limits: lim,
						KernelVariant: variant})
					require.NoError(t, err)
					ctx := fmt.Sprintf("%s %s %+v %s: classes %+v, dispatches (window, class, first item, items) %v",
						name, variant, shape, m, plan.Classes, plan.Dispatches())
					dp, err := plan.Upload(d)
					require.NoError(t, err, ctx)
					first, second := runTwice(t, dp, in)
					dp.Close()
					rel := treeattn.RelativeL2(first, want)
					t.Logf("%s: rel L2 %.2g", ctx, rel)
					require.LessOrEqual(t, rel, treeattn.KVF16.Tolerance(), ctx)
					require.True(t, bitsEqual(first, second), "%s: two runs differ", ctx)
				}
			}
		}
	}
}
