package model

import (
	"fmt"

	"github.com/deft-vk/deft/gguf"
)

// weightType maps a GGUF tensor type to the kernels' WTYPE; ok is false for
// types the kernels do not decode.
func weightType(t gguf.TensorType) (uint32, bool) {
	switch t {
	case gguf.F32:
		return 0, true
	case gguf.F16:
		return 1, true
	case gguf.BF16:
		return 2, true
	case gguf.Q8_0:
		return 3, true
	case gguf.Q4_0:
		return 4, true
	case gguf.Q4_K:
		return 5, true
	case gguf.Q6_K:
		return 6, true
	}
	return 0, false
}

// decodeFloats converts the first n elements of a tensor's data to float32
// on the host (small vectors: norms, rope_freqs; and test references).
func decodeFloats(typ gguf.TensorType, data []byte, n int) ([]float32, error) {
	rowBytes, err := typ.RowBytes(uint64(n))
	if err != nil {
		return nil, err
	}
	if uint64(len(data)) < rowBytes {
		return nil, fmt.Errorf("%d bytes of %s hold fewer than %d elements", len(data), typ, n)
	}
	out := make([]float32, n)
	if err := gguf.DequantizeInto(out, typ, data[:rowBytes]); err != nil {
		return nil, err
	}
	return out, nil
}
