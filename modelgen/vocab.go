package modelgen

import (
	"fmt"
	"strings"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/llama"
)

// Vocabulary is a model's tokenizer metadata (tokenizer.ggml.*) and the
// ids a Config takes from it.
type Vocabulary struct {
	KVs      []gguf.KV
	Size     int
	BOS, EOS int32
	AddBOS   bool
}

// Apply returns cfg with the vocabulary's size and special ids.
func (v Vocabulary) Apply(cfg llama.Config) llama.Config {
	cfg.Vocab, cfg.BOS, cfg.EOS, cfg.AddBOS = v.Size, v.BOS, v.EOS, v.AddBOS
	return cfg
}

// VocabFrom copies the tokenizer metadata (every tokenizer.* key) of a
// GGUF file, such as one of ../shared/models.
func VocabFrom(f *gguf.File) (Vocabulary, error) {
	v := Vocabulary{BOS: -1, EOS: -1}
	for _, kv := range f.Metadata() {
		if strings.HasPrefix(kv.Key, "tokenizer.") {
			v.KVs = append(v.KVs, kv)
		}
	}
	toks, ok, err := f.LookupStrings("tokenizer.ggml.tokens")
	if err != nil || !ok {
		return v, fmt.Errorf("modelgen: vocabulary of %s: no tokenizer.ggml.tokens (%v)", f.Name(), err)
	}
	v.Size = len(toks)
	model, _, err := f.LookupString("tokenizer.ggml.model")
	if err != nil {
		return v, fmt.Errorf("modelgen: vocabulary of %s: %w", f.Name(), err)
	}
	if model == "llama" {
		v.BOS, v.EOS, v.AddBOS = 1, 2, true
	}
	for _, p := range []struct {
		key string
		dst *int32
	}{{"tokenizer.ggml.bos_token_id", &v.BOS}, {"tokenizer.ggml.eos_token_id", &v.EOS}} {
		id, ok, err := f.LookupUint(p.key)
		if err != nil {
			return v, fmt.Errorf("modelgen: vocabulary of %s: %w", f.Name(), err)
		}
		if ok {
			if id >= uint64(v.Size) {
				return v, fmt.Errorf("modelgen: vocabulary of %s: %s = %d is outside %d tokens", f.Name(), p.key, id, v.Size)
			}
			*p.dst = int32(id)
		}
	}
	if b, ok, err := f.LookupBool("tokenizer.ggml.add_bos_token"); err != nil {
		return v, fmt.Errorf("modelgen: vocabulary of %s: %w", f.Name(), err)
	} else if ok {
		v.AddBOS = b
	}
	return v, nil
}

// SyntheticVocab returns a SentencePiece vocabulary of n tokens (n >= 259)
// in llama.cpp's layout: <unk>, <s>, </s>, the 256 byte tokens <0x00>..
// <0xFF>, then pieces of lower-case letters, each with and without the
// word-start mark ▁, shortest first (scores fall with the id so longer
// pieces merge last).
func SyntheticVocab(n int) (Vocabulary, error) {
	if n < 259 || n > 1<<24 {
		return Vocabulary{}, fmt.Errorf("modelgen: synthetic vocabulary of %d tokens: want 259 to %d", n, 1<<24)
	}
	toks := make([]string, 0, n)
	types := make([]int32, 0, n)
	toks = append(toks, "<unk>", "<s>", "</s>")
	types = append(types, 2, 3, 3)
	for b := range 256 {
		toks = append(toks, fmt.Sprintf("<0x%02X>", b))
		types = append(types, 6)
	}
	// Pieces of length 1, 2, ...: enumerate letter strings in order.
	for length := 1; len(toks) < n; length++ {
		idx := make([]int, length)
		for len(toks) < n {
			var sb strings.Builder
			for _, i := range idx {
				sb.WriteByte(byte('a' + i))
			}
			s := sb.String()
			toks = append(toks, "▁"+s)
			types = append(types, 1)
			if len(toks) < n {
				toks = append(toks, s)
				types = append(types, 1)
			}
			// Next string of this length (odometer).
			k := length - 1
			for k >= 0 && idx[k] == 25 {
				idx[k] = 0
				k--
			}
			if k < 0 {
				break
			}
			idx[k]++
		}
	}
	scores := make([]float32, n)
	for i := range scores {
		if types[i] == 1 {
			scores[i] = -float32(i)
		}
	}
	kvs := []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: "llama"},
		{Key: "tokenizer.ggml.tokens", Value: toks},
		{Key: "tokenizer.ggml.scores", Value: scores},
		{Key: "tokenizer.ggml.token_type", Value: types},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(1)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(2)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(0)},
		{Key: "tokenizer.ggml.add_bos_token", Value: true},
		{Key: "tokenizer.ggml.add_eos_token", Value: false},
	}
	return Vocabulary{KVs: kvs, Size: n, BOS: 1, EOS: 2, AddBOS: true}, nil
}
