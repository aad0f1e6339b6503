package treeattn_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/treeattn"
)

func TestMethodsMatchReferenceOnRandomTrees(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	for _, kind := range []treeattn.TreeKind{treeattn.KindChain, treeattn.KindStar, treeattn.KindRandom} {
		for _, kv := range []treeattn.KVType{treeattn.KVF32, treeattn.KVF16} {
			tree := treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 12, MaxNodeTokens: 80, MaxQueries: 24, Kind: kind, ShuffleSlots: true})
			shape := treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}
			for _, m := range treeattn.Methods {
				res := conformance.Run(d, rng, conformance.Case{Name: fmt.Sprintf("%v", kind), Tree: tree, Method: m, Shape: shape, KV: kv})
				require.True(t, res.Pass, "%+v", res)
				t.Logf("%s %s %s: rel L2 %.2g, %d queries, %d tokens", res.Case, res.Method, res.KV, res.RelL2, res.Queries, res.Tokens)
			}
		}
	}
}

// TestReductionOfManyPartials gives each query more partial results than
// the reduction's workgroup (one-token flash-decoding chunks), so the
// reduction merges them in several chunks.
func TestReductionOfManyPartials(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	shortest := func(tr *treeattn.Tree) int {
		n := tr.TotalTokens()
		for q := range tr.Queries {
			n = min(n, len(tr.QuerySlots(q)))
		}
		return n
	}
	var tree *treeattn.Tree
	for tree == nil || shortest(tree) <= 2*64 { // the reduction's workgroup is 64
		tree = treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 3, MaxNodeTokens: 100, MaxQueries: 3, Kind: treeattn.KindChain})
	}
	shape := treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}
	res := conformance.Run(d, rng, conformance.Case{Name: "many partials", Tree: tree, Method: treeattn.MethodFlashDecoding, Shape: shape, KV: treeattn.KVF32, Block: 1})
	require.True(t, res.Pass, "%+v", res)
	t.Logf("rel L2 %.2g, %d queries, %d path tokens", res.RelL2, res.Queries, tree.SumPathLengths())
}

// deepChain is n one-token nodes in a line with queries at the given
// nodes: under DeFT-Node every node a query sees is one of its partial
// results.
func deepChain(n int, queries ...int) *treeattn.Tree {
	nodes := make([]treeattn.Node, n)
	for i := range nodes {
		nodes[i] = treeattn.Node{Parent: i - 1, Tokens: 1}
	}
	tree := &treeattn.Tree{Nodes: nodes}
	for _, q := range queries {
		tree.Queries = append(tree.Queries, treeattn.Query{Node: q})
	}
	tree.AssignContiguousSlots()
	return tree
}

// runTwice runs dp on in twice, poisoning the output with NaN before each
// run, and returns both outputs.
func runTwice(t *testing.T, dp *treeattn.DevicePlan, in *conformance.Inputs) (first, second []float32) {
	t.Helper()
	d := gputest.Device(t)
	qb, err := d.NewBuffer(dp.QueryBytes())
	require.NoError(t, err)
	defer qb.Close()
	require.NoError(t, qb.WriteF32(0, in.Q))
	kb, vb, err := in.Upload(d, dp.KV)
	require.NoError(t, err)
	defer kb.Close()
	defer vb.Close()
	out, err := d.NewBuffer(dp.QueryBytes())
	require.NoError(t, err)
	defer out.Close()
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	require.NoError(t, dp.Run(rec, qb, kb, vb, out))
	var runs [2][]float32
	for i := range runs {
		require.NoError(t, out.FillF32(0, dp.QueryBytes()/4, float32(math.NaN())))
		require.NoError(t, rec.Submit())
		runs[i] = make([]float32, dp.QueryBytes()/4)
		require.NoError(t, out.ReadF32(0, runs[i]))
	}
	return runs[0], runs[1]
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// TestDeepChainReduction is the chain of 63000 one-token nodes queried at
// its end under DeFT-Node: 63000 partial results for one query. One
// reduce_partials loop over them used to pass lavapipe's limit of 65535
// loop iterations per invocation, which silently dropped the last
// partials (relative error 9e-2). The reduction now merges them in chunks
// of at most MaxReduceFanIn first. Tiles of 4 invocations keep the 63000
// attention workgroups fast on lavapipe; the reduction is the same.
func TestDeepChainReduction(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	const n = 63000
	tree := deepChain(n, n-1)
	shape := treeattn.Shape{QHeads: 2, KVHeads: 1, HeadDim: 4}
	start := time.Now()
	plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: treeattn.MethodNode, Shape: shape, KV: treeattn.KVF32,
		Limits: treeattn.LimitsOf(d.Info), Tiles: treeattn.Tiles{Workgroup: 4, Tokens: 4, Rows: 4}})
	require.NoError(t, err)
	require.Equal(t, n, plan.Partials, "one partial per node")
	in := conformance.NewInputs(rng, tree, shape, treeattn.KVF32)
	want, err := treeattn.Reference(tree, shape, in.Q, in.K, in.V, plan.Scale)
	require.NoError(t, err)
	dp, err := plan.Upload(d)
	require.NoError(t, err)
	defer dp.Close()
	assert.Equal(t, 2, dp.ReducePasses(), "63000 partials: chunks of at most %d, then the final merge", treeattn.MaxReduceFanIn)
	got, again := runTwice(t, dp, in)
	rel := treeattn.RelativeL2(got, want)
	t.Logf("%d nodes: relative L2 %.3g in %v", n, rel, time.Since(start))
	assert.LessOrEqual(t, rel, conformance.TolF32)
	assert.True(t, bitsEqual(got, again), "two runs differ")
}

// TestReductionLevels merges in groups of at most 4 partials, so queries
// of a 700-node chain need five levels of intermediate partials while a
// shallow query of the same plan is merged directly.
func TestReductionLevels(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	tree := deepChain(700, 699, 2, 350, 3)
	shape := treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 8}
	for _, kv := range []treeattn.KVType{treeattn.KVF32, treeattn.KVF16} {
		plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: treeattn.MethodNode, Shape: shape, KV: kv,
			Limits: treeattn.LimitsOf(d.Info), Tiles: treeattn.Tiles{Workgroup: 4, Tokens: 4, Rows: 4}})
		require.NoError(t, err)
		in := conformance.NewInputs(rng, tree, shape, kv)
		want, err := treeattn.Reference(tree, shape, in.Q, in.K, in.V, plan.Scale)
		require.NoError(t, err)
		dp, err := treeattn.UploadWithCaps(plan, d, 4, 4, treeattn.MaxTilePasses)
		require.NoError(t, err)
		// 700 -> 175 -> 44 -> 11 -> 3 -> output.
		assert.Equal(t, 5, dp.ReducePasses())
		got, again := runTwice(t, dp, in)
		dp.Close()
		rel := treeattn.RelativeL2(got, want)
		t.Logf("%s: relative L2 %.3g", kv, rel)
		assert.LessOrEqual(t, rel, conformance.Tolerance(kv))
		assert.True(t, bitsEqual(got, again), "two runs differ")
	}
}

// allNaN reports whether every element of x is NaN.
func allNaN(x []float32) bool {
	for _, v := range x {
		if !math.IsNaN(float64(v)) {
			return false
		}
	}
	return len(x) > 0
}

// TestKernelCapsPoison gives each kernel work beyond its in-shader cap,
// which the host never schedules: the kernels must neither loop past the
// cap nor return numbers, only NaN.
func TestKernelCapsPoison(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	tiny := treeattn.Tiles{Workgroup: 4, Tokens: 4, Rows: 4}

	t.Run("reduce_partials FANIN", func(t *testing.T) {
		tree := deepChain(20, 19)
		shape := treeattn.Shape{QHeads: 2, KVHeads: 1, HeadDim: 4}
		plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: treeattn.MethodNode, Shape: shape, KV: treeattn.KVF32,
			Limits: treeattn.LimitsOf(d.Info), Tiles: tiny})
		require.NoError(t, err)
		in := conformance.NewInputs(rng, tree, shape, treeattn.KVF32)
		// Lists of up to 8 partials for a kernel that merges at most 4.
		dp, err := treeattn.UploadWithCaps(plan, d, 8, 4, treeattn.MaxTilePasses)
		require.NoError(t, err)
		defer dp.Close()
		got, _ := runTwice(t, dp, in)
		assert.True(t, allNaN(got), "output %v", got)
	})

	t.Run("partial_attn MAX_PASSES", func(t *testing.T) {
		// One 400-token node under DeFT-Node: items of 48, 48 and 4
		// passes for a kernel specialised to at most 4.
		tree := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: 400}}, Queries: []treeattn.Query{{Node: 0, Offset: 399}}}
		tree.AssignContiguousSlots()
		shape := treeattn.Shape{QHeads: 2, KVHeads: 1, HeadDim: 4}
		plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: treeattn.MethodNode, Shape: shape, KV: treeattn.KVF32,
			Limits: treeattn.LimitsOf(d.Info), Tiles: tiny})
		require.NoError(t, err)
		dp, err := treeattn.UploadWithCaps(plan, d, treeattn.MaxReduceFanIn, treeattn.MaxReduceFanIn, 4)
		require.NoError(t, err)
		defer dp.Close()
		in := conformance.NewInputs(rng, tree, shape, treeattn.KVF32)
		got, _ := runTwice(t, dp, in)
		assert.True(t, allNaN(got), "output %v", got)
	})

	t.Run("Upload refuses items beyond MAX_PASSES", func(t *testing.T) {
		// 256 query heads per KV head in row tiles of 4: 64 passes for a
		// single query, which no token chunking can cut.
		tree := deepChain(2, 1)
		shape := treeattn.Shape{QHeads: 256, KVHeads: 1, HeadDim: 4}
		plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: treeattn.MethodFlatten, Shape: shape, KV: treeattn.KVF32,
			Limits: treeattn.LimitsOf(d.Info), Tiles: tiny})
		require.NoError(t, err)
		_, err = plan.Upload(d)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "needs 64 shared-memory passes")
	})
}
