package half

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBF16RoundTripAll(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := BF16ToFloat32(h)
		back := BF16FromFloat32(f)
		if h&0x7f80 == 0x7f80 && h&0x007f != 0 { // NaN
			require.True(t, math.IsNaN(float64(f)), "0x%04x", h)
			require.Equal(t, h|0x0040, back, "NaN 0x%04x must come back quiet", h)
			continue
		}
		require.Equal(t, h, back, "round trip of 0x%04x (%g)", h, f)
	}
}

func TestBF16KnownValues(t *testing.T) {
	cases := []struct {
		f float32
		h uint16
	}{
		{0, 0x0000},
		{1, 0x3f80},
		{-2, 0xc000},
		{3.140625, 0x4049},
		{float32(math.Inf(1)), 0x7f80},
		{float32(math.Inf(-1)), 0xff80},
		{math.MaxFloat32, 0x7f80},                  // rounds up past the largest finite bf16
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie, even stays
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie, odd rounds up
		{math.Float32frombits(0x3f808001), 0x3f81}, // above the tie
		{math.Float32frombits(0x00018000), 0x0002}, // subnormal tie to even, not flushed
		{math.Float32frombits(0x7fc00001), 0x7fc0}, // quiet NaN keeps top bits
		{math.Float32frombits(0x7f800001), 0x7fc0}, // signalling NaN made quiet, not Inf
		{math.Float32frombits(0xff800001), 0xffc0},
	}
	for _, c := range cases {
		assert.Equal(t, c.h, BF16FromFloat32(c.f), "BF16FromFloat32(bits 0x%08x)", math.Float32bits(c.f))
	}
	assert.Equal(t, float32(3.140625), BF16ToFloat32(0x4049))
	assert.True(t, math.Signbit(float64(BF16ToFloat32(0x8000))))
}

// TestBF16RandomNearest checks on random floats that the result is one of the
// two neighbouring bf16 values and the nearer one (ties to even).
func TestBF16RandomNearest(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	for i := 0; i < 200000; i++ {
		b := rng.Uint32()
		f := math.Float32frombits(b)
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		lo := uint16(b >> 16) // truncation: toward zero
		hi := lo + 1
		dlo := math.Abs(float64(f) - float64(BF16ToFloat32(lo)))
		hv := float64(BF16ToFloat32(hi))
		if math.IsInf(hv, 0) {
			// IEEE rounding treats the step past the largest finite value
			// as 2^128: values beyond the midpoint overflow to infinity.
			hv = math.Copysign(math.Ldexp(1, 128), hv)
		}
		dhi := math.Abs(hv - float64(f))
		want := lo
		if dhi < dlo || (dhi == dlo && lo&1 == 1) {
			want = hi
		}
		require.Equal(t, want, BF16FromFloat32(f), "bits 0x%08x", b)
	}
	require.Equal(t, []float32{1, -2}, BF16ToFloat32Slice(BF16FromFloat32Slice([]float32{1, -2})))
}
