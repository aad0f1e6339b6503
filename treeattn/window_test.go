package treeattn_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// runWindowed runs a plan on K/V from in and returns the output.
func runWindowed(t *testing.T, d *vk.Device, plan *treeattn.Plan, in *conformance.Inputs, kv treeattn.KVType) []float32 {
	t.Helper()
	dp, err := plan.Upload(d)
	require.NoError(t, err)
	defer dp.Close()
	q, err := d.NewBuffer(plan.QueryBytes())
	require.NoError(t, err)
	defer q.Close()
	require.NoError(t, q.WriteF32(0, in.Q))
	k, v, err := in.Upload(d, kv)
	require.NoError(t, err)
	defer k.Close()
	defer v.Close()
	out, err := d.NewBuffer(plan.QueryBytes())
	require.NoError(t, err)
	defer out.Close()
	require.NoError(t, out.FillF32(0, plan.QueryBytes()/4, float32(math.NaN())))
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	require.NoError(t, dp.Run(rec, q, k, v, out))
	require.NoError(t, rec.Submit())
	got := make([]float32, plan.QueryBytes()/4)
	require.NoError(t, out.ReadF32(0, got))
	return got
}

// A KV pool larger than one storage-buffer binding may cover is bound in
// windows, one dispatch each: here the binding limit is made tiny so that
// random trees with scattered slots span many windows, for every method.
func TestKVWindows(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	shape := treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 32}
	for trial := range 4 {
		// The queries may see only a few tokens of a random tree (a short
		// leaf under a short root): draw again until the tokens they see
		// lie in more than one window, or there is nothing to check.
		var tree *treeattn.Tree
		window, seen := 0, 0
		for seen < 2 {
			tree = treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 12, MaxNodeTokens: 60, MaxQueries: 16, ShuffleSlots: true})
			window = max(1, tree.NumSlots()/(3+rng.IntN(8)))
			seen = seenWindows(tree, window)
		}
		kv := treeattn.KVType(trial % 2)
		in := conformance.NewInputs(rng, tree, shape, kv)
		want, err := treeattn.Reference(tree, shape, in.Q, in.K, in.V, shape.DefaultScale())
		require.NoError(t, err)
		lim := treeattn.WithKVWindow(treeattn.LimitsOf(d.Info), window)
		for _, m := range treeattn.Methods {
			plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: m, Shape: shape, KV: kv, Limits: lim})
			require.NoError(t, err)
			ctx := fmt.Sprintf("trial %d %s %s, %d slots, windows of %d slots", trial, m, kv, tree.NumSlots(), window)
			// Every window holding a token some query sees gets its dispatch
			// (the dense-mask method also visits tokens no query sees).
			require.GreaterOrEqual(t, len(plan.Windows), seen, ctx)
			got := runWindowed(t, d, plan, in, kv)
			require.LessOrEqual(t, treeattn.RelativeL2(got, want), kv.Tolerance(), ctx)
		}
	}
}

// seenWindows counts the windows of w slots that hold a token some query
// of t sees.
func seenWindows(t *treeattn.Tree, w int) int {
	wins := map[int32]bool{}
	for q := range t.Queries {
		for _, sl := range t.QuerySlots(q) {
			wins[sl/int32(w)] = true
		}
	}
	return len(wins)
}

// The case: K and V of 140 MB (f32, 34800 slots of 8 KV heads of
// 128) on lavapipe, whose bindings cover at most 128 MiB, give the right
// answer instead of an error.
func TestKVBeyondStorageRange(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	shape := treeattn.Shape{QHeads: 8, KVHeads: 8, HeadDim: 128}
	tree := treeattn.FewShotTree(30000, 4, 1200)
	tree.AssignContiguousSlots()
	kvBytes := uint64(tree.NumSlots()) * uint64(shape.KVHeads*shape.HeadDim*4)
	lim := treeattn.LimitsOf(d.Info)
	if kvBytes <= lim.MaxStorageRange {
		// A device with a larger range: make it as small as lavapipe's.
		lim.MaxStorageRange = 128 << 20
	}
	require.Greater(t, kvBytes, lim.MaxStorageRange)
	in := conformance.NewInputs(rng, tree, shape, treeattn.KVF32)
	want, err := treeattn.Reference(tree, shape, in.Q, in.K, in.V, shape.DefaultScale())
	require.NoError(t, err)
	plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: treeattn.MethodFlatten, Shape: shape, KV: treeattn.KVF32, Limits: lim})
	require.NoError(t, err)
	require.Len(t, plan.Windows, 2)
	got := runWindowed(t, d, plan, in, treeattn.KVF32)
	rel := treeattn.RelativeL2(got, want)
	t.Logf("K of %d bytes in %d windows: rel L2 %.2g", kvBytes, len(plan.Windows), rel)
	require.LessOrEqual(t, rel, treeattn.TolF32)
}
