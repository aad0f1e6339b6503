package replay

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bruteState recomputes the simulator's counts from a plain parent/tokens
// map, the way a test would without any bookkeeping.
type bruteState struct {
	parent map[int]int
	tokens map[int]int
}

func (b *bruteState) children(id int) []int {
	var out []int
	for c, p := range b.parent {
		if p == id {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

func (b *bruteState) path(id int) int {
	n := 0
	for cur, ok := id, true; ok && cur != NoParent; cur, ok = b.parent[cur] {
		n += b.tokens[cur]
	}
	return n
}

func (b *bruteState) check(t *testing.T, sim *Simulator) {
	t.Helper()
	var want Stats
	for id := range b.parent {
		want.Nodes++
		want.Tokens += b.tokens[id]
		ns, ok := sim.Node(id)
		require.True(t, ok, "node %d", id)
		require.Equal(t, b.parent[id], ns.Parent)
		require.Equal(t, b.tokens[id], ns.Tokens)
		require.Equal(t, b.path(id), ns.PathTokens)
		require.Equal(t, len(b.children(id)), ns.Children)
		if len(b.children(id)) == 0 {
			want.Leaves++
			want.UnsharedTokens += b.path(id)
		}
	}
	got := sim.Stats()
	require.Equal(t, want.Nodes, got.Nodes)
	require.Equal(t, want.Leaves, got.Leaves)
	require.Equal(t, want.Tokens, got.Tokens)
	require.Equal(t, want.UnsharedTokens, got.UnsharedTokens)
}

// randomOp returns a random op, valid most of the time.
func (b *bruteState) randomOp(rng *rand.Rand, nextID *int) Op {
	ids := make([]int, 0, len(b.parent))
	for id := range b.parent {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	pick := func() int {
		if len(ids) == 0 || rng.IntN(20) == 0 {
			return 1000 + rng.IntN(5) // usually not live
		}
		return ids[rng.IntN(len(ids))]
	}
	switch r := rng.IntN(10); {
	case r < 3:
		parent := NoParent
		if len(ids) > 0 && rng.IntN(8) != 0 {
			parent = pick()
		}
		id := *nextID
		if rng.IntN(20) == 0 && len(ids) > 0 {
			id = pick() // may collide
		} else {
			*nextID++
		}
		return Op{Kind: OpFork, Node: id, Parent: parent}
	case r < 6:
		return Op{Kind: OpAppend, Node: pick(), Tokens: rng.IntN(6) - rng.IntN(2)}
	case r < 8:
		return Op{Kind: OpPrune, Node: pick()}
	default:
		n := pick()
		var path []int
		tokens := 0
		for cur := n; ; {
			ch := b.children(cur)
			if len(ch) == 0 || (len(path) > 0 && rng.IntN(3) == 0) {
				break
			}
			cur = ch[rng.IntN(len(ch))]
			path = append(path, cur)
			tokens += b.tokens[cur]
		}
		if rng.IntN(10) == 0 {
			tokens++
		}
		if rng.IntN(10) == 0 && len(path) > 1 {
			path[0], path[1] = path[1], path[0]
		}
		return Op{Kind: OpAccept, Node: n, Tokens: tokens, Path: path}
	}
}

// apply applies op to the brute state, reporting whether it is valid.
func (b *bruteState) apply(op Op) bool {
	_, live := b.parent[op.Node]
	switch op.Kind {
	case OpFork:
		if live {
			return false
		}
		if _, ok := b.parent[op.Parent]; op.Parent != NoParent && !ok {
			return false
		}
		b.parent[op.Node], b.tokens[op.Node] = op.Parent, 0
	case OpAppend:
		if !live || op.Tokens < 1 || len(b.children(op.Node)) > 0 {
			return false
		}
		b.tokens[op.Node] += op.Tokens
	case OpPrune:
		if !live || len(b.children(op.Node)) > 0 {
			return false
		}
		delete(b.parent, op.Node)
		delete(b.tokens, op.Node)
	case OpAccept:
		if !live || len(op.Path) == 0 {
			return false
		}
		sum := 0
		for i, id := range op.Path {
			want := op.Node
			if i > 0 {
				want = op.Path[i-1]
			}
			if p, ok := b.parent[id]; !ok || p != want {
				return false
			}
			sum += b.tokens[id]
		}
		if sum != op.Tokens {
			return false
		}
		var drop func(int)
		drop = func(id int) {
			for _, c := range b.children(id) {
				drop(c)
			}
			delete(b.parent, id)
			delete(b.tokens, id)
		}
		for _, c := range b.children(op.Node) {
			drop(c)
		}
		b.tokens[op.Node] += sum
	default:
		return false
	}
	return true
}

// TestSimulatorRandomOps checks the simulator against a brute-force model
// over random op sequences, invalid ops included.
func TestSimulatorRandomOps(t *testing.T) {
	rng := testRNG(t)
	for range 50 {
		b := &bruteState{parent: map[int]int{}, tokens: map[int]int{}}
		sim := NewSimulator()
		nextID := 0
		peak, peakUnshared := 0, 0
		for range 300 {
			op := b.randomOp(rng, &nextID)
			valid := b.apply(op)
			err := sim.Apply(op)
			if valid {
				require.NoError(t, err)
			} else {
				require.Error(t, err, "%v", op)
			}
			b.check(t, sim)
			peak = max(peak, sim.Stats().Tokens)
			peakUnshared = max(peakUnshared, sim.Stats().UnsharedTokens)
		}
		assert.Equal(t, peak, sim.Stats().PeakTokens)
		assert.Equal(t, peakUnshared, sim.Stats().PeakUnsharedTokens)
	}
}

func TestSimulatorErrors(t *testing.T) {
	sim := NewSimulator()
	_, err := sim.Tree()
	require.ErrorContains(t, err, "no queries")
	require.ErrorContains(t, sim.Begin(Step{Index: 4, Ops: []Op{{Kind: OpFork, Node: 0, Parent: NoParent}}}), "step 4: no queries")
	require.ErrorContains(t, sim.Begin(Step{Queries: []Query{{Node: 0}}}), "offset 0 outside node 0, which has 0 tokens")
	require.ErrorContains(t, sim.Begin(Step{Queries: []Query{{Node: 3}}}), "node 3 is not live")
	require.NoError(t, sim.Apply(Op{Kind: OpAppend, Node: 0, Tokens: 2}))
	require.ErrorContains(t, sim.Begin(Step{Queries: []Query{{Node: 0}, {Node: 0}}}), "queried twice")
	require.ErrorContains(t, sim.Apply(Op{Kind: 0}), "unknown op kind")
	require.ErrorContains(t, sim.Apply(Op{Kind: OpFork, Node: 1, Parent: 7}), "fork 1 from 7: parent: node 7 is not live")
	require.ErrorContains(t, sim.Apply(Op{Kind: OpAccept, Node: 0}), "empty path")

	// An empty child, then several roots: no tree.
	require.NoError(t, sim.Begin(Step{Ops: []Op{{Kind: OpFork, Node: 1, Parent: 0}}, Queries: []Query{{Node: 0, Offset: 1}}}))
	_, err = sim.Tree()
	require.ErrorContains(t, err, "node 1 has no tokens")
	require.ErrorContains(t, sim.Apply(Op{Kind: OpAppend, Node: 0, Tokens: 1}), "only a node without children grows")
	require.ErrorContains(t, sim.Apply(Op{Kind: OpPrune, Node: 0}), "prune them first")
	require.NoError(t, sim.Apply(Op{Kind: OpFork, Node: 2, Parent: NoParent}))
	_, err = sim.Tree()
	require.ErrorContains(t, err, "2 root sequences")
	require.NoError(t, sim.Apply(Op{Kind: OpPrune, Node: 2}))
	require.NoError(t, sim.Apply(Op{Kind: OpAppend, Node: 1, Tokens: 1}))
	tr, err := sim.Tree()
	require.NoError(t, err)
	require.NoError(t, tr.Validate(tr.NumSlots()))
	require.NoError(t, sim.End(Step{}))
	_, err = sim.Tree()
	require.ErrorContains(t, err, "no queries")
	require.NoError(t, sim.Begin(Step{Queries: []Query{{Node: 1}}}))
	require.NoError(t, sim.Apply(Op{Kind: OpAccept, Node: 0, Path: []int{1}, Tokens: 1}))
	_, err = sim.Tree()
	require.ErrorContains(t, err, "no longer valid")
	require.NoError(t, sim.End(Step{After: []Op{{Kind: OpPrune, Node: 0}}}))
	require.ErrorContains(t, sim.End(Step{Index: 2, After: []Op{{Kind: OpPrune, Node: 0}}}), "step 2 (after): prune 0: node 0 is not live")
	assert.Zero(t, sim.Stats().Nodes)
	assert.Equal(t, 3, sim.Stats().PeakTokens)
}

// TestSimulatorTreeCompaction runs many steps with prunes so the creation
// list is compacted, and checks the tree each time.
func TestSimulatorTreeCompaction(t *testing.T) {
	rng := testRNG(t)
	sim := NewSimulator()
	require.NoError(t, sim.Apply(Op{Kind: OpFork, Node: 0, Parent: NoParent}))
	require.NoError(t, sim.Apply(Op{Kind: OpAppend, Node: 0, Tokens: 5}))
	live := []int{}
	next := 1
	for step := range 200 {
		st := Step{Index: step}
		for range 1 + rng.IntN(3) {
			st.Ops = append(st.Ops, Op{Kind: OpFork, Node: next, Parent: 0}, Op{Kind: OpAppend, Node: next, Tokens: 1 + rng.IntN(3)})
			live = append(live, next)
			next++
		}
		for _, id := range live {
			st.Queries = append(st.Queries, Query{Node: id})
		}
		require.NoError(t, sim.Begin(st))
		tr := checkTree(t, sim)
		require.Equal(t, -1, tr.Nodes[0].Parent)
		require.Equal(t, 5, tr.Nodes[0].Tokens)
		for i, q := range tr.Queries {
			require.Equal(t, live[i], st.Queries[i].Node)
			require.Equal(t, 0, tr.Nodes[q.Node].Parent)
		}
		for len(live) > 2 && rng.IntN(4) != 0 {
			k := rng.IntN(len(live))
			st.After = append(st.After, Op{Kind: OpPrune, Node: live[k]})
			live = slices.Delete(live, k, k+1)
		}
		require.NoError(t, sim.End(st))
	}
	assert.Less(t, len(sim.order), next, "compacted")
}
