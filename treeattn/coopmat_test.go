package treeattn

import (
	"strings"
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
	tr := FewShotTree(1000, 50, 100)
	star := SpeculativeStar(1000, 256) // 204 queries per token
	llama3 := Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}
	var pl Planner
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"auto f16, 8 queries per token", Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200}, VariantScalar},
		{"auto f16, shared tree", Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200}, VariantCoopMat},
		{"auto f32", Config{Method: MethodFlatten, Shape: llama3, KV: KVF32, Limits: coopH200}, VariantScalar},
		{"forced scalar", Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: coopH200, KernelVariant: VariantScalar}, VariantScalar},
		{"forced coopmat, f32 KV", Config{Method: MethodFlatten, Shape: llama3, KV: KVF32, Limits: coopH200, KernelVariant: VariantCoopMat}, VariantScalar},
		{"no coopmat", Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, Limits: Limits{SharedMemory: 49152, MaxInvocations: 1024,
			MaxWorkgroupCount: [3]int{1 << 31, 65535, 65535}}}, VariantScalar},
	} {
		tree := tr
		if strings.Contains(tc.name, "shared tree") {
			tree = star
		}
		p, err := pl.Plan(tree, tc.cfg)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.want, p.Variant, tc.name)
		maxQ := 0
		for i := 0; i < p.Items; i++ {
			maxQ = max(maxQ, int(p.item(i).NumQueries))
		}
		if tc.want == VariantCoopMat {
			// Larger query slices: 32 queries of the star's 256 each.
			require.Equal(t, 32, maxQ, tc.name)
			require.Equal(t, Tiles{Workgroup: 256, Tokens: 32, Rows: 128}, p.Tiles, tc.name)
		} else {
			require.Equal(t, 8, maxQ, tc.name)
		}
	}
	_, err := pl.Plan(tr, Config{Method: MethodFlatten, Shape: llama3, KV: KVF16, KernelVariant: VariantCoopMat,
		Limits: Limits{SharedMemory: 49152, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{1 << 31, 65535, 65535}}})
	require.Error(t, err, "forced coopmat without cooperative matrices")
}
