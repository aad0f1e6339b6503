package gguf

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/deft-vk/deft/internal/testmodels"
	parser "github.com/gpustack/gguf-parser-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func openModel(t *testing.T, name string) *File {
	t.Helper()
	f, err := Open(testmodels.Path(t, name))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	return f
}

func TestOpenStories(t *testing.T) {
	f := openModel(t, "stories260K.gguf")
	assert.Equal(t, "llama", f.Architecture())
	assert.Equal(t, uint32(3), f.Version())
	assert.Equal(t, uint64(32), f.Alignment())
	assert.Equal(t, 1185376, f.Size())

	n, err := f.Uint("llama.block_count")
	require.NoError(t, err)
	assert.Equal(t, uint64(5), n)
	eps, err := f.Float("llama.attention.layer_norm_rms_epsilon")
	require.NoError(t, err)
	assert.InDelta(t, 1e-5, eps, 1e-12)
	s, err := f.String("tokenizer.ggml.model")
	require.NoError(t, err)
	assert.Equal(t, "llama", s)
	toks, err := f.Strings("tokenizer.ggml.tokens")
	require.NoError(t, err)
	require.Len(t, toks, 512)
	assert.Equal(t, "<s>", toks[1])
	scores, err := f.Floats("tokenizer.ggml.scores")
	require.NoError(t, err)
	assert.Len(t, scores, 512)
	types, err := f.Ints("tokenizer.ggml.token_type")
	require.NoError(t, err)
	assert.Equal(t, int64(3), types[1]) // control token

	tensors := f.Tensors()
	require.Len(t, tensors, 3+5*9)
	emb, err := f.Tensor("token_embd.weight")
	require.NoError(t, err)
	assert.Equal(t, F32, emb.Type)
	assert.Equal(t, []uint64{64, 512}, emb.Dims)
	assert.Len(t, emb.Data, 64*512*4)
	assert.Equal(t, uint64(512), emb.Rows())
	assert.Equal(t, uint64(64*512), emb.Elements())
}

// The parser trims white space from strings; the vocabulary must come back
// exactly as stored (stories260K has "\u00a0" and "\u200a" tokens, Llama 2's
// vocabulary 37 tokens with a trailing "\r" or non-breaking spaces).
func TestExactStrings(t *testing.T) {
	f := openModel(t, "stories260K.gguf")
	toks, err := f.Strings("tokenizer.ggml.tokens")
	require.NoError(t, err)
	assert.Contains(t, toks, "\u00a0")
	assert.Contains(t, toks, "\u200a")

	f2 := openModel(t, "llama-2-tiny-random.gguf")
	toks, err = f2.Strings("tokenizer.ggml.tokens")
	require.NoError(t, err)
	assert.Contains(t, toks, ";\r")
	assert.Contains(t, toks, "\u00a0\u00a0\u00a0\u00a0")
	seen := map[string]int{}
	for i, s := range toks {
		if j, dup := seen[s]; dup {
			t.Fatalf("tokens %d and %d are both %q", j, i, s)
		}
		seen[s] = i
	}
}

func TestMetadataErrors(t *testing.T) {
	f := openModel(t, "stories260K.gguf")
	_, err := f.Uint("llama.no_such_key")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"llama.no_such_key"`)
	assert.Contains(t, err.Error(), "missing")

	_, err = f.Uint("general.architecture")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"general.architecture"`)
	assert.Contains(t, err.Error(), "holds string")

	_, err = f.String("llama.block_count")
	assert.ErrorContains(t, err, "holds uint32 (5), want string")
	_, err = f.Bool("llama.block_count")
	assert.ErrorContains(t, err, "want bool")
	_, err = f.Strings("tokenizer.ggml.scores")
	assert.ErrorContains(t, err, "holds array of float32")
	_, err = f.Ints("tokenizer.ggml.scores")
	assert.ErrorContains(t, err, "want array of integers")

	v, ok, err := f.LookupFloat("llama.rope.freq_base")
	assert.NoError(t, err)
	assert.False(t, ok)
	assert.Zero(t, v)
	_, ok, err = f.LookupString("llama.block_count")
	assert.True(t, ok)
	assert.Error(t, err, "present with the wrong type is an error, not a missing key")

	_, err = f.Tensor("blk.9.attn_q.weight")
	assert.ErrorContains(t, err, `no tensor "blk.9.attn_q.weight"`)
}

// TestAgreesWithParser compares every value with gguf-parser-go's own
// reading (modulo the white space it trims) and every tensor's location.
func TestAgreesWithParser(t *testing.T) {
	for _, name := range []string{"stories260K.gguf", "llama-2-tiny-random.gguf"} {
		path := testmodels.Path(t, name)
		f := openModel(t, name)
		gf, err := parser.ParseGGUFFile(path, parser.UseMMap())
		require.NoError(t, err)
		require.Len(t, f.Metadata(), len(gf.Header.MetadataKV))
		for i, kv := range gf.Header.MetadataKV {
			mine := f.Metadata()[i]
			require.Equal(t, kv.Key, mine.Key)
			assert.True(t, sameValue(kv.Value, mine.Value), "%s: %v", kv.Key, short(mine.Value))
		}
		require.Len(t, f.Tensors(), len(gf.TensorInfos))
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		for i, ti := range gf.TensorInfos {
			tn := f.Tensors()[i]
			assert.Equal(t, ti.Name, tn.Name)
			assert.Equal(t, ti.Dimensions, tn.Dims)
			start := uint64(gf.TensorDataStartOffset) + ti.Offset
			assert.Equal(t, raw[start:start+ti.Bytes()], tn.Data, ti.Name)
		}
	}
}

// sameValue compares a parser value with ours; parser strings are trimmed.
// Plain comparisons, not assertions per element: vocabularies are large.
func sameValue(theirs, mine any) bool {
	switch v := theirs.(type) {
	case string:
		m, ok := mine.(string)
		return ok && v == strings.TrimSpace(m)
	case parser.GGUFMetadataKVArrayValue:
		n := reflect.ValueOf(mine)
		if n.Kind() != reflect.Slice || n.Len() != len(v.Array) {
			return false
		}
		for i := range v.Array {
			if !sameValue(v.Array[i], n.Index(i).Interface()) {
				return false
			}
		}
		return true
	}
	return theirs == mine
}

func TestTruncated(t *testing.T) {
	raw, err := os.ReadFile(testmodels.Path(t, "stories260K.gguf"))
	require.NoError(t, err)
	dir := t.TempDir()
	// Cut inside the header, inside the tensor data, and one byte short.
	for _, n := range []int{0, 3, 100, 14000, 600000, len(raw) - 1} {
		path := filepath.Join(dir, "cut.gguf")
		require.NoError(t, os.WriteFile(path, raw[:n], 0o644))
		f, err := Open(path)
		require.Error(t, err, "cut at %d", n)
		assert.Nil(t, f)
		assert.Contains(t, err.Error(), path)
		if n > 14176 {
			assert.Contains(t, err.Error(), "truncated", "cut at %d: %v", n, err)
		}
		t.Logf("cut at %d: %v", n, err)
		_, err = FromBytes("cut", raw[:n])
		require.Error(t, err)
	}
	_, err = Open(filepath.Join(dir, "missing.gguf"))
	assert.ErrorContains(t, err, "missing.gguf")
	_, err = Open(dir)
	assert.ErrorContains(t, err, "not a regular file")
}

func TestFromBytes(t *testing.T) {
	raw, err := os.ReadFile(testmodels.Path(t, "stories260K.gguf"))
	require.NoError(t, err)
	f, err := FromBytes("embedded", raw)
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, "embedded", f.Name())
	g := openModel(t, "stories260K.gguf")
	assert.Equal(t, g.Metadata(), f.Metadata())
	for i, tn := range f.Tensors() {
		assert.Equal(t, g.Tensors()[i], tn)
	}
	// Data slices alias the given bytes, no copy.
	emb, err := f.Tensor("token_embd.weight")
	require.NoError(t, err)
	off := int(f.DataOffset())
	assert.Same(t, &raw[off], &emb.Data[0])
}
