package treeattn_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/replay"
	"github.com/deft-vk/deft/treeattn"
)

// planSeedEnv replays a failing run: every test in this file logs its seed,
// and setting this variable to it makes the test draw the same trees.
const planSeedEnv = "TREEATTN_PLAN_SEED"

var (
	// planLavapipe are lavapipe's limits (32 KiB of shared memory).
	planLavapipe = treeattn.Limits{SharedMemory: 32768, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{65535, 65535, 65535}}
	// planH100 are an H100's limits as Vulkan reports them (48 KiB).
	planH100 = treeattn.Limits{SharedMemory: 49152, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{65535, 65535, 65535}}

	planLimits = []treeattn.Limits{planLavapipe, planH100}

	// planLlama3 is Llama 3 8B's attention: 32 query heads over 8 KV heads of 128.
	planLlama3 = treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}

	// planShapes covers group sizes from 1 to 64 (larger than any row tile) and
	// head dims from 16 to 256.
	planShapes = []treeattn.Shape{
		{QHeads: 4, KVHeads: 2, HeadDim: 64},
		planLlama3,
		{QHeads: 8, KVHeads: 8, HeadDim: 16},
		{QHeads: 64, KVHeads: 1, HeadDim: 128},
		{QHeads: 16, KVHeads: 4, HeadDim: 256},
		{QHeads: 1, KVHeads: 1, HeadDim: 32},
	}
)

// planRNG returns a generator seeded from the clock (or from planSeedEnv) and
// logs the seed.
func planRNG(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(planSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "%s", planSeedEnv)
		seed = v
	}
	t.Logf("random seed %d (replay with %s=%d)", seed, planSeedEnv, seed)
	return rand.New(rand.NewPCG(seed, 0x7ee5a77e))
}

// planKVRow is the bytes of K and V of one token over all KV heads.
func planKVRow(s treeattn.Shape, kv treeattn.KVType) int64 {
	return int64(s.KVHeads) * int64(s.HeadDim) * int64(kv.Bytes()) * 2
}

// planCoverage is the expected coverage of a tree: every query's path.
type planCoverage struct {
	tree      *treeattn.Tree
	paths     [][]int32
	pathTotal int
	index     []int32 // slot -> dense token index, -1 for unused slots
	slotOf    []int32 // dense token index -> slot
	counts    []int32 // [query][token] times covered, all zero between checks
	// seenTokens is the number of distinct tokens some query attends to.
	seenTokens int
	// seenNodes and seenNodeTokens describe the nodes some query attends
	// to (at least one token of).
	seenNodes, seenNodeTokens int
	maxSeenNodeTokens         int
	seenNode                  []bool
	// checks counts plans checked, exactChecks those checked with exact
	// item counts (see planUnsplit).
	checks, exactChecks int
}

func newPlanCoverage(t testing.TB, tr *treeattn.Tree) *planCoverage {
	t.Helper()
	c := &planCoverage{tree: tr, index: make([]int32, tr.NumSlots())}
	for i := range c.index {
		c.index[i] = -1
	}
	for _, nd := range tr.Nodes {
		for _, s := range nd.Slots {
			c.index[s] = int32(len(c.slotOf))
			c.slotOf = append(c.slotOf, s)
		}
	}
	seen := make([]bool, len(c.slotOf))
	c.seenNode = make([]bool, len(tr.Nodes))
	for q := range tr.Queries {
		path := tr.QuerySlots(q)
		require.NotEmpty(t, path, "query %d has no path", q)
		c.paths = append(c.paths, path)
		c.pathTotal += len(path)
		for _, s := range path {
			if i := c.index[s]; !seen[i] {
				seen[i] = true
				c.seenTokens++
			}
		}
		for _, n := range tr.PathNodes(tr.Queries[q].Node) {
			c.seenNode[n] = true
		}
	}
	for n, ok := range c.seenNode {
		if ok {
			c.seenNodes++
			c.seenNodeTokens += tr.Nodes[n].Tokens
			c.maxSeenNodeTokens = max(c.maxSeenNodeTokens, tr.Nodes[n].Tokens)
		}
	}
	require.Equal(t, tr.SumPathLengths(), c.pathTotal)
	c.counts = make([]int32, len(tr.Queries)*len(c.slotOf))
	return c
}

// problems enumerates p's coverage and returns up to ten descriptions of
// pairs covered other than exactly once, or nil when every (query, path
// slot) pair is covered exactly once and no other pair at all.
func (c *planCoverage) problems(p *treeattn.Plan) []string {
	const limit = 10
	var out []string
	report := func(format string, args ...any) {
		if len(out) < limit {
			out = append(out, fmt.Sprintf(format, args...))
		}
	}
	tokens := len(c.slotOf)
	calls := 0
	p.Coverage(func(q int, s int32) {
		calls++
		if q < 0 || q >= len(c.paths) || s < 0 || int(s) >= len(c.index) || c.index[s] < 0 {
			report("pair (query %d, slot %d) is outside the tree", q, s)
			return
		}
		c.counts[q*tokens+int(c.index[s])]++
	})
	for q, path := range c.paths {
		for _, s := range path {
			i := q*tokens + int(c.index[s])
			if n := c.counts[i]; n != 1 {
				report("query %d path slot %d covered %d times", q, s, n)
			}
			c.counts[i] = 0
		}
	}
	for i, n := range c.counts {
		if n != 0 {
			report("query %d slot %d is not on its path but covered %d times", i/tokens, c.slotOf[i%tokens], n)
			c.counts[i] = 0
		}
	}
	if calls != c.pathTotal && len(out) == 0 {
		report("%d pairs covered, want %d", calls, c.pathTotal)
	}
	return out
}

// planDescribe summarizes a tree for failure messages.
func planDescribe(tr *treeattn.Tree) string {
	if len(tr.Nodes) <= 6 && len(tr.Queries) <= 6 {
		return fmt.Sprintf("%+v", *tr)
	}
	return fmt.Sprintf("tree of %d nodes, %d tokens, %d queries", len(tr.Nodes), tr.TotalTokens(), len(tr.Queries))
}

// planCheck makes a plan for cfg and checks coverage and the structural
// invariants every method must keep.
func planCheck(t *testing.T, c *planCoverage, cfg treeattn.Config, ctx string) *treeattn.Plan {
	t.Helper()
	tr := c.tree
	ctx = fmt.Sprintf("%s: method %s, block %d, shape %+v, %s, shared %d: %s",
		ctx, cfg.Method, cfg.BlockTokens, cfg.Shape, cfg.KV, cfg.Limits.SharedMemory, planDescribe(tr))
	p, err := treeattn.NewPlan(tr, cfg)
	require.NoError(t, err, ctx)
	require.Empty(t, c.problems(p), ctx)

	require.Equal(t, len(tr.Queries), p.NumQueries, ctx)
	require.Equal(t, tr.NumSlots(), p.NumSlots, ctx)
	if cfg.BlockTokens > 0 {
		require.Equal(t, cfg.BlockTokens, p.BlockTokens, ctx)
	}
	require.Positive(t, p.BlockTokens, ctx)

	items := p.ItemTokens()
	require.Len(t, items, p.Items, ctx)
	require.Equal(t, p.Items, p.IO.Items, ctx)
	require.Equal(t, p.Partials, p.IO.Partials, ctx)
	require.GreaterOrEqual(t, p.Partials, p.Items, ctx) // every item has a query
	sum := 0
	for i, n := range items {
		require.Positive(t, n, "%s: item %d", ctx, i)
		if cfg.Method != treeattn.MethodNode {
			require.LessOrEqual(t, n, p.BlockTokens, "%s: item %d", ctx, i)
		}
		sum += n
	}

	require.Equal(t, tr.TotalTokens(), p.IO.UniqueTokens, ctx)
	require.Equal(t, c.pathTotal, p.IO.PathTokens, ctx)
	require.GreaterOrEqual(t, p.IO.MaskedPairs, int64(c.pathTotal), ctx)
	kvRow := planKVRow(cfg.Shape, cfg.KV)
	require.Equal(t, int64(tr.TotalTokens())*kvRow, p.IO.KVUniqueBytes, ctx)
	// Every token some query sees is read at least once.
	require.GreaterOrEqual(t, p.IO.KVBytes, int64(c.seenTokens)*kvRow, ctx)
	require.GreaterOrEqual(t, p.IO.KVBytes, int64(sum)*kvRow, ctx)
	qBytes := int64(len(tr.Queries)) * int64(cfg.Shape.QHeads) * int64(cfg.Shape.HeadDim) * 4
	require.Equal(t, qBytes, p.IO.QueryBytes, ctx)
	require.Equal(t, qBytes, p.IO.OutputBytes, ctx)
	require.Equal(t, int64(len(p.Meta()))*4, p.IO.MetadataBytes, ctx)
	require.Greater(t, p.IO.Total(), p.IO.KVBytes, ctx)

	// Counts that depend on how the planner cuts items are exact only while
	// no item can be large enough for the planner to split it further; in
	// general they are lower bounds.
	exact := planUnsplit(c, p)
	eq := func(want, got int, msg string) {
		t.Helper()
		if exact {
			require.Equal(t, want, got, "%s: %s", ctx, msg)
		} else {
			require.GreaterOrEqual(t, got, want, "%s: %s (lower bound: items may be split)", ctx, msg)
		}
	}
	switch cfg.Method {
	case treeattn.MethodFlashDecoding:
		want := 0
		for _, path := range c.paths {
			want += (len(path) + p.BlockTokens - 1) / p.BlockTokens
		}
		eq(want, p.Items, "items")
		require.Equal(t, p.Items, p.Partials, "%s: one query per item", ctx)
		require.Equal(t, c.pathTotal, sum, ctx)
		require.Zero(t, p.IO.MaskBytes, "%s: flash decoding needs no mask", ctx)
		require.Equal(t, int64(c.pathTotal), p.IO.MaskedPairs, ctx)
	case treeattn.MethodDenseMask:
		if exact {
			require.Equal(t, tr.TotalTokens(), sum, "%s: dense mask reads every token", ctx)
		} else {
			require.GreaterOrEqual(t, sum, c.seenTokens, ctx)
		}
		eq((tr.TotalTokens()+p.BlockTokens-1)/p.BlockTokens, p.Items, "items")
		if exact {
			require.Equal(t, int64(tr.TotalTokens())*int64(len(tr.Queries)), p.IO.MaskedPairs, ctx)
		}
	case treeattn.MethodNode:
		eq(c.seenNodes, p.Items, "one item per node some query reads")
		// Split items drop the token chunks no query sees (the tail of a
		// node read only by a query early in it): then every seen token is
		// the bound.
		if exact {
			eq(c.seenNodeTokens, sum, "item tokens")
		} else {
			require.GreaterOrEqual(t, sum, c.seenTokens, "%s: item tokens cover every seen token", ctx)
		}
		for i, n := range items {
			require.LessOrEqual(t, n, c.maxSeenNodeTokens, "%s: item %d", ctx, i)
		}
	case treeattn.MethodNodeChunk:
		want := 0
		for n, ok := range c.seenNode {
			if ok {
				want += (tr.Nodes[n].Tokens + p.BlockTokens - 1) / p.BlockTokens
			}
		}
		eq(want, p.Items, "items")
		// Split items drop the token chunks no query sees (the tail of a
		// node read only by a query early in it): then every seen token is
		// the bound.
		if exact {
			eq(c.seenNodeTokens, sum, "item tokens")
		} else {
			require.GreaterOrEqual(t, sum, c.seenTokens, "%s: item tokens cover every seen token", ctx)
		}
	case treeattn.MethodFlatten:
		if exact {
			require.LessOrEqual(t, sum, tr.TotalTokens(), ctx)
		}
		require.GreaterOrEqual(t, sum, c.seenTokens, ctx)
		require.GreaterOrEqual(t, p.Items, (c.seenTokens+p.BlockTokens-1)/p.BlockTokens, ctx)
	}
	if exact {
		c.exactChecks++
	}
	c.checks++
	return p
}

// planSmallPasses is a number of shared-memory passes (row tiles times
// token tiles) per work item that the planner is assumed never to split:
// any bound it puts on the work of one workgroup is at least this large.
const planSmallPasses = 8

// planUnsplit reports whether every item the method forms before any
// splitting for balance fits planSmallPasses, judged from an upper bound:
// all queries against the longest possible item.
func planUnsplit(c *planCoverage, p *treeattn.Plan) bool {
	tokens, rows := p.BlockTokens, len(c.tree.Queries)*p.Shape.GroupSize()
	switch p.Method {
	case treeattn.MethodNode:
		tokens = c.maxSeenNodeTokens
	case treeattn.MethodFlashDecoding:
		rows = p.Shape.GroupSize()
	}
	// Rows beyond one row tile are always cut into query slices.
	tokenTiles := (tokens + p.Tiles.Tokens - 1) / p.Tiles.Tokens
	return rows <= p.Tiles.Rows && tokenTiles <= planSmallPasses
}

// planBlocks returns 0 (automatic) and explicit block sizes for a tree,
// keeping flash decoding's item count (path tokens / block) moderate.
func planBlocks(rng *rand.Rand, tr *treeattn.Tree) []int {
	minBlock := max(1, tr.SumPathLengths()/20000)
	pick := func(hi int) int { return minBlock + rng.IntN(max(1, hi)) }
	return []int{0, pick(16), pick(tr.TotalTokens() + 64)}
}

func planKV(rng *rand.Rand) treeattn.KVType {
	if rng.IntN(2) == 0 {
		return treeattn.KVF16
	}
	return treeattn.KVF32
}

func TestPlanCoverageRandomTrees(t *testing.T) {
	rng := planRNG(t)
	kinds := []treeattn.TreeKind{treeattn.KindChain, treeattn.KindStar, treeattn.KindRandom}
	const perCase = 5
	plans, exact := 0, 0
	for _, kind := range kinds {
		for _, shuffle := range []bool{false, true} {
			for trial := range perCase {
				tr := treeattn.RandomTree(rng, treeattn.GenOptions{
					MaxNodes:      1 + rng.IntN(32),
					MaxNodeTokens: 1 + rng.IntN(600),
					MaxQueries:    1 + rng.IntN(256),
					Kind:          kind,
					ShuffleSlots:  shuffle,
				})
				before := tr.Clone()
				c := newPlanCoverage(t, tr)
				shape := planShapes[rng.IntN(len(planShapes))]
				kv := planKV(rng)
				ctx := fmt.Sprintf("%v shuffle=%v trial %d", kind, shuffle, trial)
				for _, block := range planBlocks(rng, tr) {
					for _, m := range treeattn.Methods {
						lim := planLimits[rng.IntN(len(planLimits))]
						planCheck(t, c, treeattn.Config{Method: m, Shape: shape, KV: kv, Limits: lim, BlockTokens: block}, ctx)
						plans++
					}
				}
				require.Equal(t, before, tr, "%s: NewPlan changed the tree", ctx)
				exact += c.exactChecks
			}
		}
	}
	t.Logf("%d plans checked, %d of them with exact item counts", plans, exact)
	require.Positive(t, exact)
}

func TestPlanIsDeterministic(t *testing.T) {
	rng := planRNG(t)
	for trial := range 6 {
		tr := treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 24, MaxNodeTokens: 300, MaxQueries: 128, ShuffleSlots: true})
		for _, m := range treeattn.Methods {
			cfg := treeattn.Config{Method: m, Shape: planLlama3, Limits: planLavapipe}
			a, err := treeattn.NewPlan(tr, cfg)
			require.NoError(t, err)
			b, err := treeattn.NewPlan(tr.Clone(), cfg)
			require.NoError(t, err)
			require.Equal(t, a.Meta(), b.Meta(), "trial %d method %s: %s", trial, m, planDescribe(tr))
			require.Equal(t, a.IO, b.IO, "trial %d method %s", trial, m)
		}
	}
}

func planReadSpec(t *testing.T, name string) *replay.SpecTree {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "replay", "testdata", "deft", name))
	require.NoError(t, err)
	s, err := replay.ParseSpeculativeJSON(data)
	require.NoError(t, err, name)
	return s
}

func TestPlanCoverageSpeculativeTrees(t *testing.T) {
	rng := planRNG(t)
	for _, f := range []struct {
		name string
		size int
	}{{"APPS_tree_size5.json", 6}, {"APPS_tree_size32.json", 32}} {
		spec := planReadSpec(t, f.name)
		require.Equal(t, f.size, spec.Size(), f.name)
		for _, prefix := range []int{1, 1 + rng.IntN(64), 1 + rng.IntN(4000), 1 + rng.IntN(4000)} {
			tr := spec.TreeWithPrefix(prefix)
			require.NotNil(t, tr, "%s prefix %d", f.name, prefix)
			require.Len(t, tr.Queries, spec.Size())
			require.Equal(t, prefix+spec.Size(), tr.TotalTokens())
			c := newPlanCoverage(t, tr)
			ctx := fmt.Sprintf("%s prefix %d", f.name, prefix)
			for _, block := range planBlocks(rng, tr) {
				for _, m := range treeattn.Methods {
					for _, lim := range planLimits {
						shape := planShapes[rng.IntN(len(planShapes))]
						planCheck(t, c, treeattn.Config{Method: m, Shape: shape, KV: planKV(rng), Limits: lim, BlockTokens: block}, ctx)
					}
				}
			}
		}
	}
}

// planChain3 is a 10-token root, a 5-token child and a 3-token grandchild.
func planChain3(queries ...treeattn.Query) *treeattn.Tree {
	tr := &treeattn.Tree{
		Nodes:   []treeattn.Node{{Parent: -1, Tokens: 10}, {Parent: 0, Tokens: 5}, {Parent: 1, Tokens: 3}},
		Queries: queries,
	}
	tr.AssignContiguousSlots()
	return tr
}

func TestPlanCoverageEdgeCases(t *testing.T) {
	// A leaf of 70 tokens queried at every offset: masks of three words.
	leafAll := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: 4}, {Parent: 0, Tokens: 70}}}
	for off := 69; off >= 0; off-- {
		leafAll.Queries = append(leafAll.Queries, treeattn.Query{Node: 1, Offset: off})
	}
	leafAll.AssignContiguousSlots()

	cases := []struct {
		name string
		tree *treeattn.Tree
	}{
		{"single token", &treeattn.Tree{
			Nodes:   []treeattn.Node{{Parent: -1, Tokens: 1, Slots: []int32{0}}},
			Queries: []treeattn.Query{{Node: 0, Offset: 0}},
		}},
		{"single token far slot", &treeattn.Tree{
			Nodes:   []treeattn.Node{{Parent: -1, Tokens: 1, Slots: []int32{100000}}},
			Queries: []treeattn.Query{{Node: 0, Offset: 0}},
		}},
		{"root first token only", planChain3(treeattn.Query{Node: 0, Offset: 0})},
		{"root middle only", planChain3(treeattn.Query{Node: 0, Offset: 4})},
		{"root last only", planChain3(treeattn.Query{Node: 0, Offset: 9})},
		{"root offsets and leaf", planChain3(
			treeattn.Query{Node: 0, Offset: 0}, treeattn.Query{Node: 2, Offset: 2},
			treeattn.Query{Node: 0, Offset: 4}, treeattn.Query{Node: 1, Offset: 0})},
		{"same position twice", planChain3(
			treeattn.Query{Node: 2, Offset: 1}, treeattn.Query{Node: 2, Offset: 1},
			treeattn.Query{Node: 0, Offset: 9}, treeattn.Query{Node: 0, Offset: 9})},
		{"same root token three times", planChain3(
			treeattn.Query{Node: 0, Offset: 0}, treeattn.Query{Node: 0, Offset: 0}, treeattn.Query{Node: 0, Offset: 0})},
		{"unseen siblings and reversed slots", &treeattn.Tree{
			Nodes: []treeattn.Node{
				{Parent: -1, Tokens: 3, Slots: []int32{9, 5, 1}},
				{Parent: 0, Tokens: 4, Slots: []int32{20, 0, 7, 3}},
				{Parent: 0, Tokens: 2, Slots: []int32{2, 40}},
				{Parent: 1, Tokens: 1, Slots: []int32{8}},
			},
			Queries: []treeattn.Query{{Node: 1, Offset: 1}},
		}},
		{"leaf queried at every offset", leafAll},
		{"speculative star", treeattn.SpeculativeStar(37, 40)},
		{"few shot", treeattn.FewShotTree(50, 3, 7)},
	}
	blocks := []int{0, 1, 2, 3, 7, 32, 33, 1000}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, tc.tree.Validate(tc.tree.NumSlots()))
			c := newPlanCoverage(t, tc.tree)
			for _, lim := range planLimits {
				for _, block := range blocks {
					for _, m := range treeattn.Methods {
						planCheck(t, c, treeattn.Config{Method: m, Shape: treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}, Limits: lim, BlockTokens: block}, tc.name)
					}
				}
			}
		})
	}

	// The single-token tree gives one single-token item whatever the method.
	single := cases[0].tree
	for _, m := range treeattn.Methods {
		p, err := treeattn.NewPlan(single, treeattn.Config{Method: m, Shape: planLlama3, Limits: planLavapipe})
		require.NoError(t, err, m)
		assert.Equal(t, []int{1}, p.ItemTokens(), m)
		assert.Equal(t, 1, p.Partials, m)
	}
}

// planAllSeenTree returns a random tree in which every token is seen by some
// query: up to extra random queries plus one at the last token of every
// leaf, shuffled.
func planAllSeenTree(rng *rand.Rand, kind treeattn.TreeKind, shuffle bool, maxNodes, extra int) *treeattn.Tree {
	tr := treeattn.RandomTree(rng, treeattn.GenOptions{
		MaxNodes:      1 + rng.IntN(maxNodes),
		MaxNodeTokens: 1 + rng.IntN(600),
		MaxQueries:    1 + rng.IntN(extra),
		Kind:          kind,
		ShuffleSlots:  shuffle,
	})
	for _, leaf := range tr.Leaves() {
		tr.Queries = append(tr.Queries, treeattn.Query{Node: leaf, Offset: tr.Nodes[leaf].Tokens - 1})
	}
	rng.Shuffle(len(tr.Queries), func(i, j int) { tr.Queries[i], tr.Queries[j] = tr.Queries[j], tr.Queries[i] })
	return tr
}

// TestPlanFlattenBlocksAreEven checks that flatten cuts the depth-first token
// order into blocks of exactly BlockTokens (the last may be shorter) when
// every token is seen, so no block is dropped. Where the planner may split
// large blocks further for balance (see planUnsplit), it checks that blocks
// only get smaller and every token is still read.
func TestPlanFlattenBlocksAreEven(t *testing.T) {
	rng := planRNG(t)
	// Group size 1 and few queries keep one row tile, so that blocks of up
	// to planSmallPasses token tiles are never split.
	shape := treeattn.Shape{QHeads: 8, KVHeads: 8, HeadDim: 128}
	exact, weak := 0, 0
	for trial := range 40 {
		kind := []treeattn.TreeKind{treeattn.KindChain, treeattn.KindStar, treeattn.KindRandom}[trial%3]
		tr := planAllSeenTree(rng, kind, trial%2 == 0, 24, 4)
		lim := planLimits[trial%2]
		tiles, err := treeattn.ChooseTiles(shape, lim)
		require.NoError(t, err)
		rowTiles := (len(tr.Queries)*shape.GroupSize() + tiles.Rows - 1) / tiles.Rows
		maxEven := max(1, planSmallPasses/rowTiles) * tiles.Tokens
		total := tr.TotalTokens()
		c := newPlanCoverage(t, tr)
		require.Equal(t, total, c.seenTokens, "every token is seen")
		for _, block := range []int{0, 1 + rng.IntN(8), 1 + rng.IntN(maxEven), maxEven, 1 + rng.IntN(total+10)} {
			cfg := treeattn.Config{Method: treeattn.MethodFlatten, Shape: shape, Limits: lim, BlockTokens: block}
			p := planCheck(t, c, cfg, fmt.Sprintf("trial %d %v", trial, kind))
			ctx := fmt.Sprintf("trial %d %v block %d (chosen %d), tiles %+v: %s", trial, kind, block, p.BlockTokens, p.Tiles, planDescribe(tr))
			items := p.ItemTokens()
			sum := 0
			for _, n := range items {
				require.LessOrEqual(t, n, p.BlockTokens, ctx)
				sum += n
			}
			require.GreaterOrEqual(t, sum, total, "%s: flatten reads every token", ctx)
			if !planUnsplit(c, p) {
				weak++
				continue
			}
			exact++
			for i, n := range items[:len(items)-1] {
				require.Equal(t, p.BlockTokens, n, "%s: item %d of %d", ctx, i, len(items))
			}
			require.Equal(t, total, sum, "%s: flatten reads every token once", ctx)
			require.Equal(t, (total+p.BlockTokens-1)/p.BlockTokens, p.Items, ctx)
		}
	}
	t.Logf("%d plans checked for even blocks, %d only for bounds", exact, weak)
	require.Greater(t, exact, 100, "too few plans in the unsplit regime")
}

func TestPlanFlattenAutoBlock(t *testing.T) {
	// The automatic block is a whole number of tiles, between one and twelve.
	rng := planRNG(t)
	for trial := range 20 {
		tr := planAllSeenTree(rng, treeattn.KindRandom, false, 32, 64)
		for _, lim := range planLimits {
			for _, m := range []treeattn.Method{treeattn.MethodFlatten, treeattn.MethodDenseMask} {
				p, err := treeattn.NewPlan(tr, treeattn.Config{Method: m, Shape: planLlama3, Limits: lim})
				require.NoError(t, err)
				tile := p.Tiles.Tokens
				require.Positive(t, tile)
				assert.Zero(t, p.BlockTokens%tile, "trial %d %s: block %d, tile %d", trial, m, p.BlockTokens, tile)
				assert.GreaterOrEqual(t, p.BlockTokens, tile, "trial %d %s", trial, m)
				assert.LessOrEqual(t, p.BlockTokens, 12*tile, "trial %d %s", trial, m)
			}
		}
	}
}

func TestPlanIOAccounting(t *testing.T) {
	rng := planRNG(t)
	for trial := range 24 {
		kind := []treeattn.TreeKind{treeattn.KindChain, treeattn.KindStar, treeattn.KindRandom}[trial%3]
		tr := planAllSeenTree(rng, kind, trial%2 == 1, 32, 64)
		shape := planShapes[rng.IntN(len(planShapes))]
		kv := planKV(rng)
		kvRow := planKVRow(shape, kv)
		for _, lim := range planLimits {
			ctx := fmt.Sprintf("trial %d %v shape %+v %s shared %d: %s", trial, kind, shape, kv, lim.SharedMemory, planDescribe(tr))
			flat, err := treeattn.NewPlan(tr, treeattn.Config{Method: treeattn.MethodFlatten, Shape: shape, KV: kv, Limits: lim})
			require.NoError(t, err, ctx)
			require.LessOrEqual(t, flat.IO.KVUniqueBytes, flat.IO.KVBytes, ctx)

			fd, err := treeattn.NewPlan(tr, treeattn.Config{Method: treeattn.MethodFlashDecoding, Shape: shape, KV: kv, Limits: lim})
			require.NoError(t, err, ctx)
			// One query per item: each item's rows are the query's heads of
			// one KV group, re-read once per row tile.
			rowTiles := int64((shape.GroupSize() + fd.Tiles.Rows - 1) / fd.Tiles.Rows)
			if shape.GroupSize() <= fd.Tiles.Rows {
				require.Equal(t, int64(1), rowTiles)
			}
			require.Equal(t, int64(fd.IO.PathTokens)*kvRow*rowTiles, fd.IO.KVBytes, ctx)
			require.Equal(t, int64(tr.SumPathLengths()), int64(fd.IO.PathTokens), ctx)
			require.Zero(t, fd.IO.MaskBytes, ctx)
		}
	}
}

func TestPlanIOFewShotFlattenBeatsFlashDecoding(t *testing.T) {
	tr := treeattn.FewShotTree(4000, 50, 400)
	require.NotNil(t, tr)
	kvRow := planKVRow(planLlama3, treeattn.KVF16)
	for _, lim := range planLimits {
		plans := map[treeattn.Method]*treeattn.Plan{}
		for _, m := range treeattn.Methods {
			p, err := treeattn.NewPlan(tr, treeattn.Config{Method: m, Shape: planLlama3, KV: treeattn.KVF16, Limits: lim})
			require.NoError(t, err, m)
			plans[m] = p
			t.Logf("shared %d: %-13s tiles %+v block %4d items %5d KV %7.1f MiB (%.2fx unique) total %7.1f MiB",
				lim.SharedMemory, m, p.Tiles, p.BlockTokens, p.Items, float64(p.IO.KVBytes)/(1<<20),
				float64(p.IO.KVBytes)/float64(p.IO.KVUniqueBytes), float64(p.IO.Total())/(1<<20))
		}
		flat, fd := plans[treeattn.MethodFlatten], plans[treeattn.MethodFlashDecoding]
		require.Equal(t, int64(50*(4000+400))*kvRow, fd.IO.KVBytes, "flash decoding reads every path once")
		require.Equal(t, int64(4000+50*400)*kvRow, flat.IO.KVUniqueBytes)
		ratio := float64(flat.IO.KVBytes) / float64(fd.IO.KVBytes)
		t.Logf("shared %d: flatten/flashdecoding KV bytes %.3f", lim.SharedMemory, ratio)
		assert.Less(t, flat.IO.KVBytes, fd.IO.KVBytes, "flatten must read less KV than flash decoding")
		assert.LessOrEqual(t, flat.IO.KVUniqueBytes, flat.IO.KVBytes)
		assert.Less(t, flat.IO.Total(), fd.IO.Total(), "flatten must move fewer bytes in all")
		// Every query sees all of the root and all of its own branch, so
		// per-node items need no mask.
		for _, m := range []treeattn.Method{treeattn.MethodNode, treeattn.MethodNodeChunk, treeattn.MethodFlashDecoding} {
			assert.Zero(t, plans[m].IO.MaskBytes, "%s needs no mask on a few-shot tree", m)
		}
		assert.Positive(t, flat.IO.MaskBytes, "flatten blocks that straddle two branches need a mask")
		assert.Positive(t, plans[treeattn.MethodDenseMask].IO.MaskBytes)
	}
}

func TestPlanRejectsBadConfig(t *testing.T) {
	good := func() *treeattn.Tree {
		return planChain3(treeattn.Query{Node: 2, Offset: 2}, treeattn.Query{Node: 0, Offset: 3})
	}
	goodCfg := func() treeattn.Config {
		return treeattn.Config{Method: treeattn.MethodFlatten, Shape: planLlama3, Limits: planLavapipe}
	}
	for _, m := range treeattn.Methods {
		cfg := goodCfg()
		cfg.Method = m
		_, err := treeattn.NewPlan(good(), cfg)
		require.NoError(t, err, "the base case must be valid for %s", m)
	}
	unassigned := good()
	unassigned.Nodes[1].Slots = nil
	duplicate := good()
	duplicate.Nodes[2].Slots[0] = duplicate.Nodes[0].Slots[0]
	badOffset := good()
	badOffset.Queries[0].Offset = 3
	noQueries := good()
	noQueries.Queries = nil
	shortSlots := good()
	shortSlots.Nodes[1].Slots = shortSlots.Nodes[1].Slots[:2]
	badParent := good()
	badParent.Nodes[1].Parent = 2

	cases := []struct {
		name   string
		tree   *treeattn.Tree
		mutate func(*treeattn.Config)
		msg    string
	}{
		{"nil tree", nil, nil, "nil tree"},
		{"unassigned slots", unassigned, nil, "without slots"},
		{"duplicate slot", duplicate, nil, "used twice"},
		{"query offset outside node", badOffset, nil, "offset 3"},
		{"no queries", noQueries, nil, "no queries"},
		{"slots shorter than tokens", shortSlots, nil, "slots"},
		{"parent cycle", badParent, nil, "cycle"},
		{"negative block", nil, func(c *treeattn.Config) { c.BlockTokens = -1 }, "negative"},
		{"NaN scale", nil, func(c *treeattn.Config) { c.Scale = math.NaN() }, "scale"},
		{"+Inf scale", nil, func(c *treeattn.Config) { c.Scale = math.Inf(1) }, "scale"},
		{"-Inf scale", nil, func(c *treeattn.Config) { c.Scale = math.Inf(-1) }, "scale"},
		{"negative scale", nil, func(c *treeattn.Config) { c.Scale = -0.125 }, "scale"},
		{"scale beyond float32", nil, func(c *treeattn.Config) { c.Scale = 1e39 }, "scale"},
		{"unknown method", nil, func(c *treeattn.Config) { c.Method = "bogus" }, "unknown method"},
		{"empty method", nil, func(c *treeattn.Config) { c.Method = "" }, "unknown method"},
		{"unknown KV type", nil, func(c *treeattn.Config) { c.KV = treeattn.KVType(7) }, "KV type"},
		{"q heads not a multiple of kv heads", nil, func(c *treeattn.Config) { c.Shape = treeattn.Shape{QHeads: 6, KVHeads: 4, HeadDim: 64} }, "multiple"},
		{"zero shape", nil, func(c *treeattn.Config) { c.Shape = treeattn.Shape{} }, "positive"},
		{"head dim 4096", nil, func(c *treeattn.Config) { c.Shape = treeattn.Shape{QHeads: 8, KVHeads: 8, HeadDim: 4096} }, "head dim"},
		{"odd head dim", nil, func(c *treeattn.Config) { c.Shape = treeattn.Shape{QHeads: 8, KVHeads: 8, HeadDim: 63} }, "head dim"},
		{"head dim 512 in 8 KiB", nil, func(c *treeattn.Config) {
			c.Shape = treeattn.Shape{QHeads: 8, KVHeads: 8, HeadDim: 512}
			c.Limits.SharedMemory = 8192
		}, "shared memory"},
		{"no shared memory", nil, func(c *treeattn.Config) { c.Limits.SharedMemory = 0 }, "shared memory"},
		{"too few invocations", nil, func(c *treeattn.Config) { c.Limits.MaxInvocations = 2 }, "invocations"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := tc.tree
			if tr == nil && tc.name != "nil tree" {
				tr = good()
			}
			cfg := goodCfg()
			if tc.mutate != nil {
				tc.mutate(&cfg)
			}
			var p *treeattn.Plan
			var err error
			require.NotPanics(t, func() { p, err = treeattn.NewPlan(tr, cfg) })
			require.Error(t, err)
			assert.Nil(t, p)
			assert.Contains(t, err.Error(), tc.msg)
			assert.Contains(t, err.Error(), "plan")
		})
	}

	// Scale 0 means 1/sqrt(HeadDim); the plan records the scale it uses.
	p, err := treeattn.NewPlan(good(), goodCfg())
	require.NoError(t, err)
	assert.InDelta(t, 1/math.Sqrt(128), p.Scale, 1e-15)
	// The largest head dim that fits: 512 on an H100's 48 KiB.
	cfg := goodCfg()
	cfg.Shape = treeattn.Shape{QHeads: 8, KVHeads: 8, HeadDim: 512}
	cfg.Limits = planH100
	_, err = treeattn.NewPlan(good(), cfg)
	assert.NoError(t, err)
	// ParseMethod accepts exactly the listed methods.
	for _, m := range treeattn.Methods {
		got, err := treeattn.ParseMethod(string(m))
		require.NoError(t, err)
		assert.Equal(t, m, got)
	}
	_, err = treeattn.ParseMethod("Flatten")
	assert.Error(t, err)
	assert.True(t, slices.Contains(treeattn.Methods, treeattn.MethodFlatten))
}
