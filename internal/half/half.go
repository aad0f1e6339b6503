// Package half converts between float32 and the two 16-bit float formats of
// model files, IEEE 754 binary16 ("half precision") and bfloat16, each held as
// its raw uint16 bit pattern.
//
// ToFloat32 is exact: every binary16 value, including subnormals, infinities
// and NaNs, is representable as a float32. FromFloat32 rounds to the nearest
// binary16 value with ties to even, produces subnormals for small magnitudes,
// overflows to infinity, and maps NaN to a quiet NaN that keeps the sign and
// the top payload bits.
package half

import "math"

// Common binary16 bit patterns.
const (
	// PosInf is +Inf.
	PosInf uint16 = 0x7c00
	// NegInf is -Inf.
	NegInf uint16 = 0xfc00
	// QuietNaN is the canonical quiet NaN.
	QuietNaN uint16 = 0x7e00
	// MaxValue is the largest finite value, 65504.
	MaxValue uint16 = 0x7bff
	// SmallestSubnormal is the smallest positive value, 2^-24.
	SmallestSubnormal uint16 = 0x0001
)

// IsNaN reports whether h is a NaN.
func IsNaN(h uint16) bool {
	return h&0x7c00 == 0x7c00 && h&0x03ff != 0
}

// IsInf reports whether h is +Inf or -Inf.
func IsInf(h uint16) bool {
	return h&0x7fff == 0x7c00
}

// ToFloat32 returns the float32 value of the binary16 bit pattern h. The
// conversion is exact; NaN payloads are preserved.
func ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x03ff)
	switch exp {
	case 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: mant * 2^-24, exact in float32.
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}

// FromFloat32 returns the binary16 bit pattern nearest to f, rounding ties to
// even. Magnitudes too large for binary16 become infinities, magnitudes too
// small become (signed) zero or subnormals, and NaN becomes a quiet NaN.
func FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x007fffff

	if exp == 0xff {
		if mant == 0 {
			return sign | 0x7c00
		}
		// Quiet NaN with the top payload bits kept.
		return sign | 0x7e00 | uint16(mant>>13)
	}

	// Biased binary16 exponent.
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Result is subnormal or zero. Float32 subnormals (exp == 0) are far
		// below half the smallest binary16 subnormal and land here with a
		// large shift.
		shift := uint(14 - e)
		if shift > 24 {
			return sign
		}
		full := mant | 0x00800000
		q := full >> shift
		rem := full & (1<<shift - 1)
		halfway := uint32(1) << (shift - 1)
		if rem > halfway || (rem == halfway && q&1 == 1) {
			q++ // may carry into the smallest normal, which is correct
		}
		return sign | uint16(q)
	}

	r := uint16(e)<<10 | uint16(mant>>13)
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, up to +Inf, which is correct
	}
	return sign | r
}

// ToFloat32Slice converts every element of h with ToFloat32 into a new slice.
func ToFloat32Slice(h []uint16) []float32 {
	out := make([]float32, len(h))
	for i, x := range h {
		out[i] = ToFloat32(x)
	}
	return out
}

// FromFloat32Slice converts every element of f with FromFloat32 into a new
// slice.
func FromFloat32Slice(f []float32) []uint16 {
	out := make([]uint16, len(f))
	for i, x := range f {
		out[i] = FromFloat32(x)
	}
	return out
}
