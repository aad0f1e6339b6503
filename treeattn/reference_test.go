package treeattn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func randomVec(rng *rand.Rand, n int, scale float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(rng.NormFloat64() * scale)
	}
	return out
}

// naiveCausal computes ordinary causal attention over a sequence: output
// position i attends to positions 0..i. seqK and seqV are [pos][kvhead][dim]
// in sequence order, q is [query][qhead][dim] and pos[j] is the sequence
// position of query j. It uses a direct softmax without max subtraction,
// which is fine for the small scores used here.
func naiveCausal(s Shape, q, seqK, seqV []float32, pos []int, scale float64) []float64 {
	d := s.HeadDim
	out := make([]float64, len(pos)*s.QHeads*d)
	for j, p := range pos {
		for h := 0; h < s.QHeads; h++ {
			kvh := h * s.KVHeads / s.QHeads
			weights := make([]float64, p+1)
			total := 0.0
			for i := 0; i <= p; i++ {
				dot := 0.0
				for x := 0; x < d; x++ {
					dot += float64(q[(j*s.QHeads+h)*d+x]) * float64(seqK[(i*s.KVHeads+kvh)*d+x])
				}
				weights[i] = math.Exp(scale * dot)
				total += weights[i]
			}
			for x := 0; x < d; x++ {
				acc := 0.0
				for i := 0; i <= p; i++ {
					acc += weights[i] * float64(seqV[(i*s.KVHeads+kvh)*d+x])
				}
				out[(j*s.QHeads+h)*d+x] = acc / total
			}
		}
	}
	return out
}

func assertClose(t *testing.T, want, got []float64, tol float64) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.InDelta(t, want[i], got[i], tol*(1+math.Abs(want[i])), "element %d", i)
	}
}

// TestReferenceChainIsCausal: on a chain tree, tree attention is causal
// attention over the concatenated tokens.
func TestReferenceChainIsCausal(t *testing.T) {
	rng := treeTestRNG(t)
	for iter := 0; iter < 30; iter++ {
		s := Shape{QHeads: 1 << rng.IntN(3), HeadDim: 1 + rng.IntN(24)}
		s.KVHeads = s.QHeads >> rng.IntN(3)
		s.KVHeads = max(s.KVHeads, 1)
		tr := RandomTree(rng, GenOptions{MaxNodes: 8, MaxNodeTokens: 12, MaxQueries: 10,
			Kind: KindChain, ShuffleSlots: rng.IntN(2) == 0})
		numSlots := tr.NumSlots() + rng.IntN(3)
		k := randomVec(rng, numSlots*s.KVHeads*s.HeadDim, 1)
		v := randomVec(rng, numSlots*s.KVHeads*s.HeadDim, 1)
		q := randomVec(rng, len(tr.Queries)*s.QHeads*s.HeadDim, 1)
		scale := s.DefaultScale()
		if rng.IntN(2) == 0 {
			scale = 0.05 + rng.Float64()
		}

		// Build the sequence in chain order, independent of QuerySlots.
		stride := s.KVHeads * s.HeadDim
		var seqK, seqV []float32
		start := make([]int, len(tr.Nodes))
		for i, nd := range tr.Nodes {
			start[i] = len(seqK) / stride
			for _, slot := range nd.Slots {
				seqK = append(seqK, k[int(slot)*stride:(int(slot)+1)*stride]...)
				seqV = append(seqV, v[int(slot)*stride:(int(slot)+1)*stride]...)
			}
		}
		pos := make([]int, len(tr.Queries))
		for j, qu := range tr.Queries {
			pos[j] = start[qu.Node] + qu.Offset
		}
		want := naiveCausal(s, q, seqK, seqV, pos, scale)
		got, err := Reference(tr, s, q, k, v, scale)
		require.NoError(t, err)
		assertClose(t, want, got, 1e-10)
	}
}

// maskedAttention is an independent tree attention: it scans every slot of
// every node and keeps those of ancestors (found by walking parent links)
// and of the query node up to its offset.
func maskedAttention(tr *Tree, s Shape, q, k, v []float32, scale float64) []float64 {
	d := s.HeadDim
	out := make([]float64, len(tr.Queries)*s.QHeads*d)
	for j, qu := range tr.Queries {
		visible := map[int]bool{}
		for p := tr.Nodes[qu.Node].Parent; p >= 0; p = tr.Nodes[p].Parent {
			visible[p] = true
		}
		var slots []int32
		for n, nd := range tr.Nodes {
			for off, slot := range nd.Slots {
				if visible[n] || (n == qu.Node && off <= qu.Offset) {
					slots = append(slots, slot)
				}
			}
		}
		for h := 0; h < s.QHeads; h++ {
			kvh := h / (s.QHeads / s.KVHeads)
			sc := make([]float64, len(slots))
			m := math.Inf(-1)
			for i, slot := range slots {
				for x := 0; x < d; x++ {
					sc[i] += float64(q[(j*s.QHeads+h)*d+x]) * float64(k[(int(slot)*s.KVHeads+kvh)*d+x])
				}
				sc[i] *= scale
				m = max(m, sc[i])
			}
			total := 0.0
			for i := range sc {
				sc[i] = math.Exp(sc[i] - m)
				total += sc[i]
			}
			for x := 0; x < d; x++ {
				acc := 0.0
				for i, slot := range slots {
					acc += sc[i] * float64(v[(int(slot)*s.KVHeads+kvh)*d+x])
				}
				out[(j*s.QHeads+h)*d+x] = acc / total
			}
		}
	}
	return out
}

func TestReferenceRandomTrees(t *testing.T) {
	rng := treeTestRNG(t)
	for iter := 0; iter < 20; iter++ {
		s := Shape{QHeads: 4, KVHeads: []int{1, 2, 4}[rng.IntN(3)], HeadDim: 8 + rng.IntN(40)}
		tr := RandomTree(rng, GenOptions{MaxNodes: 30, MaxNodeTokens: 60, MaxQueries: 40,
			Kind: TreeKind(rng.IntN(3)), ShuffleSlots: rng.IntN(2) == 0})
		numSlots := tr.NumSlots()
		k := randomVec(rng, numSlots*s.KVHeads*s.HeadDim, 2)
		v := randomVec(rng, numSlots*s.KVHeads*s.HeadDim, 1)
		q := randomVec(rng, len(tr.Queries)*s.QHeads*s.HeadDim, 2)
		got, err := Reference(tr, s, q, k, v, s.DefaultScale())
		require.NoError(t, err)
		assertClose(t, maskedAttention(tr, s, q, k, v, s.DefaultScale()), got, 1e-10)
	}
}

// TestReferenceGQA checks the query-head to KV-head mapping and that GQA
// equals multi-head attention with the KV heads repeated.
func TestReferenceGQA(t *testing.T) {
	rng := treeTestRNG(t)
	tr := FewShotTree(5, 3, 4)
	require.NotNil(t, tr)
	s := Shape{QHeads: 6, KVHeads: 3, HeadDim: 4}
	n := tr.NumSlots()
	k := randomVec(rng, n*s.KVHeads*s.HeadDim, 1)
	v := make([]float32, n*s.KVHeads*s.HeadDim)
	for slot := 0; slot < n; slot++ {
		for h := 0; h < s.KVHeads; h++ {
			for x := 0; x < s.HeadDim; x++ {
				v[(slot*s.KVHeads+h)*s.HeadDim+x] = float32(10*h + x)
			}
		}
	}
	q := randomVec(rng, len(tr.Queries)*s.QHeads*s.HeadDim, 1)
	got, err := Reference(tr, s, q, k, v, 0.5)
	require.NoError(t, err)
	// V is constant per KV head, so the output reveals which head was read:
	// q heads 0,1 -> kv 0; 2,3 -> kv 1; 4,5 -> kv 2.
	for j := range tr.Queries {
		for h := 0; h < s.QHeads; h++ {
			for x := 0; x < s.HeadDim; x++ {
				require.InDelta(t, float64(10*(h/2)+x), got[(j*s.QHeads+h)*s.HeadDim+x], 1e-9, "query %d head %d", j, h)
			}
		}
	}

	// Repeat KV heads to make an MHA problem with the same answer.
	mha := Shape{QHeads: 6, KVHeads: 6, HeadDim: 4}
	v = randomVec(rng, len(k), 1)
	rep := func(x []float32) []float32 {
		out := make([]float32, 0, 2*len(x))
		for slot := 0; slot < n; slot++ {
			for h := 0; h < s.KVHeads; h++ {
				row := x[(slot*s.KVHeads+h)*s.HeadDim : (slot*s.KVHeads+h+1)*s.HeadDim]
				out = append(out, row...)
				out = append(out, row...)
			}
		}
		return out
	}
	gqa, err := Reference(tr, s, q, k, v, 0.5)
	require.NoError(t, err)
	want, err := Reference(tr, mha, q, rep(k), rep(v), 0.5)
	require.NoError(t, err)
	assertClose(t, want, gqa, 1e-12)
}

func TestReferenceSingleTokenAndStability(t *testing.T) {
	tr := &Tree{Nodes: []Node{{Parent: -1, Tokens: 1, Slots: []int32{1}}}, Queries: []Query{{Node: 0, Offset: 0}}}
	s := Shape{QHeads: 1, KVHeads: 1, HeadDim: 2}
	k := []float32{0, 0, 3, 4}
	v := []float32{9, 9, -1, 0.5}
	got, err := Reference(tr, s, []float32{1, 1}, k, v, 1)
	require.NoError(t, err)
	assert.Equal(t, []float64{-1, 0.5}, got)

	// Scores near 1e8 would overflow exp without max subtraction; the
	// dominant key wins exactly.
	big := &Tree{Nodes: []Node{{Parent: -1, Tokens: 2}}, Queries: []Query{{Node: 0, Offset: 1}}}
	big.AssignContiguousSlots()
	got, err = Reference(big, s, []float32{1e4, 0}, []float32{1e4, 0, 1e4 - 1, 0}, []float32{1, 2, 3, 4}, 1)
	require.NoError(t, err)
	assert.Equal(t, []float64{1, 2}, got)
}

func TestReferenceErrors(t *testing.T) {
	tr := exampleTree()
	s := Shape{QHeads: 2, KVHeads: 1, HeadDim: 3}
	n := tr.NumSlots()
	q := make([]float32, len(tr.Queries)*6)
	k := make([]float32, n*3)
	v := make([]float32, n*3)
	_, err := Reference(tr, s, q, k, v, 1)
	require.NoError(t, err)

	for _, scale := range []float64{0, -1, math.NaN(), math.Inf(1), math.Inf(-1)} {
		_, err := Reference(tr, s, q, k, v, scale)
		require.Error(t, err, "scale %v", scale)
		assert.Contains(t, err.Error(), "scale")
	}
	cases := []struct {
		name    string
		tr      *Tree
		s       Shape
		q, k, v []float32
		msg     string
	}{
		{"nil tree", nil, s, q, k, v, "nil tree"},
		{"bad shape", tr, Shape{QHeads: 3, KVHeads: 2, HeadDim: 3}, q, k, v, "not a multiple"},
		{"zero dim", tr, Shape{QHeads: 2, KVHeads: 1}, q, k, v, "must be positive"},
		{"huge dim", tr, Shape{QHeads: 2, KVHeads: 1, HeadDim: MaxShapeValue + 1}, q, k, v, "at most"},
		{"q length", tr, s, q[1:], k, v, "len(q)"},
		{"k ragged", tr, s, q, k[1:], v[1:], "not a multiple"},
		{"v length", tr, s, q, k, v[3:], "len(v)"},
		{"pool too small", tr, s, q, k[3:], v[3:], "outside the KV pool"},
		{"invalid tree", &Tree{Nodes: tr.Nodes}, s, q, k, v, "no queries"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Reference(c.tr, c.s, c.q, c.k, c.v, 1)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.msg)
			assert.Contains(t, err.Error(), "reference attention: ")
		})
	}
	unassigned := exampleTree()
	unassigned.Nodes[3].Slots = nil
	_, err = Reference(unassigned, s, q, k, v, 1)
	assert.ErrorContains(t, err, "without slots")
}

func TestShape(t *testing.T) {
	s := Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}
	require.NoError(t, s.Validate())
	assert.Equal(t, 4, s.GroupSize())
	assert.InDelta(t, 1/math.Sqrt(128), s.DefaultScale(), 1e-15)
	assert.Equal(t, 0, Shape{}.GroupSize())
	assert.Error(t, Shape{QHeads: -1, KVHeads: 1, HeadDim: 1}.Validate())
}

func TestRelativeL2(t *testing.T) {
	assert.Equal(t, 0.0, RelativeL2([]float32{1, 2}, []float64{1, 2}))
	assert.InDelta(t, 0.1, RelativeL2([]float32{3.3, 4.4}, []float64{3, 4}), 1e-6)
	assert.True(t, math.IsInf(RelativeL2([]float32{float32(math.NaN())}, []float64{1}), 1))
	assert.True(t, math.IsInf(RelativeL2([]float32{float32(math.Inf(-1))}, []float64{1}), 1))
	assert.True(t, math.IsInf(RelativeL2([]float32{1}, []float64{math.NaN()}), 1))
	assert.True(t, math.IsInf(RelativeL2([]float32{1}, []float64{1, 2}), 1))
	assert.InDelta(t, 5, RelativeL2([]float32{3, 4}, []float64{0, 0}), 1e-12)
	assert.Equal(t, 0.0, RelativeL2(nil, nil))
}
