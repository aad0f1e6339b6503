package modelgen

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/llama"
)

var typeOrder = []string{"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m"}

// TypeNames lists the weight types TensorTypes knows.
func TypeNames() []string { return append([]string(nil), typeOrder...) }

// TensorTypes returns, for a weight type name, the GGUF type of each tensor
// of a model of configuration cfg, by tensor name. Norms (1-D tensors) are
// always F32, as llama.cpp writes them. "q4_k_m" follows llama.cpp's
// Q4_K_M recipe (llama_tensor_get_type): Q4_K by default; Q6_K for the
// logits matrix (output.weight, or token_embd.weight when the output is
// tied) and for attn_v and ffn_down in the layers where use_more_bits
// holds (the first and last eighth, and every third layer between).
// "q5_k_m" is llama.cpp's Q5_K_M, the same recipe with Q5_K in place of
// Q4_K. Where a row is not a multiple of 256 elements, Q6_K falls back to
// Q8_0 as in llama.cpp, and Q4_K and Q5_K to Q8_0 (llama.cpp takes Q5_0
// and Q5_1, which this project does not read). Names the model does not
// have get the default.
func TensorTypes(typeName string, cfg llama.Config) (func(tensor string) gguf.TensorType, error) {
	var base gguf.TensorType
	switch typeName {
	case "f32":
		base = gguf.F32
	case "f16":
		base = gguf.F16
	case "bf16":
		base = gguf.BF16
	case "q8_0":
		base = gguf.Q8_0
	case "q4_0":
		base = gguf.Q4_0
	case "q4_k_m":
		return kMix(cfg, gguf.Q4_K), nil
	case "q5_k_m":
		return kMix(cfg, gguf.Q5_K), nil
	default:
		return nil, fmt.Errorf("modelgen: unknown weight type %q (have %s)", typeName, strings.Join(typeOrder, ", "))
	}
	return func(name string) gguf.TensorType {
		if isNorm(name) {
			return gguf.F32
		}
		return base
	}, nil
}

// isNorm reports whether a tensor is a 1-D norm weight.
func isNorm(name string) bool {
	return strings.HasSuffix(name, "_norm.weight")
}

// useMoreBits is llama.cpp's choice of the layers that get more bits.
func useMoreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

// blockOf splits "blk.N.rest" into N and rest; ok is false otherwise.
func blockOf(name string) (int, string, bool) {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return 0, "", false
	}
	num, tail, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, "", false
	}
	i, err := strconv.Atoi(num)
	if err != nil || i < 0 {
		return 0, "", false
	}
	return i, tail, true
}

// kMix is llama.cpp's Q4_K_M (base Q4_K) or Q5_K_M (base Q5_K) recipe:
// base by default, Q6_K for the logits matrix and for attn_v and ffn_down
// where useMoreBits holds.
func kMix(cfg llama.Config, base gguf.TensorType) func(string) gguf.TensorType {
	return func(name string) gguf.TensorType {
		if isNorm(name) {
			return gguf.F32
		}
		cols := rowLength(cfg, name)
		typ := base
		switch {
		case name == llama.Output || (cfg.TiedOutput && name == llama.TokenEmbd):
			typ = gguf.Q6_K
		default:
			if i, tail, ok := blockOf(name); ok && (tail == "attn_v.weight" || tail == "ffn_down.weight") && useMoreBits(i, cfg.Blocks) {
				typ = gguf.Q6_K
			}
		}
		if cols%256 != 0 {
			typ = gguf.Q8_0
		}
		return typ
	}
}

// rowLength is the row length (ne0) of a model tensor, 0 when unknown.
func rowLength(cfg llama.Config, name string) int {
	if name == llama.TokenEmbd || name == llama.Output {
		return cfg.Embd
	}
	if _, tail, ok := blockOf(name); ok {
		switch tail {
		case "attn_q.weight", "attn_k.weight", "attn_v.weight", "ffn_gate.weight", "ffn_up.weight":
			return cfg.Embd
		case "attn_output.weight":
			return cfg.Heads * cfg.HeadDimV
		case "ffn_down.weight":
			return cfg.FFN
		}
	}
	return 0
}
