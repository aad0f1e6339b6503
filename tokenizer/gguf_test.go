package tokenizer

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	gguf "github.com/gpustack/gguf-parser-go"

	"github.com/deft-vk/deft/internal/testmodels"
)

// The test models, by file name under ../shared/models.
const (
	llama2Model  = "llama-2-tiny-random.gguf" // SentencePiece, 32000 tokens
	llama3Model  = "llama-3-tiny-random.gguf" // Llama 3 BPE, 128256 tokens
	storiesModel = "stories260K.gguf"         // SentencePiece, 512 tokens
)

// vocabFromGGUF reads a Vocab from a GGUF file's tokenizer.ggml.* keys,
// with llama.cpp's defaults for absent keys. Tests only: the engine's
// loader does this for real.
func vocabFromGGUF(t testing.TB, path string) Vocab {
	t.Helper()
	// Memory-mapped: read(2) per value makes the 128k-token file slow.
	f, err := gguf.ParseGGUFFile(path, gguf.UseMMap())
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	kvs := f.Header.MetadataKV
	get := func(key string) (gguf.GGUFMetadataKV, bool) { return kvs.Get("tokenizer.ggml." + key) }
	array := func(key string, want gguf.GGUFMetadataValueType) (gguf.GGUFMetadataKVArrayValue, bool) {
		kv, ok := get(key)
		if !ok {
			return gguf.GGUFMetadataKVArrayValue{}, false
		}
		if kv.ValueType != gguf.GGUFMetadataValueTypeArray || kv.ValueArray().Type != want {
			t.Fatalf("%s: tokenizer.ggml.%s is not an array of %v", path, key, want)
		}
		return kv.ValueArray(), true
	}
	id := func(key string) int32 {
		kv, ok := get(key)
		if !ok {
			return -1
		}
		v := gguf.ValueNumeric[int64](kv)
		if v < 0 || v >= 1<<31-1 { // 0xFFFFFFFF as uint32 means none
			return -1
		}
		return int32(v)
	}
	flag := func(key string, def bool) bool {
		if kv, ok := get(key); ok {
			return kv.ValueBool()
		}
		return def
	}

	var v Vocab
	if kv, ok := get("model"); ok {
		v.Model = kv.ValueString()
	}
	if kv, ok := get("pre"); ok {
		v.Pre = kv.ValueString()
	}
	if a, ok := array("tokens", gguf.GGUFMetadataValueTypeString); ok {
		v.Tokens = a.ValuesString()
	}
	if a, ok := array("scores", gguf.GGUFMetadataValueTypeFloat32); ok {
		v.Scores = a.ValuesFloat32()
	}
	if a, ok := array("token_type", gguf.GGUFMetadataValueTypeInt32); ok {
		v.Types = a.ValuesInt32()
	}
	if a, ok := array("merges", gguf.GGUFMetadataValueTypeString); ok {
		v.Merges = a.ValuesString()
	}
	v.BOS = id("bos_token_id")
	v.EOS = id("eos_token_id")
	v.UNK = id("unknown_token_id")
	v.PAD = id("padding_token_id")
	// llama.cpp's defaults: SentencePiece adds BOS and the prefix space;
	// Llama 3's pre-tokenizer adds BOS and no prefix space.
	spm := v.Model == "llama"
	v.AddBOS = flag("add_bos_token", true)
	v.AddEOS = flag("add_eos_token", false)
	v.AddSpacePrefix = flag("add_space_prefix", spm)
	return v
}

var vocabCache sync.Map // file name -> *cachedVocab

type cachedVocab struct {
	once sync.Once
	v    Vocab
	tok  *Tokenizer
	err  error
}

// loadTokenizer returns the vocabulary and tokenizer of a test model,
// parsed once per test binary (the Llama 3 file takes seconds to parse).
func loadTokenizer(t testing.TB, name string) (Vocab, *Tokenizer) {
	t.Helper()
	path := testmodels.Path(t, name)
	c, _ := vocabCache.LoadOrStore(name, &cachedVocab{})
	cv := c.(*cachedVocab)
	cv.once.Do(func() {
		cv.v = vocabFromGGUF(t, path)
		cv.tok, cv.err = New(cv.v)
	})
	if cv.err != nil {
		t.Fatalf("New(%s): %v", name, cv.err)
	}
	if cv.tok == nil {
		t.Fatalf("%s: loading failed in an earlier test", name)
	}
	return cv.v, cv.tok
}

// vectorCase is one input of a llama.cpp tokenizer test file and its ids.
type vectorCase struct {
	text string
	ids  []int32
}

// readVectors reads name.inp (inputs, each followed by a line
// __ggml_vocab_test__) and name.out (one line of space-separated ids per
// input) from the models' vocab folder.
func readVectors(t testing.TB, name string) []vectorCase {
	t.Helper()
	inp, err := os.ReadFile(testmodels.Path(t, "vocab/"+name+".inp"))
	if err != nil {
		t.Fatal(err)
	}
	outp, err := os.ReadFile(testmodels.Path(t, "vocab/"+name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	texts := strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	if texts[len(texts)-1] != "" {
		t.Fatalf("%s.inp does not end with a separator line", name)
	}
	texts = texts[:len(texts)-1]
	lines := strings.Split(strings.TrimSuffix(string(outp), "\n"), "\n")
	if len(lines) != len(texts) {
		t.Fatalf("%s: %d inputs but %d output lines", name, len(texts), len(lines))
	}
	cases := make([]vectorCase, len(texts))
	for i, text := range texts {
		cases[i].text = text
		for _, f := range strings.Fields(lines[i]) {
			n, err := strconv.ParseInt(f, 10, 32)
			if err != nil {
				t.Fatalf("%s.out line %d: %v", name, i+1, err)
			}
			cases[i].ids = append(cases[i].ids, int32(n))
		}
	}
	return cases
}
