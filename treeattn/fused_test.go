package treeattn

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The fused reduction's plan-level rule: the scalar variant fuses (one
// decoding query, few-shot trees), the coopmat variant and
// ReduceSeparate do not, nor a query whose partials would not fit the
// kernel's scratch; ReduceAuto leaves items with many partials to
// reduce_partials and ReduceFused takes them.
func TestFusedReduceRule(t *testing.T) {
	llama3 := Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}
	single := &Tree{Nodes: []Node{{Parent: -1, Tokens: 4001}}, Queries: []Query{{Node: 0, Offset: 4000}}}
	single.AssignContiguousSlots()
	var pl Planner
	for _, tc := range []struct {
		name string
		tree *Tree
		cfg  Config
		want bool
	}{
		{"single query flatten", single, Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200}, true},
		{"single query flashdecoding", single, Config{Method: MethodFlashDecoding, Shape: llama3, KV: KVF16, Limits: coopH200}, true},
		{"few-shot flashdecoding", FewShotTree(1000, 50, 100), Config{Method: MethodFlashDecoding, Shape: llama3, KV: KVF16, Limits: coopH200}, true},
		{"few-shot auto", FewShotTree(4000, 50, 100), Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200}, false},
		{"few-shot fused", FewShotTree(4000, 50, 100), Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200, Reduce: ReduceFused,
			KernelVariant: VariantScalar}, true},
		{"separate", single, Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200, Reduce: ReduceSeparate}, false},
		{"coopmat", SpeculativeStar(1000, 256), Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200}, false},
		// 4001 one-token chunks: more partials than the scratch holds.
		{"one-token chunks", single, Config{Method: MethodFlashDecoding, Shape: llama3, KV: KVF16, Limits: coopH200, BlockTokens: 1}, false},
	} {
		p, err := pl.Plan(tc.tree, tc.cfg)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.want, p.fusedReduce(), "%s (variant %s, %d partials for %d queries)", tc.name, p.Variant, p.Partials, p.NumQueries)
	}
}

// One decoding query gets a row tile of its GQA group (4 rows at GQA 4,
// 64-token tiles at 256 invocations in 48 KiB), flashdecoding always, and
// 256-token flatten blocks; trees of 32 rows or more keep 32-row tiles.
func TestFewRowTiles(t *testing.T) {
	llama3 := Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}
	single := &Tree{Nodes: []Node{{Parent: -1, Tokens: 4001}}, Queries: []Query{{Node: 0, Offset: 4000}}}
	single.AssignContiguousSlots()
	var pl Planner
	p, err := pl.Plan(single, Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200})
	require.NoError(t, err)
	require.Equal(t, Tiles{Workgroup: 256, Tokens: 64, Rows: 4}, p.Tiles)
	require.Equal(t, FewRowBlockTokens, p.BlockTokens)
	require.Equal(t, 16, p.Items)
	p, err = pl.Plan(FewShotTree(1000, 50, 100), Config{Method: MethodFlashDecoding, Shape: llama3, KV: KVF16, Limits: coopH200})
	require.NoError(t, err)
	require.Equal(t, 4, p.Tiles.Rows)
	require.Equal(t, 256, p.BlockTokens)
	p, err = pl.Plan(FewShotTree(1000, 50, 100), Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200, KernelVariant: VariantScalar})
	require.NoError(t, err)
	require.Equal(t, Tiles{Workgroup: 256, Tokens: 32, Rows: 32}, p.Tiles)
	beams := FewShotTree(1000, 3, 100) // 3 queries: 12 rows
	p, err = pl.Plan(beams, Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200})
	require.NoError(t, err)
	require.Equal(t, 16, p.Tiles.Rows)
}
