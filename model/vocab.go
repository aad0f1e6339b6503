package model

import (
	"errors"
	"fmt"
	"math"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/tokenizer"
)

// VocabFrom reads a model's tokenizer from its GGUF metadata
// (tokenizer.ggml.*), with llama.cpp's defaults for absent keys.
func VocabFrom(f *gguf.File) (tokenizer.Vocab, error) {
	const p = "tokenizer.ggml."
	var v tokenizer.Vocab
	var errs []error
	str := func(key string) string {
		s, _, err := f.LookupString(p + key)
		errs = append(errs, err)
		return s
	}
	id := func(key string) int32 {
		n, ok, err := f.LookupInt(p + key)
		errs = append(errs, err)
		if !ok || n < 0 || n > math.MaxInt32 {
			return -1 // 0xFFFFFFFF as uint32 means none
		}
		return int32(n)
	}
	flag := func(key string, def bool) bool {
		b, ok, err := f.LookupBool(p + key)
		errs = append(errs, err)
		if !ok {
			return def
		}
		return b
	}
	v.Model = str("model")
	v.Pre = str("pre")
	tokens, ok, err := f.LookupStrings(p + "tokens")
	if err == nil && !ok {
		err = fmt.Errorf("model: %s: no tokenizer (%stokens missing)", f.Name(), p)
	}
	errs = append(errs, err)
	v.Tokens = tokens
	if s, ok, err := f.LookupFloats(p + "scores"); ok || err != nil {
		errs = append(errs, err)
		v.Scores = make([]float32, len(s))
		for i, x := range s {
			v.Scores[i] = float32(x)
		}
	}
	if ty, ok, err := f.LookupInts(p + "token_type"); ok || err != nil {
		errs = append(errs, err)
		v.Types = make([]int32, len(ty))
		for i, x := range ty {
			v.Types[i] = int32(x)
		}
	}
	if m, ok, err := f.LookupStrings(p + "merges"); ok || err != nil {
		errs = append(errs, err)
		v.Merges = m
	}
	v.BOS, v.EOS, v.UNK, v.PAD = id("bos_token_id"), id("eos_token_id"), id("unknown_token_id"), id("padding_token_id")
	spm := v.Model == "llama"
	v.AddBOS = flag("add_bos_token", true)
	v.AddEOS = flag("add_eos_token", false)
	v.AddSpacePrefix = flag("add_space_prefix", spm)
	if err := errors.Join(errs...); err != nil {
		return tokenizer.Vocab{}, err
	}
	return v, nil
}

// TokenizerFrom builds the tokenizer of a GGUF file.
func TokenizerFrom(f *gguf.File) (*tokenizer.Tokenizer, error) {
	v, err := VocabFrom(f)
	if err != nil {
		return nil, err
	}
	t, err := tokenizer.New(v)
	if err != nil {
		return nil, fmt.Errorf("model: %s: %w", f.Name(), err)
	}
	return t, nil
}
