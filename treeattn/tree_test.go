package treeattn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// treeTestRNG returns a generator seeded from the clock and logs the seed so
// failures can be reproduced.
func treeTestRNG(t testing.TB) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, 0x5eed))
}

// exampleTree is a small valid tree:
//
//	0 (3 tokens) ─┬─ 1 (2) ── 3 (1)
//	              └─ 2 (4)
func exampleTree() *Tree {
	return &Tree{
		Nodes: []Node{
			{Parent: -1, Tokens: 3, Slots: []int32{0, 1, 2}},
			{Parent: 0, Tokens: 2, Slots: []int32{7, 3}},
			{Parent: 0, Tokens: 4, Slots: []int32{4, 5, 6, 8}},
			{Parent: 1, Tokens: 1, Slots: []int32{9}},
		},
		Queries: []Query{{Node: 3, Offset: 0}, {Node: 2, Offset: 1}, {Node: 0, Offset: 0}},
	}
}

func TestValidateExample(t *testing.T) {
	tr := exampleTree()
	require.NoError(t, tr.Validate(10))
	require.NoError(t, tr.Validate(1000))
	err := tr.Validate(9)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "slot 9 outside the KV pool [0, 9)")

	// Unassigned slots are allowed.
	tr.Nodes[2].Slots = nil
	require.NoError(t, tr.Validate(10))
	assert.False(t, tr.SlotsAssigned())
	var nilTree *Tree
	assert.ErrorContains(t, nilTree.Validate(1), "nil tree")
}

func TestValidateErrors(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(tr *Tree)
		slots  int
		msg    string
	}{
		{"no nodes", func(tr *Tree) { tr.Nodes = nil }, 10, "no nodes"},
		{"no queries", func(tr *Tree) { tr.Queries = nil }, 10, "no queries"},
		{"negative pool", func(tr *Tree) {}, -1, "negative KV pool"},
		{"no root", func(tr *Tree) { tr.Nodes[0].Parent = 1 }, 10, "no root"},
		{"two roots", func(tr *Tree) { tr.Nodes[2].Parent = -1 }, 10, "several roots (nodes 0, 2"},
		{"root not first", func(tr *Tree) {
			tr.Nodes[0].Parent = 1
			tr.Nodes[1].Parent = -1
		}, 10, "root is node 1"},
		{"self parent", func(tr *Tree) { tr.Nodes[2].Parent = 2 }, 10, "node 2: cycle"},
		{"cycle", func(tr *Tree) {
			tr.Nodes[1].Parent = 3
			tr.Nodes[3].Parent = 1
		}, 10, "node 1: cycle through nodes 1, 3"},
		{"missing parent", func(tr *Tree) { tr.Nodes[3].Parent = 4 }, 10, "node 3: missing parent 4"},
		{"negative parent", func(tr *Tree) { tr.Nodes[2].Parent = -2 }, 10, "node 2: missing parent -2"},
		{"forward parent", func(tr *Tree) { tr.Nodes[1].Parent = 2 }, 10, "node 1: parent 2 comes after it"},
		{"zero tokens", func(tr *Tree) {
			tr.Nodes[3].Tokens = 0
			tr.Nodes[3].Slots = nil
		}, 10, "node 3: tokens is 0"},
		{"slot count", func(tr *Tree) { tr.Nodes[1].Slots = []int32{7} }, 10, "node 1: has 1 slots for 2 tokens"},
		{"empty slots", func(tr *Tree) { tr.Nodes[1].Slots = []int32{} }, 10, "node 1: has 0 slots"},
		{"slot out of range", func(tr *Tree) { tr.Nodes[2].Slots[3] = 10 }, 10, "node 2 token 3: slot 10 outside"},
		{"negative slot", func(tr *Tree) { tr.Nodes[1].Slots[0] = -1 }, 10, "node 1 token 0: slot -1 outside"},
		{"duplicate slot", func(tr *Tree) { tr.Nodes[3].Slots[0] = 3 }, 10, "slot 3 is used twice (node 1 token 1 and node 3 token 0)"},
		{"duplicate in node", func(tr *Tree) { tr.Nodes[2].Slots[1] = 4 }, 10, "slot 4 is used twice (node 2 token 0 and node 2 token 1)"},
		{"duplicate sparse", func(tr *Tree) {
			// Large slot numbers with few tokens take the sorting path.
			tr.Nodes[1].Slots = []int32{2_000_000_000, 1_999_999_999}
			tr.Nodes[3].Slots = []int32{2_000_000_000}
		}, math.MaxInt32, "slot 2000000000 is used twice (node 1 token 0 and node 3 token 0)"},
		{"query node", func(tr *Tree) { tr.Queries[1].Node = 4 }, 10, "query 1: node 4 does not exist"},
		{"query negative node", func(tr *Tree) { tr.Queries[1].Node = -1 }, 10, "query 1: node -1 does not exist"},
		{"query offset", func(tr *Tree) { tr.Queries[0].Offset = 1 }, 10, "query 0: offset 1 outside node 3, which has 1 tokens"},
		{"query negative offset", func(tr *Tree) { tr.Queries[2].Offset = -1 }, 10, "query 2: offset -1 outside node 0"},
		{"token limit", func(tr *Tree) {
			tr.Nodes[2].Tokens = MaxTreeTokens
			tr.Nodes[2].Slots = nil
		}, 10, "total token count exceeds the limit"},
		{"node limit", func(tr *Tree) {
			tr.Nodes = make([]Node, MaxTreeNodes+1)
		}, 10, "more than the limit"},
		{"query limit", func(tr *Tree) {
			tr.Queries = make([]Query, MaxTreeQueries+1)
		}, 10, "more than the limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := exampleTree()
			c.mutate(tr)
			err := tr.Validate(c.slots)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.msg)
			assert.Contains(t, err.Error(), "validate tree: ")
		})
	}
}

func TestAssignContiguousSlots(t *testing.T) {
	tr := &Tree{
		Nodes:   []Node{{Parent: -1, Tokens: 4}, {Parent: 0, Tokens: 2, Slots: []int32{10, 11}}, {Parent: 0, Tokens: 3}},
		Queries: []Query{{Node: 1, Offset: 1}},
	}
	assert.Equal(t, 12, tr.NumSlots())
	n := tr.AssignContiguousSlots()
	assert.Equal(t, 19, n)
	assert.Equal(t, []int32{12, 13, 14, 15}, tr.Nodes[0].Slots)
	assert.Equal(t, []int32{10, 11}, tr.Nodes[1].Slots)
	assert.Equal(t, []int32{16, 17, 18}, tr.Nodes[2].Slots)
	require.NoError(t, tr.Validate(n))
	assert.True(t, tr.SlotsAssigned())
	// Idempotent once everything is assigned.
	assert.Equal(t, 19, tr.AssignContiguousSlots())

	fresh := &Tree{Nodes: []Node{{Parent: -1, Tokens: 2}, {Parent: 0, Tokens: 0}, {Parent: 0, Tokens: 1}}}
	assert.Equal(t, 3, fresh.AssignContiguousSlots())
	assert.Equal(t, []int32{0, 1}, fresh.Nodes[0].Slots)
	assert.Nil(t, fresh.Nodes[1].Slots, "invalid node skipped")
	assert.Equal(t, []int32{2}, fresh.Nodes[2].Slots)

	overflow := &Tree{Nodes: []Node{{Parent: -1, Tokens: 1, Slots: []int32{math.MaxInt32 - 1}}, {Parent: 0, Tokens: 5}}}
	assert.Equal(t, math.MaxInt32, overflow.AssignContiguousSlots())
	assert.False(t, overflow.SlotsAssigned())

	huge := &Tree{Nodes: []Node{{Parent: -1, Tokens: MaxTreeTokens + 1}}}
	assert.Equal(t, 0, huge.AssignContiguousSlots())
	assert.Nil(t, huge.Nodes[0].Slots)
}

func TestAccessors(t *testing.T) {
	tr := exampleTree()
	assert.Equal(t, 10, tr.TotalTokens())
	assert.Equal(t, 10, tr.NumSlots())
	assert.Equal(t, []int{0, 1, 3}, tr.PathNodes(3))
	assert.Equal(t, []int{0}, tr.PathNodes(0))
	assert.Nil(t, tr.PathNodes(4))
	assert.Nil(t, tr.PathNodes(-1))
	assert.Equal(t, 2, tr.Depth(3))
	assert.Equal(t, 1, tr.Depth(2))
	assert.Equal(t, 0, tr.Depth(0))
	assert.Equal(t, -1, tr.Depth(9))
	assert.Equal(t, [][]int{{1, 2}, {3}, nil, nil}, tr.Children())
	assert.Equal(t, []int{2, 3}, tr.Leaves())
	assert.Equal(t, []int{0, 3, 3, 5}, tr.AncestorTokens())

	assert.Equal(t, []int32{0, 1, 2, 7, 3, 9}, tr.QuerySlots(0))
	assert.Equal(t, []int32{0, 1, 2, 4, 5}, tr.QuerySlots(1))
	assert.Equal(t, []int32{0}, tr.QuerySlots(2))
	assert.Nil(t, tr.QuerySlots(3))
	assert.Nil(t, tr.QuerySlots(-1))
	assert.Equal(t, 6+5+1, tr.SumPathLengths())

	// A cycle must not hang the accessors.
	cyc := exampleTree()
	cyc.Nodes[1].Parent = 3
	cyc.Nodes[3].Parent = 1
	assert.Nil(t, cyc.PathNodes(3))
	assert.Equal(t, -1, cyc.Depth(1))
	assert.Nil(t, cyc.QuerySlots(0))
	assert.Equal(t, 5+1, cyc.SumPathLengths())
	assert.Equal(t, []int{0, -1, 3, -1}, cyc.AncestorTokens())

	// Unassigned slots on the path.
	un := exampleTree()
	un.Nodes[1].Slots = nil
	assert.Nil(t, un.QuerySlots(0))
	assert.NotNil(t, un.QuerySlots(1))
	assert.Equal(t, 12, un.SumPathLengths())
}

func TestClone(t *testing.T) {
	tr := exampleTree()
	tr.Nodes[3].Slots = nil
	c := tr.Clone()
	require.Equal(t, tr, c)
	c.Nodes[0].Slots[0] = 99
	c.Queries[0].Offset = 5
	assert.Equal(t, int32(0), tr.Nodes[0].Slots[0])
	assert.Equal(t, 0, tr.Queries[0].Offset)
	assert.Nil(t, c.Nodes[3].Slots)
}

// TestQuerySlotsRandom checks QuerySlots on random trees against an
// independent walk of the parent links.
func TestQuerySlotsRandom(t *testing.T) {
	rng := treeTestRNG(t)
	for iter := 0; iter < 300; iter++ {
		opts := GenOptions{
			MaxNodes:      1 + rng.IntN(40),
			MaxNodeTokens: 1 + rng.IntN(50),
			MaxQueries:    1 + rng.IntN(40),
			Kind:          TreeKind(rng.IntN(3)),
			ShuffleSlots:  rng.IntN(2) == 0,
		}
		tr := RandomTree(rng, opts)
		require.NoError(t, tr.Validate(tr.NumSlots()))
		sum := 0
		for qi, q := range tr.Queries {
			// Independent: walk up from the query node.
			want := 0
			var anc []int
			for p := tr.Nodes[q.Node].Parent; p != -1; p = tr.Nodes[p].Parent {
				want += tr.Nodes[p].Tokens
				anc = append(anc, p)
			}
			want += q.Offset + 1
			slots := tr.QuerySlots(qi)
			require.Len(t, slots, want, "query %d", qi)
			sum += len(slots)
			seen := map[int32]bool{}
			for _, s := range slots {
				require.False(t, seen[s], "slot %d repeated in query %d", s, qi)
				seen[s] = true
			}
			// Root first, node last, each node's slots in order.
			slices.Reverse(anc)
			var expect []int32
			for _, p := range anc {
				expect = append(expect, tr.Nodes[p].Slots...)
			}
			expect = append(expect, tr.Nodes[q.Node].Slots[:q.Offset+1]...)
			require.Equal(t, expect, slots)
			require.Equal(t, len(anc), tr.Depth(q.Node))
		}
		require.Equal(t, sum, tr.SumPathLengths())
	}
}
