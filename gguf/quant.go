package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/deft-vk/deft/internal/half"
)

// This file holds the CPU reference conversions. Each block layout and
// formula follows ggml (ggml-common.h, ggml-quants.c): the dequantizers
// compute in float32 with each product rounded on its own, as ggml's scalar
// code does, and are the definition that GPU kernels are tested against.

// Dequantize returns the elements of t as float32, in GGUF order (row after
// row, ne0 contiguous).
func Dequantize(t Tensor) ([]float32, error) {
	out := make([]float32, t.Elements())
	if err := DequantizeInto(out, t.Type, t.Data); err != nil {
		return nil, fmt.Errorf("gguf: dequantize %s: %w", t.Name, err)
	}
	return out, nil
}

// DequantizeRow returns row r (0-based, over Dims[1:] flattened) of t.
func DequantizeRow(t Tensor, r uint64) ([]float32, error) {
	if len(t.Dims) == 0 || r >= t.Rows() {
		return nil, fmt.Errorf("gguf: dequantize %s: row %d out of range (%d rows)", t.Name, r, t.Rows())
	}
	n := t.Dims[0]
	rowBytes, err := t.Type.RowBytes(n)
	if err != nil {
		return nil, fmt.Errorf("gguf: dequantize %s: %w", t.Name, err)
	}
	out := make([]float32, n)
	if err := DequantizeInto(out, t.Type, t.Data[r*rowBytes:(r+1)*rowBytes]); err != nil {
		return nil, fmt.Errorf("gguf: dequantize %s row %d: %w", t.Name, r, err)
	}
	return out, nil
}

// DequantizeInto decodes len(dst) elements of type typ from src, which must
// hold exactly their bytes (whole blocks).
func DequantizeInto(dst []float32, typ TensorType, src []byte) error {
	if err := typ.Check(); err != nil {
		return err
	}
	want, err := typ.RowBytes(uint64(len(dst)))
	if err != nil {
		return err
	}
	if uint64(len(src)) != want {
		return fmt.Errorf("%d elements of %s need %d bytes, have %d", len(dst), typ, want, len(src))
	}
	switch typ {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = half.ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = half.BF16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	default:
		block, size := typ.BlockSize(), typ.BlockBytes()
		decode := map[TensorType]func([]float32, []byte){
			Q8_0: dequantQ8_0, Q4_0: dequantQ4_0, Q4_K: dequantQ4_K, Q5_K: dequantQ5_K, Q6_K: dequantQ6_K,
		}[typ]
		for b := 0; b < len(dst)/block; b++ {
			decode(dst[b*block:(b+1)*block], src[b*size:(b+1)*size])
		}
	}
	return nil
}

func f16(b []byte) float32 { return half.ToFloat32(binary.LittleEndian.Uint16(b)) }

// Q8_0: f16 scale d, then 32 int8 quants; x = q*d.
func dequantQ8_0(y []float32, b []byte) {
	d := f16(b)
	for j := range qk {
		y[j] = float32(int8(b[2+j])) * d
	}
}

// Q4_0: f16 scale d, then 16 bytes whose low nibbles are elements 0..15 and
// high nibbles elements 16..31; x = (q-8)*d.
func dequantQ4_0(y []float32, b []byte) {
	d := f16(b)
	qs := b[2:]
	for j := range qk / 2 {
		y[j] = float32(int(qs[j]&0x0f)-8) * d
		y[j+qk/2] = float32(int(qs[j]>>4)-8) * d
	}
}

// scaleMinK4 unpacks the 6-bit scale and min of sub-block j from the 12
// packed bytes of a Q4_K super-block: sub-blocks 0..3 keep them in the low 6
// bits of bytes j and j+4; sub-blocks 4..7 keep the low 4 bits in the two
// nibbles of byte j+4 and the top 2 bits in the top bits of bytes j-4 and j.
func scaleMinK4(j int, s []byte) (sc, m uint8) {
	if j < 4 {
		return s[j] & 63, s[j+4] & 63
	}
	return s[j+4]&0x0f | (s[j-4]>>6)<<4, s[j+4]>>4 | (s[j]>>6)<<4
}

// Q4_K: super-block of 256 = 8 sub-blocks of 32. f16 d, f16 dmin, 12 bytes
// of packed 6-bit scales and mins, 128 bytes of nibbles: each 32-byte group
// holds two sub-blocks, the low nibbles the first and the high the second.
// x = d*sc*q - dmin*m.
func dequantQ4_K(y []float32, b []byte) {
	d, dmin := f16(b[0:]), f16(b[2:])
	scales, qs := b[4:16], b[16:]
	for g := range 4 {
		sc1, m1 := scaleMinK4(2*g, scales)
		sc2, m2 := scaleMinK4(2*g+1, scales)
		d1, min1 := d*float32(sc1), dmin*float32(m1)
		d2, min2 := d*float32(sc2), dmin*float32(m2)
		q := qs[32*g : 32*g+32]
		out := y[64*g:]
		for l := range 32 {
			// The explicit conversions keep each product rounded on its
			// own (no fused multiply-add), as in ggml's scalar code.
			out[l] = float32(d1*float32(q[l]&0x0f)) - min1
			out[l+32] = float32(d2*float32(q[l]>>4)) - min2
		}
	}
}

// Q5_K: super-block of 256 = 8 sub-blocks of 32, as Q4_K with a fifth bit
// per element. f16 d, f16 dmin, the 12 scale bytes of Q4_K, 32 bytes qh,
// 128 bytes qs. Element 64g+l (sub-block 2g) takes the low nibble of
// qs[32g+l] and bit 2g of qh[l]; element 64g+32+l (sub-block 2g+1) the high
// nibble and bit 2g+1: q = nibble + 16*bit in 0..31. x = d*sc*q - dmin*m.
func dequantQ5_K(y []float32, b []byte) {
	d, dmin := f16(b[0:]), f16(b[2:])
	scales, qh, qs := b[4:16], b[16:48], b[48:176]
	for g := range 4 {
		sc1, m1 := scaleMinK4(2*g, scales)
		sc2, m2 := scaleMinK4(2*g+1, scales)
		d1, min1 := d*float32(sc1), dmin*float32(m1)
		d2, min2 := d*float32(sc2), dmin*float32(m2)
		q := qs[32*g : 32*g+32]
		out := y[64*g:]
		for l := range 32 {
			lo := q[l]&0x0f | (qh[l]>>(2*g)&1)<<4
			hi := q[l]>>4 | (qh[l]>>(2*g+1)&1)<<4
			out[l] = float32(d1*float32(lo)) - min1
			out[l+32] = float32(d2*float32(hi)) - min2
		}
	}
}

// Q6_K: super-block of 256 = 16 sub-blocks of 16. 128 bytes ql (low 4
// bits), 64 bytes qh (high 2 bits), 16 int8 scales, f16 d. Each half of 128
// elements uses 64 ql bytes, 32 qh bytes and 8 scales: element l+32*k
// (k = 0..3) takes the low or high nibble of ql[l] or ql[l+32] and bits 2k,
// 2k+1 of qh[l]. x = d*sc*(q-32).
func dequantQ6_K(y []float32, b []byte) {
	ql, qh, sc := b[0:128], b[128:192], b[192:208]
	d := f16(b[208:])
	for h := range 2 {
		l4, h2, s := ql[64*h:], qh[32*h:], sc[8*h:]
		out := y[128*h:]
		for l := range 32 {
			is := l / 16
			q1 := int(l4[l]&0x0f|(h2[l]>>0&3)<<4) - 32
			q2 := int(l4[l+32]&0x0f|(h2[l]>>2&3)<<4) - 32
			q3 := int(l4[l]>>4|(h2[l]>>4&3)<<4) - 32
			q4 := int(l4[l+32]>>4|(h2[l]>>6&3)<<4) - 32
			out[l] = float32(d*float32(int8(s[is]))) * float32(q1)
			out[l+32] = float32(d*float32(int8(s[is+2]))) * float32(q2)
			out[l+64] = float32(d*float32(int8(s[is+4]))) * float32(q3)
			out[l+96] = float32(d*float32(int8(s[is+6]))) * float32(q4)
		}
	}
}

// Quantize encodes x as type typ, following ggml's reference quantizers
// (quantize_row_*_ref: no importance matrix). len(x) must be a multiple of
// the block size, and block types need finite inputs.
func Quantize(typ TensorType, x []float32) ([]byte, error) {
	if err := typ.Check(); err != nil {
		return nil, fmt.Errorf("gguf: quantize: %w", err)
	}
	n, err := typ.RowBytes(uint64(len(x)))
	if err != nil {
		return nil, fmt.Errorf("gguf: quantize: %w", err)
	}
	out := make([]byte, n)
	switch typ {
	case F32:
		for i, v := range x {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out, nil
	case F16:
		for i, v := range x {
			binary.LittleEndian.PutUint16(out[2*i:], half.FromFloat32(v))
		}
		return out, nil
	case BF16:
		for i, v := range x {
			binary.LittleEndian.PutUint16(out[2*i:], half.BF16FromFloat32(v))
		}
		return out, nil
	}
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("gguf: quantize to %s: element %d is %v", typ, i, v)
		}
	}
	block, size := typ.BlockSize(), typ.BlockBytes()
	encode := map[TensorType]func([]byte, []float32){
		Q8_0: quantQ8_0, Q4_0: quantQ4_0, Q4_K: quantQ4_K, Q5_K: quantQ5_K, Q6_K: quantQ6_K,
	}[typ]
	for b := 0; b < len(x)/block; b++ {
		encode(out[b*size:(b+1)*size], x[b*block:(b+1)*block])
	}
	return out, nil
}

func putF16(b []byte, v float32) { binary.LittleEndian.PutUint16(b, half.FromFloat32(v)) }

// quantQ8_0: d = max|x|/127, q = round(x/d) (half away from zero).
func quantQ8_0(b []byte, x []float32) {
	var amax float32
	for _, v := range x {
		amax = max(amax, abs32(v))
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(b, d)
	for j, v := range x {
		b[2+j] = byte(int8(math.Round(float64(v * id))))
	}
}

// quantQ4_0: the value of largest magnitude m (first one on ties) maps to
// -8, d = m/-8, q = min(15, trunc(x/d + 8.5)).
func quantQ4_0(b []byte, x []float32) {
	var amax, m float32
	for _, v := range x {
		if amax < abs32(v) {
			amax, m = abs32(v), v
		}
	}
	d := m / -8
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(b, d)
	for j := range qk / 2 {
		q0 := min(15, int(x[j]*id+8.5)) // truncation, as C's (int8_t) cast
		q1 := min(15, int(x[j+qk/2]*id+8.5))
		b[2+j] = uint8(q0) | uint8(q1)<<4
	}
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// nearest rounds to the nearest integer, ties to even, like ggml's
// nearest_int.
func nearest(v float32) int { return int(math.RoundToEven(float64(v))) }
