package kvpool

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// TestWriteRoPEMatchesRopeThenWrite: the fused kernel's rotated Q and pool
// rows are bit-identical to rope.comp followed by Write (what the model
// ran before), both are within fp32 rounding of a float64 rotation, dims
// past the rotated ones are copied, and every written element replaces
// the NaN the pool was poisoned with. Reruns are bit-identical.
func TestWriteRoPEMatchesRopeThenWrite(t *testing.T) {
	rng := gputest.Rand(t)
	for _, kv := range []treeattn.KVType{treeattn.KVF16, treeattn.KVF32} {
		p, d := newPool(t, testConfig(kv, 16, 4))
		cfg := p.Config()
		const qHeads, ropeDims = 6, 24 // head dim 32: dims 24..31 are not rotated
		s := p.NewSequence()
		slots, err := p.Append(s, 37)
		require.NoError(t, err)
		rng.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })
		n := len(slots)
		dim := cfg.HeadDim
		randVals := func(k int) []float32 {
			out := make([]float32, k)
			for i := range out {
				out[i] = float32(rng.NormFloat64() * 3)
			}
			return out
		}
		q, k, v := randVals(n*qHeads*dim), randVals(n*cfg.KVHeads*dim), randVals(n*cfg.KVHeads*dim)
		pos := make([]uint32, n)
		for i := range pos {
			pos[i] = uint32(rng.IntN(5000))
		}
		inv := make([]float32, ropeDims/2)
		for i := range inv {
			inv[i] = float32(math.Pow(10000, -float64(2*i)/ropeDims) * (1 + rng.Float64()))
		}
		buf := func(f []float32) *vk.Buffer {
			b, err := d.NewBuffer(uint64(len(f)) * 4)
			require.NoError(t, err)
			t.Cleanup(b.Close)
			require.NoError(t, b.WriteF32(0, f))
			return b
		}
		qa, ka, qb, kb, vb, fb := buf(q), buf(k), buf(q), buf(k), buf(v), buf(inv)
		posb, err := d.NewBuffer(uint64(n) * 4)
		require.NoError(t, err)
		defer posb.Close()
		require.NoError(t, posb.WriteU32(0, pos))
		sl, err := p.NewSlotList(slots)
		require.NoError(t, err)
		defer sl.Close()
		poison := uint32(0x7fc00000)
		if kv == treeattn.KVF16 {
			poison = 0x7e007e00
		}
		rec, err := d.NewRecorder()
		require.NoError(t, err)
		defer rec.Close()
		for l := range cfg.Layers {
			require.NoError(t, rec.Fill(p.K(l), poison))
			require.NoError(t, rec.Fill(p.V(l), poison))
		}
		// Layer 0: rope.comp, then Write.
		rope, err := kernels.Rope.Pipeline(d, kernels.SpecValues{"local_size_x": 64})
		require.NoError(t, err)
		total := n * (qHeads + cfg.KVHeads) * ropeDims / 2
		require.NoError(t, rope.Dispatch(rec, [3]uint32{uint32((total + 63) / 64), 1, 1},
			kernels.RopePush{N: uint32(n), QHeads: qHeads, KvHeads: uint32(cfg.KVHeads), HeadDim: uint32(dim), RopeDims: ropeDims},
			qa.All(), ka.All(), posb.All(), fb.All()))
		require.NoError(t, p.Write(rec, 0, sl, ka, vb))
		// Layer 1: the fused kernel.
		r := RoPE{QHeads: qHeads, Dims: ropeDims, Pos: posb, InvFreq: fb}
		require.NoError(t, p.WriteRoPE(rec, 1, sl, qb, kb, vb, r))
		require.NoError(t, rec.Submit())

		readF32 := func(b *vk.Buffer, k int) []float32 {
			out := make([]float32, k)
			require.NoError(t, b.ReadF32(0, out))
			return out
		}
		gotQA, gotQB := readF32(qa, len(q)), readF32(qb, len(q))
		require.True(t, bitsEqual(gotQA, gotQB), "%s: Q differs from rope.comp's", kv)
		require.True(t, bitsEqual(readF32(kb, len(k)), k), "%s: K must only be read", kv)
		words := p.NumSlots() * int(cfg.RowBytes()) / 4
		pool := func(b *vk.Buffer) []uint32 {
			out := make([]uint32, words)
			require.NoError(t, b.ReadU32(0, out))
			return out
		}
		row := int(cfg.RowBytes()) / 4
		for _, pair := range [][2]*vk.Buffer{{p.K(0), p.K(1)}, {p.V(0), p.V(1)}} {
			a, b := pool(pair[0]), pool(pair[1])
			for _, slot := range slots {
				for w := int(slot) * row; w < int(slot+1)*row; w++ {
					require.Equal(t, a[w], b[w], "%s: slot %d word %d", kv, slot, w-int(slot)*row)
					require.NotEqual(t, poison, b[w], "%s: slot %d word %d not written", kv, slot, w-int(slot)*row)
				}
			}
		}

		// Against float64: rotated pairs within fp32 rounding (theta is
		// formed in fp32: relative 6e-8 of up to 5000 radians), the rest exact.
		rotated := func(x []float32, heads int) []float64 {
			out := make([]float64, len(x))
			for i := 0; i < len(x); i += 2 {
				t := i / (heads * dim)
				j := (i % dim) / 2
				if j >= ropeDims/2 {
					out[i], out[i+1] = float64(x[i]), float64(x[i+1])
					continue
				}
				theta := float64(float32(float64(pos[t]) * float64(inv[j])))
				c, s := math.Cos(theta), math.Sin(theta)
				out[i] = float64(x[i])*c - float64(x[i+1])*s
				out[i+1] = float64(x[i])*s + float64(x[i+1])*c
			}
			return out
		}
		require.Less(t, relL2(gotQB, rotated(q, qHeads)), 1e-5, "%s: Q", kv)
		kPool := make([]float32, len(k))
		raw := pool(p.K(1))
		for i, slot := range slots {
			for e := range cfg.KVHeads * dim {
				if kv == treeattn.KVF32 {
					kPool[i*cfg.KVHeads*dim+e] = math.Float32frombits(raw[int(slot)*row+e])
				} else {
					w := raw[int(slot)*row+e/2]
					kPool[i*cfg.KVHeads*dim+e] = half.ToFloat32(uint16(w >> (16 * (e % 2))))
				}
			}
		}
		tol := 1e-5
		if kv == treeattn.KVF16 {
			tol = 1e-3
		}
		require.Less(t, relL2(kPool, rotated(k, cfg.KVHeads)), tol, "%s: K in the pool", kv)

		// A rerun writes the same bits.
		before := pool(p.K(1))
		require.NoError(t, rec.Reset())
		require.NoError(t, p.WriteRoPE(rec, 1, sl, buf(q), kb, vb, r))
		require.NoError(t, rec.Submit())
		require.Equal(t, before, pool(p.K(1)), "%s: rerun", kv)
	}
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func relL2(got []float32, want []float64) float64 {
	var num, den float64
	for i, w := range want {
		d := float64(got[i]) - w
		num += d * d
		den += w * w
	}
	return math.Sqrt(num / den)
}
