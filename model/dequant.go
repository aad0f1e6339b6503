package model

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/half"
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
	}
	return 0, false
}

// decodeFloats converts n elements of a tensor of one of the kernels' types
// to float32 on the host (small vectors: norms, rope_freqs).
func decodeFloats(typ gguf.TensorType, data []byte, n int) ([]float32, error) {
	rowBytes, err := typ.RowBytes(uint64(n))
	if err != nil {
		return nil, err
	}
	if uint64(len(data)) < rowBytes {
		return nil, fmt.Errorf("%d bytes of %s hold fewer than %d elements", len(data), typ, n)
	}
	out := make([]float32, n)
	switch typ {
	case gguf.F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	case gguf.F16:
		for i := range out {
			out[i] = half.ToFloat32(binary.LittleEndian.Uint16(data[2*i:]))
		}
	case gguf.BF16:
		for i := range out {
			out[i] = half.BF16ToFloat32(binary.LittleEndian.Uint16(data[2*i:]))
		}
	case gguf.Q8_0:
		for b := 0; b < n/32; b++ {
			blk := data[34*b:]
			d := half.ToFloat32(binary.LittleEndian.Uint16(blk))
			for j := range 32 {
				out[32*b+j] = float32(int8(blk[2+j])) * d
			}
		}
	case gguf.Q4_0:
		for b := 0; b < n/32; b++ {
			blk := data[18*b:]
			d := half.ToFloat32(binary.LittleEndian.Uint16(blk))
			for j := range 16 {
				out[32*b+j] = float32(int(blk[2+j]&15)-8) * d
				out[32*b+16+j] = float32(int(blk[2+j]>>4)-8) * d
			}
		}
	default:
		return nil, fmt.Errorf("tensor type %s is not supported", typ)
	}
	return out, nil
}
