package treeattn

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// An H200: 48 KiB of shared memory, 16x16x16 f16 cooperative matrices,
// subgroups of 32.
var coopH200 = Limits{SharedMemory: 49152, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{1 << 31, 65535, 65535},
	CoopMat: CoopMat{M: 16, N: 16, K: 16, Subgroup: 32}}

func TestChooseCoopTiles(t *testing.T) {
	llama3 := Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}
	tiles, err := ChooseCoopTiles(llama3, coopH200)
	require.NoError(t, err)
	require.Equal(t, Tiles{Workgroup: 256, Tokens: 32, Rows: 128}, tiles)
	require.LessOrEqual(t, tiles.coopSharedBytes(128, coopH200.CoopMat), coopH200.SharedMemory)

	// GQA 1: at most 32 queries (one mask word) of rows.
	tiles, err = ChooseCoopTiles(Shape{QHeads: 8, KVHeads: 8, HeadDim: 128}, coopH200)
	require.NoError(t, err)
	require.Equal(t, 32, tiles.Rows)
	require.Equal(t, 64, tiles.Workgroup)

	// d=256 needs smaller row tiles to fit 48 KiB.
	tiles, err = ChooseCoopTiles(Shape{QHeads: 32, KVHeads: 8, HeadDim: 256}, coopH200)
	require.NoError(t, err)
	require.LessOrEqual(t, tiles.coopSharedBytes(256, coopH200.CoopMat), coopH200.SharedMemory)
	require.Less(t, tiles.Rows, 128)

	// Subgroups of 64 (AMD) make wider workgroups for the same rows.
	amd := coopH200
	amd.CoopMat.Subgroup = 64
	tiles, err = ChooseCoopTiles(llama3, amd)
	require.NoError(t, err)
	require.Equal(t, 2*tiles.Rows/16*32, tiles.Workgroup)

	// Head dims that are not a multiple of the shape, and devices without
	// cooperative matrices, have no coopmat tiles.
	_, err = ChooseCoopTiles(Shape{QHeads: 4, KVHeads: 1, HeadDim: 100}, coopH200)
	require.Error(t, err)
	_, err = ChooseCoopTiles(llama3, Limits{SharedMemory: 49152, MaxInvocations: 1024})
	require.Error(t, err)
}

func TestPlanVariant(t *testing.T) {
	tr := FewShotTree(1000, 50, 100)   // a prompt and its leaves, 9 queries per token
	thin := FewShotTree(100, 50, 100)  // 2 queries per token
	star := SpeculativeStar(1000, 256) // 204 queries per token
	// A deeper tree (root, 5 mid nodes, 10 leaves under each): 14 queries
	// per token, but query paths of 3 nodes.
	deep := &Tree{Nodes: []Node{{Parent: -1, Tokens: 1000}}}
	for m := 0; m < 5; m++ {
		mid := len(deep.Nodes)
		deep.Nodes = append(deep.Nodes, Node{Parent: 0, Tokens: 100})
		for l := 0; l < 10; l++ {
			deep.Nodes = append(deep.Nodes, Node{Parent: mid, Tokens: 50})
			deep.Queries = append(deep.Queries, Query{Node: len(deep.Nodes) - 1, Offset: 49})
		}
	}
	deep.AssignContiguousSlots()
	llama3 := Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}
	auto := Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200}
	var pl Planner
	for _, tc := range []struct {
		name string
		tree *Tree
		cfg  Config
		want string
	}{
		{"auto f16, prompt and leaves, 9 queries per token", tr, auto, VariantCoopMat},
		{"auto f16, prompt and leaves, 2 queries per token", thin, auto, VariantScalar},
		{"auto f16, deep tree, 14 queries per token", deep, auto, VariantCoopMat},
		{"auto f16, shared tree", star, auto, VariantCoopMat},
		{"auto f32", tr, Config{Method: MethodFlatten, Shape: llama3, KV: KVF32, Limits: coopH200}, VariantScalar},
		{"forced scalar", tr, Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200, KernelVariant: VariantScalar}, VariantScalar},
		{"forced coopmat, f32 KV", tr, Config{Method: MethodFlatten, Shape: llama3, KV: KVF32, Limits: coopH200, KernelVariant: VariantCoopMat}, VariantScalar},
		{"no coopmat", tr, Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: Limits{SharedMemory: 49152, MaxInvocations: 1024,
			MaxWorkgroupCount: [3]int{1 << 31, 65535, 65535}}}, VariantScalar},
	} {
		p, err := pl.Plan(tc.tree, tc.cfg)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.want, p.Variant, tc.name)
		maxQ := 0
		for i := 0; i < p.Items; i++ {
			maxQ = max(maxQ, int(p.item(i).NumQueries))
		}
		if tc.want == VariantCoopMat {
			// Larger query slices: 32 queries of a shared block each.
			require.Equal(t, 32, maxQ, tc.name)
			require.Equal(t, Tiles{Workgroup: 256, Tokens: 32, Rows: 128}, p.Tiles, tc.name)
		} else {
			require.Equal(t, 8, maxQ, tc.name)
		}
	}
	// Flashdecoding's items are one query's: scalar whatever the sharing.
	p, err := pl.Plan(star, Config{Method: MethodFlashDecoding, Shape: llama3, KV: KVF16, Limits: coopH200})
	require.NoError(t, err)
	require.Equal(t, VariantScalar, p.Variant, "auto f16, flashdecoding of the star")
	_, err = pl.Plan(tr, Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, KernelVariant: VariantCoopMat,
		Limits: Limits{SharedMemory: 49152, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{1 << 31, 65535, 65535}}})
	require.Error(t, err, "forced coopmat without cooperative matrices")
}

// The coopmat variant runs items in classes by rows: its dispatches cover
// every item once, in order, window by window, each item in the smallest
// class that holds its rows; the items are those of coopmat_v1 (one class),
// reordered, so the same (query, token) pairs are computed.
func TestCoopMatItemClasses(t *testing.T) {
	llama3 := Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}
	windowed := coopH200
	windowed.kvWindow = 2000
	var pl, pl1 Planner
	for _, tc := range []struct {
		name string
		tree *Tree
		lim  Limits
	}{
		{"few-shot", FewShotTree(1000, 50, 400), coopH200},
		{"star", SpeculativeStar(1000, 256), coopH200},
		{"few-shot, windows", FewShotTree(1000, 20, 400), windowed},
	} {
		for _, m := range []Method{MethodFlatten, MethodNode, MethodFlashDecoding} {
			ctx := fmt.Sprintf("%s %s", tc.name, m)
			cfg := Config{Method: m, Shape: llama3, KV: KVF16, Limits: tc.lim, KernelVariant: VariantCoopMat}
			p, err := pl.Plan(tc.tree, cfg)
			require.NoError(t, err, ctx)
			require.Equal(t, []Tiles{{Workgroup: 32, Tokens: 16, Rows: 16}, {Workgroup: 128, Tokens: 32, Rows: 64},
				{Workgroup: 256, Tokens: 32, Rows: 128}}, p.Classes, ctx)
			for _, c := range p.Classes {
				require.NoError(t, c.coopCheck(llama3, tc.lim), ctx)
			}
			next, perClass := 0, make([]int, len(p.Classes))
			for _, r := range p.runs {
				require.Equal(t, next, r.first, ctx)
				if len(p.Windows) > 0 {
					w := p.Windows[r.window]
					require.GreaterOrEqual(t, r.first, w.FirstItem, ctx)
					require.LessOrEqual(t, r.first+r.items, w.FirstItem+w.Items, ctx)
				}
				for i := r.first; i < r.first+r.items; i++ {
					rows := int(p.item(i).NumQueries) * llama3.GroupSize()
					own := p.itemClass(p.item(i)) // smallest class that holds the rows
					require.Equal(t, r.class, pl.classOf[own], ctx)
					require.LessOrEqual(t, own, r.class, ctx)
					require.LessOrEqual(t, rows, p.Classes[r.class].Rows, ctx)
					if own > 0 {
						require.Greater(t, rows, p.Classes[own-1].Rows, ctx)
					}
				}
				perClass[r.class] += r.items
				next += r.items
			}
			require.Equal(t, p.Items, next, ctx)
			if m == MethodFlashDecoding || (m == MethodFlatten && tc.name != "star") {
				require.Positive(t, perClass[0], "%s: one-query items run in one-subgroup workgroups", ctx)
			}
			for c, n := range perClass {
				if c < len(perClass)-1 && n > 0 && n < p.Items {
					if n*llama3.KVHeads < coopMinClassWorkgroups {
						// a small class keeps its dispatch only beside a class of fewer than 4x its items
						for d := c + 1; d < len(perClass); d++ {
							if perClass[d] > 0 {
								require.Less(t, 4*n, perClass[d], "%s: class %d", ctx, c)
								break
							}
						}
					}
				}
			}
			t.Logf("%s: %d items per class %v, %d dispatches", ctx, p.Items, perClass, len(p.runs))

			cfg.KernelVariant = VariantCoopMatV1
			p1, err := pl1.Plan(tc.tree, cfg)
			require.NoError(t, err, ctx)
			require.Equal(t, VariantCoopMatV1, p1.Variant)
			require.Len(t, p1.Classes, 1, ctx)
			require.Len(t, p1.runs, max(1, len(p1.Windows)), ctx)
			if m != MethodFlatten {
				// Flatten cuts few-query items into shorter chunks in
				// the coopmat variant; the other methods' items are the same.
				require.Equal(t, p1.Items, p.Items, ctx)
				require.Equal(t, p1.IO, p.IO, ctx)
			}
			items := func(p *Plan) []string {
				var out []string
				for i := 0; i < p.Items; i++ {
					c := p.itemContent(i)
					c[3] = 0 // partial base: items are reordered
					out = append(out, fmt.Sprint(c))
				}
				slices.Sort(out)
				return out
			}
			if m != MethodFlatten {
				require.Equal(t, items(p1), items(p), ctx)
			}
			// Either way every (query, token) pair is computed once.
			pairs := func(p *Plan) map[[2]int]int {
				out := map[[2]int]int{}
				p.Coverage(func(q int, slot int32) { out[[2]int{q, int(slot)}]++ })
				return out
			}
			want := pairs(p1)
			require.Equal(t, want, pairs(p), ctx)
			for _, n := range want {
				if len(p.Windows) == 0 { // (windowed slots are relative to their window)
					require.Equal(t, 1, n, ctx)
				}
			}
		}
	}
}
