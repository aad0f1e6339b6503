package llama

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/llama/internal/fixtures"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func configOf(t *testing.T, path string) (Config, error) {
	t.Helper()
	f, err := gguf.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return ConfigFrom(f)
}

func TestConfigs(t *testing.T) {
	c, err := configOf(t, testmodels.Path(t, "stories260K.gguf"))
	require.NoError(t, err)
	assert.InDelta(t, 1e-5, c.RMSEps, 1e-12)
	c.RMSEps = 0
	assert.Equal(t, Config{Blocks: 5, Embd: 64, FFN: 172, Heads: 8, KVHeads: 4, HeadDim: 8, HeadDimV: 8,
		RopeBase: 10000, RopeDims: 8, ContextLen: 2048, Vocab: 512, BOS: 1, EOS: 2, AddBOS: true}, c)
	assert.Equal(t, "output.weight", c.OutputTensor())

	c, err = configOf(t, testmodels.Path(t, "llama-2-tiny-random.gguf"))
	require.NoError(t, err)
	c.RMSEps = 0
	assert.Equal(t, Config{Blocks: 1, Embd: 8, FFN: 32, Heads: 2, KVHeads: 2, HeadDim: 4, HeadDimV: 4,
		RopeBase: 10000, RopeDims: 4, ContextLen: 4096, Vocab: 32000, BOS: 1, EOS: 2, AddBOS: true}, c)

	c, err = configOf(t, testmodels.Path(t, "llama-3-tiny-random.gguf"))
	require.NoError(t, err)
	c.RMSEps = 0
	assert.Equal(t, Config{Blocks: 1, Embd: 16, FFN: 32, Heads: 2, KVHeads: 1, HeadDim: 8, HeadDimV: 8,
		RopeBase: 500000, RopeDims: 8, ContextLen: 8192, Vocab: 128256, BOS: 128000, EOS: 128001, AddBOS: true}, c)
}

func TestWeights(t *testing.T) {
	f, err := gguf.Open(testmodels.Path(t, "stories260K.gguf"))
	require.NoError(t, err)
	defer f.Close()
	c, err := ConfigFrom(f)
	require.NoError(t, err)
	w, err := WeightsOf(c, f)
	require.NoError(t, err)
	require.Len(t, w.Layers, 5)
	assert.Equal(t, "blk.4.ffn_down.weight", w.Layers[4].Down.Name)
	assert.Equal(t, []uint64{172, 64}, w.Layers[4].Down.Dims)
	assert.Equal(t, "output.weight", w.Output.Name)
	assert.Equal(t, "blk.3.attn_q.weight", BlockTensor(3, "attn_q"))
}

// stories returns the path of an edited copy of stories260K.
func stories(t *testing.T, e fixtures.Edit) string {
	return fixtures.Rewrite(t, testmodels.Path(t, "stories260K.gguf"), e)
}

func setKV(key string, value any) fixtures.Edit {
	return fixtures.Edit{KV: func(k string, v any) (any, bool) {
		if k == key {
			return value, value != nil
		}
		return v, true
	}}
}

func replaceTensor(name string, typ gguf.TensorType, dims []uint64, data []byte) fixtures.Edit {
	return fixtures.Edit{Tensor: func(tn gguf.Tensor) (gguf.Tensor, bool) {
		if tn.Name != name {
			return tn, true
		}
		if dims == nil {
			return tn, false
		}
		return gguf.Tensor{Name: name, Type: typ, Dims: dims, Data: data}, true
	}}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		edit fixtures.Edit
		want string
	}{
		{"wrong architecture", setKV("general.architecture", "gpt2"), `architecture "gpt2", want "llama"`},
		{"missing key", setKV("llama.embedding_length", nil), `metadata key "llama.embedding_length": missing`},
		{"mistyped key", setKV("llama.block_count", "five"), `metadata key "llama.block_count": holds string (five), want a non-negative integer`},
		{"per-layer heads", setKV("llama.attention.head_count_kv", []uint32{4, 4, 4, 4, 4}), "per-layer values are not supported"},
		{"uneven GQA", setKV("llama.attention.head_count_kv", uint32(3)), "8 query heads do not share 3 KV heads evenly"},
		{"odd rope dims", setKV("llama.rope.dimension_count", uint32(7)), "rope.dimension_count 7 must be even"},
		{"bad BOS", setKV("tokenizer.ggml.bos_token_id", uint32(9999)), "bos_token_id = 9999 is outside the vocabulary of 512"},
		{"missing tensor", replaceTensor("blk.3.ffn_up.weight", 0, nil, nil), `missing tensor "blk.3.ffn_up.weight"`},
		{"missing embedding", replaceTensor("token_embd.weight", 0, nil, nil), `no tensor "token_embd.weight"`},
		{"wrong dims", replaceTensor("blk.1.attn_k.weight", gguf.F32, []uint64{64, 64}, make([]byte, 64*64*4)),
			`tensor "blk.1.attn_k.weight" has dims [64 64], want [64 32]`},
		{"unsupported type", replaceTensor("blk.0.attn_q.weight", gguf.TensorType(3), []uint64{64, 64}, make([]byte, 64*2*20)),
			`tensor "blk.0.attn_q.weight": unsupported tensor type Q4_1 (3)`},
		{"vocabulary size", setKV("tokenizer.ggml.tokens", []string{"a", "b"}), "the vocabulary has 2 tokens but token_embd.weight has 512 rows"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := stories(t, c.edit)
			_, err := configOf(t, path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), "llama: ")
			assert.Contains(t, err.Error(), path, "the error names the file")
		})
	}
}

func TestTruncatedModel(t *testing.T) {
	raw, err := os.ReadFile(testmodels.Path(t, "stories260K.gguf"))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "cut.gguf")
	require.NoError(t, os.WriteFile(path, raw[:len(raw)-1000], 0o644))
	_, err = gguf.Open(path)
	assert.ErrorContains(t, err, "truncated")
}

func TestTiedOutputAndRopeFreqs(t *testing.T) {
	freqs, err := gguf.Quantize(gguf.F32, []float32{1, 2, 4, 8})
	require.NoError(t, err)
	e := replaceTensor("output.weight", 0, nil, nil)
	e.Add = func(w *gguf.Writer) error { return w.AddTensor(RopeFreqs, gguf.F32, []uint64{4}, freqs) }
	c, err := configOf(t, stories(t, e))
	require.NoError(t, err)
	assert.True(t, c.TiedOutput)
	assert.Equal(t, "token_embd.weight", c.OutputTensor())
	assert.Equal(t, []float64{1, 2, 4, 8}, c.RopeFreqs)

	e.Add = func(w *gguf.Writer) error { return w.AddTensor(RopeFreqs, gguf.F32, []uint64{3}, freqs[:12]) }
	_, err = configOf(t, stories(t, e))
	assert.ErrorContains(t, err, `tensor "rope_freqs.weight" has dims [3], want [4]`)
}
