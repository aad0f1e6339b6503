package gguf

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// twoTensors writes a file with keys "ka", "kb" (uint32) and F32 tensors
// "x", "y" of 8 elements each, the given extra tensor added last.
func twoTensors(t *testing.T, extra func(w *Writer)) []byte {
	t.Helper()
	w := NewWriter()
	require.NoError(t, w.SetKV("ka", uint32(1)))
	require.NoError(t, w.SetKV("kb", uint32(2)))
	require.NoError(t, w.SetKV("general.alignment", uint32(16)))
	data := make([]byte, 32)
	require.NoError(t, w.AddTensor("x", F32, []uint64{8}, data))
	require.NoError(t, w.AddTensor("y", F32, []uint64{8}, data))
	if extra != nil {
		extra(w)
	}
	var buf bytes.Buffer
	_, err := w.WriteTo(&buf)
	require.NoError(t, err)
	return buf.Bytes()
}

// patch replaces the only occurrence of old in b with new.
func patch(t *testing.T, b, old, new []byte) []byte {
	t.Helper()
	require.Equal(t, 1, bytes.Count(b, old), "pattern %q", old)
	return bytes.Replace(bytes.Clone(b), old, new, 1)
}

func fields(v ...any) []byte {
	var buf bytes.Buffer
	for _, x := range v {
		if s, ok := x.(string); ok {
			_ = binary.Write(&buf, binary.LittleEndian, uint64(len(s)))
			buf.WriteString(s)
			continue
		}
		_ = binary.Write(&buf, binary.LittleEndian, x)
	}
	return buf.Bytes()
}

func TestMalformed(t *testing.T) {
	good := twoTensors(t, nil)
	f, err := FromBytes("good", good)
	require.NoError(t, err)
	require.Len(t, f.Tensors(), 2)

	cases := []struct {
		name, want string
		data       []byte
	}{
		{"not gguf", "invalid GGUF format", []byte("this is not a model file at all")},
		{"empty", "empty file", nil},
		{"big-endian", "version", patch(t, good, []byte("GGUF\x03\x00\x00\x00"), []byte("FUGG\x03\x00\x00\x00"))},
		{"version 1", "gguf: parse version 1", patch(t, good, []byte("GGUF\x03\x00\x00\x00"), []byte("GGUF\x01\x00\x00\x00"))},
		{"duplicate key", `metadata key "ka" appears twice`, patch(t, good, fields("kb"), fields("ka"))},
		{"duplicate tensor", `tensor "x" appears twice`,
			patch(t, good, fields("y", uint32(1), uint64(8), uint32(0)), fields("x", uint32(1), uint64(8), uint32(0)))},
		{"misaligned tensor", `tensor "y": offset 36 is not a multiple of the alignment 16`,
			patch(t, good, fields("y", uint32(1), uint64(8), uint32(0), uint64(32)), fields("y", uint32(1), uint64(8), uint32(0), uint64(36)))},
		{"tensor past the end", `tensor "y" (F32 [8], 32 bytes at data offset 48) ends past the end of the file`,
			patch(t, good, fields("y", uint32(1), uint64(8), uint32(0), uint64(32)), fields("y", uint32(1), uint64(8), uint32(0), uint64(48)))},
		{"alignment zero", "panicked", patch(t, good, fields("general.alignment", uint32(4), uint32(16)), fields("general.alignment", uint32(4), uint32(0)))},
		{"alignment not a power of two", "general.alignment must be a uint32 power of two",
			// Trailing zeros keep the parser's size check from failing first.
			append(patch(t, good, fields("general.alignment", uint32(4), uint32(16)), fields("general.alignment", uint32(4), uint32(24))), make([]byte, 64)...)},
		{"row not whole blocks", `tensor "y": row length 8: 8 elements of Q8_0: not a multiple of its block of 32`,
			patch(t, good, fields("y", uint32(1), uint64(8), uint32(0)), fields("y", uint32(1), uint64(8), uint32(8)))},
		{"unknown type", "unsupported", patch(t, good, fields("y", uint32(1), uint64(8), uint32(0)), fields("y", uint32(1), uint64(8), uint32(77)))},
	}
	for _, c := range cases {
		f, err := FromBytes(c.name, c.data)
		require.Error(t, err, c.name)
		assert.Nil(t, f)
		assert.Contains(t, err.Error(), c.want, c.name)
		assert.Contains(t, err.Error(), c.name, "the error names the file")
	}
}

// A tensor of a type this package does not convert opens; using it fails
// with an error naming the type.
func TestUnsupportedTypeTensor(t *testing.T) {
	data := twoTensors(t, func(w *Writer) {
		require.NoError(t, w.AddTensor("q3", TensorType(11), []uint64{256}, make([]byte, 110)))
	})
	f, err := FromBytes("q3", data)
	require.NoError(t, err)
	tn, err := f.Tensor("q3")
	require.NoError(t, err)
	assert.Equal(t, "Q3_K", tn.Type.String())
	assert.Len(t, tn.Data, 110)
	_, err = Dequantize(tn)
	assert.ErrorContains(t, err, "dequantize q3: unsupported tensor type Q3_K (11)")
}
