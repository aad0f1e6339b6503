package treeattn

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRandomTree(t *testing.T) {
	rng := treeTestRNG(t)
	for _, kind := range []TreeKind{KindRandom, KindChain, KindStar} {
		for _, shuffle := range []bool{false, true} {
			for iter := 0; iter < 50; iter++ {
				opts := GenOptions{MaxNodes: 1 + rng.IntN(60), MaxNodeTokens: 1 + rng.IntN(600),
					MaxQueries: 1 + rng.IntN(256), Kind: kind, ShuffleSlots: shuffle}
				tr := RandomTree(rng, opts)
				require.NoError(t, tr.Validate(tr.NumSlots()), "%+v", opts)
				require.True(t, tr.SlotsAssigned())
				require.LessOrEqual(t, len(tr.Nodes), opts.MaxNodes)
				require.LessOrEqual(t, len(tr.Queries), opts.MaxQueries)
				for i, nd := range tr.Nodes {
					require.LessOrEqual(t, nd.Tokens, opts.MaxNodeTokens)
					switch {
					case i == 0:
					case kind == KindChain:
						require.Equal(t, i-1, nd.Parent)
					case kind == KindStar:
						require.Equal(t, 0, nd.Parent)
					}
				}
				leaves := tr.Leaves()
				hasLeafLast, hasRoot := false, false
				for _, q := range tr.Queries {
					if slices.Contains(leaves, q.Node) && q.Offset == tr.Nodes[q.Node].Tokens-1 {
						hasLeafLast = true
					}
					hasRoot = hasRoot || q.Node == 0
				}
				require.True(t, hasLeafLast)
				if len(tr.Queries) > 1 {
					require.True(t, hasRoot)
				}
				total := tr.TotalTokens()
				if !shuffle {
					require.Equal(t, total, tr.NumSlots())
				} else {
					require.GreaterOrEqual(t, tr.NumSlots(), total)
					require.LessOrEqual(t, tr.NumSlots(), total+total/4+1)
					if total >= 20 {
						c := tr.Clone()
						for i := range c.Nodes {
							c.Nodes[i].Slots = nil
						}
						c.AssignContiguousSlots()
						require.NotEqual(t, c.Nodes, tr.Nodes, "shuffled slots look contiguous")
					}
				}
			}
		}
	}
}

func TestRandomTreeDefaults(t *testing.T) {
	rng := treeTestRNG(t)
	tr := RandomTree(rng, GenOptions{})
	require.NoError(t, tr.Validate(tr.NumSlots()))
	assert.LessOrEqual(t, len(tr.Nodes), 16)
	assert.LessOrEqual(t, len(tr.Queries), 32)
	// Oversized options are clamped, not fatal.
	tr = RandomTree(rng, GenOptions{MaxNodes: 3, MaxNodeTokens: 1 << 40, MaxQueries: 1 << 40})
	require.NoError(t, tr.Validate(tr.NumSlots()))
}

func TestTreeKindNames(t *testing.T) {
	for _, k := range []TreeKind{KindRandom, KindChain, KindStar} {
		back, err := ParseTreeKind(k.String())
		require.NoError(t, err)
		assert.Equal(t, k, back)
	}
	assert.Equal(t, "TreeKind(7)", TreeKind(7).String())
	_, err := ParseTreeKind("bushy")
	assert.ErrorContains(t, err, `unknown kind "bushy"`)
}

func TestFewShotTree(t *testing.T) {
	tr := FewShotTree(100, 4, 25)
	require.NotNil(t, tr)
	require.NoError(t, tr.Validate(tr.NumSlots()))
	assert.Len(t, tr.Nodes, 5)
	assert.Equal(t, 200, tr.NumSlots())
	assert.Equal(t, []Query{{1, 24}, {2, 24}, {3, 24}, {4, 24}}, tr.Queries)
	assert.Equal(t, 4*125, tr.SumPathLengths())
	for _, nd := range tr.Nodes[1:] {
		assert.Equal(t, 0, nd.Parent)
	}
	assert.Nil(t, FewShotTree(0, 4, 25))
	assert.Nil(t, FewShotTree(10, 0, 25))
	assert.Nil(t, FewShotTree(10, 4, -1))
	assert.Nil(t, FewShotTree(10, MaxTreeNodes, 1))
	assert.Nil(t, FewShotTree(MaxTreeTokens, 1, 1))
}

func TestSpeculativeStar(t *testing.T) {
	tr := SpeculativeStar(300, 64)
	require.NotNil(t, tr)
	require.NoError(t, tr.Validate(tr.NumSlots()))
	assert.Len(t, tr.Nodes, 65)
	assert.Len(t, tr.Queries, 64)
	assert.Equal(t, 364, tr.NumSlots())
	assert.Equal(t, 64*301, tr.SumPathLengths())
	assert.Equal(t, []int32{300, 301}, append(tr.Nodes[1].Slots, tr.Nodes[2].Slots...))
	assert.Nil(t, SpeculativeStar(0, 1))
	assert.Nil(t, SpeculativeStar(1, 0))
}
