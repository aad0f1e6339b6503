package conformance_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/treeattn"
)

type coverKey struct {
	m        treeattn.Method
	kv       treeattn.KVType
	dim, gqa int
}

func TestSuiteCoversEveryMethodKVDimAndGQA(t *testing.T) {
	rng := gputest.Rand(t)
	cases, err := conformance.Suite(rng, conformance.SuiteOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, cases)

	seen := map[coverKey]int{}
	trees := map[string]bool{}
	for _, c := range cases {
		require.NotNil(t, c.Tree, c.Name)
		require.True(t, c.Tree.SlotsAssigned(), "%s: slots not assigned", c.Name)
		require.NoError(t, c.Tree.Validate(c.Tree.NumSlots()), c.Name)
		require.NoError(t, c.Shape.Validate(), c.Name)
		seen[coverKey{c.Method, c.KV, c.Shape.HeadDim, c.Shape.GroupSize()}]++
		trees[strings.SplitN(c.Name, "-", 2)[0]] = true
	}
	for _, m := range treeattn.Methods {
		for _, kv := range []treeattn.KVType{treeattn.KVF32, treeattn.KVF16} {
			for _, dim := range []int{64, 128, 256} {
				for _, gqa := range []int{1, 4} {
					k := coverKey{m, kv, dim, gqa}
					assert.Positive(t, seen[k], "no case for %s %s dim %d gqa %d", m, kv, dim, gqa)
				}
			}
		}
	}
	// Every combination runs on the same trees.
	var n int
	for k, c := range seen {
		if n == 0 {
			n = c
		}
		assert.Equal(t, n, c, "%+v has %d cases, others %d", k, c, n)
	}
	for _, name := range []string{"random", "chain", "star", "single", "root", "speculative"} {
		assert.True(t, trees[name], "no %q tree in the suite (have %v)", name, trees)
	}

	// Methods restricts the suite.
	only, err := conformance.Suite(rng, conformance.SuiteOptions{Methods: []treeattn.Method{treeattn.MethodNode, treeattn.MethodDenseMask}})
	require.NoError(t, err)
	require.NotEmpty(t, only)
	for _, c := range only {
		assert.Contains(t, []treeattn.Method{treeattn.MethodNode, treeattn.MethodDenseMask}, c.Method)
	}
	assert.Equal(t, 2*len(cases)/len(treeattn.Methods), len(only))

	// Full adds larger trees and a GQA 8 shape (building it is cheap; running it is not).
	full, err := conformance.Suite(rng, conformance.SuiteOptions{Full: true, Methods: []treeattn.Method{treeattn.MethodFlatten}})
	require.NoError(t, err)
	gqa8, names := false, map[string]bool{}
	for _, c := range full {
		gqa8 = gqa8 || c.Shape.GroupSize() == 8
		names[c.Name] = true
	}
	assert.True(t, gqa8, "the full suite has no GQA 8 shape")
	assert.True(t, names["few-shot"] && names["spec-star"], "full suite trees: %v", names)
	for _, size := range []int{5, 32, 64, 128, 256} {
		found := false
		for name := range names {
			found = found || strings.HasPrefix(name, fmt.Sprintf("speculative-%d+", size))
		}
		assert.True(t, found, "full suite lacks the speculative tree of size %d: %v", size, names)
	}
}

func TestSpecTree(t *testing.T) {
	for _, size := range []int{5, 32, 64, 128, 256} {
		st, err := conformance.SpecTree(size)
		require.NoError(t, err, "size %d", size)
		// The files' declared sizes count the implicit root token in all but the smallest.
		assert.Contains(t, []int{size, size + 1}, st.Size(), "size %d", size)
		tree := st.TreeWithPrefix(3)
		require.NoError(t, tree.Validate(tree.NumSlots()), "size %d", size)
	}
	_, err := conformance.SpecTree(7)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "speculative tree of size 7")
}

func TestNewInputsRoundsToKVType(t *testing.T) {
	rng := gputest.Rand(t)
	tree := treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 6, MaxNodeTokens: 20, MaxQueries: 5, ShuffleSlots: true})
	s := treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}
	kvLen := tree.NumSlots() * s.KVHeads * s.HeadDim

	in := conformance.NewInputs(rng, tree, s, treeattn.KVF16)
	require.Len(t, in.Q, len(tree.Queries)*s.QHeads*s.HeadDim)
	require.Len(t, in.K, kvLen)
	require.Len(t, in.V, kvLen)
	require.Equal(t, tree.NumSlots(), in.Slots)
	assert.Equal(t, half.ToFloat32Slice(in.KBits), in.K, "K must be exactly the fp16 values uploaded")
	assert.Equal(t, half.ToFloat32Slice(in.VBits), in.V)
	assert.NotEqual(t, in.K, in.V)

	in32 := conformance.NewInputs(rng, tree, s, treeattn.KVF32)
	assert.Nil(t, in32.KBits)
	assert.Nil(t, in32.VBits)
	require.Len(t, in32.K, kvLen)
	nonzero := 0
	for _, x := range in32.Q {
		require.False(t, math.IsNaN(float64(x)) || math.IsInf(float64(x), 0))
		if x != 0 {
			nonzero++
		}
	}
	assert.Equal(t, len(in32.Q), nonzero)

	assert.Equal(t, conformance.TolF32, conformance.Tolerance(treeattn.KVF32))
	assert.Equal(t, conformance.TolF16, conformance.Tolerance(treeattn.KVF16))
}

func TestRunSampleOfSuite(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	cases, err := conformance.Suite(rng, conformance.SuiteOptions{})
	require.NoError(t, err)
	byMethod := map[treeattn.Method][]conformance.Case{}
	for _, c := range cases {
		byMethod[c.Method] = append(byMethod[c.Method], c)
	}
	// Four random cases of each method: 20 in all.
	const perMethod = 4
	for _, m := range treeattn.Methods {
		mc := byMethod[m]
		require.NotEmpty(t, mc, "no cases for %s", m)
		for _, i := range rng.Perm(len(mc))[:perMethod] {
			c := mc[i]
			r := conformance.Run(d, rng, c)
			t.Logf("%s %s %s d=%d gqa=%d q=%d tokens=%d: rel L2 %.2g in %v", r.Method, r.Case, r.KV, r.HeadDim, r.GQA, r.Queries, r.Tokens, r.RelL2, r.Elapsed)
			require.True(t, r.Pass, "%+v", r)
			assert.Empty(t, r.Error)
			assert.True(t, r.Identical)
			assert.LessOrEqual(t, r.RelL2, r.Tolerance)
			assert.Equal(t, conformance.Tolerance(c.KV), r.Tolerance)
			assert.Equal(t, c.Name, r.Case)
			assert.Equal(t, c.Method, r.Method)
			assert.Equal(t, c.KV.String(), r.KV)
			assert.Equal(t, c.Shape.HeadDim, r.HeadDim)
			assert.Equal(t, c.Shape.GroupSize(), r.GQA)
			assert.Equal(t, len(c.Tree.Queries), r.Queries)
			assert.Equal(t, c.Tree.TotalTokens(), r.Tokens)
			assert.Positive(t, r.Elapsed)
		}
	}
}

func TestRunReportsUnbuildablePlan(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	tree := treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 5, MaxNodeTokens: 16, MaxQueries: 4})
	dim := 2*(8+rng.IntN(30)) + 1 // odd: no kernel tiling exists
	for _, m := range treeattn.Methods {
		c := conformance.Case{Name: "odd-dim", Tree: tree, Method: m, Shape: treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: dim}, KV: treeattn.KVF32}
		var r conformance.Result
		require.NotPanics(t, func() { r = conformance.Run(d, rng, c) })
		assert.False(t, r.Pass, "%s with head dim %d passed", m, dim)
		assert.Contains(t, r.Error, fmt.Sprintf("choose tiles: head dim %d must be", dim), m)
		assert.Equal(t, dim, r.HeadDim)
		assert.Equal(t, 2, r.GQA)
		assert.Equal(t, "odd-dim", r.Case)
	}

	// A method the planner does not know is reported the same way.
	c := conformance.Case{Name: "bogus", Tree: tree, Method: treeattn.Method("bogus"), Shape: treeattn.Shape{QHeads: 2, KVHeads: 2, HeadDim: 64}, KV: treeattn.KVF16}
	r := conformance.Run(d, rng, c)
	assert.False(t, r.Pass)
	assert.Contains(t, r.Error, `unknown method "bogus"`)
}
