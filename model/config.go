package model

import (
	"errors"
	"fmt"
	"math"

	"github.com/deft-vk/deft/gguf"
)

// Config is a Llama model's hyper-parameters, read from GGUF metadata
// (llama.* keys) and tensor shapes.
type Config struct {
	Layers     int
	Dim        int // embedding length
	FFN        int // feed-forward length
	Heads      int // query heads
	KVHeads    int
	HeadDim    int
	RMSEps     float64
	RopeBase   float64
	RopeDims   int       // leading dims of each head that RoPE rotates
	RopeFreqs  []float64 // rope_freqs divisors, one per rotated pair; nil when absent
	Vocab      int
	Context    int  // trained context length (0 when the file does not say)
	TiedOutput bool // no output.weight: logits use token_embd.weight
	BOS, EOS   int32
}

// maxDim bounds every size so index arithmetic in uint32 cannot overflow.
const maxDim = 1 << 20

// ConfigFrom reads the hyper-parameters of a GGUF file of architecture
// "llama", with llama.cpp's defaults for optional keys.
func ConfigFrom(f *gguf.File) (Config, error) {
	var c Config
	if arch := f.Architecture(); arch != "llama" {
		return c, fmt.Errorf("model: %s: architecture %q, only \"llama\" is supported", f.Name(), arch)
	}
	num := func(key string, dst *int, required bool, def int) error {
		v, ok, err := f.LookupUint("llama." + key)
		switch {
		case err != nil:
			return err
		case !ok && required:
			return fmt.Errorf("model: %s: metadata key llama.%s missing", f.Name(), key)
		case !ok:
			*dst = def
		case v == 0 || v > maxDim:
			return fmt.Errorf("model: %s: llama.%s = %d outside [1, %d]", f.Name(), key, v, maxDim)
		default:
			*dst = int(v)
		}
		return nil
	}
	flt := func(key string, dst *float64, def float64) error {
		v, ok, err := f.LookupFloat("llama." + key)
		switch {
		case err != nil:
			return err
		case !ok:
			*dst = def
		case !(v > 0) || math.IsInf(v, 0):
			return fmt.Errorf("model: %s: llama.%s = %v must be positive", f.Name(), key, v)
		default:
			*dst = v
		}
		return nil
	}
	errs := []error{
		num("block_count", &c.Layers, true, 0),
		num("embedding_length", &c.Dim, true, 0),
		num("feed_forward_length", &c.FFN, true, 0),
		num("attention.head_count", &c.Heads, true, 0),
		num("context_length", &c.Context, false, 0),
		flt("attention.layer_norm_rms_epsilon", &c.RMSEps, 1e-5),
		flt("rope.freq_base", &c.RopeBase, 10000),
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if err := errors.Join(num("attention.head_count_kv", &c.KVHeads, false, c.Heads),
		num("attention.key_length", &c.HeadDim, false, c.Dim/c.Heads)); err != nil {
		return c, err
	}
	if err := num("rope.dimension_count", &c.RopeDims, false, c.HeadDim); err != nil {
		return c, err
	}
	switch {
	case c.Heads%c.KVHeads != 0:
		return c, fmt.Errorf("model: %s: %d query heads are not a multiple of %d KV heads", f.Name(), c.Heads, c.KVHeads)
	case c.RopeDims%2 != 0 || c.RopeDims > c.HeadDim:
		return c, fmt.Errorf("model: %s: RoPE dims %d must be even and at most the head dim %d", f.Name(), c.RopeDims, c.HeadDim)
	}
	emb, err := f.Tensor("token_embd.weight")
	if err != nil {
		return c, fmt.Errorf("model: %w", err)
	}
	if len(emb.Dims) != 2 || emb.Dims[0] != uint64(c.Dim) || emb.Dims[1] == 0 || emb.Dims[1] > math.MaxInt32 {
		return c, fmt.Errorf("model: %s: token_embd.weight has dims %v, want [%d, vocab]", f.Name(), emb.Dims, c.Dim)
	}
	c.Vocab = int(emb.Dims[1])
	_, err = f.Tensor("output.weight")
	c.TiedOutput = err != nil
	if t, err := f.Tensor("rope_freqs.weight"); err == nil {
		if t.Elements() != uint64(c.RopeDims/2) {
			return c, fmt.Errorf("model: %s: rope_freqs.weight has %d elements, want %d (RoPE dims / 2)", f.Name(), t.Elements(), c.RopeDims/2)
		}
		v, err := decodeFloats(t.Type, t.Data, int(t.Elements()))
		if err != nil {
			return c, fmt.Errorf("model: rope_freqs.weight: %w", err)
		}
		c.RopeFreqs = make([]float64, len(v))
		for i, x := range v {
			if !(x > 0) {
				return c, fmt.Errorf("model: %s: rope_freqs.weight[%d] = %v must be positive", f.Name(), i, x)
			}
			c.RopeFreqs[i] = float64(x)
		}
	}
	c.BOS, c.EOS = -1, -1
	for key, dst := range map[string]*int32{"tokenizer.ggml.bos_token_id": &c.BOS, "tokenizer.ggml.eos_token_id": &c.EOS} {
		if v, ok, err := f.LookupUint(key); err == nil && ok && v < uint64(c.Vocab) {
			*dst = int32(v)
		}
	}
	return c, nil
}

// InvFreqs returns RoPE's inverse frequency of each rotated pair,
// base^(-2i/RopeDims) / RopeFreqs[i], in float64.
func (c Config) InvFreqs() []float64 {
	out := make([]float64, c.RopeDims/2)
	for i := range out {
		out[i] = math.Pow(c.RopeBase, -2*float64(i)/float64(c.RopeDims))
		if c.RopeFreqs != nil {
			out[i] /= c.RopeFreqs[i]
		}
	}
	return out
}
