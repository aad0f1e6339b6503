// Package llama reads the hyper-parameters, tokenizer ids and weight tensors
// of a Llama-architecture model from a GGUF file, checking that every tensor
// the forward pass needs is present with the right shape and a supported
// type.
package llama

import (
	"fmt"
	"slices"

	"github.com/deft-vk/deft/gguf"
)

// Config holds a model's hyper-parameters. Dimensions are element counts.
type Config struct {
	Blocks     int     // llama.block_count
	Embd       int     // llama.embedding_length
	FFN        int     // llama.feed_forward_length
	Heads      int     // llama.attention.head_count
	KVHeads    int     // llama.attention.head_count_kv (default Heads)
	HeadDim    int     // query and key head size: attention.key_length, else Embd/Heads
	HeadDimV   int     // value head size: attention.value_length, else HeadDim
	RMSEps     float64 // llama.attention.layer_norm_rms_epsilon
	RopeBase   float64 // llama.rope.freq_base (default 10000)
	RopeDims   int     // llama.rope.dimension_count (default HeadDim): leading dims of a head that rotate
	ContextLen int     // llama.context_length
	Vocab      int     // rows of token_embd.weight
	// RopeFreqs, when the file has rope_freqs.weight (Llama 3.1 style
	// scaling), divides the rotation frequency of each pair: RopeDims/2
	// values. Nil otherwise.
	RopeFreqs []float64
	// TiedOutput is set when the file has no output.weight: the logits
	// reuse token_embd.weight.
	TiedOutput bool
	BOS, EOS   int32 // tokenizer.ggml.bos_token_id / eos_token_id; -1 when unknown
	AddBOS     bool  // tokenizer.ggml.add_bos_token; default true for SentencePiece ("llama") vocabularies
}

// Tensor names.
const (
	TokenEmbd  = "token_embd.weight"
	OutputNorm = "output_norm.weight"
	Output     = "output.weight"
	RopeFreqs  = "rope_freqs.weight"
)

// BlockTensor returns the name of a block's tensor, as
// BlockTensor(3, "attn_q") = "blk.3.attn_q.weight".
func BlockTensor(block int, name string) string {
	return fmt.Sprintf("blk.%d.%s.weight", block, name)
}

// OutputTensor returns the name of the tensor that produces the logits.
func (c Config) OutputTensor() string {
	if c.TiedOutput {
		return TokenEmbd
	}
	return Output
}

// Layer holds the tensors of one block.
type Layer struct {
	AttnNorm, Q, K, V, O gguf.Tensor
	FFNNorm, Gate, Up    gguf.Tensor
	Down                 gguf.Tensor
}

// Weights holds every tensor of the forward pass, in the file's types.
type Weights struct {
	TokenEmbd  gguf.Tensor
	Layers     []Layer
	OutputNorm gguf.Tensor
	Output     gguf.Tensor // token_embd.weight when the output is tied
}

// ConfigFrom reads and validates the configuration of a llama model,
// including the presence, shape and type of all its tensors.
func ConfigFrom(f *gguf.File) (Config, error) {
	c, err := readConfig(f)
	if err != nil {
		return Config{}, fmt.Errorf("llama: config of %s: %w", f.Name(), err)
	}
	if _, err := WeightsOf(c, f); err != nil {
		return Config{}, err
	}
	return c, nil
}

func readConfig(f *gguf.File) (Config, error) {
	var c Config
	if a := f.Architecture(); a != "llama" {
		return c, fmt.Errorf("architecture %q, want \"llama\"", a)
	}
	count := func(key string, dst *int, def int) error {
		v, ok, err := f.LookupUint("llama." + key)
		switch {
		case err != nil:
			if raw, _ := f.Value("llama." + key); isArray(raw) {
				return fmt.Errorf("%w (per-layer values are not supported)", err)
			}
			return err
		case !ok && def < 0:
			_, err := f.Uint("llama." + key) // the error for a missing key
			return err
		case !ok:
			*dst = def
		case v == 0 || v > 1<<30:
			return fmt.Errorf("llama.%s = %d is out of range", key, v)
		default:
			*dst = int(v)
		}
		return nil
	}
	for _, p := range []struct {
		key string
		dst *int
	}{{"block_count", &c.Blocks}, {"embedding_length", &c.Embd}, {"feed_forward_length", &c.FFN},
		{"attention.head_count", &c.Heads}, {"context_length", &c.ContextLen}} {
		if err := count(p.key, p.dst, -1); err != nil {
			return c, err
		}
	}
	if err := count("attention.head_count_kv", &c.KVHeads, c.Heads); err != nil {
		return c, err
	}
	if c.Heads%c.KVHeads != 0 {
		return c, fmt.Errorf("%d query heads do not share %d KV heads evenly", c.Heads, c.KVHeads)
	}
	headDim := 0
	if c.Embd%c.Heads == 0 {
		headDim = c.Embd / c.Heads
	}
	if err := count("attention.key_length", &c.HeadDim, headDim); err != nil {
		return c, err
	}
	if c.HeadDim == 0 {
		return c, fmt.Errorf("embedding length %d is not a multiple of %d heads and attention.key_length is missing", c.Embd, c.Heads)
	}
	if err := count("attention.value_length", &c.HeadDimV, c.HeadDim); err != nil {
		return c, err
	}
	if err := count("rope.dimension_count", &c.RopeDims, c.HeadDim); err != nil {
		return c, err
	}
	if c.RopeDims%2 != 0 || c.RopeDims > c.HeadDim {
		return c, fmt.Errorf("rope.dimension_count %d must be even and at most the head size %d", c.RopeDims, c.HeadDim)
	}
	var err error
	if c.RMSEps, err = f.Float("llama.attention.layer_norm_rms_epsilon"); err != nil {
		return c, err
	}
	if !(c.RMSEps >= 0) {
		return c, fmt.Errorf("layer_norm_rms_epsilon %v is negative", c.RMSEps)
	}
	base, ok, err := f.LookupFloat("llama.rope.freq_base")
	if err != nil {
		return c, err
	}
	c.RopeBase = 10000
	if ok {
		if !(base > 0) {
			return c, fmt.Errorf("rope.freq_base %v must be positive", base)
		}
		c.RopeBase = base
	}

	emb, err := f.Tensor(TokenEmbd)
	if err != nil {
		return c, err
	}
	if len(emb.Dims) != 2 || emb.Dims[1] == 0 || emb.Dims[1] > 1<<31 {
		return c, fmt.Errorf("tensor %q has dims %v, want [%d vocab]", TokenEmbd, emb.Dims, c.Embd)
	}
	c.Vocab = int(emb.Dims[1])
	if toks, ok, err := f.LookupStrings("tokenizer.ggml.tokens"); err != nil {
		return c, err
	} else if ok && len(toks) != c.Vocab {
		return c, fmt.Errorf("the vocabulary has %d tokens but %s has %d rows", len(toks), TokenEmbd, c.Vocab)
	}
	if n, ok, err := f.LookupUint("llama.vocab_size"); err != nil {
		return c, err
	} else if ok && n != uint64(c.Vocab) {
		return c, fmt.Errorf("llama.vocab_size is %d but %s has %d rows", n, TokenEmbd, c.Vocab)
	}
	_, err = f.Tensor(Output)
	c.TiedOutput = err != nil

	if rf, err := f.Tensor(RopeFreqs); err == nil {
		if err := checkTensor(rf, uint64(c.RopeDims/2)); err != nil {
			return c, err
		}
		v, err := gguf.Dequantize(rf)
		if err != nil {
			return c, err
		}
		c.RopeFreqs = make([]float64, len(v))
		for i, x := range v {
			if !(x > 0) {
				return c, fmt.Errorf("%s[%d] = %v, want a positive divisor", RopeFreqs, i, x)
			}
			c.RopeFreqs[i] = float64(x)
		}
	}

	model, _, err := f.LookupString("tokenizer.ggml.model")
	if err != nil {
		return c, err
	}
	c.BOS, c.EOS = -1, -1
	if model == "llama" { // SentencePiece defaults, as llama.cpp's
		c.BOS, c.EOS, c.AddBOS = 1, 2, true
	}
	for _, p := range []struct {
		key string
		dst *int32
	}{{"tokenizer.ggml.bos_token_id", &c.BOS}, {"tokenizer.ggml.eos_token_id", &c.EOS}} {
		id, ok, err := f.LookupUint(p.key)
		if err != nil {
			return c, err
		}
		if ok {
			if id >= uint64(c.Vocab) {
				return c, fmt.Errorf("%s = %d is outside the vocabulary of %d", p.key, id, c.Vocab)
			}
			*p.dst = int32(id)
		}
	}
	if b, ok, err := f.LookupBool("tokenizer.ggml.add_bos_token"); err != nil {
		return c, err
	} else if ok {
		c.AddBOS = b
	}
	return c, nil
}

// WeightsOf looks up every tensor of the model described by c, checking that
// each exists with the dims c implies and a supported type.
func WeightsOf(c Config, f *gguf.File) (*Weights, error) {
	var firstErr error
	get := func(name string, dims ...int) gguf.Tensor {
		t, err := f.Tensor(name)
		if err == nil {
			want := make([]uint64, len(dims))
			for i, d := range dims {
				want[i] = uint64(d)
			}
			err = checkTensor(t, want...)
		} else {
			err = fmt.Errorf("missing tensor %q", name)
		}
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("llama: %s: %w", f.Name(), err)
		}
		return t
	}
	q, kv, v := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim, c.KVHeads*c.HeadDimV
	w := &Weights{TokenEmbd: get(TokenEmbd, c.Embd, c.Vocab), OutputNorm: get(OutputNorm, c.Embd)}
	w.Output = get(c.OutputTensor(), c.Embd, c.Vocab)
	for i := range c.Blocks {
		b := func(name string) string { return BlockTensor(i, name) }
		w.Layers = append(w.Layers, Layer{
			AttnNorm: get(b("attn_norm"), c.Embd),
			Q:        get(b("attn_q"), c.Embd, q),
			K:        get(b("attn_k"), c.Embd, kv),
			V:        get(b("attn_v"), c.Embd, v),
			O:        get(b("attn_output"), c.Heads*c.HeadDimV, c.Embd),
			FFNNorm:  get(b("ffn_norm"), c.Embd),
			Gate:     get(b("ffn_gate"), c.Embd, c.FFN),
			Up:       get(b("ffn_up"), c.Embd, c.FFN),
			Down:     get(b("ffn_down"), c.FFN, c.Embd),
		})
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return w, nil
}

func isArray(v any) bool {
	t, _, err := gguf.TypeOf(v)
	return err == nil && t == gguf.TypeArray
}

// checkTensor checks a tensor's dims and type.
func checkTensor(t gguf.Tensor, dims ...uint64) error {
	if !slices.Equal(t.Dims, dims) {
		return fmt.Errorf("tensor %q has dims %v, want %v", t.Name, t.Dims, dims)
	}
	if err := t.Type.Check(); err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return nil
}
