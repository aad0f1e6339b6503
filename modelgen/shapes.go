package modelgen

import (
	"fmt"
	"strings"

	"github.com/deft-vk/deft/llama"
)

// TinySyntheticVocab is the vocabulary size of the tiny shape with the
// synthetic vocabulary.
const TinySyntheticVocab = 512

var shapes = map[string]llama.Config{
	// Meta-Llama-3-8B.
	"llama3-8b": {Blocks: 32, Embd: 4096, FFN: 14336, Heads: 32, KVHeads: 8, HeadDim: 128, HeadDimV: 128,
		RMSEps: 1e-5, RopeBase: 500000, RopeDims: 128, ContextLen: 8192, Vocab: 128256,
		BOS: 128000, EOS: 128001, AddBOS: true},
	// Llama-2-7b.
	"llama2-7b": {Blocks: 32, Embd: 4096, FFN: 11008, Heads: 32, KVHeads: 32, HeadDim: 128, HeadDimV: 128,
		RMSEps: 1e-5, RopeBase: 10000, RopeDims: 128, ContextLen: 4096, Vocab: 32000,
		BOS: 1, EOS: 2, AddBOS: true},
	// Llama-3.2-1B: tied output (Llama 3.1 rope scaling is left out).
	"llama3-1b": {Blocks: 16, Embd: 2048, FFN: 8192, Heads: 32, KVHeads: 8, HeadDim: 64, HeadDimV: 64,
		RMSEps: 1e-5, RopeBase: 500000, RopeDims: 64, ContextLen: 8192, Vocab: 128256, TiedOutput: true,
		BOS: 128000, EOS: 128001, AddBOS: true},
	// A few MB, for tests; rows are multiples of 256 so K-quants apply.
	"tiny": {Blocks: 2, Embd: 256, FFN: 768, Heads: 8, KVHeads: 2, HeadDim: 32, HeadDimV: 32,
		RMSEps: 1e-5, RopeBase: 10000, RopeDims: 32, ContextLen: 2048, Vocab: TinySyntheticVocab,
		BOS: 1, EOS: 2, AddBOS: true},
}

var shapeOrder = []string{"llama3-8b", "llama2-7b", "llama3-1b", "tiny"}

// ShapeNames lists the model shapes ShapeConfig knows.
func ShapeNames() []string { return append([]string(nil), shapeOrder...) }

// ShapeConfig returns the hyper-parameters of a named shape. Vocab, BOS and
// EOS are the real model's (tiny: the synthetic vocabulary's); a writer
// with another vocabulary replaces them (WithVocab).
func ShapeConfig(name string) (llama.Config, error) {
	c, ok := shapes[name]
	if !ok {
		return llama.Config{}, fmt.Errorf("modelgen: unknown shape %q (have %s)", name, strings.Join(shapeOrder, ", "))
	}
	return c, nil
}
