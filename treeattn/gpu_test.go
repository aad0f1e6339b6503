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
