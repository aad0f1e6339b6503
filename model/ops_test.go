package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/vk"
	"github.com/stretchr/testify/require"
)

// relL2 is ||got - want|| / ||want||.
func relL2(got []float32, want []float64) float64 {
	var num, den float64
	for i := range want {
		e := float64(got[i]) - want[i]
		num += e * e
		den += want[i] * want[i]
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

func randFloats(r *rand.Rand, n int, scale float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32((2*r.Float64() - 1) * scale)
	}
	return out
}

// randTensor makes a random rows x cols tensor of typ with its GGUF
// encoding: floats uniform in ±1, blocks with random quants and scales.
func randTensor(r *rand.Rand, typ gguf.TensorType, cols, rows int) gguf.Tensor {
	t := gguf.Tensor{Name: fmt.Sprintf("rand.%s", typ), Type: typ, Dims: []uint64{uint64(cols), uint64(rows)}}
	n := cols * rows
	switch typ {
	case gguf.F32:
		for _, v := range randFloats(r, n, 1) {
			t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(v))
		}
	case gguf.F16:
		for _, v := range randFloats(r, n, 1) {
			t.Data = binary.LittleEndian.AppendUint16(t.Data, half.FromFloat32(v))
		}
	case gguf.BF16:
		for _, v := range randFloats(r, n, 1) {
			t.Data = binary.LittleEndian.AppendUint16(t.Data, half.BF16FromFloat32(v))
		}
	case gguf.Q8_0, gguf.Q4_0:
		qbytes := 32
		if typ == gguf.Q4_0 {
			qbytes = 16
		}
		for range n / 32 {
			d := float32(0.01 + 0.05*r.Float64())
			if r.IntN(4) == 0 {
				d = -d
			}
			t.Data = binary.LittleEndian.AppendUint16(t.Data, half.FromFloat32(d))
			for range qbytes {
				t.Data = append(t.Data, byte(r.IntN(256)))
			}
		}
	case gguf.Q4_K, gguf.Q5_K, gguf.Q6_K:
		// Random scales, mins and quants under small random f16 super-block
		// scales (any bytes are a valid super-block).
		for range n / 256 {
			block := make([]byte, typ.BlockBytes())
			for i := range block {
				block[i] = byte(r.IntN(256))
			}
			d := half.FromFloat32(float32(0.0005 + 0.002*r.Float64()))
			dmin := half.FromFloat32(float32(0.0005 + 0.002*r.Float64()))
			if typ == gguf.Q4_K || typ == gguf.Q5_K {
				binary.LittleEndian.PutUint16(block[0:], d)
				binary.LittleEndian.PutUint16(block[2:], dmin)
			} else {
				binary.LittleEndian.PutUint16(block[208:], d)
			}
			t.Data = append(t.Data, block...)
		}
	}
	return t
}

// decodeTensor is the CPU float64 view of a tensor's rows.
func decodeTensor(t *testing.T, w gguf.Tensor) [][]float64 {
	cols, rows := int(w.Dims[0]), int(w.Dims[1])
	rb, err := w.Type.RowBytes(uint64(cols))
	require.NoError(t, err)
	out := make([][]float64, rows)
	for i := range out {
		f, err := decodeFloats(w.Type, w.Data[i*int(rb):], cols)
		require.NoError(t, err)
		out[i] = make([]float64, cols)
		for j, v := range f {
			out[i][j] = float64(v)
		}
	}
	return out
}

func newF32(t *testing.T, d *vk.Device, v []float32) *vk.Buffer {
	t.Helper()
	b, err := d.NewBuffer(uint64(4 * max(len(v), 1)))
	require.NoError(t, err)
	t.Cleanup(b.Close)
	require.NoError(t, b.WriteF32(0, v))
	return b
}

func newU32(t *testing.T, d *vk.Device, v []uint32) *vk.Buffer {
	t.Helper()
	b, err := d.NewBuffer(uint64(4 * max(len(v), 1)))
	require.NoError(t, err)
	t.Cleanup(b.Close)
	require.NoError(t, b.WriteU32(0, v))
	return b
}

func readF32(t *testing.T, b *vk.Buffer, n int) []float32 {
	t.Helper()
	out := make([]float32, n)
	require.NoError(t, b.ReadF32(0, out))
	return out
}

// runTwice resets out (to NaN, or to init when given), records and submits
// the kernel, and does it again; the two results must be bit-identical and
// free of NaN. It returns the result.
func runTwice(t *testing.T, d *vk.Device, out *vk.Buffer, n int, init []float32, record func(rec *vk.Recorder) error) []float32 {
	t.Helper()
	var results [2][]float32
	for run := range results {
		if init != nil {
			require.NoError(t, out.WriteF32(0, init))
		} else {
			require.NoError(t, out.FillF32(0, out.Size()/4, float32(math.NaN())))
		}
		rec, err := d.NewRecorder()
		require.NoError(t, err)
		require.NoError(t, record(rec))
		require.NoError(t, rec.Submit())
		rec.Close()
		results[run] = readF32(t, out, n)
	}
	for i, v := range results[0] {
		require.False(t, math.IsNaN(float64(v)), "output %d is NaN (not written)", i)
		require.Equal(t, math.Float32bits(v), math.Float32bits(results[1][i]), "output %d differs between two runs", i)
	}
	return results[0]
}

// Bounds of the kernels' fp32 arithmetic against float64 on the same
// (decoded) inputs.
const (
	kernelTol = 2e-6 // matmul, rmsnorm, swiglu
	// rope: theta = pos * invFreq is rounded to float32 (relative 6e-8:
	// up to 2.4e-4 rad for the fastest pair at position 4096).
	ropeTol = 1e-5
)

var weightTypes = []gguf.TensorType{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K}

// superBlock reports whether typ has 256-element super-blocks (rows of tests
// are then multiples of 256).
func superBlock(typ gguf.TensorType) bool { return typ.BlockSize() == 256 }

func TestMatmul(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	type matCase struct {
		n     int
		add   bool
		split uint64      // rows per part (0: one part)
		raw   bool        // GGUF block layout (no regrouping)
		shape matmulShape // zero: the default
	}
	cases := []matCase{{n: 1}, {n: 3, add: true, split: 10}, {n: 21}}
	for _, typ := range weightTypes {
		cs := cases
		// Other workgroup shapes on one float and one super-block type
		// (lavapipe compiles the Q6_K ones for tens of seconds each, and
		// the shape code is the same for every type).
		switch typ {
		case gguf.F16:
			cs = append(cs, matCase{n: 9, add: true, shape: matmulShape{rows: 2, group: 32}},
				matCase{n: 2, shape: matmulShape{rows: 8, group: 256}},
				matCase{n: 2, add: true, shape: matmulShape{rows: 16, group: 64}}) // the benchmarks' largest shapes (NC 2: lavapipe compiles NC 8 x 16 rows slowly)
		case gguf.Q4_K:
			cs = append(cs, matCase{n: 9, add: true, shape: matmulShape{rows: 2, group: 32}},
				matCase{n: 2, shape: matmulShape{rows: 8, group: 256}})
		}
		// Full iterations of 4 chunks x 4 invocations, and a tail (the
		// long rows of n = 21).
		if typ != gguf.Q6_K {
			cs = append(cs, matCase{n: 2, shape: matmulShape{rows: 4, group: 4, unroll: 4}})
		}
		if _, _, ok := groupedType(typ); ok {
			cs = append(cs, matCase{n: 5, add: true, split: 10, raw: true})
		}
		for _, c := range cs {
			name := fmt.Sprintf("%s/n=%d/add=%v/parts=%d/raw=%v/shape=%v", typ, c.n, c.add, c.split, c.raw, c.shape)
			t.Run(name, func(t *testing.T) {
				n := c.n
				cols, rows := 96, 37
				switch {
				case superBlock(typ):
					cols = 512
					if c.n == 21 || c.shape.unroll > 1 {
						cols = 2304 // 9 super-blocks: a last group of one
					}
				case typ == gguf.F32 && n == 3:
					cols = 44 // not a multiple of the 32-element block
				case typ == gguf.F16 && n == 3:
					cols = 36 // rows of 72 bytes: the quad path
				case n == 21 || c.shape.unroll > 1:
					cols = 352 // 11 blocks: a group of 8 and one of 3
				}
				wt := randTensor(r, typ, cols, rows)
				w, err := uploadWeightLayout(d, wt, c.split, !c.raw)
				require.NoError(t, err)
				defer w.close()
				if c.split > 0 {
					require.Len(t, w.parts, 4)
				}
				x := randFloats(r, n*cols, 1)
				y0 := randFloats(r, n*rows, 1)
				xb := newF32(t, d, x)
				yb := newF32(t, d, make([]float32, n*rows))
				var init []float32
				if c.add {
					init = y0
				}
				o := newOps(d)
				o.mm = c.shape
				got := runTwice(t, d, yb, n*rows, init, func(rec *vk.Recorder) error {
					return o.matmul(rec, w, xb, n, yb, c.add)
				})
				W := decodeTensor(t, wt)
				want := make([]float64, n*rows)
				for i := range n {
					for o := range rows {
						s := 0.0
						if c.add {
							s = float64(y0[i*rows+o])
						}
						for j := range cols {
							s += float64(x[i*cols+j]) * W[o][j]
						}
						want[i*rows+o] = s
					}
				}
				e := relL2(got, want)
				t.Logf("rel L2 %.2e (wtype %d, %d-byte rows)", e, w.wtype, w.rowBytes)
				require.Less(t, e, kernelTol)
			})
		}
	}
}

func TestEmbedGather(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	for _, typ := range weightTypes {
		for _, split := range []uint64{0, 7} {
			raw := split > 0 // both layouts of the grouped types
			t.Run(fmt.Sprintf("%s/parts=%d/raw=%v", typ, split, raw), func(t *testing.T) {
				cols, rows, n := 352, 29, 13
				if superBlock(typ) {
					cols = 2304
				}
				wt := randTensor(r, typ, cols, rows)
				w, err := uploadWeightLayout(d, wt, split, !raw)
				require.NoError(t, err)
				defer w.close()
				tokens := make([]uint32, n)
				for i := range tokens {
					tokens[i] = uint32(r.IntN(rows))
				}
				tokens[0], tokens[n-1] = 0, uint32(rows-1)
				tb := newU32(t, d, tokens)
				out := newF32(t, d, make([]float32, n*cols))
				got := runTwice(t, d, out, n*cols, nil, func(rec *vk.Recorder) error {
					return newOps(d).embed(rec, w, tb, n, out)
				})
				W := decodeTensor(t, wt)
				want := make([]float64, 0, n*cols)
				for _, tok := range tokens {
					want = append(want, W[tok]...)
				}
				e := relL2(got, want)
				t.Logf("rel L2 %.2e", e)
				require.Zero(t, e, "a gather of decoded weights is exact")
			})
		}
	}
}

func TestRMSNorm(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	for _, dim := range []int{8, 64, 100, 300} {
		t.Run(fmt.Sprint(dim), func(t *testing.T) {
			n := 5
			eps := 1e-5
			x := randFloats(r, n*dim, 3)
			w := randFloats(r, dim, 1)
			xb, wb := newF32(t, d, x), newF32(t, d, w)
			yb := newF32(t, d, make([]float32, n*dim))
			got := runTwice(t, d, yb, n*dim, nil, func(rec *vk.Recorder) error {
				return newOps(d).rmsnorm(rec, xb, wb, n, dim, eps, yb)
			})
			want := make([]float64, n*dim)
			for i := range n {
				ss := 0.0
				for j := range dim {
					ss += float64(x[i*dim+j]) * float64(x[i*dim+j])
				}
				s := 1 / math.Sqrt(ss/float64(dim)+eps)
				for j := range dim {
					want[i*dim+j] = float64(x[i*dim+j]) * s * float64(w[j])
				}
			}
			e := relL2(got, want)
			t.Logf("rel L2 %.2e", e)
			require.Less(t, e, kernelTol)
		})
	}
}

func TestSwiGLU(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	n := 1000
	g := randFloats(r, n, 8)
	u := randFloats(r, n, 2)
	gb, ub := newF32(t, d, nil), newF32(t, d, u)
	gb.Close()
	gb = newF32(t, d, g)
	got := runTwice(t, d, gb, n, g, func(rec *vk.Recorder) error { return newOps(d).swiglu(rec, gb, ub, n) })
	want := make([]float64, n)
	for i := range want {
		v := float64(g[i])
		want[i] = v / (1 + math.Exp(-v)) * float64(u[i])
	}
	e := relL2(got, want)
	t.Logf("rel L2 %.2e", e)
	require.Less(t, e, kernelTol)
}

// ropeRef rotates adjacent pairs of each head in float64.
func ropeRef(x []float32, heads, headDim, ropeDims int, pos []int32, inv []float64) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	n := len(pos)
	for tk := range n {
		for h := range heads {
			base := (tk*heads + h) * headDim
			for i := 0; i < ropeDims/2; i++ {
				th := float64(pos[tk]) * inv[i]
				c, s := math.Cos(th), math.Sin(th)
				a, b := out[base+2*i], out[base+2*i+1]
				out[base+2*i], out[base+2*i+1] = a*c-b*s, a*s+b*c
			}
		}
	}
	return out
}

func TestRope(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	cases := []struct {
		name                  string
		qh, kvh, hd, ropeDims int
		base                  float64
		freqs                 bool
		maxPos                int
	}{
		{"full", 8, 4, 8, 8, 10000, false, 512},
		{"partial", 4, 2, 16, 8, 500000, false, 4096},
		{"freqs", 2, 1, 12, 12, 10000, true, 2000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := 9
			cfg := Config{RopeBase: c.base, RopeDims: c.ropeDims}
			if c.freqs {
				for range c.ropeDims / 2 {
					cfg.RopeFreqs = append(cfg.RopeFreqs, 1+7*r.Float64())
				}
			}
			inv := invFreqs(cfg)
			inv32 := make([]float32, len(inv))
			for i, v := range inv {
				inv32[i] = float32(v)
				inv[i] = float64(inv32[i]) // the kernel's frequencies; positions are exact
			}
			pos := make([]int32, n)
			for i := range pos {
				pos[i] = int32(r.IntN(c.maxPos))
			}
			q := randFloats(r, n*c.qh*c.hd, 1)
			k := randFloats(r, n*c.kvh*c.hd, 1)
			qb, kb := newF32(t, d, q), newF32(t, d, k)
			posb := newU32(t, d, func() []uint32 {
				u := make([]uint32, n)
				for i, p := range pos {
					u[i] = uint32(p)
				}
				return u
			}())
			fb := newF32(t, d, inv32)
			s := ropeShape{qHeads: c.qh, kvHeads: c.kvh, headDim: c.hd, ropeDims: c.ropeDims}
			// Q and K are rotated in place: reset both, compare both.
			var gotK []float32
			gotQ := runTwice(t, d, qb, len(q), q, func(rec *vk.Recorder) error {
				require.NoError(t, kb.WriteF32(0, k))
				return newOps(d).rope(rec, s, qb, kb, posb, fb, n)
			})
			gotK = readF32(t, kb, len(k))
			eq := relL2(gotQ, ropeRef(q, c.qh, c.hd, c.ropeDims, pos, inv))
			ek := relL2(gotK, ropeRef(k, c.kvh, c.hd, c.ropeDims, pos, inv))
			t.Logf("rel L2 Q %.2e K %.2e", eq, ek)
			require.Less(t, eq, ropeTol)
			require.Less(t, ek, ropeTol)
			// Dims past ropeDims are untouched.
			for i := range n * c.qh {
				for j := c.ropeDims; j < c.hd; j++ {
					require.Equal(t, q[i*c.hd+j], gotQ[i*c.hd+j])
				}
			}
			require.False(t, slices.Equal(q, gotQ))
		})
	}
}

// The fusions of matmul: RMSNorm of the activation rows, stacked gate and
// up rows with SwiGLU, and stacked Q/K/V segments to three outputs, against
// float64.
func TestMatmulFused(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	cases := []struct {
		typ   gguf.TensorType
		n     int
		norm  bool
		glu   bool
		segs  []int
		split uint64
		shape matmulShape // zero: the default
	}{
		{typ: gguf.F16, n: 3, norm: true},
		{typ: gguf.Q4_K, n: 1, norm: true},
		{typ: gguf.Q8_0, n: 9, norm: true, glu: true},
		{typ: gguf.Q4_K, n: 2, norm: true, glu: true},
		{typ: gguf.F32, n: 4, glu: true},
		{typ: gguf.Q6_K, n: 5, norm: true, segs: []int{20, 8, 8}},
		{typ: gguf.Q5_K, n: 2, norm: true, glu: true},
		{typ: gguf.Q5_K, n: 3, norm: true, segs: []int{20, 8, 8}},
		{typ: gguf.BF16, n: 1, norm: true, segs: []int{12, 4, 4}, split: 6},
		{typ: gguf.Q4_K, n: 2, norm: true, glu: true, shape: matmulShape{rows: 16, group: 4, unroll: 2}},
		{typ: gguf.Q8_0, n: 1, norm: true, segs: []int{20, 8, 8}, shape: matmulShape{rows: 16, group: 64, unroll: 2}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/n=%d/norm=%v/glu=%v/segs=%v/parts=%d/shape=%v", c.typ, c.n, c.norm, c.glu, c.segs, c.split, c.shape), func(t *testing.T) {
			cols, rows := 96, 36
			if superBlock(c.typ) {
				cols = 512
			}
			if c.segs != nil {
				rows = c.segs[0] + c.segs[1] + c.segs[2]
			}
			wt := randTensor(r, c.typ, cols, rows)
			w, err := uploadWeightLayout(d, wt, c.split, true)
			require.NoError(t, err)
			defer w.close()
			w.segs = c.segs
			if c.glu {
				w.glu, w.segs = true, []int{rows / 2, rows / 2}
			}
			n := c.n
			x := randFloats(r, n*cols, 3)
			g := randFloats(r, cols, 1)
			eps := 1e-5
			xb, gb := newF32(t, d, x), newF32(t, d, g)
			var norm *vk.Buffer
			xs := make([]float64, n*cols) // the matmul's input in float64
			for i := range n {
				s := 1.0
				if c.norm {
					ss := 0.0
					for j := range cols {
						ss += float64(x[i*cols+j]) * float64(x[i*cols+j])
					}
					s = 1 / math.Sqrt(ss/float64(cols)+eps)
					norm = gb
				}
				for j := range cols {
					v := float64(x[i*cols+j]) * s
					if c.norm {
						v *= float64(g[j])
					}
					xs[i*cols+j] = v
				}
			}
			W := decodeTensor(t, wt)
			prod := func(i, o int) float64 {
				s := 0.0
				for j := range cols {
					s += xs[i*cols+j] * W[o][j]
				}
				return s
			}
			var outs []*vk.Buffer
			var want []float64
			switch {
			case c.glu:
				outs = []*vk.Buffer{newF32(t, d, make([]float32, n*rows/2))}
				for i := range n {
					for o := range rows / 2 {
						gv, uv := prod(i, o), prod(i, rows/2+o)
						want = append(want, gv/(1+math.Exp(-gv))*uv)
					}
				}
			case c.segs != nil:
				base := 0
				for _, sr := range c.segs {
					outs = append(outs, newF32(t, d, make([]float32, n*sr)))
					for i := range n {
						for o := range sr {
							want = append(want, prod(i, base+o))
						}
					}
					base += sr
				}
			default:
				outs = []*vk.Buffer{newF32(t, d, make([]float32, n*rows))}
				for i := range n {
					for o := range rows {
						want = append(want, prod(i, o))
					}
				}
			}
			o := newOps(d)
			o.mm = c.shape
			var got []float32
			for _, ob := range outs {
				size := int(ob.Size() / 4)
				// Every output is poisoned before each of the two runs.
				res := runTwice(t, d, ob, size, nil, func(rec *vk.Recorder) error {
					for _, other := range outs {
						if other != ob {
							require.NoError(t, other.FillF32(0, other.Size()/4, float32(math.NaN())))
						}
					}
					return o.matmulFused(rec, w, xb, n, outs, false, norm, eps)
				})
				got = append(got, res...)
			}
			e := relL2(got, want)
			t.Logf("rel L2 %.2e", e)
			require.Less(t, e, kernelTol)
		})
	}
}
