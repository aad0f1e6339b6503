package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzSeeds is a small corpus covering the paths: empty, spaces, byte
// fallback, contractions, digits, whitespace runs, invalid UTF-8.
var fuzzSeeds = []string{
	"", " ", "Hello world", "  leading\tand\n\ntrailing  ", "🦙.cpp ½ Äpfel",
	"I'll we'VE 12345 3.14", "<s></s><|eot_id|>", "\xff\xe2\x82 \xf0\x9f", "日本語 العربية",
}

// fuzzEncode checks, for any input: no panic, every id in range, Decode
// gives the input back (SentencePiece: unless it contains "▁", which it
// decodes as a space), and streaming gives Decode's text as valid UTF-8.
func fuzzEncode(t *testing.T, tok *Tokenizer, s string, spm bool) {
	for _, bos := range []bool{false, true} {
		ids := tok.Encode(s, bos)
		for _, id := range ids {
			if id < 0 || int(id) >= tok.NumTokens() {
				t.Fatalf("Encode(%q): id %d out of range", s, id)
			}
		}
		if bos && (len(ids) == 0 || ids[0] != tok.BOS()) {
			t.Fatalf("Encode(%q, BOS) = %v: no BOS first", s, ids)
		}
		if bos {
			continue
		}
		text := tok.Decode(ids)
		if !(spm && strings.Contains(s, "\u2581")) && text != s {
			t.Fatalf("Decode(Encode(%q)) = %q (ids %v)", s, text, ids)
		}
		st := tok.NewStreamer()
		var b strings.Builder
		for _, id := range ids {
			chunk := st.Push(id)
			if !utf8.ValidString(chunk) {
				t.Fatalf("Push(%d) = %q: invalid UTF-8", id, chunk)
			}
			b.WriteString(chunk)
		}
		b.WriteString(st.Flush())
		if want := string([]rune(text)); b.String() != want {
			t.Fatalf("streamed %q, want %q", b.String(), want)
		}
	}
}

func FuzzEncodeSPM(f *testing.F) {
	_, tok := loadTokenizer(f, llama2Model)
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { fuzzEncode(t, tok, s, true) })
}

func FuzzEncodeBPE(f *testing.F) {
	_, tok := loadTokenizer(f, llama3Model)
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { fuzzEncode(t, tok, s, false) })
}
