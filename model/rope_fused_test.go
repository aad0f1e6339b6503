package model

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// matmulRoPE (RoPE and the K/V pool write in the stacked Q/K/V matmul's
// epilogue) against what decoding steps ran before, matmulFused then
// kvpool.WriteRoPE: the rotated Q and both pools' words (written slots and
// the poison left elsewhere) are bit-identical, reruns are bit-identical,
// and Q and K are within RoPE's tolerance of a float64 rotation of the
// plain matmul's outputs (V equal to them, rounded to the pool's type).
// Odd rows per workgroup are rounded up so that a pair stays in one
// workgroup; rotated dims stop short of the head dim.
func TestMatmulRoPEFused(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	const qHeads, kvHeads, headDim, ropeDims = 3, 2, 32, 24
	segs := []int{qHeads * headDim, kvHeads * headDim, kvHeads * headDim}
	rows := segs[0] + segs[1] + segs[2]
	cases := []struct {
		typ   gguf.TensorType
		n     int
		norm  bool
		kv    treeattn.KVType
		shape matmulShape // zero: the default
	}{
		{typ: gguf.F16, n: 1, norm: true, kv: treeattn.KVF16},
		{typ: gguf.F16, n: 3, norm: true, kv: treeattn.KVF32},
		{typ: gguf.F32, n: 2, kv: treeattn.KVF16, shape: matmulShape{rows: 3, group: 16}},
		{typ: gguf.Q4_K, n: 1, norm: true, kv: treeattn.KVF16, shape: matmulShape{rows: 2, group: 32, unroll: 2}},
		{typ: gguf.Q8_0, n: 11, norm: true, kv: treeattn.KVF32, shape: matmulShape{rows: 8, group: 64}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/n=%d/norm=%v/kv=%v/shape=%v", c.typ, c.n, c.norm, c.kv, c.shape), func(t *testing.T) {
			cols := 96
			if superBlock(c.typ) {
				cols = 512
			}
			n := c.n
			w, err := uploadWeightLayout(d, randTensor(r, c.typ, cols, rows), 0, true)
			require.NoError(t, err)
			defer w.close()
			w.segs = segs
			require.True(t, ropeFusable(w))

			cfg := kvpool.Config{Layers: 1, KVHeads: kvHeads, HeadDim: headDim, KV: c.kv, PageTokens: 16}
			cfg.BudgetBytes = 4 * cfg.PageBytes()
			pool, err := kvpool.New(d, cfg)
			require.NoError(t, err)
			defer pool.Close()
			seq := pool.NewSequence()
			slots, err := pool.Append(seq, 40)
			require.NoError(t, err)
			r.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })
			list, err := pool.NewSlotList(slots[:n])
			require.NoError(t, err)
			defer list.Close()

			xb := newF32(t, d, randFloats(r, n*cols, 3))
			var norm *vk.Buffer
			if c.norm {
				norm = newF32(t, d, randFloats(r, cols, 1))
			}
			pos := make([]uint32, n)
			pos32 := make([]int32, n)
			for i := range pos {
				pos[i] = uint32(r.IntN(5000))
				pos32[i] = int32(pos[i])
			}
			inv := make([]float32, ropeDims/2)
			for i := range inv {
				inv[i] = float32(math.Pow(500000, -float64(2*i)/ropeDims) * (1 + r.Float64()))
			}
			posb, freqb := newU32(t, d, pos), newF32(t, d, inv)
			qb := newF32(t, d, make([]float32, n*segs[0]))
			kb := newF32(t, d, make([]float32, n*segs[1]))
			vb := newF32(t, d, make([]float32, n*segs[2]))
			o := newOps(d)
			o.mm = c.shape

			// run poisons Q and the pool, records and submits, and returns Q
			// and the pool's K and V words.
			poolWords := int(pool.K(0).Size() / 4)
			run := func(record func(rec *vk.Recorder) error) (q []float32, pk, pv []uint32) {
				for _, b := range []*vk.Buffer{qb, kb, vb} {
					require.NoError(t, b.FillF32(0, b.Size()/4, float32(math.NaN())))
				}
				poison := float32(math.NaN())
				if c.kv == treeattn.KVF16 {
					poison = math.Float32frombits(0x7e007e00) // two fp16 NaNs
				}
				for _, b := range []*vk.Buffer{pool.K(0), pool.V(0)} {
					require.NoError(t, b.FillF32(0, b.Size()/4, poison))
				}
				rec, err := d.NewRecorder()
				require.NoError(t, err)
				defer rec.Close()
				require.NoError(t, record(rec))
				require.NoError(t, rec.Submit())
				q = readF32(t, qb, n*segs[0])
				pk, pv = make([]uint32, poolWords), make([]uint32, poolWords)
				require.NoError(t, pool.K(0).ReadU32(0, pk))
				require.NoError(t, pool.V(0).ReadU32(0, pv))
				return q, pk, pv
			}
			plain := func(rec *vk.Recorder) error {
				return o.matmulFused(rec, w, xb, n, []*vk.Buffer{qb, kb, vb}, false, norm, 1e-5)
			}
			// The unrotated products, for the float64 check.
			var rawK, rawV []float32
			rawQ, _, _ := run(func(rec *vk.Recorder) error { return plain(rec) })
			rawK, rawV = readF32(t, kb, n*segs[1]), readF32(t, vb, n*segs[2])

			wantQ, wantK, wantV := run(func(rec *vk.Recorder) error {
				if err := plain(rec); err != nil {
					return err
				}
				return pool.WriteRoPE(rec, 0, list, qb, kb, vb, kvpool.RoPE{QHeads: qHeads, Dims: ropeDims, Pos: posb, InvFreq: freqb})
			})
			fused := func(rec *vk.Recorder) error {
				kv, err := pool.FusedWrite(0, list)
				if err != nil {
					return err
				}
				return o.matmulRoPE(rec, w, xb, n, qb, norm, 1e-5, ropeWrite{kv: kv, pos: posb, freq: freqb, headDim: headDim, ropeDims: ropeDims})
			}
			for rerun := range 2 {
				gotQ, gotK, gotV := run(fused)
				for i := range wantQ {
					require.Equal(t, math.Float32bits(wantQ[i]), math.Float32bits(gotQ[i]), "run %d: Q %d: %v, want %v", rerun, i, gotQ[i], wantQ[i])
				}
				require.True(t, slices.Equal(wantK, gotK), "run %d: pool K differs", rerun)
				require.True(t, slices.Equal(wantV, gotV), "run %d: pool V differs", rerun)
			}

			// Against float64: Q, and K and V read back from their slots.
			elems := func(words []uint32, slot int32) []float32 {
				out := make([]float32, segs[1])
				for j := range out {
					if c.kv == treeattn.KVF16 {
						wd := words[(int(slot)*segs[1]+j)/2]
						out[j] = half.ToFloat32(uint16(wd >> (16 * (j % 2))))
					} else {
						out[j] = math.Float32frombits(words[int(slot)*segs[1]+j])
					}
					require.False(t, math.IsNaN(float64(out[j])), "slot %d element %d not written", slot, j)
				}
				return out
			}
			var gotK, gotV []float32
			for i := range n {
				gotK = append(gotK, elems(wantK, slots[i])...)
				gotV = append(gotV, elems(wantV, slots[i])...)
			}
			tol := ropeTol
			if c.kv == treeattn.KVF16 {
				tol = 1e-3 // fp16 rounding of the pool
			}
			eq := relL2(wantQ, ropeRef32(rawQ, qHeads, headDim, ropeDims, pos32, inv))
			ek := relL2(gotK, ropeRef32(rawK, kvHeads, headDim, ropeDims, pos32, inv))
			ev := relL2(gotV, f64(rawV))
			t.Logf("rel L2 against float64 rotation: Q %.2e, K %.2e, V %.2e", eq, ek, ev)
			require.Less(t, eq, ropeTol)
			require.Less(t, ek, tol)
			require.Less(t, ev, tol)
		})
	}
}

// ropeRef32 is ropeRef with theta = pos * invFreq rounded to float32 as the
// kernels round it (at positions in the thousands that rounding alone
// exceeds ropeTol), the rotation in float64.
func ropeRef32(x []float32, heads, headDim, ropeDims int, pos []int32, inv []float32) []float64 {
	out := f64(x)
	for tk := range pos {
		for h := range heads {
			base := (tk*heads + h) * headDim
			for i := 0; i < ropeDims/2; i++ {
				th := float64(float32(pos[tk]) * inv[i])
				c, s := math.Cos(th), math.Sin(th)
				a, b := out[base+2*i], out[base+2*i+1]
				out[base+2*i], out[base+2*i+1] = a*c-b*s, a*s+b*c
			}
		}
	}
	return out
}

// Decoding steps with RoPE and the K/V write fused into the Q/K/V matmul
// give logits and pools bit-identical to matmul then WriteRoPE (the model's
// noRoPEFusion path), for a prompt, one token, and a tree step of two
// branches, with both pool types.
func TestForwardRoPEFusion(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	for _, kv := range []treeattn.KVType{treeattn.KVF16, treeattn.KVF32} {
		t.Run(kv.String(), func(t *testing.T) {
			_, m := openModel(t, d, testmodels.Path(t, "stories260K.gguf"), Options{KV: kv})
			for _, l := range m.layers {
				require.True(t, len(l.qkv) == 1 && ropeFusable(l.qkv[0]), "the test model's Q/K/V stack is not fusable")
			}
			rnd := func(k int) []int32 {
				out := make([]int32, k)
				for i := range out {
					out[i] = int32(3 + r.IntN(m.Config().Vocab-3))
				}
				return out
			}
			prompt := append([]int32{1}, rnd(6)...)
			next, a, b := rnd(1), rnd(2), rnd(3)
			type result struct {
				logits [][]float32
				k, v   [][]uint32
			}
			run := func(noFusion bool) result {
				m.noRoPEFusion = noFusion
				defer func() { m.noRoPEFusion = false }()
				pool, err := NewPool(m, 64)
				require.NoError(t, err)
				defer pool.Close()
				for l := range m.Config().Blocks {
					for _, buf := range []*vk.Buffer{pool.K(l), pool.V(l)} {
						require.NoError(t, buf.FillF32(0, buf.Size()/4, math.Float32frombits(0x7e007e00)))
					}
				}
				var res result
				seq := pool.NewSequence()
				out, err := m.Eval(pool, seq, prompt)
				require.NoError(t, err)
				res.logits = append(res.logits, out)
				out, err = m.Eval(pool, seq, next)
				require.NoError(t, err)
				res.logits = append(res.logits, out)
				A, err := pool.Fork(seq)
				require.NoError(t, err)
				B, err := pool.Fork(seq)
				require.NoError(t, err)
				_, err = pool.Append(A, len(a))
				require.NoError(t, err)
				_, err = pool.Append(B, len(b))
				require.NoError(t, err)
				qs := []kvpool.Query{{Node: B, Offset: 0}, {Node: A, Offset: 0}, {Node: B, Offset: 1}, {Node: A, Offset: 1}, {Node: B, Offset: 2}}
				step, err := pool.Tree(qs)
				require.NoError(t, err)
				outs, err := m.Forward(pool, Batch{Tokens: []int32{b[0], a[0], b[1], a[1], b[2]}, Step: step, LogitRows: []int{0, 1, 2, 3, 4}})
				require.NoError(t, err)
				res.logits = append(res.logits, outs...)
				for l := range m.Config().Blocks {
					for _, dst := range []*[][]uint32{&res.k, &res.v} {
						buf := pool.K(l)
						if dst == &res.v {
							buf = pool.V(l)
						}
						words := make([]uint32, buf.Size()/4)
						require.NoError(t, buf.ReadU32(0, words))
						*dst = append(*dst, words)
					}
				}
				return res
			}
			want, got := run(true), run(false)
			require.Len(t, got.logits, len(want.logits))
			for i := range want.logits {
				for j := range want.logits[i] {
					require.False(t, math.IsNaN(float64(got.logits[i][j])), "logits %d: %d is NaN", i, j)
					require.Equal(t, math.Float32bits(want.logits[i][j]), math.Float32bits(got.logits[i][j]), "logits %d: %d", i, j)
				}
			}
			for l := range want.k {
				require.True(t, slices.Equal(want.k[l], got.k[l]), "layer %d: pool K differs", l)
				require.True(t, slices.Equal(want.v[l], got.v[l]), "layer %d: pool V differs", l)
			}
		})
	}
}
