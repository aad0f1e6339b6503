package treeattn

import (
	"fmt"

	"slices"
	"testing"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/stretchr/testify/require"
)

// requireSamePlan fails unless the fast planner reproduces the legacy
// planner's plan: the same items (slots, queries, masks, partials) in the
// same order, the same reduction index and IO (metadata may be smaller, as
// items share slot lists): that is what keeps attention outputs
// bit-identical.
func requireSamePlan(t *testing.T, pl *Planner, tr *Tree, cfg Config, ctx string) {
	t.Helper()
	want, wantErr := legacyNewPlan(tr, cfg)
	got, err := pl.Plan(tr, cfg)
	if wantErr != nil {
		require.Error(t, err, "%s: legacy planner failed with %v", ctx, wantErr)
		return
	}
	require.NoError(t, err, ctx)
	require.Equal(t, want.Items, got.Items, "%s: items", ctx)
	require.Equal(t, want.Partials, got.Partials, "%s: partials", ctx)
	wantIO, gotIO := want.IO, got.IO
	require.LessOrEqual(t, gotIO.MetadataBytes, wantIO.MetadataBytes, "%s: metadata bytes", ctx)
	wantIO.MetadataBytes, gotIO.MetadataBytes = 0, 0
	require.Equal(t, wantIO, gotIO, "%s: IO", ctx)
	require.Equal(t, want.Tiles, got.Tiles, "%s: tiles", ctx)
	require.Equal(t, want.Config, got.Config, "%s: config", ctx)
	require.Equal(t, want.NumSlots, got.NumSlots, "%s: slots", ctx)
	for i := 0; i < want.Items; i++ {
		w, g := want.itemContent(i), got.itemContent(i)
		if !slices.Equal(w, g) {
			t.Fatalf("%s: item %d differs:\nlegacy %v\nnow    %v", ctx, i, w, g)
		}
	}
	require.Equal(t, want.meta[want.offsetsOff:], got.meta[got.offsetsOff:], "%s: reduction index", ctx)
}

// itemContent flattens item i's record with its slot, query and mask lists
// (offsets aside: lists may be shared between items).
func (p *Plan) itemContent(i int) []uint32 {
	r := p.item(i)
	out := []uint32{r.NumSlots, r.NumQueries, r.MaskWords, r.PartialBase}
	out = append(out, p.meta[r.SlotsOff:r.SlotsOff+r.NumSlots]...)
	out = append(out, p.meta[r.QueriesOff:r.QueriesOff+r.NumQueries]...)
	if r.MaskWords != 0 {
		out = append(out, p.meta[r.MaskOff:r.MaskOff+r.NumSlots*r.MaskWords]...)
	}
	return out
}

var equivShapes = []Shape{
	{QHeads: 4, KVHeads: 2, HeadDim: 64},
	{QHeads: 32, KVHeads: 8, HeadDim: 128},
	{QHeads: 8, KVHeads: 8, HeadDim: 16},
	{QHeads: 64, KVHeads: 1, HeadDim: 128},
	{QHeads: 1, KVHeads: 1, HeadDim: 32},
}

var equivLimits = []Limits{
	{SharedMemory: 32768, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{65535, 65535, 65535}},
	{SharedMemory: 49152, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{1 << 31, 65535, 65535}},
}

// The fast planner equals the legacy one on random trees of every shape,
// for every method, with automatic and explicit blocks and pass caps that
// force token chunks; one Planner is reused throughout, as in decoding.
func TestPlannerMatchesLegacy(t *testing.T) {
	rng := gputest.Rand(t)
	var pl Planner
	plans := 0
	for trial := range 60 {
		kind := []TreeKind{KindRandom, KindChain, KindStar}[trial%3]
		tr := RandomTree(rng, GenOptions{MaxNodes: 1 + rng.IntN(40), MaxNodeTokens: 1 + rng.IntN(500),
			MaxQueries: 1 + rng.IntN(200), Kind: kind, ShuffleSlots: rng.IntN(2) == 0})
		for _, m := range Methods {
			cfg := Config{Method: m, Shape: equivShapes[rng.IntN(len(equivShapes))], KV: KVType(rng.IntN(2)),
				Limits: equivLimits[rng.IntN(len(equivLimits))]}
			switch rng.IntN(3) {
			case 1:
				cfg.BlockTokens = 1 + rng.IntN(200)
			case 2:
				cfg.MaxPasses = 1 + rng.IntN(4)
				cfg.BlockTokens = 1 + rng.IntN(tr.TotalTokens()+1)
			}
			requireSamePlan(t, &pl, tr, cfg, fmt.Sprintf("trial %d %v %s %+v", trial, kind, m, cfg))
			plans++
		}
	}
	t.Logf("%d plans identical to the legacy planner", plans)
}

// The same on the snapshot shapes of the benchmarks (few-shot, speculative
// star, deep chains with queries at every position: branch prefill).
func TestPlannerMatchesLegacyOnSnapshots(t *testing.T) {
	prefill := &Tree{Nodes: []Node{{Parent: -1, Tokens: 300}, {Parent: 0, Tokens: 257}}}
	for off := range 257 {
		prefill.Queries = append(prefill.Queries, Query{Node: 1, Offset: off})
	}
	prefill.AssignContiguousSlots()
	trees := map[string]*Tree{
		"fewshot-b50": FewShotTree(4000, 50, 400), "fewshot-b20": FewShotTree(4000, 20, 400),
		"spec-star-256": SpeculativeStar(1000, 256), "prefill": prefill,
	}
	var pl Planner
	for name, tr := range trees {
		if !tr.SlotsAssigned() {
			tr.AssignContiguousSlots()
		}
		for _, m := range Methods {
			for _, lim := range equivLimits {
				cfg := Config{Method: m, Shape: Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}, Limits: lim}
				requireSamePlan(t, &pl, tr, cfg, name+"/"+string(m))
			}
		}
	}
}

// Planning a decoding step with a warm Planner allocates nothing.
func TestPlannerSteadyStateAllocatesNothing(t *testing.T) {
	tr := FewShotTree(4000, 50, 400)
	tr.AssignContiguousSlots()
	cfg := Config{Method: MethodFlatten, Shape: Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}, Limits: equivLimits[1]}
	var pl Planner
	_, err := pl.Plan(tr, cfg)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(5, func() {
		if _, err := pl.Plan(tr, cfg); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "allocations per planned step")
}

// The planner's one-pass slot check rejects what Validate rejects, with a
// reusable Planner, and never panics.
func TestPlannerRejectsBadSlots(t *testing.T) {
	var pl Planner
	cfg := Config{Method: MethodFlatten, Shape: Shape{QHeads: 4, KVHeads: 1, HeadDim: 64}, Limits: equivLimits[0]}
	good := &Tree{Nodes: []Node{{Parent: -1, Tokens: 3, Slots: []int32{0, 1, 2}}, {Parent: 0, Tokens: 2, Slots: []int32{3, 4}}},
		Queries: []Query{{Node: 1, Offset: 1}}}
	_, err := pl.Plan(good, cfg)
	require.NoError(t, err)
	cases := map[string][]int32{
		"duplicate":      {5, 2},
		"negative":       {-1, 7},
		"huge duplicate": {1<<31 - 1, 1<<31 - 1},
		"wrapping run":   {1<<31 - 1, -1 << 31},
	}
	for name, slots := range cases {
		bad := good.Clone()
		bad.Nodes[1].Slots = slots
		_, err := pl.Plan(bad, cfg)
		require.Error(t, err, name)
		unique := cfg
		unique.SlotsUnique = true
		if name != "duplicate" && name != "huge duplicate" {
			_, err := pl.Plan(bad, unique)
			require.Error(t, err, name+" (unique)")
		}
		require.Error(t, bad.Validate(bad.NumSlots()), name)
		t.Logf("%s: %v", name, err)
	}
	_, err = pl.Plan(good, cfg)
	require.NoError(t, err, "the planner recovers after bad trees")
	// Huge, sparse slot numbers are valid (the general check handles them).
	sparse := good.Clone()
	sparse.Nodes[1].Slots = []int32{1<<31 - 1, 9}
	p, err := pl.Plan(sparse, cfg)
	require.NoError(t, err)
	require.Equal(t, 1<<31, p.NumSlots)
}

// BenchmarkLegacyPlan times the planner this package had before the
// Planner (the "before" column of docs/BENCHMARKS.md's planning table), on
// the synthetic snapshot trees (BenchmarkPlan has the sorting trace too).
func BenchmarkLegacyPlan(b *testing.B) {
	trees := []struct {
		name string
		tree *Tree
	}{{"fewshot-b50", FewShotTree(4000, 50, 400)}, {"fewshot-b20", FewShotTree(4000, 20, 400)}, {"spec-star-256", SpeculativeStar(1000, 256)}}
	for _, tc := range trees {
		if !tc.tree.SlotsAssigned() {
			tc.tree.AssignContiguousSlots()
		}
		b.Run(tc.name+"/flatten", func(b *testing.B) {
			cfg := Config{Method: MethodFlatten, Shape: Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}, Limits: equivLimits[1]}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := legacyNewPlan(tc.tree, cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
