package tokenizer

import (
	"fmt"
	"slices"
	"testing"
)

// checkVectors encodes every case and compares with llama.cpp's ids, and
// decodes them back: SentencePiece drops the prefix space Encode adds, so
// both tokenizers give the input back except where Decode cannot: "▁" in
// a SentencePiece text is a space to it.
func checkVectors(t *testing.T, tok *Tokenizer, cases []vectorCase) {
	t.Helper()
	for i, c := range cases {
		got := tok.Encode(c.text, false)
		if !slices.Equal(got, c.ids) {
			t.Errorf("case %d %q:\n got  %v\n want %v\n got pieces  %s\n want pieces %s",
				i, c.text, got, c.ids, pieces(tok, got), pieces(tok, c.ids))
		}
		if back := tok.Decode(c.ids); back != c.text {
			t.Errorf("case %d: Decode(ids) = %q, want %q", i, back, c.text)
		}
	}
}

func pieces(tok *Tokenizer, ids []int32) string {
	s := ""
	for _, id := range ids {
		s += fmt.Sprintf("%q ", tok.TokenText(id))
	}
	return s
}

func TestVectorsSPM(t *testing.T) {
	_, tok := loadTokenizer(t, llama2Model)
	cases := readVectors(t, "ggml-vocab-llama-spm.gguf")
	if len(cases) != 46 {
		t.Fatalf("%d SPM cases, want 46", len(cases))
	}
	checkVectors(t, tok, cases)
}

func TestVectorsBPE(t *testing.T) {
	_, tok := loadTokenizer(t, llama3Model)
	cases := readVectors(t, "llama3-bpe")
	if len(cases) != 128 {
		t.Fatalf("%d BPE cases, want 128", len(cases))
	}
	checkVectors(t, tok, cases)
}
