package tokenizer

import "testing"

// BenchmarkNewBPE times building the Llama 3 tokenizer (280k merges).
func BenchmarkNewBPE(b *testing.B) {
	v, _ := loadTokenizer(b, llama3Model)
	for b.Loop() {
		if _, err := New(v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeBPE times encoding the Llama 3 vector file.
func BenchmarkEncodeBPE(b *testing.B) {
	_, tok := loadTokenizer(b, llama3Model)
	cases := readVectors(b, "llama3-bpe")
	for b.Loop() {
		for _, c := range cases {
			tok.Encode(c.text, false)
		}
	}
}

// BenchmarkEncodeSPM times encoding the SentencePiece vector file.
func BenchmarkEncodeSPM(b *testing.B) {
	_, tok := loadTokenizer(b, llama2Model)
	cases := readVectors(b, "ggml-vocab-llama-spm.gguf")
	for b.Loop() {
		for _, c := range cases {
			tok.Encode(c.text, false)
		}
	}
}
