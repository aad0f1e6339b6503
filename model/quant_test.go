package model

import (
	"bytes"
	"fmt"
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

// kquantModel writes a small random Llama model (2 blocks, dim 256 = one
// K-quant super-block, 4 heads of 64 over 2 KV heads, FFN 512, vocab 300)
// whose 2-D weights are quantized by typeOf(name) with gguf.Quantize, as
// llama.cpp's quantizer would without an importance matrix; norms stay F32.
func kquantModel(t *testing.T, typeOf func(name string) gguf.TensorType) *gguf.File {
	r := gputest.Rand(t)
	const embd, heads, kvHeads, ffn, vocab, blocks = 256, 4, 2, 512, 300, 2
	hd := embd / heads
	w := gguf.NewWriter()
	for _, kv := range []struct {
		k string
		v any
	}{
		{"general.architecture", "llama"}, {"llama.block_count", uint32(blocks)}, {"llama.embedding_length", uint32(embd)},
		{"llama.feed_forward_length", uint32(ffn)}, {"llama.attention.head_count", uint32(heads)},
		{"llama.attention.head_count_kv", uint32(kvHeads)}, {"llama.context_length", uint32(512)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)}, {"llama.rope.freq_base", float32(10000)},
	} {
		require.NoError(t, w.SetKV(kv.k, kv.v))
	}
	add := func(name string, cols, rows int, scale float64) {
		x := randFloats(r, cols*max(rows, 1), scale)
		typ := gguf.F32
		dims := []uint64{uint64(cols)}
		if rows > 0 {
			typ = typeOf(name)
			dims = append(dims, uint64(rows))
		} else {
			for i := range x {
				x[i] += 1 // norms near 1
			}
		}
		data, err := gguf.Quantize(typ, x)
		require.NoError(t, err)
		require.NoError(t, w.AddTensor(name, typ, dims, data))
	}
	add("token_embd.weight", embd, vocab, 1)
	add("output_norm.weight", embd, 0, 0.1)
	add("output.weight", embd, vocab, 0.1)
	for i := range blocks {
		p := fmt.Sprintf("blk.%d.", i)
		add(p+"attn_norm.weight", embd, 0, 0.1)
		add(p+"ffn_norm.weight", embd, 0, 0.1)
		add(p+"attn_q.weight", embd, embd, 0.1)
		add(p+"attn_k.weight", embd, kvHeads*hd, 0.1)
		add(p+"attn_v.weight", embd, kvHeads*hd, 0.1)
		add(p+"attn_output.weight", embd, embd, 0.1)
		add(p+"ffn_gate.weight", embd, ffn, 0.1)
		add(p+"ffn_up.weight", embd, ffn, 0.1)
		add(p+"ffn_down.weight", ffn, embd, 0.1)
	}
	var buf bytes.Buffer
	_, err := w.WriteTo(&buf)
	require.NoError(t, err)
	f, err := gguf.FromBytes("kquant-random.gguf", buf.Bytes())
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

// K-quant models (all Q4_K, all Q5_K, all Q6_K, and llama.cpp's Q4_K_M and
// Q5_K_M mixes: Q6_K for output, attn_v and ffn_down): GPU logits against
// the float64 reference of the same file at every position of 10 greedy
// steps; the Q5_K models first evaluate a prompt of 40 tokens in one
// batch (gemm), its last logits against the reference too.
func TestKQuantModel(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	mix := func(base gguf.TensorType) func(string) gguf.TensorType {
		return func(n string) gguf.TensorType {
			if n == "output.weight" || strings.HasSuffix(n, "attn_v.weight") || strings.HasSuffix(n, "ffn_down.weight") {
				return gguf.Q6_K
			}
			return base
		}
	}
	mixes := []struct {
		name   string
		of     func(string) gguf.TensorType
		prompt int // tokens evaluated in one batch before the greedy steps
	}{
		{"Q4_K", func(string) gguf.TensorType { return gguf.Q4_K }, 0},
		{"Q5_K", func(string) gguf.TensorType { return gguf.Q5_K }, 40},
		{"Q6_K", func(string) gguf.TensorType { return gguf.Q6_K }, 0},
		{"Q4_K_M", mix(gguf.Q4_K), 0},
		{"Q5_K_M", mix(gguf.Q5_K), 40},
	}
	for _, mix := range mixes {
		t.Run(mix.name, func(t *testing.T) {
			f := kquantModel(t, mix.of)
			m, err := Load(d, f, Options{KV: treeattn.KVF32})
			require.NoError(t, err)
			defer m.Close()
			ref := newRef(t, f).newSeq()
			pool, err := NewPool(m, 16+mix.prompt)
			require.NoError(t, err)
			defer pool.Close()
			seq := pool.NewSequence()
			tok := int32(1)
			worst := 0.0
			if mix.prompt > 0 {
				prompt := make([]int32, mix.prompt)
				var want []float64
				for i := range prompt {
					prompt[i] = int32(r.IntN(m.Config().Vocab))
					want = ref.eval(prompt[i])
				}
				logits, err := m.Eval(pool, seq, prompt)
				require.NoError(t, err)
				tol, err := m.BatchTolerance(len(prompt))
				require.NoError(t, err)
				e := relL2(logits, want)
				t.Logf("prompt of %d tokens in one batch: rel L2 %.2e (tol %.0e)", len(prompt), e, tol)
				require.Less(t, e, tol)
				tok = argmax(logits)
			}
			for i := range 10 {
				logits, err := m.Eval(pool, seq, []int32{tok})
				require.NoError(t, err)
				e := relL2(logits, ref.eval(tok))
				worst = max(worst, e)
				require.Less(t, e, quantTol, "position %d", i)
				tok = argmax(logits)
			}
			t.Logf("%s (%.0f KiB of weights): worst rel L2 %.2e against the reference of the same file", mix.name, float64(m.WeightBytes())/1024, worst)
		})
	}
}
