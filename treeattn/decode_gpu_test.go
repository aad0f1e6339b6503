package treeattn_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/treeattn"
)

// TestDecodeVariantOnDevice: plans whose items all have one query (one
// sequence under every method, flashdecoding on a tree of many queries)
// run partial_attn's decode variant, chosen automatically, and match the
// float64 reference with fp32 and fp16 KV, head dims 64 to 256, GQA 1 and
// 4, fused and separate reductions, items of one and of several passes
// (DeFT-Node's long items) and a query of a single partial; outputs are
// poisoned with NaN before each run and reruns are bit-identical.
func TestDecodeVariantOnDevice(t *testing.T) {
	d := gputest.Device(t)
	lim := treeattn.LimitsOf(d.Info)
	if !lim.Decode {
		t.Skipf("%s cannot run the decode variant", d.Info.Name)
	}
	rng := gputest.Rand(t)
	seq := func(n int) *treeattn.Tree {
		tr := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: n}}}
		tr.Queries = []treeattn.Query{{Node: 0, Offset: n - 1}}
		tr.AssignContiguousSlots()
		return tr
	}
	// A query inside a prompt, below a branch: masked tokens and a path
	// of several nodes.
	branch := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: 150 + rng.IntN(200)}, {Parent: 0, Tokens: 40}, {Parent: 0, Tokens: 9}},
		Queries: []treeattn.Query{{Node: 2, Offset: 3}}}
	branch.AssignContiguousSlots()
	many := treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 10, MaxNodeTokens: 60, MaxQueries: 12, Kind: treeattn.KindRandom, ShuffleSlots: true})
	trees := []struct {
		name string
		tree *treeattn.Tree
	}{
		{"one token", seq(1)},
		{"sequence", seq(300 + rng.IntN(700))},
		{"long sequence", seq(1500 + rng.IntN(600))}, // DeFT-Node: items of several passes
		{"branch query", branch},
		{"many queries", many},
	}
	shapes := []treeattn.Shape{{QHeads: 8, KVHeads: 2, HeadDim: 64}, {QHeads: 2, KVHeads: 2, HeadDim: 128}, {QHeads: 8, KVHeads: 2, HeadDim: 256}}
	for _, tc := range trees {
		for _, m := range treeattn.Methods {
			single := len(tc.tree.Queries) == 1 || m == treeattn.MethodFlashDecoding
			if !single {
				continue
			}
			for _, kv := range []treeattn.KVType{treeattn.KVF32, treeattn.KVF16} {
				for _, s := range shapes {
					for _, reduce := range []string{treeattn.ReduceFused, treeattn.ReduceSeparate} {
						name := fmt.Sprintf("%s/%s/%s/d%d-g%d/%s", tc.name, m, kv, s.HeadDim, s.GroupSize(), reduce)
						cfg := treeattn.Config{Method: m, Shape: s, KV: kv, Limits: lim, Reduce: reduce}
						plan, err := treeattn.NewPlan(tc.tree, cfg)
						require.NoError(t, err, name)
						require.Equal(t, treeattn.VariantDecode, plan.Variant, name)
						in := conformance.NewInputs(rng, tc.tree, s, kv)
						want, err := treeattn.Reference(tc.tree, s, in.Q, in.K, in.V, plan.Scale)
						require.NoError(t, err, name)
						dp, err := plan.Upload(d)
						require.NoError(t, err, name)
						require.Equal(t, reduce == treeattn.ReduceFused, dp.Fused(), name)
						first, second := runTwice(t, dp, in)
						dp.Close()
						rel := treeattn.RelativeL2(first, want)
						require.LessOrEqual(t, rel, kv.Tolerance(), name)
						require.True(t, bitsEqual(first, second), "%s: reruns differ", name)
					}
				}
			}
		}
	}
}

// TestDecodeVariantSmallWorkgroups: the decode variant with workgroups
// smaller than a subgroup and tiles far from the defaults (items of
// many passes, a query of many partials merged by the fused reduction).
func TestDecodeVariantSmallWorkgroups(t *testing.T) {
	d := gputest.Device(t)
	lim := treeattn.LimitsOf(d.Info)
	if !lim.Decode {
		t.Skipf("%s cannot run the decode variant", d.Info.Name)
	}
	rng := gputest.Rand(t)
	tree := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: 200 + rng.IntN(200)}}}
	tree.Queries = []treeattn.Query{{Node: 0, Offset: tree.Nodes[0].Tokens - 1}}
	tree.AssignContiguousSlots()
	for _, tc := range []struct {
		shape treeattn.Shape
		tiles treeattn.Tiles
	}{
		{treeattn.Shape{QHeads: 4, KVHeads: 1, HeadDim: 16}, treeattn.Tiles{Workgroup: 4, Tokens: 4, Rows: 4}},
		{treeattn.Shape{QHeads: 8, KVHeads: 2, HeadDim: 64}, treeattn.Tiles{Workgroup: 16, Tokens: 16, Rows: 4}},
		{treeattn.Shape{QHeads: 6, KVHeads: 2, HeadDim: 8}, treeattn.Tiles{Workgroup: 32, Tokens: 8, Rows: 4}},
	} {
		for _, m := range []treeattn.Method{treeattn.MethodFlatten, treeattn.MethodNode} {
			for _, kv := range []treeattn.KVType{treeattn.KVF32, treeattn.KVF16} {
				name := fmt.Sprintf("%+v %+v %s %s", tc.shape, tc.tiles, m, kv)
				plan, err := treeattn.NewPlan(tree, treeattn.Config{Method: m, Shape: tc.shape, KV: kv, Limits: lim, Tiles: tc.tiles, BlockTokens: 40})
				require.NoError(t, err, name)
				require.Equal(t, treeattn.VariantDecode, plan.Variant, name)
				in := conformance.NewInputs(rng, tree, tc.shape, kv)
				want, err := treeattn.Reference(tree, tc.shape, in.Q, in.K, in.V, plan.Scale)
				require.NoError(t, err, name)
				dp, err := plan.Upload(d)
				require.NoError(t, err, name)
				first, second := runTwice(t, dp, in)
				fused := dp.Fused()
				dp.Close()
				require.LessOrEqual(t, treeattn.RelativeL2(first, want), kv.Tolerance(), "%s (fused %v)", name, fused)
				require.True(t, bitsEqual(first, second), "%s: reruns differ", name)
			}
		}
	}
}

// TestDecodeVariantChoice: the planner picks the decode variant only for
// plans of one-query items on devices that run it, keeps it when forced on
// such plans, and falls back to the scalar variant otherwise.
func TestDecodeVariantChoice(t *testing.T) {
	seq := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: 4001}}, Queries: []treeattn.Query{{Node: 0, Offset: 4000}}}
	seq.AssignContiguousSlots()
	beams := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: 500}, {Parent: 0, Tokens: 3}, {Parent: 0, Tokens: 3}},
		Queries: []treeattn.Query{{Node: 1, Offset: 2}, {Node: 2, Offset: 2}}}
	beams.AssignContiguousSlots()
	llama3 := treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}
	h200 := treeattn.Limits{SharedMemory: 48 << 10, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{1 << 31, 65535, 65535}, Decode: true}
	noDecode := h200
	noDecode.Decode = false
	for _, tc := range []struct {
		name    string
		tree    *treeattn.Tree
		method  treeattn.Method
		lim     treeattn.Limits
		kv      treeattn.KVType
		variant string
		want    string
	}{
		{"one query, flatten", seq, treeattn.MethodFlatten, h200, treeattn.KVF16, "", treeattn.VariantDecode},
		{"one query, f32", seq, treeattn.MethodNode, h200, treeattn.KVF32, "", treeattn.VariantDecode},
		{"beams, flashdecoding", beams, treeattn.MethodFlashDecoding, h200, treeattn.KVF16, "", treeattn.VariantDecode},
		{"beams, flatten", beams, treeattn.MethodFlatten, h200, treeattn.KVF16, "", treeattn.VariantScalar},
		{"beams, flatten, forced", beams, treeattn.MethodFlatten, h200, treeattn.KVF16, treeattn.VariantDecode, treeattn.VariantScalar},
		{"one query, forced", seq, treeattn.MethodFlatten, h200, treeattn.KVF16, treeattn.VariantDecode, treeattn.VariantDecode},
		{"one query, forced scalar", seq, treeattn.MethodFlatten, h200, treeattn.KVF16, treeattn.VariantScalar, treeattn.VariantScalar},
		{"device without it", seq, treeattn.MethodFlatten, noDecode, treeattn.KVF16, "", treeattn.VariantScalar},
	} {
		plan, err := treeattn.NewPlan(tc.tree, treeattn.Config{Method: tc.method, Shape: llama3, KV: tc.kv, Limits: tc.lim, KernelVariant: tc.variant})
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.want, plan.Variant, tc.name)
		if tc.want == treeattn.VariantDecode {
			// Same tiles and items as the scalar variant's plan.
			scalar, err := treeattn.NewPlan(tc.tree, treeattn.Config{Method: tc.method, Shape: llama3, KV: tc.kv, Limits: tc.lim, KernelVariant: treeattn.VariantScalar})
			require.NoError(t, err, tc.name)
			require.Equal(t, scalar.Tiles, plan.Tiles, tc.name)
			require.Equal(t, scalar.Items, plan.Items, tc.name)
		}
	}
}
