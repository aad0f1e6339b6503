package gguf

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/deft-vk/deft/internal/testmodels"
	parser "github.com/gpustack/gguf-parser-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// allValues has one key of every GGUF value type, arrays of each, nested
// and empty arrays. Strings carry no outer white space, which the parser
// would trim (TestWriterExactStrings covers those with Open).
func allValues() []KV {
	return []KV{
		{"general.architecture", "llama"},
		{"t.u8", uint8(200)},
		{"t.i8", int8(-100)},
		{"t.u16", uint16(60000)},
		{"t.i16", int16(-30000)},
		{"t.u32", uint32(4000000000)},
		{"t.i32", int32(-2000000000)},
		{"t.f32", float32(1.5e-5)},
		{"t.bool", true},
		{"t.string", "héllo wörld ▁x"},
		{"t.u64", uint64(1) << 60},
		{"t.i64", int64(-1) << 60},
		{"t.f64", 3.141592653589793},
		{"a.u8", []uint8{1, 2, 255}},
		{"a.i8", []int8{-1, 2}},
		{"a.u16", []uint16{65535}},
		{"a.i16", []int16{-5, 5}},
		{"a.u32", []uint32{1, 2, 3}},
		{"a.i32", []int32{-7}},
		{"a.f32", []float32{0.25, -1e10}},
		{"a.bool", []bool{true, false, true}},
		{"a.string", []string{"a", "b c", "<s>"}},
		{"a.u64", []uint64{1 << 63}},
		{"a.i64", []int64{-(1 << 62)}},
		{"a.f64", []float64{1e-300}},
		{"a.empty", []float32{}},
		{"a.nested", []any{[]uint32{1, 2}, []string{"x"}, []any{[]int8{-3}}, []bool{}}},
	}
}

func writeTestFile(t *testing.T, align uint32) (string, []KV, []Tensor) {
	t.Helper()
	w := NewWriter()
	kvs := allValues()
	if align != 0 {
		kvs = append(kvs, KV{"general.alignment", align})
	}
	for _, kv := range kvs {
		require.NoError(t, w.SetKV(kv.Key, kv.Value))
	}
	x := make([]float32, 512)
	for i := range x {
		x[i] = float32(i%37) - 18
	}
	var tensors []Tensor
	add := func(name string, typ TensorType, dims ...uint64) {
		n := uint64(1)
		for _, d := range dims {
			n *= d
		}
		data, err := Quantize(typ, x[:n])
		require.NoError(t, err)
		require.NoError(t, w.AddTensor(name, typ, dims, data))
		tensors = append(tensors, Tensor{Name: name, Type: typ, Dims: dims, Data: data})
	}
	add("a.f32", F32, 3)
	add("b.f16", F16, 4, 2)
	add("c.bf16", BF16, 5)
	add("d.q8_0", Q8_0, 32, 2)
	add("e.q4_0", Q4_0, 64)
	add("f.q4_k", Q4_K, 256)
	add("g.q6_k", Q6_K, 256, 2)
	add("g.q5_k", Q5_K, 512)
	add("h.f32", F32, 2, 3, 4, 1)
	q3 := bytes.Repeat([]byte{7}, 110) // a type that is only carried
	require.NoError(t, w.AddTensor("i.q3_k", TensorType(11), []uint64{256}, q3))
	tensors = append(tensors, Tensor{Name: "i.q3_k", Type: TensorType(11), Dims: []uint64{256}, Data: q3})

	path := filepath.Join(t.TempDir(), "all.gguf")
	require.NoError(t, w.WriteFile(path))
	return path, kvs, tensors
}

func TestWriterRoundTrip(t *testing.T) {
	for _, align := range []uint32{0, 64, 8} {
		path, kvs, tensors := writeTestFile(t, align)

		f, err := Open(path)
		require.NoError(t, err)
		assert.Equal(t, kvs, f.Metadata(), "alignment %d", align)
		want := uint64(align)
		if want == 0 {
			want = DefaultAlignment
		}
		assert.Equal(t, want, f.Alignment())
		assert.Zero(t, f.DataOffset()%want)
		require.Len(t, f.Tensors(), len(tensors))
		for i, tn := range f.Tensors() {
			assert.Equal(t, tensors[i], tn)
		}
		assert.Zero(t, f.Size()%int(want), "the last tensor is padded too")

		// gguf-parser-go reads the same values and tensor layout.
		gf, err := parser.ParseGGUFFile(path)
		require.NoError(t, err)
		require.Len(t, gf.Header.MetadataKV, len(kvs))
		for i, kv := range gf.Header.MetadataKV {
			assert.Equal(t, kvs[i].Key, kv.Key)
			assert.True(t, sameValue(kv.Value, kvs[i].Value), "%s: parser read %v", kv.Key, kv.Value)
			assert.Equal(t, kvs[i].Key == "a.nested", kv.ValueType == parser.GGUFMetadataValueTypeArray &&
				kv.ValueArray().Type == parser.GGUFMetadataValueTypeArray)
		}
		require.Len(t, gf.TensorInfos, len(tensors))
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		for i, ti := range gf.TensorInfos {
			assert.Equal(t, tensors[i].Name, ti.Name)
			assert.Equal(t, tensors[i].Dims, ti.Dimensions)
			assert.Equal(t, uint32(tensors[i].Type), uint32(ti.Type))
			start := uint64(gf.TensorDataStartOffset) + ti.Offset
			assert.Equal(t, tensors[i].Data, raw[start:start+ti.Bytes()], ti.Name)
		}
		require.NoError(t, f.Close())
	}
}

func TestWriterExactStrings(t *testing.T) {
	w := NewWriter()
	vocab := []string{" ", "\u00a0", ";\r", "\t\n", "", " x "}
	require.NoError(t, w.SetKV("tokenizer.ggml.tokens", vocab))
	require.NoError(t, w.SetKV(" spaced key ", "  v  "))
	var buf bytes.Buffer
	_, err := w.WriteTo(&buf)
	require.NoError(t, err)
	f, err := FromBytes("mem", buf.Bytes())
	require.NoError(t, err)
	got, err := f.Strings("tokenizer.ggml.tokens")
	require.NoError(t, err)
	assert.Equal(t, vocab, got)
	s, err := f.String(" spaced key ")
	require.NoError(t, err)
	assert.Equal(t, "  v  ", s)
	assert.Empty(t, f.Tensors())
}

// Rewriting a model's metadata and tensors reproduces the file byte for
// byte (llama.cpp's writer lays it out the same way), and so loads with
// identical values.
func TestRewriteModels(t *testing.T) {
	for _, name := range []string{"stories260K.gguf", "llama-2-tiny-random.gguf", "llama-3-tiny-random.gguf"} {
		t.Run(name, func(t *testing.T) { rewrite(t, testmodels.Path(t, name)) })
	}
}

func rewrite(t *testing.T, path string) {
	f, err := Open(path)
	require.NoError(t, err)
	defer f.Close()
	w := NewWriter()
	for _, kv := range f.Metadata() {
		require.NoError(t, w.SetKV(kv.Key, kv.Value))
	}
	for _, tn := range f.Tensors() {
		require.NoError(t, w.AddTensor(tn.Name, tn.Type, tn.Dims, tn.Data))
	}
	out := filepath.Join(t.TempDir(), "copy.gguf")
	require.NoError(t, w.WriteFile(out))

	g, err := Open(out)
	require.NoError(t, err)
	defer g.Close()
	assert.Equal(t, f.Metadata(), g.Metadata())
	assert.Equal(t, f.DataOffset(), g.DataOffset())
	require.Len(t, g.Tensors(), len(f.Tensors()))
	for i, tn := range g.Tensors() {
		assert.Equal(t, f.Tensors()[i], tn)
	}
	orig, err := os.ReadFile(path)
	require.NoError(t, err)
	copied, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(orig, copied), "rewritten file differs from the original (%d vs %d bytes)", len(copied), len(orig))
}

func TestWriterErrors(t *testing.T) {
	w := NewWriter()
	assert.ErrorContains(t, w.SetKV("k", 5), `set "k": no GGUF type for a Go int`)
	assert.ErrorContains(t, w.SetKV("k", []any{uint8(1)}), "element 0 is a uint8, not an array")
	assert.ErrorContains(t, w.SetKV("general.alignment", uint32(24)), "power of two")
	assert.ErrorContains(t, w.SetKV("general.alignment", uint64(32)), "not uint64 32")
	require.NoError(t, w.SetKV("k", uint8(1)))
	require.NoError(t, w.SetKV("k", "replaced"))
	assert.Equal(t, []KV{{"k", "replaced"}}, w.kvs)

	assert.ErrorContains(t, w.AddTensor("w", Q8_0, []uint64{32}, make([]byte, 33)), "Q8_0 [32] needs 34 bytes, have 33")
	assert.ErrorContains(t, w.AddTensor("w", Q8_0, []uint64{16}, make([]byte, 17)), "not a multiple of its block of 32")
	assert.ErrorContains(t, w.AddTensor("w", F32, nil, nil), "0 dimensions")
	assert.ErrorContains(t, w.AddTensor("w", F32, []uint64{1, 1, 1, 1, 1}, make([]byte, 4)), "5 dimensions")
	assert.ErrorContains(t, w.AddTensor(string(make([]byte, 64)), F32, []uint64{1}, make([]byte, 4)), "name must have 1 to 63 bytes")
	assert.ErrorContains(t, w.AddTensor("w", TensorType(4), []uint64{32}, nil), "Q4_2")
	require.NoError(t, w.AddTensor("w", F32, []uint64{1}, make([]byte, 4)))
	assert.ErrorContains(t, w.AddTensor("w", F32, []uint64{1}, make([]byte, 4)), "added twice")
}

// writerToFunc adapts a function to io.WriterTo.
type writerToFunc func(w io.Writer) (int64, error)

func (f writerToFunc) WriteTo(w io.Writer) (int64, error) { return f(w) }

// Tensors from sources are written in place, in pieces, beside tensors
// from slices; a source that writes too few or too many bytes, or fails,
// is an error naming the tensor.
func TestWriterTensorFrom(t *testing.T) {
	data := func(n int, k byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7) ^ k
		}
		return b
	}
	a, b, c := data(64*4, 1), data(3*34, 2), data(5*2, 3)
	pieces := func(src []byte) io.WriterTo {
		return writerToFunc(func(w io.Writer) (int64, error) {
			var n int64
			for off := 0; off < len(src); off += 5 {
				m, err := w.Write(src[off:min(off+5, len(src))])
				n += int64(m)
				if err != nil {
					return n, err
				}
			}
			return n, nil
		})
	}
	w := NewWriter()
	require.NoError(t, w.SetKV("general.architecture", "llama"))
	require.NoError(t, w.AddTensorFrom("a", F32, []uint64{16, 4}, pieces(a)))
	require.NoError(t, w.AddTensor("b", Q8_0, []uint64{96}, b))
	require.NoError(t, w.AddTensorFrom("c", F16, []uint64{5}, pieces(c)))
	var buf bytes.Buffer
	_, err := w.WriteTo(&buf)
	require.NoError(t, err)
	f, err := FromBytes("from", buf.Bytes())
	require.NoError(t, err)
	defer f.Close()
	for name, want := range map[string][]byte{"a": a, "b": b, "c": c} {
		ten, err := f.Tensor(name)
		require.NoError(t, err)
		assert.Equal(t, want, ten.Data, name)
	}

	for name, src := range map[string]io.WriterTo{
		"short": pieces(a[:100]),
		"long":  pieces(append(append([]byte{}, a...), 1)),
		"fails": writerToFunc(func(io.Writer) (int64, error) { return 0, errors.New("disk on fire") }),
	} {
		w := NewWriter()
		require.NoError(t, w.AddTensorFrom("x", F32, []uint64{64}, src))
		_, err := w.WriteTo(io.Discard)
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), `"x"`, name)
	}
	require.Error(t, NewWriter().AddTensorFrom("x", F32, []uint64{64}, nil))
}
