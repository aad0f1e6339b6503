package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// spm is llama.cpp's SentencePiece tokenizer (llm_tokenizer_spm): start
// from one symbol per UTF-8 character, repeatedly merge the adjacent pair
// whose concatenation is the vocabulary token of highest score, then emit
// each symbol's token, or its bytes as <0xHH> tokens when it has none.
type spm struct {
	toID      map[string]int32
	scores    []float32
	byteTok   [256]int32 // token of each raw byte, -1 when there is none
	addPrefix bool
}

// symbol is a run text[start:start+n] in a doubly linked list of the
// pieces of a word; n is 0 once merged into its left neighbour.
type symbol struct {
	prev, next int
	start, n   int
}

type spmBigram struct {
	left, right int
	score       float32
	size        int
}

// spmBefore orders the queue as llama.cpp's comparator does: the highest
// score first, then the leftmost pair.
func spmBefore(a, b spmBigram) bool {
	return a.score > b.score || (a.score == b.score && a.left < b.left)
}

func newSPM(t *Tokenizer, v Vocab) (*spm, error) {
	s := &spm{toID: t.toID, scores: v.Scores, addPrefix: v.AddSpacePrefix}
	if len(s.scores) == 0 {
		s.scores = make([]float32, len(v.Tokens))
	}
	// A byte with no <0xHH> token falls back to a one-byte token, then to
	// UNK; with neither it is dropped (llama.cpp would throw).
	for b := 0; b < 256; b++ {
		id, ok := t.toID[fmt.Sprintf("<0x%02X>", b)]
		if !ok {
			id, ok = t.toID[string([]byte{byte(b)})]
		}
		if !ok {
			id = v.UNK
		}
		s.byteTok[b] = id
	}
	return s, nil
}

func (s *spm) encode(text string, out []int32) []int32 {
	if s.addPrefix {
		text = " " + text
	}
	text = strings.ReplaceAll(text, " ", "\u2581")

	syms := make([]symbol, 0, len(text))
	for off := 0; off < len(text); {
		// llama.cpp takes as many bytes as the lead byte announces, so an
		// invalid sequence swallows the start of the next character and
		// Decode cannot give it back; Go's decoder makes each invalid byte
		// a symbol of its own instead. Valid UTF-8 splits the same way.
		_, n := utf8.DecodeRuneInString(text[off:])
		i := len(syms)
		next := i + 1
		if off+n == len(text) {
			next = -1
		}
		syms = append(syms, symbol{prev: i - 1, next: next, start: off, n: n})
		off += n
	}

	q := queue[spmBigram]{before: spmBefore}
	tryAdd := func(left, right int) {
		if left < 0 || right < 0 {
			return
		}
		l, r := syms[left], syms[right]
		id, ok := s.toID[text[l.start:r.start+r.n]]
		if !ok {
			return
		}
		q.push(spmBigram{left: left, right: right, score: s.scores[id], size: l.n + r.n})
	}
	mergePairs(syms, &q, func(b spmBigram) (int, int, int) { return b.left, b.right, b.size }, tryAdd)

	// Every merged symbol is a vocabulary token by construction, so
	// llama.cpp's resegment via rev_merge never splits one: a symbol either
	// is a token or is a single character without one.
	for i := 0; i >= 0; i = syms[i].next {
		sym := syms[i]
		piece := text[sym.start : sym.start+sym.n]
		if id, ok := s.toID[piece]; ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(piece); j++ {
			if id := s.byteTok[piece[j]]; id >= 0 {
				out = append(out, id)
			}
		}
	}
	return out
}
