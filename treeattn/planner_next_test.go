package treeattn_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/replay"
	"github.com/deft-vk/deft/treeattn"
	"github.com/stretchr/testify/require"
)

var nextShapes = []treeattn.Shape{
	{QHeads: 32, KVHeads: 8, HeadDim: 128},
	{QHeads: 4, KVHeads: 2, HeadDim: 64},
	{QHeads: 8, KVHeads: 8, HeadDim: 16},
}

// nextLimits: the H200's (coopmat for speculative trees), lavapipe's, and a
// tiny K/V window that makes plans bind K and V in windows.
var nextLimits = []treeattn.Limits{
	{SharedMemory: 49152, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{1 << 31, 65535, 65535},
		CoopMat: treeattn.CoopMat{M: 16, N: 16, K: 16, Subgroup: 32}},
	{SharedMemory: 32768, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{65535, 65535, 65535}},
	treeattn.WithKVWindow(treeattn.Limits{SharedMemory: 32768, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{65535, 65535, 65535}}, 256),
}

// requireSameAsScratch plans t from scratch with a fresh Planner and
// requires got to be that plan, word for word.
func requireSameAsScratch(t *testing.T, got *treeattn.Plan, gotErr error, tr *treeattn.Tree, cfg treeattn.Config, ctx string) {
	t.Helper()
	var fresh treeattn.Planner
	want, wantErr := fresh.Plan(tr, cfg)
	if wantErr != nil {
		require.Error(t, gotErr, "%s: from scratch: %v", ctx, wantErr)
		return
	}
	require.NoError(t, gotErr, ctx)
	require.Equal(t, want.Config, got.Config, ctx)
	require.Equal(t, want.Tiles, got.Tiles, ctx)
	require.Equal(t, want.Variant, got.Variant, ctx)
	require.Equal(t, want.NumSlots, got.NumSlots, ctx)
	require.Equal(t, want.Items, got.Items, ctx)
	require.Equal(t, want.Partials, got.Partials, ctx)
	require.Equal(t, want.IO, got.IO, ctx)
	require.Equal(t, want.Windows, got.Windows, ctx)
	require.Equal(t, want.Meta(), got.Meta(), "%s: metadata", ctx)
}

// Decoding sequences replayed onto a host kvpool (few-shot branches, a
// Tree-of-Thoughts trace with forks and prunes, speculative token trees
// drafted and accepted): PlanNext, told that a step extends the last when
// its Layout is unchanged, makes exactly the plan a fresh Planner makes,
// for every method, and copies units on the steps that only append.
func TestPlanNextMatchesPlanOnReplays(t *testing.T) {
	rng := gputest.Rand(t)
	raw, err := os.ReadFile("../replay/testdata/deft/APPS_tree_size32.json")
	require.NoError(t, err)
	spec, err := replay.ParseSpeculativeJSON(raw)
	require.NoError(t, err)
	traces, err := replay.ReadReasoningFile("../replay/testdata/deft/sorting128ToT_first3.json")
	require.NoError(t, err)
	rt := replay.Completed(traces)[0]
	workloads := map[string]func() (replay.Workload, error){
		"fewshot":   func() (replay.Workload, error) { return replay.NewFewShot(300, 5, 40) },
		"reasoning": func() (replay.Workload, error) { return replay.NewReasoning(rt) },
		"speculative": func() (replay.Workload, error) {
			return replay.NewSpeculative(spec, replay.SpecOptions{Prefix: 200, Steps: 25})
		},
	}
	for name, newW := range workloads {
		for _, m := range treeattn.Methods {
			lim := rng.IntN(len(nextLimits))
			cfg := treeattn.Config{Method: m, Shape: nextShapes[rng.IntN(len(nextShapes))], KV: treeattn.KVType(rng.IntN(2)),
				Limits: nextLimits[lim], SlotsUnique: rng.IntN(2) == 0, KernelVariant: nextVariant(rng, lim, rng.IntN(2))}
			if rng.IntN(2) == 0 {
				cfg.BlockTokens = 1 + rng.IntN(100)
			}
			w, err := newW()
			require.NoError(t, err)
			pool, err := kvpool.NewHost(kvpool.Config{Layers: 1, KVHeads: 1, HeadDim: 4, KV: treeattn.KVF32, BudgetBytes: 1 << 22})
			require.NoError(t, err)
			d := replay.NewPoolDriver(pool)
			var inc treeattn.Planner
			layout := ^uint64(0)
			steps, reused, appended := 0, 0, 0
			for st := range replay.Steps(w) {
				if steps == 300 {
					break // the trace's first iterations (it has thousands)
				}
				step, err := d.Begin(st)
				require.NoError(t, err)
				same := step.Layout == layout
				layout = step.Layout
				got, gotErr := inc.PlanNext(step.Tree, cfg, same)
				requireSameAsScratch(t, got, gotErr, step.Tree, cfg, fmt.Sprintf("%s %s step %d (%+v)", name, m, st.Index, cfg))
				steps++
				reused += inc.Reused()
				if same {
					appended++
				}
				require.NoError(t, d.End(st))
			}
			t.Logf("%s %s (limits %d, block %d): %d steps, %d extending the last, %d units copied",
				name, m, lim, cfg.BlockTokens, steps, appended, reused)
			if name == "fewshot" {
				require.Positive(t, appended, "few-shot decoding steps extend the last")
			}
		}
	}
}

// Random trees grown step by step: random nodes gain tokens (in shuffled
// new slots), queries move within their nodes, and now and then the
// promise is broken (a new node, a shrunk node) or the tree has a repeated
// slot; PlanNext matches a fresh plan throughout, or fails as it fails.
func TestPlanNextMatchesPlanOnRandomGrowth(t *testing.T) {
	rng := gputest.Rand(t)
	copied, copiedClasses := 0, 0
	for trial := range 24 {
		kind := []treeattn.TreeKind{treeattn.KindRandom, treeattn.KindChain, treeattn.KindStar}[trial%3]
		tr := treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 1 + rng.IntN(30), MaxNodeTokens: 1 + rng.IntN(200),
			MaxQueries: 1 + rng.IntN(60), Kind: kind, ShuffleSlots: rng.IntN(2) == 0})
		m := treeattn.Methods[trial%len(treeattn.Methods)]
		lim := rng.IntN(len(nextLimits))
		cfg := treeattn.Config{Method: m, Shape: nextShapes[rng.IntN(len(nextShapes))], KV: treeattn.KVF16,
			Limits: nextLimits[lim], SlotsUnique: rng.IntN(3) == 0, KernelVariant: nextVariant(rng, lim, trial)}
		if rng.IntN(2) == 0 {
			cfg.BlockTokens = 1 + rng.IntN(64)
		}
		var inc treeattn.Planner
		for step := range 12 {
			ctx := fmt.Sprintf("trial %d %s step %d (%+v)", trial, m, step, cfg)
			got, err := inc.PlanNext(tr, cfg, true)
			requireSameAsScratch(t, got, err, tr, cfg, ctx)
			copied += inc.Reused()
			if err == nil && len(got.Classes) > 1 {
				copiedClasses += inc.Reused()
			}
			tr = grownTree(rng, tr, cfg.SlotsUnique)
		}
	}
	t.Logf("%d units copied, %d into plans of several item classes", copied, copiedClasses)
	require.Positive(t, copied)
}

// nextVariant is a test's kernel variant: on the H200's limits (nextLimits
// index 0) coopmat every other trial (item classes), else automatic or
// coopmat_v1; automatic otherwise.
func nextVariant(rng *rand.Rand, lim, trial int) string {
	if lim != 0 {
		return ""
	}
	if trial%2 == 0 {
		return treeattn.VariantCoopMat
	}
	return []string{"", treeattn.VariantCoopMatV1}[rng.IntN(2)]
}

// grownTree returns a copy of t one random step later (see
// TestPlanNextMatchesPlanOnRandomGrowth).
func grownTree(rng *rand.Rand, t *treeattn.Tree, unique bool) *treeattn.Tree {
	c := t.Clone()
	next := int32(c.NumSlots()) + int32(rng.IntN(50))
	switch r := rng.IntN(20); {
	case r == 0: // a new leaf: not an extension
		p := rng.IntN(len(c.Nodes))
		c.Nodes = append(c.Nodes, treeattn.Node{Parent: p, Tokens: 1, Slots: []int32{next}})
		c.Queries = append(c.Queries, treeattn.Query{Node: len(c.Nodes) - 1})
		return c
	case r == 1 && !unique: // a repeated slot among the new ones
		n := rng.IntN(len(c.Nodes))
		c.Nodes[n].Slots = append(c.Nodes[n].Slots, c.Nodes[0].Slots[0])
		c.Nodes[n].Tokens++
		return c
	case r == 2: // a node shrinks
		for i := range c.Nodes {
			if c.Nodes[i].Tokens > 1 {
				c.Nodes[i].Tokens--
				c.Nodes[i].Slots = c.Nodes[i].Slots[:c.Nodes[i].Tokens]
				for qi, q := range c.Queries {
					if q.Node == i && q.Offset >= c.Nodes[i].Tokens {
						c.Queries[qi].Offset = c.Nodes[i].Tokens - 1
					}
				}
				return c
			}
		}
	}
	for range rng.IntN(4) {
		n := rng.IntN(len(c.Nodes))
		k := 1 + rng.IntN(20)
		add := make([]int32, k)
		for i := range add {
			add[i] = next + int32(i)
		}
		if rng.IntN(2) == 0 {
			rng.Shuffle(k, func(i, j int) { add[i], add[j] = add[j], add[i] })
		}
		next += int32(k)
		c.Nodes[n].Slots = append(c.Nodes[n].Slots, add...)
		c.Nodes[n].Tokens += k
	}
	for qi := range c.Queries {
		if rng.IntN(3) == 0 {
			c.Queries[qi].Offset = rng.IntN(c.Nodes[c.Queries[qi].Node].Tokens)
		}
	}
	return c
}

// Planning step n+1 after step n with a warm Planner allocates nothing,
// and copies the prompt's blocks, in every variant (the H200 picks the
// coopmat item classes for this tree by itself).
func TestPlanNextAllocatesNothing(t *testing.T) {
	tr := treeattn.FewShotTree(4000, 50, 400)
	tr.AssignContiguousSlots()
	next := treeattn.NextStep(tr)
	for _, variant := range []string{"", treeattn.VariantScalar, treeattn.VariantCoopMatV1} {
		cfg := treeattn.Config{Method: treeattn.MethodFlatten, Shape: treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 128},
			Limits: nextLimits[0], KernelVariant: variant}
		var pl treeattn.Planner
		var p *treeattn.Plan
		step := func() {
			if _, err := pl.Plan(tr, cfg); err != nil {
				t.Fatal(err)
			}
			var err error
			if p, err = pl.PlanNext(next, cfg, true); err != nil {
				t.Fatal(err)
			}
		}
		step()
		if variant == "" {
			require.Equal(t, treeattn.VariantCoopMat, p.Variant)
			require.Greater(t, len(p.Classes), 1, "item classes")
		}
		require.Positive(t, pl.Reused(), "%s: the prompt's blocks are copied", p.Variant)
		requireSameAsScratch(t, p, nil, next, cfg, p.Variant)
		require.Zero(t, testing.AllocsPerRun(5, step), "%s: allocations per planned step", p.Variant)
	}
}
