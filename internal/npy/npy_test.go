package npy

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/half"
)

func newRNG(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, 7))
}

// numpyBytes builds a .npy file the way numpy.save does for version 1.0.
func numpyBytes(dict string, data []byte) []byte {
	total := 10 + len(dict) + 1
	padLen := (64 - total%64) % 64
	hdr := dict + strings.Repeat(" ", padLen) + "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	_ = binary.Write(&b, binary.LittleEndian, uint16(len(hdr)))
	b.WriteString(hdr)
	b.Write(data)
	return b.Bytes()
}

func f32Bytes(vals ...float32) []byte {
	var b bytes.Buffer
	for _, v := range vals {
		_ = binary.Write(&b, binary.LittleEndian, math.Float32bits(v))
	}
	return b.Bytes()
}

func TestDecodeHandBuilt(t *testing.T) {
	// Byte-for-byte what numpy.save(f, np.arange(1, 7, dtype='<f4').reshape(2, 3))
	// writes: a 118-byte header after the 10-byte preamble.
	file := []byte("\x93NUMPY\x01\x00\x76\x00" +
		"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" +
		strings.Repeat(" ", 58) + "\n")
	require.Len(t, file, 128)
	file = append(file, f32Bytes(1, 2, 3, 4, 5, 6)...)

	a, err := Read(bytes.NewReader(file))
	require.NoError(t, err)
	assert.Equal(t, []int{2, 3}, a.Shape)
	assert.Equal(t, Float32, a.DType)
	assert.Equal(t, []float32{1, 2, 3, 4, 5, 6}, a.F32)
	assert.Nil(t, a.F16)

	// Write must reproduce numpy's bytes exactly.
	var out bytes.Buffer
	require.NoError(t, Write(&out, []int{2, 3}, []float32{1, 2, 3, 4, 5, 6}))
	assert.Equal(t, file, out.Bytes())
}

func TestDecodeVariants(t *testing.T) {
	h := []uint16{half.FromFloat32(1.5), half.FromFloat32(-2), 0x7c00}
	var hb bytes.Buffer
	_ = binary.Write(&hb, binary.LittleEndian, h)

	cases := []struct {
		name  string
		file  []byte
		shape []int
		dtype string
		f32   []float32
	}{
		{"scalar", numpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", f32Bytes(7)), []int{}, Float32, []float32{7}},
		{"1d", numpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", f32Bytes(1, 2, 3)), []int{3}, Float32, []float32{1, 2, 3}},
		{"empty", numpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", nil), []int{0, 5}, Float32, []float32{}},
		{"double quotes no trailing comma", numpyBytes(`{"descr": "<f4", "shape": (1, 2), "fortran_order": False}`, f32Bytes(1, 2)), []int{1, 2}, Float32, []float32{1, 2}},
		{"python2 long", numpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }", f32Bytes(1, 2)), []int{2}, Float32, []float32{1, 2}},
		{"fortran 1d", numpyBytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", f32Bytes(1, 2)), []int{2}, Float32, []float32{1, 2}},
		{"f16", numpyBytes("{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }", hb.Bytes()), []int{3}, Float16, []float32{1.5, -2, float32(math.Inf(1))}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := Read(bytes.NewReader(c.file))
			require.NoError(t, err)
			assert.Equal(t, c.shape, a.Shape)
			assert.Equal(t, c.dtype, a.DType)
			assert.Equal(t, c.f32, a.F32)
			if c.dtype == Float16 {
				assert.Equal(t, h, a.F16)
			}
		})
	}
}

func TestVersion2And3(t *testing.T) {
	dict := "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
	for _, major := range []byte{2, 3} {
		var b bytes.Buffer
		b.WriteString("\x93NUMPY")
		b.WriteByte(major)
		b.WriteByte(0)
		hdr := dict + strings.Repeat(" ", 128-12-len(dict)-1) + "\n"
		_ = binary.Write(&b, binary.LittleEndian, uint32(len(hdr)))
		b.WriteString(hdr)
		b.Write(f32Bytes(3, 4))
		a, err := Read(&b)
		require.NoError(t, err, "version %d", major)
		assert.Equal(t, []float32{3, 4}, a.F32)
		assert.Equal(t, 0, b.Len(), "all bytes consumed")
	}
}

func TestRoundTrip(t *testing.T) {
	rng := newRNG(t)
	shapes := [][]int{{}, {0}, {1}, {5}, {2, 3}, {2, 0, 4}, {3, 1, 4, 2}, {1000}}
	for _, shape := range shapes {
		n, err := NumElements(shape)
		require.NoError(t, err)
		data := make([]float32, n)
		hbits := make([]uint16, n)
		for i := range data {
			data[i] = float32(rng.NormFloat64() * 100)
			hbits[i] = uint16(rng.Uint32())
		}
		var buf bytes.Buffer
		require.NoError(t, Write(&buf, shape, data))
		assert.Zero(t, (buf.Len()-4*n)%64, "header alignment for %v", shape)
		a, err := Read(&buf)
		require.NoError(t, err)
		assert.Equal(t, shape, a.Shape)
		assert.Equal(t, Float32, a.DType)
		assert.Equal(t, data, a.F32)

		buf.Reset()
		require.NoError(t, WriteF16(&buf, shape, hbits))
		assert.Zero(t, (buf.Len()-2*n)%64)
		a, err = Read(&buf)
		require.NoError(t, err)
		assert.Equal(t, shape, a.Shape)
		assert.Equal(t, Float16, a.DType)
		assert.Equal(t, hbits, a.F16)
		require.Len(t, a.F32, n)
		for i, hv := range hbits {
			assert.Equal(t, math.Float32bits(half.ToFloat32(hv)), math.Float32bits(a.F32[i]))
		}
	}
}

func TestSequentialArrays(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, []int{2}, []float32{1, 2}))
	require.NoError(t, WriteF16(&buf, []int{1}, []uint16{0x3c00}))
	a, err := Read(&buf)
	require.NoError(t, err)
	assert.Equal(t, []float32{1, 2}, a.F32)
	b, err := Read(&buf)
	require.NoError(t, err)
	assert.Equal(t, []float32{1}, b.F32)
	_, err = Read(&buf)
	require.Error(t, err)
}

func TestMaxDims(t *testing.T) {
	shape := make([]int, MaxDims)
	for i := range shape {
		shape[i] = 1
	}
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, shape, []float32{42}))
	a, err := Read(&buf)
	require.NoError(t, err)
	assert.Equal(t, shape, a.Shape)
	assert.Equal(t, []float32{42}, a.F32)
}

func TestWriteErrors(t *testing.T) {
	assert.ErrorContains(t, Write(io.Discard, []int{2, 3}, make([]float32, 5)), "6 elements")
	assert.ErrorContains(t, Write(io.Discard, []int{-1}, nil), "negative")
	assert.ErrorContains(t, WriteF16(io.Discard, []int{1 << 20, 1 << 20}, nil), "more than")
	assert.ErrorContains(t, Write(io.Discard, make([]int, MaxDims+1), nil), "dimensions")
}

func TestReadErrors(t *testing.T) {
	good := numpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", f32Bytes(1, 2, 3, 4))
	hdr := func(d string) []byte { return numpyBytes(d, f32Bytes(1, 2, 3, 4)) }
	cases := []struct {
		name string
		file []byte
		msg  string
	}{
		{"empty", nil, "preamble"},
		{"bad magic", append([]byte("\x93NUMPZ"), good[6:]...), "magic"},
		{"version", append(append([]byte{}, good[:6]...), append([]byte{4, 0}, good[8:]...)...), "version 4.0"},
		{"truncated header", good[:40], "read npy header"},
		{"truncated data", good[:len(good)-3], "read npy data"},
		{"big endian", hdr("{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }"), "big-endian"},
		{"float64", hdr("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"), "unsupported dtype"},
		{"native order", hdr("{'descr': '=f4', 'fortran_order': False, 'shape': (4,), }"), "byte order"},
		{"fortran 2d", hdr("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }"), "fortran_order"},
		{"missing shape", hdr("{'descr': '<f4', 'fortran_order': False, }"), "must contain"},
		{"unknown key", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}"), "unexpected key"},
		{"duplicate key", hdr("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}"), "duplicate"},
		{"negative dim", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }"), "non-negative"},
		{"bad tuple", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (4 4), }"), "expected ','"},
		{"bad bool", hdr("{'descr': '<f4', 'fortran_order': false, 'shape': (4,), }"), "True or False"},
		{"trailing junk", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), } x"), "after header"},
		{"too many elements", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (65536, 65536), }"), "more than"},
		{"huge dim", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }"), "too large"},
		{"v2 huge header", []byte("\x93NUMPY\x02\x00\xff\xff\xff\x7f"), "exceeds limit"},
		{"zero header", []byte("\x93NUMPY\x01\x00\x00\x00"), "empty header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(c.file))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.msg)
		})
	}
}

func TestHugeClaimedShapeIsCheap(t *testing.T) {
	// A header claiming 2^31 elements with almost no data must fail fast
	// without allocating gigabytes.
	file := numpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (32768, 65536), }", f32Bytes(1, 2))
	start := time.Now()
	_, err := Read(bytes.NewReader(file))
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Less(t, time.Since(start), 2*time.Second)
}

func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	_ = Write(&buf, []int{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	f.Add(append([]byte{}, buf.Bytes()...))
	buf.Reset()
	_ = WriteF16(&buf, []int{3}, []uint16{0x3c00, 0x7e00, 0x8001})
	f.Add(append([]byte{}, buf.Bytes()...))
	f.Add(numpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", f32Bytes(1)))
	f.Add(numpyBytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", f32Bytes(1, 2, 3, 4)))
	f.Add(numpyBytes("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", f32Bytes(1)))
	f.Add([]byte("\x93NUMPY\x02\x00\x10\x00\x00\x00{'shape': (1,)}"))
	f.Add([]byte("\x93NUMPY\x03\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Read(bytes.NewReader(data))
		if err != nil {
			return
		}
		n, err := NumElements(a.Shape)
		require.NoError(t, err)
		require.Len(t, a.F32, n)
		var out bytes.Buffer
		switch a.DType {
		case Float32:
			require.Nil(t, a.F16)
			require.NoError(t, Write(&out, a.Shape, a.F32))
		case Float16:
			require.Len(t, a.F16, n)
			require.NoError(t, WriteF16(&out, a.Shape, a.F16))
		default:
			t.Fatalf("unexpected dtype %q", a.DType)
		}
		b, err := Read(&out)
		require.NoError(t, err)
		require.Equal(t, a.Shape, b.Shape)
		require.Equal(t, a.DType, b.DType)
		require.Equal(t, a.F16, b.F16)
		for i := range a.F32 {
			require.Equal(t, math.Float32bits(a.F32[i]), math.Float32bits(b.F32[i]))
		}
	})
}
