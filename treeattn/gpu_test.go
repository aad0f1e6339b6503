package treeattn_test

import (
	"fmt"
	"testing"

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
