// Package tokenizer turns text into Llama token ids and back, from the
// vocabulary arrays a GGUF file carries (tokenizer.ggml.*), matching
// llama.cpp's tokenizers: SentencePiece ("llama", Llama 1/2) and byte-level
// BPE ("gpt2" with the Llama 3 pre-tokenizer).
//
// The package does not read GGUF files: the model loader fills a Vocab from
// the metadata and calls New. Encode is plain-text encoding: text that looks
// like a special token ("<s>", "<|eot_id|>") is encoded as ordinary text.
package tokenizer

import (
	"errors"
	"fmt"
	"strings"
)

// Token types of tokenizer.ggml.token_type (llama.cpp's llama_token_type).
const (
	typeUndefined   = 0
	typeNormal      = 1
	typeUnknown     = 2
	typeControl     = 3
	typeUserDefined = 4
	typeUnused      = 5
	typeByte        = 6
)

// Vocab is the tokenizer part of a model's GGUF metadata.
type Vocab struct {
	// Model is tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2"
	// (byte-level BPE).
	Model string
	// Pre is tokenizer.ggml.pre, the BPE pre-tokenizer; only "llama-bpe"
	// (Llama 3, also spelled "llama3" or "llama-v3") is supported. Ignored
	// for "llama".
	Pre string
	// Tokens is tokenizer.ggml.tokens: the text of each token id.
	Tokens []string
	// Scores is tokenizer.ggml.scores (SentencePiece merge priorities):
	// empty (all 0, as llama.cpp assumes) or one per token.
	Scores []float32
	// Types is tokenizer.ggml.token_type (1 normal, 2 unknown, 3 control,
	// 4 user-defined, 5 unused, 6 byte): empty (all normal) or one per token.
	Types []int32
	// Merges is tokenizer.ggml.merges for "gpt2": "left right" pairs, the
	// first one the highest priority. Ignored for "llama".
	Merges []string
	// BOS, EOS, UNK and PAD are the special token ids, -1 when absent.
	BOS, EOS, UNK, PAD int32
	// AddBOS and AddEOS are tokenizer.ggml.add_bos_token and
	// add_eos_token, the model's wish for prompts; AddBOS is reported by
	// Tokenizer.AddBOS. Encode never appends EOS: a prompt to continue must
	// not end the text.
	AddBOS, AddEOS bool
	// AddSpacePrefix is tokenizer.ggml.add_space_prefix. A loader must set
	// it to true when the key is absent and Model is "llama" (llama.cpp's
	// default). It is ignored for "gpt2", which never adds a prefix.
	AddSpacePrefix bool
}

// Tokenizer encodes and decodes text for one vocabulary. It is immutable
// after New and safe for concurrent use.
type Tokenizer struct {
	tokens     []string
	toID       map[string]int32
	pieces     [][]byte // Decode's bytes for each id
	bos, eos   int32
	addBOS     bool
	stripSpace bool // Decode drops one leading space of the first id's piece
	eog        map[int32]bool
	spm        *spm
	bpe        *bpe
}

// eogTexts are control tokens that end a generation besides EOS, as
// llama.cpp's special_eog_ids collects them by text.
var eogTexts = []string{"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"}

// New checks v and builds its tokenizer. It keeps references to v's slices,
// which must not change afterwards.
func New(v Vocab) (*Tokenizer, error) {
	n := len(v.Tokens)
	if n == 0 {
		return nil, errors.New("tokenizer: new: empty vocabulary")
	}
	if n > 1<<31-1 {
		return nil, fmt.Errorf("tokenizer: new: %d tokens do not fit int32 ids", n)
	}
	if len(v.Scores) != 0 && len(v.Scores) != n {
		return nil, fmt.Errorf("tokenizer: new: %d scores for %d tokens", len(v.Scores), n)
	}
	if len(v.Types) != 0 && len(v.Types) != n {
		return nil, fmt.Errorf("tokenizer: new: %d token types for %d tokens", len(v.Types), n)
	}
	for _, sp := range []struct {
		name string
		id   int32
	}{{"BOS", v.BOS}, {"EOS", v.EOS}, {"UNK", v.UNK}, {"PAD", v.PAD}} {
		if sp.id < -1 || int(sp.id) >= n {
			return nil, fmt.Errorf("tokenizer: new: %s id %d out of range [-1, %d)", sp.name, sp.id, n)
		}
	}
	if v.AddBOS && v.BOS < 0 {
		return nil, errors.New("tokenizer: new: AddBOS is set but the vocabulary has no BOS token")
	}
	types := v.Types
	if len(types) == 0 {
		types = make([]int32, n)
		for i := range types {
			types[i] = typeNormal
		}
	}
	for id, ty := range types {
		if ty < typeUndefined || ty > typeByte {
			return nil, fmt.Errorf("tokenizer: new: token %d (%q) has unknown type %d", id, v.Tokens[id], ty)
		}
	}

	t := &Tokenizer{
		tokens: v.Tokens,
		toID:   make(map[string]int32, n),
		bos:    v.BOS,
		eos:    v.EOS,
		addBOS: v.AddBOS,
		eog:    map[int32]bool{},
	}
	// Later duplicates win, as in llama.cpp's token_to_id.
	for id, s := range v.Tokens {
		t.toID[s] = int32(id)
	}
	if v.EOS >= 0 {
		t.eog[v.EOS] = true
	}
	for _, s := range eogTexts {
		if id, ok := t.toID[s]; ok && types[id] == typeControl {
			t.eog[id] = true
		}
	}

	var err error
	switch v.Model {
	case "llama":
		t.stripSpace = v.AddSpacePrefix
		t.spm, err = newSPM(t, v)
		if err == nil {
			t.pieces, err = spmPieces(v.Tokens, types)
		}
	case "gpt2":
		switch v.Pre {
		case "llama-bpe", "llama3", "llama-v3":
		default:
			return nil, fmt.Errorf("tokenizer: new: unsupported BPE pre-tokenizer %q (want \"llama-bpe\")", v.Pre)
		}
		t.bpe, err = newBPE(t, v.Merges)
		if err == nil {
			t.pieces = bpePieces(v.Tokens, types)
		}
	default:
		return nil, fmt.Errorf("tokenizer: new: unsupported tokenizer model %q (want \"llama\" or \"gpt2\")", v.Model)
	}
	if err != nil {
		return nil, fmt.Errorf("tokenizer: new: %w", err)
	}
	return t, nil
}

// Encode returns the token ids of text, with BOS first when addBOS is set
// and the vocabulary has one (pass t.AddBOS() for the model's default).
// Empty text gives no tokens besides BOS. Invalid UTF-8 is encoded byte by
// byte, so Decode gives it back.
func (t *Tokenizer) Encode(text string, addBOS bool) []int32 {
	var out []int32
	if addBOS && t.bos >= 0 {
		out = append(out, t.bos)
	}
	if text == "" {
		return out
	}
	if t.spm != nil {
		return t.spm.encode(text, out)
	}
	return t.bpe.encode(text, out)
}

// Decode returns the text of ids, as llama.cpp's detokenizer does without
// rendering special tokens: control, unknown and unused tokens give
// nothing, byte tokens give their raw byte. For SentencePiece vocabularies
// with AddSpacePrefix, one leading space of the first id's text is dropped
// (it is the prefix Encode added); when the first id is BOS, the space of
// the next one stays, as in llama.cpp. Ids out of range give nothing. The
// result is not valid UTF-8 when ids split a character.
func (t *Tokenizer) Decode(ids []int32) string {
	var b []byte
	for i, id := range ids {
		b = append(b, t.piece(id, i == 0)...)
	}
	return string(b)
}

// piece is id's decoded bytes, without the prefix space when first.
func (t *Tokenizer) piece(id int32, first bool) []byte {
	if id < 0 || int(id) >= len(t.pieces) {
		return nil
	}
	p := t.pieces[id]
	if first && t.stripSpace && len(p) > 0 && p[0] == ' ' {
		p = p[1:]
	}
	return p
}

// TokenText returns the raw vocabulary text of id ("▁the", "Ġthe",
// "<0x0A>"), or "" when id is out of range; for debugging.
func (t *Tokenizer) TokenText(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// NumTokens returns the vocabulary size.
func (t *Tokenizer) NumTokens() int { return len(t.tokens) }

// BOS returns the beginning-of-sequence id, -1 when there is none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the end-of-sequence id, -1 when there is none.
func (t *Tokenizer) EOS() int32 { return t.eos }

// AddBOS reports whether the model wants BOS before a prompt.
func (t *Tokenizer) AddBOS() bool { return t.addBOS }

// IsEOG reports whether id ends a generation: EOS, or a control token such
// as Llama 3's <|eot_id|> or <|eom_id|>.
func (t *Tokenizer) IsEOG(id int32) bool { return t.eog[id] }

// spmPieces precomputes SentencePiece decoding: ▁ is a space, byte tokens
// <0xHH> are one raw byte, user-defined tokens are their text verbatim, and
// tokens of the other types print nothing.
func spmPieces(tokens []string, types []int32) ([][]byte, error) {
	pieces := make([][]byte, len(tokens))
	for id, s := range tokens {
		switch types[id] {
		case typeNormal:
			pieces[id] = []byte(strings.ReplaceAll(s, "\u2581", " "))
		case typeUserDefined:
			pieces[id] = []byte(s)
		case typeByte:
			b, ok := parseByteToken(s)
			if !ok {
				return nil, fmt.Errorf("token %d has the byte type but text %q, not <0xHH>", id, s)
			}
			pieces[id] = []byte{b}
		}
	}
	return pieces, nil
}

// parseByteToken parses "<0xHH>".
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexDigit(s[3])
	lo, ok2 := hexDigit(s[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
