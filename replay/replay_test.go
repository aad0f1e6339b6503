package replay

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/treeattn"
)

// testRNG returns a generator seeded from the clock and logs the seed.
func testRNG(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, 0x5eed4e91a7))
}

// sharedWorkload returns the path of a file in the shared workload folder
// next to the repository, or skips the test when it is absent.
func sharedWorkload(t testing.TB, parts ...string) string {
	t.Helper()
	p := filepath.Join(append([]string{"..", "..", "shared", "workloads", "deft"}, parts...)...)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no shared workload %s", p)
	}
	return p
}

func testdataPath(name string) string { return filepath.Join("testdata", "deft", name) }

// checkStepKinds checks that Ops hold only forks and appends and After
// only prunes and accepts.
func checkStepKinds(t *testing.T, st Step) {
	t.Helper()
	for _, op := range st.Ops {
		if op.Kind != OpFork && op.Kind != OpAppend {
			require.Failf(t, "bad op", "step %d: %v before the attention", st.Index, op)
		}
	}
	for _, op := range st.After {
		if op.Kind != OpPrune && op.Kind != OpAccept {
			require.Failf(t, "bad op", "step %d: %v after the attention", st.Index, op)
		}
	}
}

// checkTree checks the simulator's attention tree for the current step: a
// valid treeattn tree holding exactly the simulator's tokens and queries.
func checkTree(t *testing.T, sim *Simulator) *treeattn.Tree {
	t.Helper()
	tr, err := sim.Tree()
	require.NoError(t, err)
	require.NoError(t, tr.Validate(tr.NumSlots()))
	st := sim.Stats()
	require.Len(t, tr.Nodes, st.Nodes)
	require.Equal(t, st.Tokens, tr.TotalTokens())
	require.Equal(t, st.Tokens, tr.NumSlots())
	require.Len(t, tr.Queries, len(sim.Queries()))
	require.Len(t, tr.Leaves(), st.Leaves)
	return tr
}

func TestOpStrings(t *testing.T) {
	assert.Equal(t, "fork", OpFork.String())
	assert.Equal(t, "accept", OpAccept.String())
	assert.Equal(t, "OpKind(0)", OpKind(0).String())
	assert.Equal(t, "OpKind(9)", OpKind(9).String())
	assert.Equal(t, "fork 3 from -1", Op{Kind: OpFork, Node: 3, Parent: NoParent}.String())
	assert.Equal(t, "append 2 tokens to 3", Op{Kind: OpAppend, Node: 3, Tokens: 2}.String())
	assert.Equal(t, "prune 3", Op{Kind: OpPrune, Node: 3}.String())
	assert.Equal(t, "accept 2 tokens of path [4 5] into 0", Op{Kind: OpAccept, Tokens: 2, Path: []int{4, 5}}.String())
	assert.Equal(t, "OpKind(7) node 1", Op{Kind: 7, Node: 1}.String())
}

func TestStepsAndClone(t *testing.T) {
	w, err := NewFewShot(3, 2, 2)
	require.NoError(t, err)
	steps := All(w)
	require.Len(t, steps, 3)
	_, ok := w.Next()
	assert.False(t, ok, "exhausted")

	assert.Equal(t, Step{
		Index: 0, Prefill: true,
		Ops:     []Op{{Kind: OpFork, Node: 0, Parent: NoParent}, {Kind: OpAppend, Node: 0, Tokens: 3}},
		Queries: []Query{{Node: 0, Offset: 2}},
	}, steps[0])
	assert.Equal(t, []Op{
		{Kind: OpFork, Node: 1, Parent: 0}, {Kind: OpFork, Node: 2, Parent: 0},
		{Kind: OpAppend, Node: 1, Tokens: 1}, {Kind: OpAppend, Node: 2, Tokens: 1},
	}, steps[1].Ops)
	assert.Equal(t, []Query{{Node: 1, Offset: 1}, {Node: 2, Offset: 1}}, steps[2].Queries)
	assert.Equal(t, []Op{{Kind: OpPrune, Node: 1}, {Kind: OpPrune, Node: 2}, {Kind: OpPrune, Node: 0}}, steps[2].After)

	// Clone copies deeply, including accept paths.
	st := Step{Ops: []Op{{Kind: OpAccept, Path: []int{1, 2}}}, Queries: []Query{{Node: 1}}}
	c := st.Clone()
	st.Ops[0].Path[0] = 9
	st.Queries[0].Node = 9
	assert.Equal(t, []int{1, 2}, c.Ops[0].Path)
	assert.Equal(t, 1, c.Queries[0].Node)
	assert.Nil(t, c.After)

	// Breaking out of Steps stops early and leaves the rest.
	w, err = NewFewShot(3, 2, 4)
	require.NoError(t, err)
	for st := range Steps(w) {
		if st.Index == 1 {
			break
		}
	}
	rest := All(w)
	require.Len(t, rest, 3)
	assert.Equal(t, 2, rest[0].Index)
}
