package modelgen_test

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	parser "github.com/gpustack/gguf-parser-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/modelgen"
)

// Every generated type decodes to finite values with the intended scale:
// matrices with a standard deviation within 2x of 1/sqrt(row length) and a
// mean near 0, norms within 1/8 of 1.
func TestFillScale(t *testing.T) {
	for _, typ := range []gguf.TensorType{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K} {
		for _, cols := range []uint64{256, 4096, 14336} {
			dims := []uint64{cols, 64}
			p := modelgen.TensorParams(42, "blk.0.ffn_down.weight", typ, dims)
			size, err := typ.RowBytes(cols)
			require.NoError(t, err)
			data := make([]byte, size*dims[1])
			require.NoError(t, modelgen.Fill(data, typ, p, 0))
			x, err := gguf.Dequantize(gguf.Tensor{Name: "w", Type: typ, Dims: dims, Data: data})
			require.NoError(t, err)
			var sum, ss float64
			for _, v := range x {
				require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0))
				sum += float64(v)
				ss += float64(v) * float64(v)
			}
			n := float64(len(x))
			mean, std := sum/n, math.Sqrt(ss/n-(sum/n)*(sum/n))
			want := 1 / math.Sqrt(float64(cols))
			t.Logf("%s cols %d: std %.3g (want %.3g), mean %.2g", typ, cols, std, want, mean)
			assert.InDelta(t, 1, std/want, 0.5, "%s cols %d", typ, cols)
			assert.Less(t, math.Abs(mean), 0.2*want, "%s cols %d", typ, cols)
		}
		norm := make([]byte, typ.BlockBytes()*256/typ.BlockSize())
		if typ.BlockSize() == 1 {
			require.NoError(t, modelgen.Fill(norm, typ, modelgen.TensorParams(1, "output_norm.weight", typ, []uint64{256}), 0))
			x, err := gguf.Dequantize(gguf.Tensor{Name: "n", Type: typ, Dims: []uint64{256}, Data: norm})
			require.NoError(t, err)
			for _, v := range x {
				require.InDelta(t, 1, v, 0.126)
			}
		}
	}
	// Fill refuses partial blocks.
	require.Error(t, modelgen.Fill(make([]byte, 33), gguf.Q8_0, modelgen.Params{}, 0))
	require.Error(t, modelgen.Fill(make([]byte, 34), gguf.Q8_0, modelgen.Params{}, 1))
}

// Generation is a pure function of (seed, name, offset): pieces equal the
// whole, and another seed or name gives other bytes.
func TestFillPieces(t *testing.T) {
	typ := gguf.Q4_K
	p := modelgen.TensorParams(5, "x", typ, []uint64{256, 8})
	whole := make([]byte, 8*144)
	require.NoError(t, modelgen.Fill(whole, typ, p, 0))
	piece := make([]byte, 3*144)
	require.NoError(t, modelgen.Fill(piece, typ, p, 5*144))
	require.Equal(t, whole[5*144:], piece)
	other := make([]byte, len(whole))
	require.NoError(t, modelgen.Fill(other, typ, modelgen.TensorParams(6, "x", typ, []uint64{256, 8}), 0))
	require.NotEqual(t, whole, other)
	require.NoError(t, modelgen.Fill(other, typ, modelgen.TensorParams(5, "y", typ, []uint64{256, 8}), 0))
	require.NotEqual(t, whole, other)
}

// llama.cpp's Q4_K_M on Llama 3 8B: 193 Q4_K, 33 Q6_K (output, and attn_v
// and ffn_down in 16 of 32 layers), 65 F32 norms, as in published files.
func TestQ4KMRecipe(t *testing.T) {
	cfg, err := modelgen.ShapeConfig("llama3-8b")
	require.NoError(t, err)
	types, err := modelgen.TensorTypes("q4_k_m", cfg)
	require.NoError(t, err)
	count := map[gguf.TensorType]int{}
	for _, ten := range modelgen.Tensors(cfg) {
		count[types(ten.Name)]++
	}
	assert.Equal(t, map[gguf.TensorType]int{gguf.Q4_K: 193, gguf.Q6_K: 33, gguf.F32: 65}, count)
	assert.Equal(t, gguf.Q6_K, types("blk.0.attn_v.weight"))
	assert.Equal(t, gguf.Q4_K, types("blk.4.attn_v.weight"))
	assert.Equal(t, gguf.Q6_K, types("blk.6.ffn_down.weight"))
	assert.Equal(t, gguf.Q4_K, types("blk.7.ffn_down.weight"))
	assert.Equal(t, gguf.Q6_K, types("blk.31.ffn_down.weight"))
	assert.Equal(t, gguf.Q4_K, types("token_embd.weight"))
	// Tied output: the embedding is the logits matrix and gets Q6_K.
	one, err := modelgen.ShapeConfig("llama3-1b")
	require.NoError(t, err)
	types, err = modelgen.TensorTypes("q4_k_m", one)
	require.NoError(t, err)
	assert.Equal(t, gguf.Q6_K, types("token_embd.weight"))
	// Rows that are not whole super-blocks fall back to Q8_0.
	odd := one
	odd.FFN = 8192 + 32
	types, err = modelgen.TensorTypes("q4_k_m", odd)
	require.NoError(t, err)
	assert.Equal(t, gguf.Q8_0, types("blk.0.ffn_down.weight"))
	assert.Equal(t, gguf.Q4_K, types("blk.0.ffn_up.weight"))

	_, err = modelgen.TensorTypes("q3_k", cfg)
	require.Error(t, err)
	_, err = modelgen.ShapeConfig("llama5")
	require.Error(t, err)
}

// llama.cpp's Q5_K_M is Q4_K_M's recipe with Q5_K in place of Q4_K: on
// Llama 3 8B 193 Q5_K, 33 Q6_K, 65 F32 norms, as in published files.
func TestQ5KMRecipe(t *testing.T) {
	cfg, err := modelgen.ShapeConfig("llama3-8b")
	require.NoError(t, err)
	q4, err := modelgen.TensorTypes("q4_k_m", cfg)
	require.NoError(t, err)
	q5, err := modelgen.TensorTypes("q5_k_m", cfg)
	require.NoError(t, err)
	count := map[gguf.TensorType]int{}
	for _, ten := range modelgen.Tensors(cfg) {
		typ := q5(ten.Name)
		count[typ]++
		if want := q4(ten.Name); want == gguf.Q4_K {
			assert.Equal(t, gguf.Q5_K, typ, ten.Name)
		} else {
			assert.Equal(t, want, typ, ten.Name)
		}
	}
	assert.Equal(t, map[gguf.TensorType]int{gguf.Q5_K: 193, gguf.Q6_K: 33, gguf.F32: 65}, count)
	assert.Equal(t, gguf.Q6_K, q5("output.weight"))
	assert.Equal(t, gguf.Q6_K, q5("blk.0.attn_v.weight"))
	assert.Equal(t, gguf.Q5_K, q5("blk.4.attn_v.weight"))
	assert.Equal(t, gguf.Q5_K, q5("token_embd.weight"))
	assert.Equal(t, uint32(17), modelgen.FileTypes["q5_k_m"]) // LLAMA_FTYPE_MOSTLY_Q5_K_M
	// Tied output: the embedding gets Q6_K; rows that are not whole
	// super-blocks fall back to Q8_0.
	one, err := modelgen.ShapeConfig("llama3-1b")
	require.NoError(t, err)
	one.FFN = 8192 + 32
	q5, err = modelgen.TensorTypes("q5_k_m", one)
	require.NoError(t, err)
	assert.Equal(t, gguf.Q6_K, q5("token_embd.weight"))
	assert.Equal(t, gguf.Q8_0, q5("blk.0.ffn_down.weight"))
	assert.Equal(t, gguf.Q5_K, q5("blk.0.ffn_up.weight"))
}

// writeTiny writes the tiny shape in a type with the synthetic vocabulary.
func writeTiny(t *testing.T, typeName string, seed uint64) []byte {
	cfg, err := modelgen.ShapeConfig("tiny")
	require.NoError(t, err)
	v, err := modelgen.SyntheticVocab(cfg.Vocab)
	require.NoError(t, err)
	types, err := modelgen.TensorTypes(typeName, cfg)
	require.NoError(t, err)
	var buf bytes.Buffer
	var last, total uint64
	_, err = modelgen.Write(&buf, modelgen.Model{Name: "tiny", Config: v.Apply(cfg), TensorType: types, Seed: seed, Vocab: v,
		FileType: modelgen.FileTypes[typeName]}, func(d, tot uint64) { last, total = d, tot })
	require.NoError(t, err)
	require.Positive(t, total)
	require.Equal(t, total, last)
	return buf.Bytes()
}

// The tiny model in every type is a valid GGUF for our reader, llama's
// checks, the tokenizer and gguf-parser-go; its tensors are the generator's.
func TestWriteTiny(t *testing.T) {
	for _, name := range modelgen.TypeNames() {
		t.Run(name, func(t *testing.T) {
			data := writeTiny(t, name, 3)
			f, err := gguf.FromBytes("tiny.gguf", data)
			require.NoError(t, err)
			defer f.Close()
			cfg, err := llama.ConfigFrom(f)
			require.NoError(t, err)
			want, _ := modelgen.ShapeConfig("tiny")
			assert.Equal(t, want.Embd, cfg.Embd)
			assert.Equal(t, want.Blocks, cfg.Blocks)
			assert.Equal(t, want.Vocab, cfg.Vocab)
			types, _ := modelgen.TensorTypes(name, want)
			for _, ten := range modelgen.Tensors(want) {
				got, err := f.Tensor(ten.Name)
				require.NoError(t, err)
				require.Equal(t, types(ten.Name), got.Type, ten.Name)
				exp := make([]byte, len(got.Data))
				require.NoError(t, modelgen.Fill(exp, got.Type, modelgen.TensorParams(3, ten.Name, got.Type, ten.Dims), 0))
				require.True(t, bytes.Equal(exp, got.Data), ten.Name)
			}
			tok, err := model.TokenizerFrom(f)
			require.NoError(t, err)
			ids := tok.Encode("hello world", false)
			require.NotEmpty(t, ids)
			assert.Equal(t, "hello world", tok.Decode(ids))

			path := filepath.Join(t.TempDir(), "tiny.gguf")
			require.NoError(t, os.WriteFile(path, data, 0o644))
			pf, err := parser.ParseGGUFFile(path)
			require.NoError(t, err)
			assert.Equal(t, "llama", pf.Architecture().Architecture)
			assert.Len(t, pf.TensorInfos, len(modelgen.Tensors(want)))
		})
	}
}

// A real vocabulary is copied with its size and special ids.
func TestVocabFrom(t *testing.T) {
	f, err := gguf.Open(testmodels.Path(t, "llama-2-tiny-random.gguf"))
	require.NoError(t, err)
	defer f.Close()
	v, err := modelgen.VocabFrom(f)
	require.NoError(t, err)
	assert.Equal(t, 32000, v.Size)
	assert.Equal(t, int32(1), v.BOS)
	assert.Equal(t, int32(2), v.EOS)
	cfg, _ := modelgen.ShapeConfig("tiny")
	cfg = v.Apply(cfg)
	types, _ := modelgen.TensorTypes("q8_0", cfg)
	var buf bytes.Buffer
	_, err = modelgen.Write(&buf, modelgen.Model{Config: cfg, TensorType: types, Vocab: v}, nil)
	require.NoError(t, err)
	g, err := gguf.FromBytes("x.gguf", buf.Bytes())
	require.NoError(t, err)
	defer g.Close()
	tok, err := model.TokenizerFrom(g)
	require.NoError(t, err)
	assert.Equal(t, []int32{15043, 3186}, tok.Encode("Hello world", false))

	_, err = modelgen.SyntheticVocab(100)
	require.Error(t, err)
	_, err = modelgen.Write(&buf, modelgen.Model{Config: cfg, TensorType: types, Vocab: modelgen.Vocabulary{Size: 5}}, nil)
	require.Error(t, err)
}

// Any tensor name gets a type without a panic; norms are always F32.
func FuzzTensorTypes(f *testing.F) {
	for _, s := range []string{"blk.0.attn_v.weight", "blk.-1.ffn_down.weight", "blk..x", "blk.99999999999999999999.attn_v.weight", "output_norm.weight", ""} {
		f.Add(s)
	}
	cfg, err := modelgen.ShapeConfig("llama3-8b")
	if err != nil {
		f.Fatal(err)
	}
	var fns []func(string) gguf.TensorType
	for _, name := range modelgen.TypeNames() {
		fn, err := modelgen.TensorTypes(name, cfg)
		if err != nil {
			f.Fatal(err)
		}
		fns = append(fns, fn)
	}
	f.Fuzz(func(t *testing.T, name string) {
		for _, fn := range fns {
			typ := fn(name)
			if !typ.Supported() {
				t.Fatalf("%q: unsupported type %s", name, typ)
			}
			if strings.HasSuffix(name, "_norm.weight") && typ != gguf.F32 {
				t.Fatalf("%q: norm of type %s", name, typ)
			}
		}
	})
}
