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
	case gguf.Q5_K:
		return 10, true
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

// groupedType returns the grouped layout the kernels read typ in
// (include/weights.glsl): Q8_0, Q4_0 and Q6_K blocks are only 2-byte
// aligned in GGUF, so uploads regroup them, 8 blocks at a time, into a
// 16-byte header of the blocks' f16 scales followed by the blocks without
// them. dOff is the byte offset of the scale in a GGUF block.
func groupedType(t gguf.TensorType) (wtype uint32, dOff int, ok bool) {
	switch t {
	case gguf.Q8_0:
		return 7, 0, true
	case gguf.Q4_0:
		return 8, 0, true
	case gguf.Q6_K:
		return 9, 208, true
	}
	return 0, 0, false
}

// groupedRowBytes is the length of a row of blocks blocks of blockBytes
// bytes in the grouped layout: the same as GGUF's when blocks is a
// multiple of 8.
func groupedRowBytes(blocks, blockBytes int) int {
	full, rest := blocks/8, blocks%8
	n := full * 8 * blockBytes
	if rest > 0 {
		n += 16 + rest*(blockBytes-2)
	}
	return n
}

// groupRow writes one GGUF row src of whole blocks into dst (of
// groupedRowBytes) in the grouped layout.
func groupRow(dst, src []byte, blockBytes, dOff int) {
	blocks := len(src) / blockBytes
	body := blockBytes - 2
	o := 0
	for g := 0; g < blocks; g += 8 {
		n := min(8, blocks-g)
		hdr := dst[o : o+16]
		clear(hdr)
		o += 16
		for i := range n {
			b := src[(g+i)*blockBytes : (g+i+1)*blockBytes]
			copy(hdr[2*i:], b[dOff:dOff+2])
			copy(dst[o:], b[:dOff])
			copy(dst[o+dOff:], b[dOff+2:])
			o += body
		}
	}
}
