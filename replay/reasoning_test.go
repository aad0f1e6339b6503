package replay

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// iterExpect is what a reasoning trace implies for one iteration, derived
// from the node fields alone (not from the driver).
type iterExpect struct {
	queries  int // live leaves: nodes with start <= i <= end
	appended int // tokens appended at the iteration
	nodes    int // nodes held: started, with a descendant (or itself) not yet ended
	held     int // tokens held with sharing
	unshared int // sum over live leaves of the tokens from the root
}

// expectTrace derives the per-iteration counts of a valid trace: a node is
// live at iterations start..end, holds min(value, i-start+1) tokens at
// iteration i, and is kept while it or a descendant is still live.
func expectTrace(tr *ReasoningTree) []iterExpect {
	pos := map[int]int{}
	for i, nd := range tr.Nodes {
		pos[nd.ID] = i
	}
	parent := make([]int, len(tr.Nodes))
	for i := range parent {
		parent[i] = -1
	}
	for i, nd := range tr.Nodes {
		for _, c := range nd.Children {
			parent[pos[c]] = i
		}
	}
	lastEnd := make([]int, len(tr.Nodes))   // the latest end in the subtree
	ancestors := make([]int, len(tr.Nodes)) // tokens of the strict ancestors
	for i, nd := range tr.Nodes {
		lastEnd[i] = max(lastEnd[i], nd.End)
		for p := parent[i]; p >= 0; p = parent[p] {
			lastEnd[p] = max(lastEnd[p], nd.End)
			ancestors[i] += tr.Nodes[p].Value
		}
	}
	out := make([]iterExpect, tr.Iterations())
	for i := range out {
		e := &out[i]
		for j, nd := range tr.Nodes {
			if nd.Start <= i && i <= nd.End {
				e.queries++
				e.appended++
				e.unshared += ancestors[j] + i - nd.Start + 1
			}
			if nd.Start <= i && lastEnd[j] >= i {
				e.nodes++
				e.held += min(nd.Value, i-nd.Start+1)
			}
			if i == 0 && nd.Start <= 0 {
				e.appended = nd.Value // the prompt
			}
		}
	}
	return out
}

// replayReasoning replays tr, checks every step against expectTrace and,
// every treeEvery steps (0: never), the simulator's attention tree. It
// returns the final simulator.
func replayReasoning(t *testing.T, tr *ReasoningTree, treeEvery int) *Simulator {
	t.Helper()
	want := expectTrace(tr)
	w, err := NewReasoning(tr)
	require.NoError(t, err)
	require.Equal(t, len(want), w.Len())
	peakHeld, peakUnshared := 0, 0
	for _, e := range want {
		peakHeld, peakUnshared = max(peakHeld, e.held), max(peakUnshared, e.unshared)
	}
	// Plain checks per step: testify is too slow for the 700K steps of the
	// shared files.
	got := make([]iterExpect, 0, len(want))
	sim, err := Run(w, func(st Step, sim *Simulator) error {
		if st.Index != len(got) || st.Prefill != (st.Index == 0) {
			return fmt.Errorf("index %d, prefill %v after %d steps", st.Index, st.Prefill, len(got))
		}
		s := sim.Stats()
		e := iterExpect{queries: len(st.Queries), nodes: s.Nodes, held: s.Tokens, unshared: s.UnsharedTokens}
		for _, op := range st.Ops {
			switch op.Kind {
			case OpAppend:
				e.appended += op.Tokens
			case OpFork:
			default:
				return fmt.Errorf("%v before the attention", op)
			}
		}
		for _, op := range st.After {
			if op.Kind != OpPrune {
				return fmt.Errorf("%v after the attention", op)
			}
		}
		if s.Leaves != len(st.Queries) {
			return fmt.Errorf("%d live branches, %d queries", s.Leaves, len(st.Queries))
		}
		for _, q := range st.Queries {
			if ns, _ := sim.Node(q.Node); ns.Children != 0 || q.Offset != ns.Tokens-1 {
				return fmt.Errorf("query %v is not the last token of a leaf (%+v)", q, ns)
			}
		}
		if treeEvery > 0 && st.Index%treeEvery == 0 {
			tree := checkTree(t, sim)
			// Every live leaf is queried at its last token.
			require.Equal(t, s.UnsharedTokens, tree.SumPathLengths())
		}
		got = append(got, e)
		return nil
	})
	require.NoError(t, err)
	require.Len(t, got, len(want))
	for i := range want {
		if want[i] != got[i] {
			require.Equal(t, want[i], got[i], "%s iteration %d", tr.Name, i)
		}
	}
	s := sim.Stats()
	require.Equal(t, tr.TotalTokens(), s.Appended, "every token appended once")
	require.Equal(t, peakHeld, s.PeakTokens)
	require.Equal(t, peakUnshared, s.PeakUnsharedTokens)
	require.Zero(t, s.Nodes, "everything released")
	require.Zero(t, s.Tokens)
	require.Zero(t, s.Leaves)
	return sim
}

func readTestdataReasoning(t *testing.T, name string) []*ReasoningTree {
	t.Helper()
	trees, err := ReadReasoningFile(testdataPath(name))
	require.NoError(t, err)
	return trees
}

func TestReasoningTestdata(t *testing.T) {
	sorting := readTestdataReasoning(t, "sorting128ToT_first3.json")
	require.Len(t, sorting, 3)
	assert.Equal(t, []bool{true, false, true}, []bool{sorting[0].Incompleted, sorting[1].Incompleted, sorting[2].Incompleted})
	assert.Equal(t, []*ReasoningTree{sorting[1]}, Completed(sorting))
	assert.Equal(t, "sorting128ToT_first3#1", sorting[1].Name)
	tr := sorting[1]
	require.Len(t, tr.Nodes, 101)
	assert.Equal(t, ReasoningNode{ID: 0, Value: 1104, Start: -1103, End: 0, Children: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}, tr.Nodes[0])
	assert.True(t, strings.HasPrefix(tr.Prompt, "<Instruction> Sort the following list"))
	assert.Equal(t, 34310, tr.TotalTokens())
	assert.Equal(t, 3709, tr.Iterations())
	for i, nd := range tr.Nodes {
		assert.Equal(t, i, nd.ID, "sorted by id")
	}

	set := readTestdataReasoning(t, "set128ToT_first2.json")
	require.Len(t, set, 2)
	assert.Len(t, set[0].Nodes, 91)
	assert.Equal(t, 1611, set[0].Nodes[0].Value)

	for _, tr := range append(sorting, set...) {
		t.Run(tr.Name, func(t *testing.T) {
			require.NoError(t, tr.Validate())
			sim := replayReasoning(t, tr, 5)
			s := sim.Stats()
			t.Logf("%s: %d nodes, %d tokens, %d iterations, at most %d live branches; peak tokens with sharing %d, without %d",
				tr.Name, len(tr.Nodes), tr.TotalTokens(), tr.Iterations(), s.MaxQueries, s.PeakTokens, s.PeakUnsharedTokens)
		})
	}
}

// TestReasoningSharedWorkloads replays every tree of DeFT's reasoning files
// when the shared workload folder is present, and logs the peak tokens of
// the sorting trace's largest tree with and without sharing.
func TestReasoningSharedWorkloads(t *testing.T) {
	for _, name := range []string{"sorting128ToT.json", "set128ToT.json"} {
		trees, err := ReadReasoningFile(sharedWorkload(t, "reasoning", name))
		require.NoError(t, err)
		require.Len(t, trees, 100)
		var largest *ReasoningTree
		var largestSim *Simulator
		maxUnshared, maxUnsharedTree := 0, ""
		for _, tr := range Completed(trees) {
			sim := replayReasoning(t, tr, 97)
			if largest == nil || tr.TotalTokens() > largest.TotalTokens() {
				largest, largestSim = tr, sim
			}
			if u := sim.Stats().PeakUnsharedTokens; u > maxUnshared {
				maxUnshared, maxUnsharedTree = u, tr.Name
			}
		}
		for _, tr := range trees {
			if tr.Incompleted {
				replayReasoning(t, tr, 0) // replayable too, though skipped by the authors
			}
		}
		s := largestSim.Stats()
		t.Logf("%s: %d complete trees of %d; largest %s: %d nodes, %d tokens, %d iterations, at most %d live branches; "+
			"peak tokens with sharing %d, without sharing %d (%.2fx); largest peak without sharing over all trees: %d (%s)",
			name, len(Completed(trees)), len(trees), largest.Name, len(largest.Nodes), largest.TotalTokens(), largest.Iterations(),
			s.MaxQueries, s.PeakTokens, s.PeakUnsharedTokens, float64(s.PeakUnsharedTokens)/float64(s.PeakTokens), maxUnshared, maxUnsharedTree)
	}
}

// tinyTree is a small valid trace: prompt 0 (3 tokens), children 1 (2
// tokens, iterations 1-2) and 2 (1 token, iteration 1); 1 has children 3
// and 4.
const tinyTree = `[{"incompleted": false, "prompt": "p", "data": {
	"0": {"id": 0, "value": 3, "start": -2, "end": 0, "children": [1, 2]},
	"1": {"id": 1, "value": 2, "start": 1, "end": 2, "children": [4, 3]},
	"2": {"id": 2, "value": 1, "start": 1, "end": 1, "children": []},
	"3": {"id": 3, "value": 4, "start": 3, "end": 6},
	"4": {"id": 4, "value": 1, "start": 3, "end": 3, "children": null}}}]`

func TestReasoningTiny(t *testing.T) {
	trees, err := ParseReasoning([]byte(tinyTree))
	require.NoError(t, err)
	require.Len(t, trees, 1)
	tr := trees[0]
	assert.Equal(t, "tree0", tr.Name)
	assert.Equal(t, 11, tr.TotalTokens())
	assert.Equal(t, 7, tr.Iterations())
	w, err := NewReasoning(tr)
	require.NoError(t, err)
	assert.Equal(t, "reasoning-tree0", w.Name())
	steps := All(w)
	require.Len(t, steps, 7)
	fork := func(n, p int) Op { return Op{Kind: OpFork, Node: n, Parent: p} }
	app := func(n, k int) Op { return Op{Kind: OpAppend, Node: n, Tokens: k} }
	prune := func(n int) Op { return Op{Kind: OpPrune, Node: n} }
	q := func(n, off int) Query { return Query{Node: n, Offset: off} }
	want := []Step{
		{Index: 0, Prefill: true, Ops: []Op{fork(0, NoParent), app(0, 3)}, Queries: []Query{q(0, 2)}},
		{Index: 1, Ops: []Op{fork(1, 0), fork(2, 0), app(1, 1), app(2, 1)}, Queries: []Query{q(1, 0), q(2, 0)}, After: []Op{prune(2)}},
		{Index: 2, Ops: []Op{app(1, 1)}, Queries: []Query{q(1, 1)}},
		{Index: 3, Ops: []Op{fork(4, 1), fork(3, 1), app(4, 1), app(3, 1)}, Queries: []Query{q(4, 0), q(3, 0)}, After: []Op{prune(4)}},
		{Index: 4, Ops: []Op{app(3, 1)}, Queries: []Query{q(3, 1)}},
		{Index: 5, Ops: []Op{app(3, 1)}, Queries: []Query{q(3, 2)}},
		{Index: 6, Ops: []Op{app(3, 1)}, Queries: []Query{q(3, 3)}, After: []Op{prune(3), prune(1), prune(0)}},
	}
	assert.Equal(t, want, steps)
	replayReasoning(t, tr, 1)

	// A prompt without children is one prefill step.
	trees, err = ParseReasoning([]byte(`[{"data": {"7": {"id": 7, "value": 1, "start": 0, "end": 0}}}]`))
	require.NoError(t, err)
	w, err = NewReasoning(trees[0])
	require.NoError(t, err)
	assert.Equal(t, []Step{{Index: 0, Prefill: true, Ops: []Op{fork(7, NoParent), app(7, 1)}, Queries: []Query{q(7, 0)}, After: []Op{prune(7)}}}, All(w))

	_, err = ParseReasoning([]byte(`[]`))
	require.NoError(t, err)
}

func TestParseReasoningErrors(t *testing.T) {
	node := func(id, value, start, end int, children ...int) string {
		b, _ := json.Marshal(children)
		return fmt.Sprintf(`"%d": {"id": %d, "value": %d, "start": %d, "end": %d, "children": %s}`, id, id, value, start, end, b)
	}
	tree := func(nodes ...string) string { return `[{"data": {` + strings.Join(nodes, ", ") + `}}]` }
	root := node(0, 2, -1, 0, 1)
	cases := []struct{ name, doc, msg string }{
		{"empty", ``, "EOF"},
		{"not a list", `{}`, "want a list of trees"},
		{"tree not object", `[1]`, "tree 0: json: cannot unmarshal"},
		{"missing data", `[{"prompt": "x"}]`, `tree 0: missing "data"`},
		{"data not object", `[{"data": []}]`, `want "data" as an object`},
		{"no nodes", `[{"data": {}}]`, "tree has no nodes"},
		{"missing field", `[{"data": {"0": {"id": 0, "value": 1, "end": 0}}}]`, `node "0": missing "start"`},
		{"key mismatch", `[{"data": {"00": {"id": 0, "value": 1, "start": 0, "end": 0}}}]`, `key does not match its id 0`},
		{"duplicate key", `[{"data": {"0": {"id": 0, "value": 1, "start": 0, "end": 0}, "0": {"id": 0, "value": 1, "start": 0, "end": 0}}}]`, `key "0" appears twice`},
		{"fraction", `[{"data": {"0": {"id": 0, "value": 1.5, "start": 0, "end": 0}}}]`, "cannot unmarshal"},
		{"huge", `[{"data": {"0": {"id": 0, "value": 1e30, "start": 0, "end": 0}}}]`, "cannot unmarshal"},
		{"negative id", tree(node(-1, 1, 0, 0)), "node id -1 is negative"},
		{"zero value", tree(node(0, 0, 1, 0)), "value 0, must be at least 1"},
		{"value mismatch", tree(node(0, 3, -1, 0)), "value 3 does not match start -1 and end 0"},
		{"beyond limit", tree(node(0, 1, MaxReasoningTokens+1, MaxReasoningTokens+1)), "beyond the limit"},
		{"too many tokens", tree(node(0, 1, 0, 0, 1), node(1, MaxReasoningTokens, 1, MaxReasoningTokens)), "sum to more than the limit"},
		{"no root", tree(node(1, 1, 1, 1)), "no root"},
		{"two roots", tree(node(0, 1, 0, 0), node(1, 1, 0, 0)), "several roots: nodes 0, 1"},
		{"root end", tree(node(0, 2, 0, 1)), "root node 0 ends at iteration 1"},
		{"missing child", tree(node(0, 1, 0, 0, 5)), "node 0: child 5 does not exist"},
		{"self child", tree(root, node(1, 1, 1, 1, 1)), "node 1: lists itself as a child"},
		{"duplicate child", tree(node(0, 1, 0, 0, 1, 1), node(1, 1, 1, 1)), "child 1 is listed twice"},
		{"root as child", tree(root, node(1, 1, 1, 1, 0)), "lists the root 0 as a child"},
		{"two parents", tree(node(0, 1, 0, 0, 1, 2), node(1, 1, 1, 1, 2), node(2, 1, 1, 1)), "node 2 has two parents, 0 and 1"},
		{"orphan", tree(root, node(1, 1, 1, 1), node(2, 1, 5, 5)), "node 2 (start 5) is not a child of any node"},
		{"cycle", tree(root, node(1, 1, 1, 1), node(2, 1, 2, 2, 3), node(3, 1, 3, 3, 2)), "node 2 is not reachable from the root: cycle through nodes 2, 3"},
		{"child too early", tree(node(0, 1, 0, 0, 1), node(1, 2, 1, 2, 2), node(2, 1, 2, 2)), "node 2 starts at iteration 2, but a child starts right after its parent ends: parent 1 ends at 2"},
		{"child too late", tree(node(0, 1, 0, 0, 1), node(1, 1, 2, 2)), "node 1 starts at iteration 2"},
		{"second tree", `[{"data": {"0": {"id": 0, "value": 1, "start": 0, "end": 0}}}, {"data": {}}]`, "tree 1: tree has no nodes"},
		{"trailing", `[] []`, "after the JSON value"},
		{"unterminated", `[{"data": {"0": {"id": 0, "value": 1, "start": 0, "end": 0}}}`, "EOF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			trees, err := ParseReasoning([]byte(c.doc))
			require.Error(t, err)
			assert.Nil(t, trees)
			assert.Contains(t, err.Error(), c.msg)
			assert.True(t, strings.HasPrefix(err.Error(), "parse reasoning json: "), err.Error())
		})
	}

	big := make([]byte, MaxReasoningBytes+1)
	_, err := ParseReasoning(big)
	require.ErrorContains(t, err, "more than the limit")

	// Validate and NewReasoning check hand-built trees too.
	bad := &ReasoningTree{Name: "hand", Nodes: []ReasoningNode{{ID: 0, Value: 1, Start: 0, End: 0}, {ID: 1, Value: 1, Start: 1, End: 1}}}
	require.ErrorContains(t, bad.Validate(), `reasoning tree "hand": node 1 (start 1) is not a child`)
	_, err = NewReasoning(bad)
	require.ErrorContains(t, err, "not a child")
	require.ErrorContains(t, (&ReasoningTree{}).Validate(), "reasoning tree (unnamed): tree has no nodes")

	_, err = ReadReasoningFile("testdata/deft/no-such-file.json")
	require.ErrorContains(t, err, "read reasoning file")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(dir+"/bad.json", []byte(`[{}]`), 0o644))
	_, err = ReadReasoningFile(dir + "/bad.json")
	require.ErrorContains(t, err, "bad.json: tree 0: missing")
}

// FuzzParseReasoning checks that parsing never panics or hangs, and that
// every accepted small tree replays consistently with the trace.
func FuzzParseReasoning(f *testing.F) {
	f.Add([]byte(tinyTree))
	f.Add([]byte(`[{"data": {"0": {"id": 0, "value": 1, "start": 0, "end": 0}}}]`))
	f.Add([]byte(`[{"data": {"0": {"id": 0, "value": 1, "start": 0, "end": 0, "children": [1]}, "1": {"id": 1, "value": 1, "start": 1, "end": 1, "children": [0]}}}]`))
	f.Add([]byte(`[{"data": {"0": {"id": 0, "value": 2, "start": -1, "end": 0, "children": [1, 1]}}}]`))
	f.Add([]byte(`[{"data": {}}, null]`))
	f.Add([]byte(`[]`))
	// The structure of a real tree without its long prompt.
	if data, err := os.ReadFile(testdataPath("sorting128ToT_first3.json")); err == nil {
		var trees []map[string]any
		if json.Unmarshal(data, &trees) == nil && len(trees) > 1 {
			trees[1]["prompt"] = ""
			if small, err := json.Marshal(trees[1:2]); err == nil {
				f.Add(small)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		trees, err := ParseReasoning(data)
		if err != nil {
			require.Nil(t, trees)
			return
		}
		for _, tr := range trees {
			require.NoError(t, tr.Validate())
			if tr.TotalTokens() > 1<<12 {
				continue
			}
			w, err := NewReasoning(tr)
			require.NoError(t, err)
			want := expectTrace(tr)
			i := 0
			sim, err := Run(w, func(st Step, sim *Simulator) error {
				require.Len(t, st.Queries, want[i].queries)
				require.Equal(t, want[i].held, sim.Stats().Tokens)
				i++
				return nil
			})
			require.NoError(t, err)
			require.Equal(t, len(want), i)
			require.Equal(t, tr.TotalTokens(), sim.Stats().Appended)
			require.Zero(t, sim.Stats().Nodes)
		}
	})
}
