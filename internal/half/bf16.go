package half

import "math"

// BF16ToFloat32 returns the float32 value of the bfloat16 bit pattern h.
// bfloat16 is the top half of a float32, so the conversion is exact for every
// pattern, NaN payloads included.
func BF16ToFloat32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// BF16FromFloat32 returns the bfloat16 bit pattern nearest to f, rounding
// ties to even; magnitudes past the largest finite bfloat16 become
// infinities, subnormals are kept (not flushed), and NaN becomes a quiet NaN
// with the sign and top payload bits kept. These are ggml's rules, so model
// files written here match llama.cpp's conversion bit for bit.
func BF16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		// Rounding a NaN could carry into the exponent and make it an
		// infinity; set the quiet bit instead.
		return uint16(b>>16) | 0x0040
	}
	// Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to
	// even; a carry out of the mantissa correctly bumps the exponent.
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// BF16ToFloat32Slice converts every element of h with BF16ToFloat32 into a
// new slice.
func BF16ToFloat32Slice(h []uint16) []float32 {
	out := make([]float32, len(h))
	for i, x := range h {
		out[i] = BF16ToFloat32(x)
	}
	return out
}

// BF16FromFloat32Slice converts every element of f with BF16FromFloat32 into
// a new slice.
func BF16FromFloat32Slice(f []float32) []uint16 {
	out := make([]uint16, len(f))
	for i, x := range f {
		out[i] = BF16FromFloat32(x)
	}
	return out
}
