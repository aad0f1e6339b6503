package gguf

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, 7))
}

func le16(b []byte, v uint16) { binary.LittleEndian.PutUint16(b, v) }

func decode(t *testing.T, typ TensorType, n int, b []byte) []float32 {
	t.Helper()
	out := make([]float32, n)
	require.NoError(t, DequantizeInto(out, typ, b))
	return out
}

func TestKnownFloatBlocks(t *testing.T) {
	b := []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0} // 1, -2 as F32
	assert.Equal(t, []float32{1, -2}, decode(t, F32, 2, b))
	b = []byte{0x00, 0x3c, 0x00, 0xb8, 0x01, 0x00} // 1, -0.5, 2^-24 as F16
	assert.Equal(t, []float32{1, -0.5, 1.0 / (1 << 24)}, decode(t, F16, 3, b))
	b = []byte{0x80, 0x3f, 0x49, 0x40} // 1, 3.140625 as BF16
	assert.Equal(t, []float32{1, 3.140625}, decode(t, BF16, 2, b))
	for _, typ := range []TensorType{F32, F16, BF16} {
		q, err := Quantize(typ, []float32{1, -2, 0.5})
		require.NoError(t, err)
		assert.Equal(t, []float32{1, -2, 0.5}, decode(t, typ, 3, q), "%s", typ)
	}
}

func TestKnownQ8_0(t *testing.T) {
	b := make([]byte, 34)
	le16(b, 0x3800) // d = 0.5
	q := []int8{1, -2, 127, -128, 0, 5}
	for i, v := range q {
		b[2+i] = byte(v)
	}
	y := decode(t, Q8_0, 32, b)
	assert.Equal(t, []float32{0.5, -1, 63.5, -64, 0, 2.5}, y[:6])
	assert.Equal(t, float32(0), y[31])

	// x = j-16: amax 16 maps to -127, d = 16/127, q = round(x*127/16).
	x := make([]float32, 32)
	for j := range x {
		x[j] = float32(j - 16)
	}
	enc, err := Quantize(Q8_0, x)
	require.NoError(t, err)
	require.Len(t, enc, 34)
	d := float32(16) / 127
	assert.Equal(t, uint16(0x3008), binary.LittleEndian.Uint16(enc)) // f16(0.12598) = 0x3008
	for j := range x {
		want := int8(math.Round(float64(x[j] * (1 / d))))
		assert.Equal(t, want, int8(enc[2+j]), "element %d", j)
	}
	assert.Equal(t, int8(-127), int8(enc[2]))
	assert.Equal(t, int8(8), int8(enc[2+17]))  // 1*127/16 = 7.94 -> 8
	assert.Equal(t, int8(64), int8(enc[2+24])) // 8*127/16 = 63.5 -> 64 (half away from zero)
}

func TestKnownQ4_0(t *testing.T) {
	b := make([]byte, 18)
	le16(b, 0x4000) // d = 2
	b[2+0] = 0xf0   // element 0: low nibble 0 -> -16; element 16: high nibble 15 -> 14
	b[2+15] = 0x8c  // element 15: 12 -> 8; element 31: 8 -> 0
	y := decode(t, Q4_0, 32, b)
	assert.Equal(t, float32(-16), y[0])
	assert.Equal(t, float32(14), y[16])
	assert.Equal(t, float32(8), y[15])
	assert.Equal(t, float32(0), y[31])
	assert.Equal(t, float32(-16), y[1]) // zero byte: both nibbles 0 -> -8*d

	// The element of largest magnitude, -8, maps to level 0 and d = 1;
	// +8 on the other side clamps to level 15 (7).
	x := make([]float32, 32)
	for j := range 16 {
		x[j] = float32(j - 8)    // -8..7
		x[16+j] = float32(j) / 2 // 0..7.5
	}
	x[31] = 8 // ties in magnitude: the first (-8) wins
	enc, err := Quantize(Q4_0, x)
	require.NoError(t, err)
	assert.Equal(t, uint16(0x3c00), binary.LittleEndian.Uint16(enc)) // d = 1
	assert.Equal(t, byte(0x80), enc[2+0])                            // x0=-8 -> 0, x16=0 -> 8
	assert.Equal(t, byte(0xff), enc[2+15])                           // x15=7 -> 15, x31=8 -> 16.5 clamped to 15
	assert.Equal(t, byte(0xa3), enc[2+3])                            // x3=-5 -> 3, x19=1.5 -> trunc(10.0) = 10
	assert.Equal(t, byte(0x91), enc[2+1])                            // x1=-7 -> 1, x17=0.5 -> trunc(9.0) = 9
}

func TestKnownQ4_K(t *testing.T) {
	b := make([]byte, 144)
	le16(b[0:], 0x3c00) // d = 1
	le16(b[2:], 0x3800) // dmin = 0.5
	s := b[4:16]
	s[0], s[4] = 1, 2  // sub-block 0: scale 1, min 2
	s[3], s[7] = 63, 0 // sub-block 3: scale 63, min 0
	s[9] = 0x25        // sub-block 5: low bits of scale 37 (5) and min 50 (2)
	s[1] |= 2 << 6     // sub-block 5: top bits of scale 37
	s[5] |= 3 << 6     // sub-block 5: top bits of min 50
	qs := b[16:]
	qs[0] = 0x0f    // element 0 (sub-block 0, low nibble) = 15*1 - 0.5*2
	qs[32+5] = 0xa0 // element 101 (sub-block 3, high nibble) = 10*63
	qs[64+3] = 0x70 // element 163 (sub-block 5, high nibble) = 7*37 - 0.5*50
	y := decode(t, Q4_K, 256, b)
	assert.Equal(t, float32(14), y[0])
	assert.Equal(t, float32(-1), y[1])
	assert.Equal(t, float32(0), y[32]) // sub-block 1: scale 0, min 0
	assert.Equal(t, float32(630), y[101])
	assert.Equal(t, float32(0), y[69])
	assert.Equal(t, float32(234), y[163])
	assert.Equal(t, float32(-25), y[160])
	assert.Equal(t, float32(0), y[131]) // sub-block 4: scale 0, min 0

	// Sub-block j holds the levels 0..15 times k[j]/64: exactly
	// representable with d = 1/64, the scales k[j] and no min.
	k := []int{63, 1, 17, 32, 5, 40, 2, 9}
	x := make([]float32, 256)
	for j := range 8 {
		for i := range 32 {
			x[32*j+i] = float32(i%16) * float32(k[j]) / 64
		}
	}
	enc, err := Quantize(Q4_K, x)
	require.NoError(t, err)
	assert.Equal(t, uint16(0x2400), binary.LittleEndian.Uint16(enc[0:]), "d = 1/64")
	assert.Equal(t, uint16(0), binary.LittleEndian.Uint16(enc[2:]), "dmin = 0")
	for j := range 8 {
		sc, m := scaleMinK4(j, enc[4:16])
		assert.Equal(t, k[j], int(sc), "scale of sub-block %d", j)
		assert.Zero(t, m)
	}
	assert.Equal(t, x, decode(t, Q4_K, 256, enc))
}

// TestKnownQ5_K pins the bit layout: sub-block j scaled by j+1 (no min),
// qh[l] = 1 << (l%8) and nibbles l%16 (low) and 15-l%16 (high), so that
// element 64g+l must read the low nibble of qs[32g+l] plus 16 where
// l%8 == 2g, and element 64g+32+l the high nibble plus 16 where
// l%8 == 2g+1; then scales of 6 bits, mins, and the quantizer.
func TestKnownQ5_K(t *testing.T) {
	b := make([]byte, 176)
	le16(b[0:], 0x3c00) // d = 1, dmin = 0
	s, qh, qs := b[4:16], b[16:48], b[48:176]
	for j := range 8 {
		if j < 4 {
			s[j] = byte(j + 1)
		} else {
			s[j+4] = byte(j + 1) // scales 5..8: low nibble of byte j+4, top bits 0
		}
	}
	for l := range 32 {
		qh[l] = 1 << (l % 8)
		for g := range 4 {
			qs[32*g+l] = byte(l%16) | byte(15-l%16)<<4
		}
	}
	y := decode(t, Q5_K, 256, b)
	for g := range 4 {
		for l := range 32 {
			lo, hi := l%16, 15-l%16
			if l%8 == 2*g {
				lo += 16
			}
			if l%8 == 2*g+1 {
				hi += 16
			}
			assert.Equal(t, float32((2*g+1)*lo), y[64*g+l], "element %d", 64*g+l)
			assert.Equal(t, float32((2*g+2)*hi), y[64*g+32+l], "element %d", 64*g+32+l)
		}
	}

	clear(b)
	le16(b[0:], 0x3c00)            // d = 1
	le16(b[2:], 0x3800)            // dmin = 0.5
	s[0], s[4] = 1, 2              // sub-block 0: scale 1, min 2
	s[1], s[5] = 3, 0              // sub-block 1: scale 3, min 0
	s[11] = 0x25                   // sub-block 7: low bits of scale 37 (5) and min 50 (2)
	s[3] |= 2 << 6                 // sub-block 7: top bits of scale 37
	s[7] |= 3 << 6                 // sub-block 7: top bits of min 50
	qs[0], qh[0] = 0x5f, 0x03      // element 0: 15+16 = 31 -> 31 - 1; element 32: 5+16 = 21 -> 63
	qs[96+31], qh[31] = 0x70, 0x80 // element 255 (sub-block 7, high nibble, bit 7): 7+16 = 23 -> 23*37 - 25
	y = decode(t, Q5_K, 256, b)
	assert.Equal(t, float32(30), y[0])
	assert.Equal(t, float32(63), y[32])
	assert.Equal(t, float32(-1), y[1]) // level 0 minus the min
	assert.Equal(t, float32(0), y[33]) // sub-block 1: level 0, min 0
	assert.Equal(t, float32(826), y[255])
	assert.Equal(t, float32(-25), y[224]) // sub-block 7 at level 0
	assert.Equal(t, float32(0), y[64])    // sub-block 2: scale 0, min 0

	// Sub-block j holds the levels 0..31 times k[j]/64: exactly
	// representable with d = 1/64, the scales k[j] and no min.
	k := []int{63, 1, 17, 32, 5, 40, 2, 9}
	x := make([]float32, 256)
	for j := range 8 {
		for i := range 32 {
			x[32*j+i] = float32(i) * float32(k[j]) / 64
		}
	}
	enc, err := Quantize(Q5_K, x)
	require.NoError(t, err)
	assert.Equal(t, uint16(0x2400), binary.LittleEndian.Uint16(enc[0:]), "d = 1/64")
	assert.Equal(t, uint16(0), binary.LittleEndian.Uint16(enc[2:]), "dmin = 0")
	for j := range 8 {
		sc, m := scaleMinK4(j, enc[4:16])
		assert.Equal(t, k[j], int(sc), "scale of sub-block %d", j)
		assert.Zero(t, m)
	}
	// Level 31 of element 31 (sub-block 0) and of element 63 (sub-block 1):
	// nibbles 15, fifth bits 0 and 1 of qh[31].
	assert.Equal(t, byte(0xff), enc[48+31])
	assert.Equal(t, byte(0x03), enc[16+31]&0x03)
	assert.Equal(t, x, decode(t, Q5_K, 256, enc))
}

func TestKnownQ6_K(t *testing.T) {
	b := make([]byte, 210)
	ql, qh, sc := b[0:128], b[128:192], b[192:208]
	for i := range sc {
		sc[i] = 1
	}
	sc[0], sc[5], sc[10] = 2, 0xfd, 4 // 0xfd = -3
	le16(b[208:], 0x3400)             // d = 0.25
	ql[0], qh[0] = 0x05, 0x03         // element 0: q = 5 | 3<<4 = 53 -> 21, scale 2
	ql[17], qh[17] = 0xa0, 0x10       // element 81 (k=2, l=17): q = 10 | 1<<4 = 26 -> -6, scale 5
	ql[97], qh[33] = 0x0f, 0x08       // element 161 (2nd half, k=1, l=1): q = 15 | 2<<4 = 47 -> 15, scale 10
	y := decode(t, Q6_K, 256, b)
	assert.Equal(t, float32(0.25*2*21), y[0])
	assert.Equal(t, float32(0.25*1*-32), y[64]) // ql[0] high nibble and qh[0] bits 4-5 are 0
	assert.Equal(t, float32(0.25*-3*-6), y[81])
	assert.Equal(t, float32(0.25*1*-32), y[17])
	assert.Equal(t, float32(0.25*4*15), y[161])
	assert.Equal(t, float32(0.25*1*-32), y[225])

	// Sub-block j holds the levels -32, -28, ..., 28 times k[j]/1024:
	// exactly representable with d = -1/1024 and scales -k[j].
	k := []int{128, 1, 17, 32, 5, 40, 2, 9, 100, 127, 64, 3, 77, 8, 16, 55}
	x := make([]float32, 256)
	for j := range 16 {
		for i := range 16 {
			x[16*j+i] = float32(-32+4*i) * float32(k[j]) / 1024
		}
	}
	enc, err := Quantize(Q6_K, x)
	require.NoError(t, err)
	assert.Equal(t, uint16(0x9400), binary.LittleEndian.Uint16(enc[208:]), "d = -1/1024")
	for j := range 16 {
		assert.Equal(t, -k[j], int(int8(enc[192+j])), "scale of sub-block %d", j)
	}
	assert.Equal(t, x, decode(t, Q6_K, 256, enc))
}

// randomBlocks returns n values in blocks of 256 with a random spread per
// block (from 1e-3 to 10) and a mix of shapes: Gaussian, uniform, and
// Gaussian with a few large outliers, like real weight rows.
func randomBlocks(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for b := 0; b < n; b += 256 {
		sigma := math.Pow(10, -3+4*rng.Float64())
		shape := rng.IntN(3)
		for i := b; i < b+256 && i < n; i++ {
			switch shape {
			case 0:
				x[i] = float32(rng.NormFloat64() * sigma)
			case 1:
				x[i] = float32((2*rng.Float64() - 1) * sigma)
			default:
				x[i] = float32(rng.NormFloat64() * sigma)
				if rng.IntN(64) == 0 {
					x[i] *= 8
				}
			}
		}
	}
	return x
}

// relL2 returns ||a-b|| / ||a||.
func relL2(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(a[i]) * float64(a[i])
	}
	return math.Sqrt(num / den)
}

// TestRoundTripBounds quantizes fresh random data and checks the
// reconstruction error: per element where it has a closed form, and the
// relative L2 error of the worst block of 256 for every type.
//
// Measured over 60 runs (12000 blocks): worst block F16 3.7e-4, BF16 2.9e-3,
// Q8_0 1.3e-2, Q4_0 0.197, Q4_K 0.137, Q6_K 0.055; over all the data of a
// run F16 1.9-2.4e-4, BF16 1.4-1.8e-3, Q8_0 0.7-0.9e-2, Q4_0 0.12-0.14,
// Q4_K 0.077-0.092, Q6_K 0.021-0.029; Q5_K over 60 runs: worst block
// 0.065, all data 0.039-0.047. F16 and BF16 are bounded by half an
// ulp (2^-11, 2^-8); the block formats by about 1.5x the worst seen.
func TestRoundTripBounds(t *testing.T) {
	rng := newRand(t)
	const n = 256 * 200
	x := randomBlocks(rng, n)
	bounds := map[TensorType]float64{ // worst block's relative L2 error
		F32: 0, F16: 4.9e-4, BF16: 3.9e-3, Q8_0: 0.02, Q4_0: 0.30, Q4_K: 0.20, Q5_K: 0.10, Q6_K: 0.08,
	}
	for _, typ := range SupportedTypes {
		enc, err := Quantize(typ, x)
		require.NoError(t, err, "%s", typ)
		rb, err := typ.RowBytes(n)
		require.NoError(t, err)
		require.Len(t, enc, int(rb))
		y := decode(t, typ, n, enc)

		worst := 0.0
		for b := 0; b < n; b += 256 {
			worst = max(worst, relL2(x[b:b+256], y[b:b+256]))
		}
		t.Logf("%-5s relative L2 error: whole %.2e, worst block of 256 %.2e (bound %.1e)", typ, relL2(x, y), worst, bounds[typ])
		assert.LessOrEqual(t, worst, bounds[typ], "%s", typ)

		// Closed-form per-element bounds. The scale d is rounded to f16,
		// which moves level q by at most |q|*f16Err(d).
		for b := 0; b < n; b += qk {
			var amax float64
			for _, v := range x[b : b+qk] {
				amax = max(amax, math.Abs(float64(v)))
			}
			for i := b; i < b+qk; i++ {
				e := math.Abs(float64(x[i]) - float64(y[i]))
				switch typ {
				case F16:
					require.LessOrEqual(t, e, math.Abs(float64(x[i]))/2048+1.0/(1<<25), "F16 element %d", i)
				case BF16:
					require.LessOrEqual(t, e, math.Abs(float64(x[i]))/256, "BF16 element %d", i)
				case Q8_0: // half a step of amax/127
					d := amax / 127
					require.LessOrEqual(t, e, d/2+127*f16Err(d), "Q8_0 element %d", i)
				case Q4_0: // half a step of amax/8, or a whole step where +amax clamps to level 15
					d := amax / 8
					require.LessOrEqual(t, e, d+8*f16Err(d), "Q4_0 element %d", i)
				}
			}
		}
	}
}

// f16Err bounds the rounding error of v to f16: half an ulp, relative 2^-11
// for normal values and 2^-25 absolute in the subnormal range.
func f16Err(v float64) float64 { return max(math.Abs(v)/2048, 1.0/(1<<25)) * 1.001 }

// Re-quantizing dequantized Q8_0 and Q4_0 data gives the same bytes: the
// block maximum maps back to the same scale and every value sits exactly on
// a level.
func TestRequantizeStable(t *testing.T) {
	rng := newRand(t)
	x := randomBlocks(rng, 256*50)
	for _, typ := range []TensorType{Q8_0, Q4_0, F16, BF16} {
		enc, err := Quantize(typ, x)
		require.NoError(t, err)
		again, err := Quantize(typ, decode(t, typ, len(x), enc))
		require.NoError(t, err)
		assert.Equal(t, enc, again, "%s", typ)
	}
}

func TestZeroBlocks(t *testing.T) {
	x := make([]float32, 512)
	for _, typ := range SupportedTypes {
		enc, err := Quantize(typ, x)
		require.NoError(t, err)
		assert.Equal(t, x, decode(t, typ, 512, enc), "%s", typ)
	}
}

func TestQuantizeErrors(t *testing.T) {
	_, err := Quantize(Q8_0, make([]float32, 33))
	assert.ErrorContains(t, err, "not a multiple of its block of 32")
	_, err = Quantize(Q4_K, make([]float32, 32))
	assert.ErrorContains(t, err, "block of 256")
	x := make([]float32, 32)
	x[5] = float32(math.NaN())
	_, err = Quantize(Q4_0, x)
	assert.ErrorContains(t, err, "element 5")
	_, err = Quantize(TensorType(11), make([]float32, 256))
	assert.ErrorContains(t, err, "unsupported tensor type Q3_K (11)")

	err = DequantizeInto(make([]float32, 32), Q8_0, make([]byte, 33))
	assert.ErrorContains(t, err, "need 34 bytes, have 33")
	err = DequantizeInto(make([]float32, 256), TensorType(11), make([]byte, 110))
	assert.ErrorContains(t, err, "Q3_K")
	_, err = Dequantize(Tensor{Name: "w", Type: TensorType(99), Dims: []uint64{4}})
	assert.ErrorContains(t, err, "dequantize w: unsupported tensor type type(99) (99)")
}

func TestDequantizeRow(t *testing.T) {
	x := make([]float32, 64*3)
	for i := range x {
		x[i] = float32(i)
	}
	for _, typ := range []TensorType{F32, Q8_0} {
		enc, err := Quantize(typ, x)
		require.NoError(t, err)
		tn := Tensor{Name: "w", Type: typ, Dims: []uint64{64, 3}, Data: enc}
		all, err := Dequantize(tn)
		require.NoError(t, err)
		for r := range uint64(3) {
			row, err := DequantizeRow(tn, r)
			require.NoError(t, err)
			assert.Equal(t, all[64*r:64*(r+1)], row)
		}
		_, err = DequantizeRow(tn, 3)
		assert.ErrorContains(t, err, "row 3 out of range (3 rows)")
	}
}

func TestTypeNames(t *testing.T) {
	want := map[TensorType]string{F32: "F32", F16: "F16", Q4_0: "Q4_0", Q8_0: "Q8_0", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K", BF16: "BF16"}
	nums := map[TensorType]uint32{F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, Q4_K: 12, Q5_K: 13, Q6_K: 14, BF16: 30}
	sizes := map[TensorType][2]int{F32: {1, 4}, F16: {1, 2}, BF16: {1, 2}, Q8_0: {32, 34}, Q4_0: {32, 18}, Q4_K: {256, 144}, Q5_K: {256, 176}, Q6_K: {256, 210}}
	for typ, name := range want {
		assert.Equal(t, name, typ.String())
		assert.Equal(t, nums[typ], uint32(typ))
		assert.Equal(t, sizes[typ], [2]int{typ.BlockSize(), typ.BlockBytes()}, "%s", typ)
		assert.NoError(t, typ.Check())
	}
	assert.Equal(t, "Q3_K", TensorType(11).String())
	assert.Equal(t, 110, TensorType(11).BlockBytes()) // located, not converted
	assert.False(t, TensorType(11).Supported())
	assert.Equal(t, "type(1000)", TensorType(1000).String())
	assert.Equal(t, 0, TensorType(1000).BlockSize())
}
