package model

import (
	"bytes"
	"strings"
	"testing"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/treeattn"
	"github.com/stretchr/testify/require"
)

// requantize rewrites a model with its 2-D weights in typ (as llama.cpp's
// quantizer would, without an importance matrix): a tensor whose rows are
// not whole blocks of typ (stories260K's ffn_down, rows of 172) falls back
// to F16; norms stay F32. It returns the new file and how many tensors got
// typ.
func requantize(t *testing.T, f *gguf.File, typ gguf.TensorType) (*gguf.File, int) {
	w := gguf.NewWriter()
	for _, kv := range f.Metadata() {
		require.NoError(t, w.SetKV(kv.Key, kv.Value))
	}
	converted := 0
	for _, ten := range f.Tensors() {
		to := ten.Type
		if len(ten.Dims) == 2 && !strings.HasSuffix(ten.Name, "_norm.weight") {
			to = typ
			if ten.Dims[0]%uint64(typ.BlockSize()) != 0 {
				to = gguf.F16
			}
		}
		data := ten.Data
		if to != ten.Type {
			x, err := gguf.Dequantize(ten)
			require.NoError(t, err)
			data, err = gguf.Quantize(to, x)
			require.NoError(t, err)
		}
		if to == typ {
			converted++
		}
		require.NoError(t, w.AddTensor(ten.Name, to, ten.Dims, data))
	}
	var buf bytes.Buffer
	_, err := w.WriteTo(&buf)
	require.NoError(t, err)
	q, err := gguf.FromBytes(f.Name()+"."+typ.String(), buf.Bytes())
	require.NoError(t, err)
	t.Cleanup(func() { q.Close() })
	return q, converted
}

// quantTol bounds GPU logits against the float64 reference of the same
// quantized file: the kernels decode the same values exactly, so only fp32
// arithmetic differs (measured around 1e-6).
const quantTol = 1e-4

// stories260K re-quantized to each weight type: GPU logits against the
// float64 reference of the same file at every position of 12 greedy steps
// from BOS; the drift from the F32 model's logits is logged.
func TestQuantizedStories(t *testing.T) {
	d := gputest.Device(t)
	f, err := gguf.Open(testmodels.Path(t, "stories260K.gguf"))
	require.NoError(t, err)
	defer f.Close()
	base := newRef(t, f)
	for _, typ := range []gguf.TensorType{gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0} {
		t.Run(typ.String(), func(t *testing.T) {
			q, n := requantize(t, f, typ)
			m, err := Load(d, q, Options{KV: treeattn.KVF32})
			require.NoError(t, err)
			defer m.Close()
			require.Positive(t, n)
			ref := newRef(t, q).newSeq()
			fref := base.newSeq()
			pool, err := NewPool(m, 16)
			require.NoError(t, err)
			defer pool.Close()
			seq := pool.NewSequence()
			tok := int32(1)
			worst, drift := 0.0, 0.0
			for i := range 12 {
				logits, err := m.Eval(pool, seq, []int32{tok})
				require.NoError(t, err)
				want := ref.eval(tok)
				e := relL2(logits, want)
				worst = max(worst, e)
				require.Less(t, e, quantTol, "position %d", i)
				drift = max(drift, relL2(logits, fref.eval(tok)))
				tok = argmax(logits)
			}
			t.Logf("%s (%d tensors, %.0f KiB of weights): worst rel L2 %.2e against the reference of the same file; %.2e from the F32 model",
				typ, n, float64(m.WeightBytes())/1024, worst, drift)
		})
	}
}
