package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
)

// llama3Split is Llama 3's pre-tokenizer: contractions, words with one
// leading non-letter, numbers of up to 3 digits, punctuation runs, newline
// runs, and whitespace that leaves its last space to the next word (the
// lookahead RE2 cannot express). Case-insensitive contractions are spelled
// out as llama.cpp does, so no Unicode case folding can widen them.
const llama3Split = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])` +
	`|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// bpe is llama.cpp's byte-level BPE tokenizer (llm_tokenizer_bpe) with the
// Llama 3 rules: split text with llama3Split, map each word's bytes to
// GPT-2's printable runes, emit a word that is a whole vocabulary token
// as is (ignore_merges), otherwise merge adjacent pieces by merge rank.
type bpe struct {
	toID  map[string]int32
	ranks map[pair]int32
	split *regexp2.Regexp
}

type pair struct{ left, right string }

type bpeBigram struct {
	left, right int
	rank        int32
	size        int
}

// bpeBefore orders the queue as llama.cpp's comparator does: the lowest
// rank first, then the leftmost pair.
func bpeBefore(a, b bpeBigram) bool {
	return a.rank < b.rank || (a.rank == b.rank && a.left < b.left)
}

// byteRune is GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for
// themselves and the others for 256, 257, ... in byte order, so every byte
// is a visible rune in the vocabulary's text.
var byteRune, runeByte = func() ([256]rune, map[rune]byte) {
	var br [256]rune
	rb := make(map[rune]byte, 256)
	next := rune(256)
	for b := 0; b < 256; b++ {
		r := rune(b)
		if !(b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF) {
			r = next
			next++
		}
		br[b] = r
		rb[r] = byte(b)
	}
	return br, rb
}()

func newBPE(t *Tokenizer, merges []string) (*bpe, error) {
	// Unlimited backtracking stack: the pattern backtracks at most over the
	// current match, so memory stays linear in the input.
	re, err := regexp2.Compile(llama3Split, regexp2.OptionMaxBacktrackingStackSize(-1))
	if err != nil {
		return nil, fmt.Errorf("compile pre-tokenizer: %w", err)
	}
	b := &bpe{toID: t.toID, ranks: make(map[pair]int32, len(merges)), split: re}
	for i, m := range merges {
		// The separator is the first space after the first byte, as in
		// llama.cpp, so a left part may itself start with a space.
		j := strings.IndexByte(m[min(1, len(m)):], ' ')
		if j < 0 {
			return nil, fmt.Errorf("merge %d (%q) is not two pieces separated by a space", i, m)
		}
		j++
		p := pair{m[:j], m[j+1:]}
		if _, dup := b.ranks[p]; !dup { // the first rank wins
			b.ranks[p] = int32(i)
		}
	}
	return b, nil
}

// words returns the byte ranges of text's pre-tokenized words. Invalid
// UTF-8 bytes take part as U+FFFD, one per byte, and stay in the words.
func (b *bpe) words(text string) [][]int {
	idx, err := b.split.FindAllStringIndex(text, -1)
	if err != nil {
		// Only a timeout or stack limit fails a match, and neither is set.
		return [][]int{{0, len(text)}}
	}
	// Every rune matches some alternative, so there are no gaps; keep any
	// bytes a match skipped all the same, rather than lose text.
	out := idx[:0:0]
	at := 0
	for _, m := range idx {
		if m[0] > at {
			out = append(out, []int{at, m[0]})
		}
		out = append(out, m)
		at = m[1]
	}
	if at < len(text) {
		out = append(out, []int{at, len(text)})
	}
	return out
}

func (b *bpe) encode(text string, out []int32) []int32 {
	var enc []byte
	var syms []symbol
	q := queue[bpeBigram]{before: bpeBefore}
	for _, w := range b.words(text) {
		enc = enc[:0]
		for _, c := range []byte(text[w[0]:w[1]]) {
			enc = utf8.AppendRune(enc, byteRune[c])
		}
		word := string(enc)
		if id, ok := b.toID[word]; ok {
			out = append(out, id)
			continue
		}

		syms = syms[:0]
		for off := 0; off < len(word); {
			_, n := utf8.DecodeRuneInString(word[off:])
			i := len(syms)
			next := i + 1
			if off+n == len(word) {
				next = -1
			}
			syms = append(syms, symbol{prev: i - 1, next: next, start: off, n: n})
			off += n
		}
		tryAdd := func(left, right int) {
			if left < 0 || right < 0 {
				return
			}
			l, r := syms[left], syms[right]
			rank, ok := b.ranks[pair{word[l.start : l.start+l.n], word[r.start : r.start+r.n]}]
			if !ok {
				return
			}
			q.push(bpeBigram{left: left, right: right, rank: rank, size: l.n + r.n})
		}
		q.items = q.items[:0]
		mergePairs(syms, &q, func(b bpeBigram) (int, int, int) { return b.left, b.right, b.size }, tryAdd)

		for i := 0; i >= 0; i = syms[i].next {
			piece := word[syms[i].start : syms[i].start+syms[i].n]
			if id, ok := b.toID[piece]; ok {
				out = append(out, id)
				continue
			}
			// A merge whose result is not a token: llama.cpp looks up each
			// byte alone and drops those without a token.
			for j := 0; j < len(piece); j++ {
				if id, ok := b.toID[piece[j:j+1]]; ok {
					out = append(out, id)
				}
			}
		}
	}
	return out
}

// bpePieces precomputes byte-level decoding: normal tokens map their runes
// back to bytes, user-defined tokens are their text verbatim, and tokens of
// the other types print nothing. A rune outside GPT-2's table (none in a
// well-formed vocabulary) is kept as its UTF-8 text.
func bpePieces(tokens []string, types []int32) [][]byte {
	pieces := make([][]byte, len(tokens))
	for id, s := range tokens {
		switch types[id] {
		case typeNormal:
			p := make([]byte, 0, len(s))
			for _, r := range s {
				if c, ok := runeByte[r]; ok {
					p = append(p, c)
				} else {
					p = utf8.AppendRune(p, r)
				}
			}
			pieces[id] = p
		case typeUserDefined:
			pieces[id] = []byte(s)
		}
	}
	return pieces
}
