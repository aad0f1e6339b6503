package model

import (
	"math"
	"testing"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/vk"
	"github.com/stretchr/testify/require"
)

// TestMatmulQuantConv checks matmul's two conversions of quants to floats
// (QCONV: by position, the default, and byte by byte, the former one) on
// the aligned chunks of Q8_0, Q4_0, Q4_K, Q5_K and Q6_K: both within kernelTol of
// the float64 reference, and bit-identical to each other (every product is
// the same exact value, see matmul.comp).
func TestMatmulQuantConv(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	for _, typ := range []gguf.TensorType{gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K} {
		t.Run(typ.String(), func(t *testing.T) {
			cols, rows, n := 352, 19, 1 // n 1: one column per pass (lavapipe compiles Q6_K slowly)
			if superBlock(typ) {
				cols = 512
			}
			wt := randTensor(r, typ, cols, rows)
			w, err := uploadWeight(d, wt)
			require.NoError(t, err)
			defer w.close()
			x := randFloats(r, n*cols, 1)
			xb := newF32(t, d, x)
			W := decodeTensor(t, wt)
			want := make([]float64, n*rows)
			for i := range n {
				for o := range rows {
					for j := range cols {
						want[i*rows+o] += float64(x[i*cols+j]) * W[o][j]
					}
				}
			}
			var outs [2][]float32
			for i, byteConv := range []bool{false, true} {
				yb := newF32(t, d, make([]float32, n*rows))
				o := newOps(d)
				o.mm = matmulShape{rows: 4, group: 16, byteConv: byteConv}
				outs[i] = runTwice(t, d, yb, n*rows, nil, func(rec *vk.Recorder) error {
					return o.matmul(rec, w, xb, n, yb, false)
				})
				e := relL2(outs[i], want)
				t.Logf("byteConv %v: rel L2 %.2e (wtype %d)", byteConv, e, w.wtype)
				require.Less(t, e, kernelTol)
			}
			for i := range outs[0] {
				require.Equal(t, math.Float32bits(outs[1][i]), math.Float32bits(outs[0][i]),
					"output %d: positional %g, byte by byte %g", i, outs[0][i], outs[1][i])
			}
		})
	}
}
