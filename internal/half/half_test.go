package half

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRoundTripAll(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := ToFloat32(h)
		back := FromFloat32(f)
		if IsNaN(h) {
			require.True(t, math.IsNaN(float64(f)), "0x%04x should convert to NaN", h)
			require.True(t, IsNaN(back), "0x%04x NaN lost: got 0x%04x", h, back)
			require.Equal(t, h&0x8000, back&0x8000, "0x%04x NaN sign", h)
			continue
		}
		require.Equal(t, h, back, "round trip of 0x%04x (%g)", h, f)
	}
}

func TestKnownValues(t *testing.T) {
	cases := []struct {
		h uint16
		f float32
	}{
		{0x0000, 0},
		{0x3c00, 1},
		{0xc000, -2},
		{0x3555, 0.333251953125},
		{MaxValue, 65504},
		{0x0400, 1.0 / (1 << 14)},
		{SmallestSubnormal, 1.0 / (1 << 24)},
		{0x03ff, 1023.0 / (1 << 24)},
		{PosInf, float32(math.Inf(1))},
		{NegInf, float32(math.Inf(-1))},
	}
	for _, c := range cases {
		assert.Equal(t, c.f, ToFloat32(c.h), "ToFloat32(0x%04x)", c.h)
		assert.Equal(t, c.h, FromFloat32(c.f), "FromFloat32(%g)", c.f)
	}
	negZero := ToFloat32(0x8000)
	assert.True(t, negZero == 0 && math.Signbit(float64(negZero)))
	assert.Equal(t, uint16(0x8000), FromFloat32(float32(math.Copysign(0, -1))))
	assert.True(t, IsNaN(FromFloat32(float32(math.NaN()))))
	assert.True(t, IsInf(PosInf) && IsInf(NegInf) && !IsInf(QuietNaN))
}

// positiveFinite lists all positive finite binary16 values in increasing
// order (bit order equals value order for positive values).
func positiveFinite() []uint16 {
	var hs []uint16
	for h := uint16(0); h <= MaxValue; h++ {
		hs = append(hs, h)
	}
	return hs
}

func TestRoundingMidpoints(t *testing.T) {
	hs := positiveFinite()
	for i := 0; i+1 < len(hs); i++ {
		lo, hi := hs[i], hs[i+1]
		a, b := float64(ToFloat32(lo)), float64(ToFloat32(hi))
		mid := float32((a + b) / 2) // exact: needs 12 significant bits
		require.Equal(t, (a+b)/2, float64(mid))
		even := lo
		if lo&1 == 1 {
			even = hi
		}
		require.Equal(t, even, FromFloat32(mid), "tie between 0x%04x and 0x%04x", lo, hi)
		require.Equal(t, lo, FromFloat32(math.Nextafter32(mid, 0)), "below midpoint of 0x%04x", lo)
		require.Equal(t, hi, FromFloat32(math.Nextafter32(mid, 1e9)), "above midpoint of 0x%04x", lo)
		require.Equal(t, lo|0x8000, FromFloat32(-math.Nextafter32(mid, 0)))
	}
	// Overflow threshold: 65520 is the midpoint between 65504 and 65536
	// (the next value if the exponent range continued); ties go to even,
	// which is infinity.
	assert.Equal(t, MaxValue, FromFloat32(math.Nextafter32(65520, 0)))
	assert.Equal(t, PosInf, FromFloat32(65520))
	assert.Equal(t, NegInf, FromFloat32(-1e10))
	// Underflow: half of the smallest subnormal ties to zero, above it
	// rounds up.
	tiny := float32(1.0 / (1 << 25))
	assert.Equal(t, uint16(0), FromFloat32(tiny))
	assert.Equal(t, SmallestSubnormal, FromFloat32(math.Nextafter32(tiny, 1)))
	assert.Equal(t, uint16(0x8000), FromFloat32(-tiny))
	assert.Equal(t, uint16(0), FromFloat32(math.SmallestNonzeroFloat32))
}

// TestRandomAgainstOracle compares FromFloat32 with a nearest-value search
// over the sorted table of binary16 values.
func TestRandomAgainstOracle(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	hs := positiveFinite()
	vals := make([]float64, len(hs))
	for i, h := range hs {
		vals[i] = float64(ToFloat32(h))
	}
	oracle := func(x float64) uint16 {
		if x >= 65520 {
			return PosInf
		}
		j := sort.SearchFloat64s(vals, x) // first vals[j] >= x
		if j == len(vals) {
			return MaxValue
		}
		if j == 0 || vals[j] == x {
			return hs[j]
		}
		dlo, dhi := x-vals[j-1], vals[j]-x
		switch {
		case dlo < dhi:
			return hs[j-1]
		case dhi < dlo:
			return hs[j]
		case hs[j-1]&1 == 0:
			return hs[j-1]
		default:
			return hs[j]
		}
	}
	for i := 0; i < 200000; i++ {
		// Random bit patterns with exponents concentrated around the
		// binary16 range.
		exp := uint32(127-30) + uint32(rng.IntN(50))
		bits := exp<<23 | rng.Uint32()&0x7fffff
		f := math.Float32frombits(bits)
		want := oracle(float64(f))
		require.Equal(t, want, FromFloat32(f), "FromFloat32(%g) bits 0x%08x", f, bits)
		require.Equal(t, want|0x8000, FromFloat32(-f))
	}
}

func TestSlices(t *testing.T) {
	in := []float32{0, 1, -2.5, 65504, 1e-8}
	h := FromFloat32Slice(in)
	require.Len(t, h, len(in))
	out := ToFloat32Slice(h)
	assert.Equal(t, []float32{0, 1, -2.5, 65504}, out[:4])
	assert.Equal(t, float32(0), out[4]) // 1e-8 < 2^-25 rounds to zero
	assert.Empty(t, ToFloat32Slice(nil))
	assert.Empty(t, FromFloat32Slice(nil))
}
