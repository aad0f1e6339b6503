package model

import (
	"fmt"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
	"github.com/stretchr/testify/require"
)

// gemmTol is gemm's relative L2 bound per variant against float64 on the
// decoded inputs. scalar: fp32 products summed in input order, as matmul.
// coopmat: x and W are rounded to f16 (unit roundoff u = 2^-11 = 4.9e-4)
// and products accumulate in f32 (K * 2^-24, negligible). Each product
// carries two independent rounding errors of RMS about u/sqrt(3), so with
// terms of random sign the sum's relative L2 error is about
// sqrt(2/3) u = 4e-4 (F16 weights are exact in f16: 2.8e-4); 2e-3 leaves a
// factor 5 of margin, the tolerance `deft conformance` uses for f16 KV.
var gemmTol = map[string]float64{"scalar": kernelTol, "coopmat": 2e-3}

// gemmTileSets are the tiles tests check per variant; they hold every tile
// linear picks (defaultGemmTiles, see TestGemmDefaultsTested).
var gemmTileSets = map[string][]gemmTiles{
	"coopmat": {
		{TM: 32, TN: 128, TK: 32, SM: 32, SN: 32},
		{TM: 64, TN: 128, TK: 32, SM: 32, SN: 64},
		{TM: 64, TN: 128, TK: 64, SM: 32, SN: 64},
		{TM: 128, TN: 128, TK: 32, SM: 64, SN: 64},
		{TM: 64, TN: 256, TK: 32, SM: 32, SN: 64},
		{TM: 64, TN: 64, TK: 32, SM: 32, SN: 32},
		{TM: 128, TN: 128, TK: 32, SM: 32, SN: 64},
		{TM: 128, TN: 256, TK: 32, SM: 64, SN: 64},
		{TM: 128, TN: 128, TK: 64, SM: 64, SN: 64},
		{TM: 64, TN: 128, TK: 32, SM: 32, SN: 64, Stages: 1},
		{TM: 32, TN: 64, TK: 64, SM: 32, SN: 32},
		{TM: 64, TN: 64, TK: 64, SM: 32, SN: 32},
		// Loads two steps ahead, with one and two shared stages.
		{TM: 64, TN: 256, TK: 32, SM: 32, SN: 64, Prefetch: 2},
		{TM: 64, TN: 128, TK: 32, SM: 32, SN: 64, Prefetch: 2},
		{TM: 64, TN: 128, TK: 32, SM: 32, SN: 64, Stages: 1, Prefetch: 2},
	},
	"scalar": {
		{TM: 32, TN: 64, TK: 32, SM: 4, SN: 4},
		{TM: 16, TN: 32, TK: 16, SM: 2, SN: 2},
	},
}

// Every tile defaultGemmTiles picks is one TestGemm checks (and one
// BenchmarkGemm times), for every variant, batch size and weight type.
func TestGemmDefaultsTested(t *testing.T) {
	for variant, sets := range gemmTileSets {
		for n := 1; n <= 1024; n++ {
			for wt := uint32(kernels.WeightF32); wt <= kernels.WeightQ5_K; wt++ {
				d := defaultGemmTiles(variant, n, wt)
				require.Contains(t, sets, d, "%s n=%d wtype %d: default tile %s is not tested", variant, n, wt, d)
				require.Contains(t, gemmBenchTiles[variant], d, "%s n=%d wtype %d: default tile %s is not benchmarked", variant, n, wt, d)
			}
		}
	}
}

// Every benchmarked coopmat tile fits the shader's named registers (4 x 4
// fragments, 8 octets per invocation) on NVIDIA's 32-wide subgroups
// without extra fetching subgroups, and in some workgroup size on 8-, 16-
// and 64-wide ones.
func TestGemmCoopMatTilesFit(t *testing.T) {
	for _, tile := range gemmBenchTiles["coopmat"] {
		require.LessOrEqual(t, tile.SM/16, gemmMaxFragments, "tile %s", tile)
		require.LessOrEqual(t, tile.SN/16, gemmMaxFragments, "tile %s", tile)
		g, err := coopMatGroup(tile, 32, 1024)
		require.NoError(t, err)
		require.Equal(t, (tile.TM/tile.SM)*(tile.TN/tile.SN)*32, g, "tile %s", tile)
		for _, sg := range []int{8, 16, 64} {
			g, err := coopMatGroup(tile, sg, 1024)
			require.NoError(t, err, "tile %s, subgroup %d", tile, sg)
			require.Zero(t, g%sg)
			require.LessOrEqual(t, ceilDiv(max(tile.TM, tile.TN)*tile.TK/8, g), gemmMaxOctets)
		}
	}
}

// gemmVariants lists the gemm variants d can run, logging why others
// cannot (lavapipe: scalar only).
func gemmVariants(t testing.TB, d *vk.Device) []string {
	var out []string
	for _, v := range kernels.Gemm.Variants {
		if v.Requires != nil {
			if err := v.Requires(&d.Info); err != nil {
				t.Logf("gemm variant %s not run on %s: %v", v.Name, d.Info.Name, err)
				continue
			}
		}
		out = append(out, v.Name)
	}
	return out
}

// gemmRef is y0 (when add) + x W^T in float64.
func gemmRef(x []float32, W [][]float64, y0 []float32, n, cols int) []float64 {
	rows := len(W)
	want := make([]float64, n*rows)
	for i := range n {
		for o := range rows {
			s := 0.0
			if y0 != nil {
				s = float64(y0[i*rows+o])
			}
			for j := range cols {
				s += float64(x[i*cols+j]) * W[o][j]
			}
			want[i*rows+o] = s
		}
	}
	return want
}

// gemmA16Types are the weight types TestGemm also checks with f16
// activations (A16): F16's 16-byte octets and two dequantizing paths.
var gemmA16Types = []gguf.TensorType{gguf.F16, gguf.Q8_0, gguf.Q4_K, gguf.Q5_K}

// newF16 is a device buffer of f16 values (bits).
func newF16(t *testing.T, d *vk.Device, v []uint16) *vk.Buffer {
	t.Helper()
	b, err := d.NewBuffer(uint64(2 * max(len(v), 2)))
	require.NoError(t, err)
	t.Cleanup(b.Close)
	require.NoError(t, b.WriteF16(0, v))
	return b
}

// Every gemm variant the device runs, in every tile of gemmTileSets,
// against the float64 reference: every weight type, ragged n, weight rows
// and input lengths (not multiples of any tile), ADD, weights split into
// parts, NaN-poisoned outputs, bit-identical reruns; with float32
// activations, and with f16 ones (A16: rows of whole octets and, at 44
// columns, of quads) for gemmA16Types.
func TestGemm(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	type gcase struct {
		n, cols, rows int
		add           bool
		split         uint64 // rows per weight part
		kSplit        int    // gemmTiles.Split
	}
	cases := []gcase{
		{n: 5, cols: 96, rows: 37},
		{n: 33, cols: 160, rows: 130, add: true, kSplit: 3},
		{n: 70, cols: 96, rows: 70, split: 40, kSplit: 2},
		{n: 17, cols: 44, rows: 29, add: true, kSplit: 2}, // float types only: 44 is no block multiple
		{n: 40, cols: 512, rows: 66, kSplit: 5},           // whole 256-element super-blocks
	}
	variants := gemmVariants(t, d)
	require.NotEmpty(t, variants)
	for _, variant := range variants {
		worst, runs := 0.0, 0
		worstAbs := 0.0
		for _, tiles := range gemmTileSets[variant] {
			for _, typ := range weightTypes {
				for ci := range 2 * len(cases) {
					c, a16 := cases[ci%len(cases)], ci >= len(cases)
					if _, err := typ.RowBytes(uint64(c.cols)); err != nil {
						continue // no whole blocks
					}
					if a16 && !slices.Contains(gemmA16Types, typ) {
						continue
					}
					tiles := tiles
					tiles.Split = c.kSplit
					tiles.A16 = a16
					name := fmt.Sprintf("%s/%s/%s/n=%d/%dx%d/add=%v/parts=%d", variant, tiles, typ, c.n, c.cols, c.rows, c.add, c.split)
					t.Run(name, func(t *testing.T) {
						wt := randTensor(r, typ, c.cols, c.rows)
						w, err := uploadWeightParts(d, wt, c.split)
						require.NoError(t, err)
						defer w.close()
						x := randFloats(r, c.n*c.cols, 1)
						var xb *vk.Buffer
						if a16 {
							// f16 activations: the reference takes them
							// rounded, as the kernel reads them.
							h := half.FromFloat32Slice(x)
							x = half.ToFloat32Slice(h)
							xb = newF16(t, d, h)
						} else {
							xb = newF32(t, d, x)
						}
						yb := newF32(t, d, make([]float32, c.n*c.rows))
						var y0 []float32
						if c.add {
							y0 = randFloats(r, c.n*c.rows, 1)
						}
						o := newOps(d)
						defer o.close()
						got := runTwice(t, d, yb, c.n*c.rows, y0, func(rec *vk.Recorder) error {
							// Split-K partial sums start as NaN too: every
							// split must write all of its outputs.
							sc, err := o.gemmScratch(1 << 16)
							require.NoError(t, err)
							require.NoError(t, rec.Fill(sc, math.Float32bits(float32(math.NaN()))))
							return o.gemm(rec, variant, tiles, w, xb, c.n, yb, c.add)
						})
						want := gemmRef(x, decodeTensor(t, wt), y0, c.n, c.cols)
						e := relL2(got, want)
						for i, v := range want {
							worstAbs = max(worstAbs, math.Abs(float64(got[i])-v))
						}
						worst = max(worst, e)
						runs++
						t.Logf("rel L2 %.2e (tol %.0e)", e, gemmTol[variant])
						require.Less(t, e, gemmTol[variant])
					})
				}
			}
		}
		t.Logf("gemm variant %s on %s: %d cases, worst rel L2 %.2e (tol %.0e), worst abs error %.2e", variant, d.Info.Name, runs, worst, gemmTol[variant], worstAbs)
	}
}

// linear sends batches of at least the variant's threshold to gemm (its
// result differs from matmul's in the last bits) and smaller ones to
// matmul (bit-identical to o.matmul).
func TestLinearChoice(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	o := newOps(d)
	defer o.close()
	variant, err := o.gemmVariant()
	require.NoError(t, err)
	minRows := gemmMinRowsScalar
	if variant == "coopmat" {
		minRows = gemmMinRowsCoopMat
	}
	t.Logf("gemm variant %s, batches of %d rows and more", variant, minRows)
	cols, rows := 128, 64
	wt := randTensor(r, gguf.Q8_0, cols, rows)
	w, err := uploadWeight(d, wt)
	require.NoError(t, err)
	defer w.close()
	W := decodeTensor(t, wt)
	for _, n := range []int{minRows - 1, minRows, minRows + 9} {
		x := randFloats(r, n*cols, 1)
		xb := newF32(t, d, x)
		yb := newF32(t, d, make([]float32, n*rows))
		lin := runTwice(t, d, yb, n*rows, nil, func(rec *vk.Recorder) error { return o.linear(rec, w, xb, n, yb, false) })
		mm := runTwice(t, d, yb, n*rows, nil, func(rec *vk.Recorder) error { return o.matmul(rec, w, xb, n, yb, false) })
		gm := runTwice(t, d, yb, n*rows, nil, func(rec *vk.Recorder) error {
			return o.gemm(rec, variant, defaultGemmTiles(variant, n, w.wtype), w, xb, n, yb, false)
		})
		want := gemmRef(x, W, nil, n, cols)
		require.Less(t, relL2(lin, want), gemmTol[variant])
		if n < minRows {
			require.Equal(t, mm, lin, "n=%d: linear is matmul", n)
		} else {
			require.Equal(t, gm, lin, "n=%d: linear is gemm", n)
		}
	}
}

// A prompt long enough for gemm, in one chunk of more than 256 tokens (the
// default chunk is larger), gives the float64 reference's logits at every
// position, for every gemm variant the device runs (forced as --variant
// gemm=V does) with float32 and f16 gemm inputs (Options.GemmInputs).
func TestGemmPrefill(t *testing.T) {
	d := gputest.Device(t)
	f, _ := openModel(t, d, testmodels.Path(t, "stories260K.gguf"), Options{KV: treeattn.KVF32})
	r := gputest.Rand(t)
	prompt := []int32{1}
	for range 299 {
		prompt = append(prompt, int32(3+r.IntN(500)))
	}
	ref := newRef(t, f).newSeq()
	want := make([][]float64, len(prompt))
	for i, tk := range prompt {
		want[i] = ref.eval(tk)
	}
	// Logits after 5 layers of f16-operand products (about 4e-4 each):
	// errors add up over the layers' residual stream.
	tol := func(variant, inputs string) float64 {
		if variant == "scalar" && inputs == GemmInputsF32 {
			return 1e-4
		}
		return 1e-2
	}
	t.Cleanup(func() { _ = kernels.SetOverride(os.Getenv(kernels.VariantEnv)) })
	for _, variant := range gemmVariants(t, d) {
		require.NoError(t, kernels.SetOverride("gemm="+variant))
		for _, inputs := range []string{GemmInputsF32, GemmInputsF16} {
			m, err := Load(d, f, Options{KV: treeattn.KVF32, GemmInputs: inputs})
			require.NoError(t, err)
			require.Greater(t, m.Options().ChunkTokens, len(prompt))
			// The batch runs Q/K/V and gate/up as one gemm per stack,
			// each matrix to its own buffer (gemmSegs).
			for _, l := range m.layers {
				require.Len(t, l.qkv, 1)
				require.Len(t, l.qkv[0].segs, 3)
				require.NotNil(t, l.gateUp)
			}
			got := runAlone(t, m, nil, prompt) // one 300-token batch
			m.Close()
			worst := 0.0
			for i := range prompt {
				e := relL2(got[i], want[i])
				worst = max(worst, e)
				require.Less(t, e, tol(variant, inputs), "gemm %s, %s inputs: token %d", variant, inputs, i)
			}
			t.Logf("gemm variant %s, %s inputs: %d-token prefill, worst rel L2 %.2e against the float64 reference (tol %.0e)",
				variant, inputs, len(prompt), worst, tol(variant, inputs))
		}
	}
}

// The automatic chunk is DefaultChunkTokens where memory is plentiful and
// halves, down to MinChunkTokens, while a chunk's activations would exceed
// a 32nd of the device memory; Load rejects unknown gemm inputs.
func TestChunkTokensChoice(t *testing.T) {
	c := Config{Embd: 4096, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 14336} // Llama-3-8B
	require.Equal(t, DefaultChunkTokens, autoChunkTokens(c, 140<<30))
	require.Equal(t, DefaultChunkTokens, autoChunkTokens(c, 0))
	require.Equal(t, MinChunkTokens, autoChunkTokens(c, 1<<30))
	for _, limit := range []uint64{4 << 30, 8 << 30, 16 << 30} {
		k := autoChunkTokens(c, limit)
		require.LessOrEqual(t, chunkBytes(c, k), limit/32, "limit %d", limit)
		if k < DefaultChunkTokens {
			require.Greater(t, chunkBytes(c, 2*k), limit/32, "limit %d", limit)
		}
	}
	d := gputest.Device(t)
	f, _ := openModel(t, d, testmodels.Path(t, "stories260K.gguf"), Options{KV: treeattn.KVF32})
	_, err := Load(d, f, Options{GemmInputs: "bf16"})
	require.ErrorContains(t, err, "gemm inputs")
}

// toF16 rounds float32 activations to the nearest f16 (within half an f16
// unit in the last place, whatever the driver's tie rule), infinities
// beyond f16's range; reruns are bit-identical.
func TestToF16(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	o := newOps(d)
	defer o.close()
	n := 4 * 1000
	x := randFloats(r, n, 3)
	x[0], x[1], x[2], x[3] = 0, -1e6, 1e-6, 65504
	xb := newF32(t, d, x)
	hb, err := d.NewBuffer(uint64(2 * n))
	require.NoError(t, err)
	defer hb.Close()
	var first []uint16
	for run := range 2 {
		rec, err := d.NewRecorder()
		require.NoError(t, err)
		require.NoError(t, rec.Fill(hb, 0x7e007e00)) // f16 NaNs
		require.NoError(t, o.toF16(rec, xb, hb, n))
		require.NoError(t, rec.Submit())
		rec.Close()
		words := make([]uint16, n)
		require.NoError(t, hb.ReadF16(0, words))
		if run == 1 {
			require.Equal(t, first, words, "rerun")
		}
		first = words
	}
	for i, v := range x {
		h := float64(half.ToFloat32(first[i]))
		switch {
		case math.Abs(float64(v)) > 65520:
			require.True(t, math.IsInf(h, int(math.Copysign(1, float64(v)))), "element %d: %g -> %g", i, v, h)
		default:
			// Half an ulp of f16 (2^-11 relative; 2^-25 absolute for subnormals).
			bound := max(math.Abs(float64(v))*math.Pow(2, -11), math.Pow(2, -25))
			require.LessOrEqual(t, math.Abs(h-float64(v)), bound, "element %d: %g -> %g", i, v, h)
		}
	}
	require.Error(t, o.toF16(nil, xb, hb, 6), "elements must be whole quads")
}

// Split-K: few output tiles over a long input are split up to about
// gemmTargetGroups workgroups with at least gemmMinSplitSteps steps each,
// never into empty splits, and not beyond the scratch limit.
func TestGemmSplits(t *testing.T) {
	d := gputest.Device(t)
	o := newOps(d)
	defer o.close()
	auto := gemmTiles{TM: 64, TN: 128, TK: 32, SM: 32, SN: 64}
	forced := auto
	forced.Split = 3
	for _, c := range []struct {
		t                    gemmTiles
		groups, steps, float int
		want                 int
	}{
		{auto, 32, 128, 1000, 8},     // 4096 -> 4096 at n <= 64: 8 splits of 16 steps
		{auto, 32, 448, 1000, 9},     // 14336 -> 4096: ceil(264/32) = 9
		{auto, 448, 128, 1000, 1},    // 4096 -> 14336 at n = 256: enough tiles
		{auto, 1, 20, 1000, 1},       // short input: no split under 16 steps each
		{forced, 1, 5, 1000, 3},      // 2 + 2 + 1 steps
		{forced, 1, 2, 1000, 2},      // no more splits than steps
		{forced, 1, 4, 1000, 2},      // 3 would leave an empty split: 2 + 2
		{forced, 1, 100, 1 << 30, 1}, // partial sums over the scratch limit
	} {
		got := o.gemmSplits(c.t, c.groups, c.steps, c.float)
		require.Equal(t, c.want, got, "%s over %d groups, %d steps", c.t, c.groups, c.steps)
		if got > 1 {
			k := ceilDiv(c.steps, got)
			require.Less(t, (got-1)*k, c.steps, "split %d is empty", got-1)
		}
	}
}

// A gemm over stacked matrices (Q, K and V; gate and up) writes each
// segment to its own buffer (the batch path of Model): every variant the
// device runs, in every tile of gemmTileSets, every weight type, two and
// three segments whose bounds cut through tiles, with and without
// split-K (gemm_reduce stores the segments), weights in one part and in
// several, f32 and f16 activations. Each segment is bit-identical to its
// columns of the unsegmented gemm over the whole stack and within gemmTol
// of the float64 reference; outputs are NaN-poisoned, reruns
// bit-identical, and buffers past a segment's rows stay untouched.
func TestGemmSegments(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	type scase struct {
		n      int
		segs   []int
		kSplit int
		split  uint64 // rows per weight part (0: one part)
		a16    bool
	}
	cases := []scase{
		{n: 37, segs: []int{40, 24, 30}, kSplit: 1},
		{n: 37, segs: []int{40, 24, 30}, kSplit: 3, a16: true},
		{n: 70, segs: []int{66, 66}, kSplit: 2},
		{n: 33, segs: []int{50, 20, 20}, kSplit: 1, split: 30},
	}
	o := newOps(d)
	defer o.close()
	for _, variant := range gemmVariants(t, d) {
		worst, runs := 0.0, 0
		for _, tiles := range gemmTileSets[variant] {
			for _, typ := range weightTypes {
				cols := 96
				if superBlock(typ) {
					cols = 512
				}
				for _, c := range cases {
					if c.a16 && !slices.Contains(gemmA16Types, typ) {
						continue
					}
					tiles := tiles
					tiles.Split, tiles.A16 = c.kSplit, c.a16
					name := fmt.Sprintf("%s/%s/%s/n=%d/segs=%v/parts=%d", variant, tiles, typ, c.n, c.segs, c.split)
					t.Run(name, func(t *testing.T) {
						rows := 0
						for _, s := range c.segs {
							rows += s
						}
						wt := randTensor(r, typ, cols, rows)
						w, err := uploadWeightParts(d, wt, c.split)
						require.NoError(t, err)
						defer w.close()
						w.segs = c.segs
						x := randFloats(r, c.n*cols, 1)
						var xb *vk.Buffer
						if c.a16 {
							h := half.FromFloat32Slice(x)
							x = half.ToFloat32Slice(h)
							xb = newF16(t, d, h)
						} else {
							xb = newF32(t, d, x)
						}
						// Each segment's buffer has a row more than it needs,
						// which must keep its NaNs.
						ys := make([]*vk.Buffer, len(c.segs))
						for i, s := range c.segs {
							ys[i] = newF32(t, d, make([]float32, (c.n+1)*s))
						}
						whole := newF32(t, d, make([]float32, c.n*rows))
						all := runTwice(t, d, whole, c.n*rows, nil, func(rec *vk.Recorder) error {
							return o.gemm(rec, variant, tiles, w, xb, c.n, whole, false)
						})
						var first [][]float32
						for run := range 2 {
							for _, y := range ys {
								require.NoError(t, y.FillF32(0, y.Size()/4, float32(math.NaN())))
							}
							rec, err := d.NewRecorder()
							require.NoError(t, err)
							sc, err := o.gemmScratch(1 << 16)
							require.NoError(t, err)
							require.NoError(t, rec.Fill(sc, math.Float32bits(float32(math.NaN()))))
							require.NoError(t, o.gemmSegs(rec, variant, tiles, w, xb, c.n, ys, false))
							require.NoError(t, rec.Submit())
							rec.Close()
							var got [][]float32
							for i, s := range c.segs {
								g := readF32(t, ys[i], (c.n+1)*s)
								for j, v := range g[c.n*s:] {
									require.True(t, math.IsNaN(float64(v)), "segment %d: element %d past the rows written", i, j)
								}
								got = append(got, g[:c.n*s])
							}
							if run == 1 {
								require.Equal(t, first, got, "rerun")
							}
							first = got
						}
						want := gemmRef(x, decodeTensor(t, wt), nil, c.n, cols)
						col0 := 0
						for i, s := range c.segs {
							seg := make([]float32, 0, c.n*s)
							segWant := make([]float64, 0, c.n*s)
							for row := range c.n {
								seg = append(seg, all[row*rows+col0:row*rows+col0+s]...)
								segWant = append(segWant, want[row*rows+col0:row*rows+col0+s]...)
							}
							require.Equal(t, seg, first[i], "segment %d against the unsegmented gemm", i)
							e := relL2(first[i], segWant)
							worst = max(worst, e)
							require.Less(t, e, gemmTol[variant], "segment %d", i)
							col0 += s
						}
						runs++
					})
				}
			}
		}
		t.Logf("gemm variant %s on %s: %d segmented cases, worst rel L2 %.2e (tol %.0e)", variant, d.Info.Name, runs, worst, gemmTol[variant])
	}
	// Outputs must match the segments, and segments add nothing.
	wt := randTensor(r, gguf.F16, 64, 48)
	w, err := uploadWeight(d, wt)
	require.NoError(t, err)
	defer w.close()
	w.segs = []int{32, 16}
	xb := newF32(t, d, randFloats(r, 40*64, 1))
	y := newF32(t, d, make([]float32, 40*48))
	variant, err := o.gemmVariant()
	require.NoError(t, err)
	tiles := defaultGemmTiles(variant, 40, w.wtype)
	require.Error(t, o.gemmSegs(nil, variant, tiles, w, xb, 40, []*vk.Buffer{y, y, y}, false))
	require.Error(t, o.gemmSegs(nil, variant, tiles, w, xb, 40, []*vk.Buffer{y, y}, true))
	require.Error(t, o.gemmSegs(nil, variant, tiles, w, xb, 40, nil, false))
}
