package tokenizer

import (
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/deft-vk/deft/internal/testmodels"
)

// storiesGreedy reads the ids stories260K's greedy decoding feeds itself
// from BOS (the "in" column of the golden top-5 file).
func storiesGreedy(t *testing.T) []int32 {
	t.Helper()
	data, err := os.ReadFile(testmodels.Path(t, "golden/stories260K-bos-top5.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []int32
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line) // pos N in ID top ...
		if len(f) < 4 || f[2] != "in" {
			t.Fatalf("unexpected line %q", line)
		}
		id, err := strconv.ParseInt(f[3], 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, int32(id))
	}
	return ids
}

func TestStories260K(t *testing.T) {
	v, tok := loadTokenizer(t, storiesModel)
	if tok.NumTokens() != 512 || tok.BOS() != 1 || tok.EOS() != 2 || !tok.AddBOS() {
		t.Fatalf("NumTokens %d BOS %d EOS %d AddBOS %v, want 512 1 2 true",
			tok.NumTokens(), tok.BOS(), tok.EOS(), tok.AddBOS())
	}
	if !v.AddSpacePrefix {
		t.Fatal("AddSpacePrefix should default to true for a llama vocabulary")
	}

	// The golden greedy text starts with the ids the model fed itself:
	// decoding them (BOS first, which keeps the next space, as llama.cpp
	// does) gives its start, and encoding that start gives them back.
	golden, err := os.ReadFile(testmodels.Path(t, "golden/stories260K-bos-greedy.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ids := storiesGreedy(t)
	text := tok.Decode(ids)
	if len(ids) != 24 || ids[0] != 1 || !strings.HasPrefix(string(golden), text) || len(text) < 60 {
		t.Fatalf("Decode(%v) = %q, not a prefix of the golden text %.80q", ids, text, golden)
	}
	if got := tok.Encode(strings.TrimPrefix(text, " "), true); !slices.Equal(got, ids) {
		t.Errorf("Encode(%q) = %v, want %v", text, got, ids)
	}
	if tok.Decode(ids[1:]) != text[1:] {
		t.Errorf("without BOS the first id's space should go: %q", tok.Decode(ids[1:]))
	}

	// A small vocabulary leans on byte fallback: every case of the SPM
	// vector file comes back, and characters outside the 512 tokens are
	// bytes.
	for _, c := range readVectors(t, "ggml-vocab-llama-spm.gguf") {
		got := tok.Encode(c.text, false)
		if back := tok.Decode(got); back != c.text {
			t.Errorf("Decode(Encode(%q)) = %q (ids %v)", c.text, back, got)
		}
	}
	ids = tok.Encode("Lily 🦙", false)
	byteIDs := 0
	for _, id := range ids {
		if s := tok.TokenText(id); len(s) == 6 && strings.HasPrefix(s, "<0x") {
			byteIDs++
		}
	}
	if byteIDs != 4 {
		t.Errorf("Encode(\"Lily 🦙\") = %v (%s): want the llama as 4 byte tokens", ids, pieces(tok, ids))
	}
}

// Fixed expectations that pin the API's conventions.
func TestConventions(t *testing.T) {
	_, spm := loadTokenizer(t, llama2Model)
	if got := spm.Encode("Hello world", true); !slices.Equal(got, []int32{1, 15043, 3186}) {
		t.Errorf("SPM Encode(Hello world, BOS) = %v, want [1 15043 3186]", got)
	}
	if got := spm.Encode("", true); !slices.Equal(got, []int32{1}) {
		t.Errorf("SPM Encode(\"\", BOS) = %v, want [1]", got)
	}
	if got := spm.Encode("", false); len(got) != 0 {
		t.Errorf("SPM Encode(\"\") = %v, want none", got)
	}
	// llama.cpp: the first id loses its prefix space, unless BOS is first.
	for _, c := range []struct {
		ids  []int32
		want string
	}{
		{[]int32{15043, 3186}, "Hello world"},
		{[]int32{1, 15043, 3186}, " Hello world"},
		{[]int32{1, 15043, 3186, 2}, " Hello world"},
		{[]int32{0, 1, 2}, ""},               // unknown and control tokens print nothing
		{[]int32{-1, 32000, 3186}, " world"}, // out-of-range ids print nothing, but count as first
		{[]int32{13}, "\n"},                  // <0x0A>
	} {
		if got := spm.Decode(c.ids); got != c.want {
			t.Errorf("SPM Decode(%v) = %q, want %q", c.ids, got, c.want)
		}
	}
	if spm.TokenText(3186) != "▁world" || spm.TokenText(32000) != "" || spm.TokenText(-1) != "" {
		t.Errorf("TokenText: %q %q %q", spm.TokenText(3186), spm.TokenText(32000), spm.TokenText(-1))
	}
	if !spm.IsEOG(2) || spm.IsEOG(1) || spm.IsEOG(3186) {
		t.Error("SPM IsEOG: want EOS only")
	}

	_, bpe := loadTokenizer(t, llama3Model)
	if bpe.NumTokens() != 128256 || bpe.BOS() != 128000 || bpe.EOS() != 128001 || !bpe.AddBOS() {
		t.Fatalf("NumTokens %d BOS %d EOS %d AddBOS %v", bpe.NumTokens(), bpe.BOS(), bpe.EOS(), bpe.AddBOS())
	}
	if got := bpe.Encode("Hello world", true); !slices.Equal(got, []int32{128000, 9906, 1917}) {
		t.Errorf("BPE Encode(Hello world, BOS) = %v, want [128000 9906 1917]", got)
	}
	if got := bpe.Decode([]int32{128000, 9906, 1917, 128009}); got != "Hello world" {
		t.Errorf("BPE Decode = %q: control tokens should print nothing", got)
	}
	eot := int32(128009)
	var eog []int32
	for id := range int32(bpe.NumTokens()) {
		if bpe.IsEOG(id) {
			eog = append(eog, id)
		}
	}
	if bpe.TokenText(eot) != "<|eot_id|>" || !slices.Equal(eog, []int32{128001, eot}) {
		t.Errorf("BPE IsEOG holds for %v, want <|end_of_text|> and <|eot_id|> (%v)", eog, []int32{128001, eot})
	}
	// Plain text: a special token's text is encoded as ordinary text.
	if got := bpe.Encode("<|eot_id|>", false); slices.Contains(got, eot) || bpe.Decode(got) != "<|eot_id|>" {
		t.Errorf("BPE Encode(<|eot_id|>) = %v", got)
	}
}

// randomText draws n runes from a mix of ASCII, whitespace, Latin, CJK,
// emoji, combining marks and other planes. SentencePiece cannot give back
// "▁" (it is its space), so noSPMSpace leaves it out.
func randomText(r *rand.Rand, n int, noSPMSpace bool) string {
	pools := []string{
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
		"    \t\n\n\r.,;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~`",
		"äöüßéèàçñøåÄÖÜÉ½€£¥©®°±µ¿¡",
		"нещо на Български ελληνικά العربية हिन्दी",
		"日本語の文字列中文字符한국어",
		"🦙🚀😀👍🏽🇫🇷❤️‍🔥",
		"\u0301\u0308\u200d\ufe0f\u00a0\u2028\u3000\u2581",
		"\U0001D400\U00010348\U0002A6D6\U000E0001",
	}
	var b strings.Builder
	for b.Len() < n {
		pool := []rune(pools[r.IntN(len(pools))])
		c := pool[r.IntN(len(pool))]
		if c == '\u2581' && noSPMSpace {
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// checkRoundTrip checks Decode(Encode(s)) == s and that the streamed text
// equals it. With BOS, SentencePiece keeps the prefix space (llama.cpp's
// rule), so the text comes back with a space in front.
func checkRoundTrip(t *testing.T, tok *Tokenizer, s string, spm bool) {
	t.Helper()
	ids := tok.Encode(s, false)
	for _, id := range ids {
		if id < 0 || int(id) >= tok.NumTokens() {
			t.Fatalf("Encode(%q): id %d out of range", s, id)
		}
	}
	if got := tok.Decode(ids); got != s {
		t.Fatalf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
	}
	want := s
	if spm && s != "" {
		want = " " + s
	}
	if got := tok.Decode(tok.Encode(s, true)); got != want {
		t.Fatalf("Decode(Encode(%q, BOS)) = %q, want %q", s, got, want)
	}
	if utf8.ValidString(s) {
		if got := stream(t, tok, ids); got != s {
			t.Fatalf("streamed %q, want %q", got, s)
		}
	}
}

func TestRoundTripSPM(t *testing.T) {
	_, tok := loadTokenizer(t, llama2Model)
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		checkRoundTrip(t, tok, randomText(r, r.IntN(80), true), true)
	}
}

func TestRoundTripBPE(t *testing.T) {
	_, tok := loadTokenizer(t, llama3Model)
	r := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		checkRoundTrip(t, tok, randomText(r, r.IntN(80), false), false)
	}
}

// Invalid UTF-8 is encoded byte by byte and comes back unchanged.
func TestInvalidUTF8(t *testing.T) {
	for _, name := range []string{llama2Model, llama3Model, storiesModel} {
		_, tok := loadTokenizer(t, name)
		for _, s := range []string{"\xff", "a\x80b", "\xe2\x82", "ok \xf0\x9f\xa6 llama", "\xc3\xa4\xc3"} {
			ids := tok.Encode(s, false)
			if got := tok.Decode(ids); got != s {
				t.Errorf("%s: Decode(Encode(%q)) = %q", name, s, got)
			}
			want := string([]rune(s)) // invalid bytes as U+FFFD, one each
			if got := stream(t, tok, ids); got != want {
				t.Errorf("%s: streamed %q, want %q", name, got, want)
			}
		}
	}
}

// stream pushes ids one by one, checks every chunk is valid UTF-8, and
// returns the chunks and Flush joined.
func stream(t *testing.T, tok *Tokenizer, ids []int32) string {
	t.Helper()
	s := tok.NewStreamer()
	var b strings.Builder
	for _, id := range ids {
		chunk := s.Push(id)
		if !utf8.ValidString(chunk) {
			t.Fatalf("Push(%d) returned invalid UTF-8 %q", id, chunk)
		}
		b.WriteString(chunk)
	}
	rest := s.Flush()
	if !utf8.ValidString(rest) {
		t.Fatalf("Flush returned invalid UTF-8 %q", rest)
	}
	return b.String() + rest
}

func TestStreamer(t *testing.T) {
	text := "Äpfel für 🦙 und 日本語, émoji 👍🏽!\n"
	for _, name := range []string{llama2Model, llama3Model, storiesModel} {
		_, tok := loadTokenizer(t, name)
		ids := tok.Encode(text, true)
		// The text must really split characters over ids for the test to
		// mean anything: some id's bytes are not valid UTF-8 alone.
		split := false
		for _, id := range ids {
			if !utf8.ValidString(tok.Decode([]int32{id})) {
				split = true
			}
		}
		if !split {
			t.Fatalf("%s: no id of %v splits a character", name, ids)
		}
		if got, want := stream(t, tok, ids), tok.Decode(ids); got != want {
			t.Errorf("%s: streamed %q, want %q", name, got, want)
		}
		// Held bytes come out only when complete.
		s := tok.NewStreamer()
		llama := tok.Encode("🦙", false)
		var out string
		for i, id := range llama {
			chunk := s.Push(id)
			if i < len(llama)-1 && strings.Contains(chunk, "🦙") {
				t.Errorf("%s: llama out before its last id", name)
			}
			out += chunk
		}
		if out != "🦙" || s.Flush() != "" {
			t.Errorf("%s: streamed llama %q", name, out)
		}
		// Flush starts over: the next first id loses its space again.
		if got, want := s.Push(ids[1]), tok.Decode(ids[1:2]); got != want {
			t.Errorf("%s: after Flush, Push = %q, want %q", name, got, want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	good := Vocab{Model: "llama", Tokens: []string{"<unk>", "<s>", "</s>", "▁a"},
		Scores: []float32{0, 0, 0, -1}, Types: []int32{2, 3, 3, 1}, BOS: 1, EOS: 2, UNK: 0, PAD: -1}
	if _, err := New(good); err != nil {
		t.Fatalf("New(good) = %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(v *Vocab)
		want string
	}{
		{"unknown model", func(v *Vocab) { v.Model = "wordpiece" }, `unsupported tokenizer model "wordpiece"`},
		{"unknown pre", func(v *Vocab) { v.Model, v.Pre = "gpt2", "qwen2" }, `unsupported BPE pre-tokenizer "qwen2"`},
		{"empty vocab", func(v *Vocab) { v.Tokens, v.Scores, v.Types = nil, nil, nil }, "empty vocabulary"},
		{"scores length", func(v *Vocab) { v.Scores = v.Scores[:3] }, "3 scores for 4 tokens"},
		{"types length", func(v *Vocab) { v.Types = v.Types[:1] }, "1 token types for 4 tokens"},
		{"bad type", func(v *Vocab) { v.Types = []int32{2, 3, 3, 9} }, "unknown type 9"},
		{"BOS range", func(v *Vocab) { v.BOS = 4 }, "BOS id 4 out of range"},
		{"EOS range", func(v *Vocab) { v.EOS = -2 }, "EOS id -2 out of range"},
		{"PAD range", func(v *Vocab) { v.PAD = 100 }, "PAD id 100 out of range"},
		{"AddBOS without BOS", func(v *Vocab) { v.BOS, v.AddBOS = -1, true }, "no BOS token"},
		{"bad byte token", func(v *Vocab) { v.Types = []int32{2, 3, 3, 6} }, `byte type but text "▁a"`},
		{"bad merge", func(v *Vocab) { v.Model, v.Pre, v.Merges = "gpt2", "llama-bpe", []string{"ab"} }, `merge 0 ("ab")`},
	} {
		v := good
		c.edit(&v)
		_, err := New(v)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "tokenizer: new: ") {
			t.Errorf("%s: New = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

// Building the Llama 3 tokenizer (280k merges) and encoding the whole BPE
// vector file are both far under a second.
func TestPerformance(t *testing.T) {
	v, _ := loadTokenizer(t, llama3Model)
	start := time.Now()
	tok, err := New(v)
	build := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	cases := readVectors(t, "llama3-bpe")
	start = time.Now()
	n := 0
	for _, c := range cases {
		n += len(tok.Encode(c.text, false))
	}
	encode := time.Since(start)
	t.Logf("New: %v; encoding %d cases (%d tokens): %v", build, len(cases), n, encode)
	if build > time.Second {
		t.Errorf("New took %v, want < 1s", build)
	}
	if encode > 250*time.Millisecond {
		t.Errorf("encoding the vector file took %v, want < 250ms", encode)
	}

	// A long input must not blow up either (whitespace runs backtrack).
	long := strings.Repeat("word ", 20000) + strings.Repeat(" ", 50000) + strings.Repeat("x", 50000)
	start = time.Now()
	ids := tok.Encode(long, false)
	if d := time.Since(start); d > 2*time.Second || tok.Decode(ids) != long {
		t.Errorf("encoding %d bytes took %v (round trip ok: %v)", len(long), d, tok.Decode(ids) == long)
	}
}

// A Tokenizer is shared by goroutines: each gets the same ids.
func TestConcurrent(t *testing.T) {
	for _, name := range []string{llama2Model, llama3Model} {
		_, tok := loadTokenizer(t, name)
		cases := readVectors(t, "llama3-bpe")
		want := make([][]int32, len(cases))
		for i, c := range cases {
			want[i] = tok.Encode(c.text, true)
		}
		errs := make(chan string, 4)
		for g := range 4 {
			go func() {
				for i := range cases {
					c := cases[(i+g*31)%len(cases)]
					if got := tok.Encode(c.text, true); !slices.Equal(got, want[(i+g*31)%len(cases)]) {
						errs <- c.text
						return
					}
				}
				errs <- ""
			}()
		}
		for range 4 {
			if s := <-errs; s != "" {
				t.Errorf("%s: concurrent Encode(%q) differs", name, s)
			}
		}
	}
}
