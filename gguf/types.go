package gguf

import (
	"fmt"
	"math/bits"

	parser "github.com/gpustack/gguf-parser-go"
)

// TensorType is a ggml tensor element type, numbered as in ggml.h.
type TensorType uint32

// The tensor types this package reads, writes and converts. Files may hold
// others: they open, and their tensors keep their bytes, but converting them
// fails with an error naming the type.
const (
	F32  TensorType = 0
	F16  TensorType = 1
	Q4_0 TensorType = 2
	Q8_0 TensorType = 8
	Q4_K TensorType = 12
	Q5_K TensorType = 13
	Q6_K TensorType = 14
	BF16 TensorType = 30
)

// Block sizes of the supported types: elements per block and bytes per block.
const (
	qk       = 32  // elements of a Q8_0 or Q4_0 block
	qkK      = 256 // elements of a K-quant super-block
	q8_0Size = 2 + qk
	q4_0Size = 2 + qk/2
	q4_KSize = 2 + 2 + 12 + qkK/2
	q5_KSize = 2 + 2 + 12 + qkK/8 + qkK/2
	q6_KSize = qkK/2 + qkK/4 + qkK/16 + 2
)

var supported = map[TensorType]struct {
	name        string
	block, size int
}{
	F32:  {"F32", 1, 4},
	F16:  {"F16", 1, 2},
	BF16: {"BF16", 1, 2},
	Q8_0: {"Q8_0", qk, q8_0Size},
	Q4_0: {"Q4_0", qk, q4_0Size},
	Q4_K: {"Q4_K", qkK, q4_KSize},
	Q5_K: {"Q5_K", qkK, q5_KSize},
	Q6_K: {"Q6_K", qkK, q6_KSize},
}

// SupportedTypes lists the types that Dequantize and Quantize handle.
var SupportedTypes = []TensorType{F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K}

// String returns ggml's name of the type ("Q4_K"), also for types this
// package does not convert, or "type(N)" for a number ggml does not define.
func (t TensorType) String() string {
	if s, ok := supported[t]; ok {
		return s.name
	}
	if _, ok := parser.GGMLType(t).Trait(); ok {
		return parser.GGMLType(t).String()
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// Supported reports whether Dequantize and Quantize handle t.
func (t TensorType) Supported() bool {
	_, ok := supported[t]
	return ok
}

// Check returns nil for a supported type and otherwise an error naming it.
func (t TensorType) Check() error {
	if t.Supported() {
		return nil
	}
	return fmt.Errorf("unsupported tensor type %s (%d); supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K", t, uint32(t))
}

// layout returns elements and bytes per block for any type ggml defines with
// a fixed block layout, so that tensors of unsupported types can still be
// located in a file; ok is false for unknown or deprecated numbers.
func (t TensorType) layout() (block, size uint64, ok bool) {
	if s, found := supported[t]; found {
		return uint64(s.block), uint64(s.size), true
	}
	tr, found := parser.GGMLType(t).Trait()
	if !found || tr.BlockSize == 0 || tr.TypeSize == 0 {
		return 0, 0, false
	}
	return tr.BlockSize, tr.TypeSize, true
}

// BlockSize returns the number of elements of one block (1 for F32, F16 and
// BF16; 32 for Q8_0 and Q4_0; 256 for K-quants), or 0 for a type of unknown
// layout.
func (t TensorType) BlockSize() int {
	b, _, _ := t.layout()
	return int(b)
}

// BlockBytes returns the bytes of one block, or 0 for a type of unknown
// layout.
func (t TensorType) BlockBytes() int {
	_, s, _ := t.layout()
	return int(s)
}

// RowBytes returns the bytes of n consecutive elements of type t; n must be
// a multiple of the block size.
func (t TensorType) RowBytes(n uint64) (uint64, error) {
	block, size, ok := t.layout()
	if !ok {
		return 0, fmt.Errorf("tensor type %s has no known block layout", t)
	}
	if n%block != 0 {
		return 0, fmt.Errorf("%d elements of %s: not a multiple of its block of %d", n, t, block)
	}
	hi, lo := bits.Mul64(n/block, size)
	if hi != 0 {
		return 0, fmt.Errorf("%d elements of %s: byte size overflows", n, t)
	}
	return lo, nil
}

// tensorBytes returns the byte size of a tensor of type t and dims (ne0
// first), checking that rows are whole blocks and that nothing overflows.
func tensorBytes(t TensorType, dims []uint64) (uint64, error) {
	if len(dims) == 0 {
		return 0, fmt.Errorf("no dimensions")
	}
	row, err := t.RowBytes(dims[0])
	if err != nil {
		return 0, fmt.Errorf("row length %d: %w", dims[0], err)
	}
	total := row
	for _, d := range dims[1:] {
		hi, lo := bits.Mul64(total, d)
		if hi != 0 {
			return 0, fmt.Errorf("dims %v of %s: byte size overflows", dims, t)
		}
		total = lo
	}
	return total, nil
}
