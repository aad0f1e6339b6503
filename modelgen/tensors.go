package modelgen

import (
	"github.com/deft-vk/deft/llama"
)

// Tensor is a tensor of a model: its name and dims in GGUF order (the row
// length first).
type Tensor struct {
	Name string
	Dims []uint64
}

// Tensors lists the tensors of a Llama model of configuration cfg in
// llama.cpp's order: token_embd, output_norm, output (unless tied), then
// each block's.
func Tensors(cfg llama.Config) []Tensor {
	u := func(v ...int) []uint64 {
		out := make([]uint64, len(v))
		for i, x := range v {
			out[i] = uint64(x)
		}
		return out
	}
	c := cfg
	q, kv, v := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim, c.KVHeads*c.HeadDimV
	ts := []Tensor{{llama.TokenEmbd, u(c.Embd, c.Vocab)}, {llama.OutputNorm, u(c.Embd)}}
	if !c.TiedOutput {
		ts = append(ts, Tensor{llama.Output, u(c.Embd, c.Vocab)})
	}
	for i := range c.Blocks {
		b := func(n string) string { return llama.BlockTensor(i, n) }
		ts = append(ts,
			Tensor{b("attn_norm"), u(c.Embd)},
			Tensor{b("attn_q"), u(c.Embd, q)},
			Tensor{b("attn_k"), u(c.Embd, kv)},
			Tensor{b("attn_v"), u(c.Embd, v)},
			Tensor{b("attn_output"), u(c.Heads*c.HeadDimV, c.Embd)},
			Tensor{b("ffn_norm"), u(c.Embd)},
			Tensor{b("ffn_gate"), u(c.Embd, c.FFN)},
			Tensor{b("ffn_up"), u(c.Embd, c.FFN)},
			Tensor{b("ffn_down"), u(c.FFN, c.Embd)},
		)
	}
	return ts
}
