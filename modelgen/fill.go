package modelgen

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"

	"github.com/deft-vk/deft/gguf"
)

// Params are what the generator needs to know of a tensor besides its
// type: its key and its scale. The GPU kernel receives the same numbers.
type Params struct {
	Key  uint32
	Norm bool  // a norm weight: values near 1
	Exp  int32 // float types: values are m * 2^Exp; block types: the f16 exponent of the block scale
}

// Random words per block of each type (the stream layout; see fillBlock).
const (
	wordsQ8_0 = 1 + 8
	wordsQ4_0 = 1 + 4
	wordsQ4_K = 2 + 32
	wordsQ5_K = 2 + 40
	wordsQ6_K = 2 + 48
)

// TensorParams returns the generator parameters of a tensor: norms (1-D)
// near 1, matrices with a standard deviation near 1/sqrt(dims[0]).
func TensorParams(seed uint64, name string, typ gguf.TensorType, dims []uint64) Params {
	p := Params{Key: TensorKey(seed, name), Norm: len(dims) == 1}
	if p.Norm || len(dims) == 0 || dims[0] == 0 {
		return p
	}
	std := 1 / math.Sqrt(float64(dims[0]))
	// The spread of the integer part of each encoding (uniform levels
	// times the sub-block scales' mean, and 1.125 for the block scale's
	// random mantissa).
	spread := 73.9 // int8 levels: float types use m in [-128, 128)
	lo, hi := -14.0, 0.0
	switch typ {
	case gguf.Q8_0:
		spread = 73.9 * 1.125
		hi = 14
	case gguf.Q4_0:
		spread = 4.61 * 1.125
		hi = 14
	case gguf.Q4_K:
		spread = 11.5 * 4.61 * 1.125
		hi = 13 // dmin is 2d
	case gguf.Q5_K:
		spread = 11.5 * 9.23 * 1.125 // levels 0..31
		hi = 12                      // dmin is 4d
	case gguf.Q6_K:
		spread = 5.5 * 18.5 * 1.125
		hi = 14
	}
	p.Exp = int32(min(hi, max(lo, math.Round(math.Log2(std/spread)))))
	return p
}

// f32Bits encodes n * 2^e (|n| < 2^23, normal result) as float32 bits,
// with integer operations only.
func f32Bits(n, e int32) uint32 {
	if n == 0 {
		return 0
	}
	var sign uint32
	if n < 0 {
		sign, n = 1<<31, -n
	}
	a := uint32(n)
	p := int32(bits.Len32(a) - 1)
	return sign | uint32(p+e+127)<<23 | (a<<(23-p))&0x7fffff
}

// f16FromF32Bits converts float32 bits of a value exactly representable
// as a normal f16 (or zero).
func f16FromF32Bits(f uint32) uint16 {
	sign := uint16(f>>16) & 0x8000
	if f&0x7fffffff == 0 {
		return sign
	}
	exp := int32(f>>23&0xff) - 127 + 15
	return sign | uint16(exp)<<10 | uint16(f>>13&0x3ff)
}

// floatBits is the float32 bits of element value word w.
func floatBits(w uint32, p *Params) uint32 {
	if p.Norm {
		// (64 + m) / 64 with m in [-8, 8): 7 significant bits, exact in BF16.
		return f32Bits(64+int32(w>>28)-8, -6)
	}
	return f32Bits(int32(w>>24)-128, p.Exp)
}

// scaleF16 is a block's f16 scale 2^exp * (1 + r/1024), r < 256.
func scaleF16(w uint32, exp int32) uint16 {
	return uint16(exp+15)<<10 | uint16(w&0xff)
}

// Fill writes the encoded bytes [off, off+len(dst)) of a tensor of type
// typ; off and len(dst) must be whole blocks.
func Fill(dst []byte, typ gguf.TensorType, p Params, off uint64) error {
	bb := uint64(typ.BlockBytes())
	switch typ {
	case gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K:
	default:
		return fmt.Errorf("modelgen: fill: tensor type %s is not generated", typ)
	}
	if off%bb != 0 || uint64(len(dst))%bb != 0 {
		return fmt.Errorf("modelgen: fill %s: range [%d, +%d) is not whole blocks of %d bytes", typ, off, len(dst), bb)
	}
	b0 := off / bb
	if b0+uint64(len(dst))/bb > 1<<32/wordsOf(typ) {
		return fmt.Errorf("modelgen: fill %s: tensor too large for 32-bit counters", typ)
	}
	k, e0 := p.Key, uint32(b0)
	// Float types: one element per block, whose value depends only on the
	// top byte of its word (see floatBits), so a 256-entry table serves
	// the tight loops (the hot path of F16 files).
	if typ == gguf.F32 || typ == gguf.F16 || typ == gguf.BF16 {
		var lut [256]uint32
		for v := range lut {
			lut[v] = floatBits(uint32(v)<<24, &p)
		}
		switch typ {
		case gguf.F32:
			for i := 0; i+4 <= len(dst); i += 4 {
				binary.LittleEndian.PutUint32(dst[i:], lut[word(k, e0+uint32(i/4))>>24])
			}
		case gguf.F16:
			var h [256]uint16
			for v := range h {
				h[v] = f16FromF32Bits(lut[v])
			}
			for i := 0; i+2 <= len(dst); i += 2 {
				binary.LittleEndian.PutUint16(dst[i:], h[word(k, e0+uint32(i/2))>>24])
			}
		case gguf.BF16:
			for i := 0; i+2 <= len(dst); i += 2 {
				binary.LittleEndian.PutUint16(dst[i:], uint16(lut[word(k, e0+uint32(i/2))>>24]>>16))
			}
		}
		return nil
	}
	for i := 0; i < len(dst); i += int(bb) {
		fillBlock(dst[i:i+int(bb)], typ, p, e0+uint32(i/int(bb)))
	}
	return nil
}

// wordsOf is the random words per block of typ.
func wordsOf(typ gguf.TensorType) uint64 {
	switch typ {
	case gguf.Q8_0:
		return wordsQ8_0
	case gguf.Q4_0:
		return wordsQ4_0
	case gguf.Q4_K:
		return wordsQ4_K
	case gguf.Q5_K:
		return wordsQ5_K
	case gguf.Q6_K:
		return wordsQ6_K
	}
	return 1
}

// fillBlock encodes block b. The layout of each block's random words:
//
//	F32, F16, BF16: word b is the element.
//	Q8_0: word 9b: scale mantissa; words 9b+1.. : the 32 int8 levels.
//	Q4_0: word 5b: scale; words 5b+1..: the 32 nibbles.
//	Q4_K: word 34b: d (dmin = 2d); word 34b+1: eight 3-bit sub-scales
//	      sc = 8+x, mins m = (15 sc + 2) / 4 (so sub-blocks are centred);
//	      words 34b+2..: the 128 bytes of nibbles.
//	Q5_K: word 42b: d (dmin = 4d); word 42b+1: eight 3-bit sub-scales
//	      sc = 8+x, mins m = (31 sc + 4) / 8 (centred: 4m ~ 15.5 sc);
//	      words 42b+2..: the 160 bytes of qh and nibbles.
//	Q6_K: word 50b: d; word 50b+1: sixteen 2-bit scales 4+x; words
//	      50b+2..: the 192 bytes of ql and qh.
func fillBlock(dst []byte, typ gguf.TensorType, p Params, b uint32) {
	k := p.Key
	payload := func(dst []byte, first uint32) {
		for j := 0; j < len(dst); j += 4 {
			binary.LittleEndian.PutUint32(dst[j:], word(k, first+uint32(j/4)))
		}
	}
	switch typ {
	case gguf.F32:
		binary.LittleEndian.PutUint32(dst, floatBits(word(k, b), &p))
	case gguf.F16:
		binary.LittleEndian.PutUint16(dst, f16FromF32Bits(floatBits(word(k, b), &p)))
	case gguf.BF16:
		binary.LittleEndian.PutUint16(dst, uint16(floatBits(word(k, b), &p)>>16))
	case gguf.Q8_0:
		w := b * wordsQ8_0
		binary.LittleEndian.PutUint16(dst, scaleF16(word(k, w), p.Exp))
		payload(dst[2:34], w+1)
	case gguf.Q4_0:
		w := b * wordsQ4_0
		binary.LittleEndian.PutUint16(dst, scaleF16(word(k, w), p.Exp))
		payload(dst[2:18], w+1)
	case gguf.Q4_K:
		w := b * wordsQ4_K
		d := scaleF16(word(k, w), p.Exp)
		binary.LittleEndian.PutUint16(dst, d)
		binary.LittleEndian.PutUint16(dst[2:], d+1<<10)
		s := word(k, w+1)
		sc := dst[4:16]
		clear(sc)
		for j := range 8 {
			ls := uint8(8 + s>>(3*j)&7)
			lm := uint8((15*uint32(ls) + 2) / 4)
			if j < 4 {
				sc[j], sc[j+4] = ls, lm
			} else {
				sc[j+4] = ls&0x0f | (lm&0x0f)<<4
				sc[j-4] |= (ls >> 4) << 6
				sc[j] |= (lm >> 4) << 6
			}
		}
		payload(dst[16:144], w+2)
	case gguf.Q5_K:
		w := b * wordsQ5_K
		d := scaleF16(word(k, w), p.Exp)
		binary.LittleEndian.PutUint16(dst, d)
		binary.LittleEndian.PutUint16(dst[2:], d+2<<10)
		s := word(k, w+1)
		sc := dst[4:16]
		clear(sc)
		for j := range 8 {
			ls := uint8(8 + s>>(3*j)&7)
			lm := uint8((31*uint32(ls) + 4) / 8)
			if j < 4 {
				sc[j], sc[j+4] = ls, lm
			} else {
				sc[j+4] = ls&0x0f | (lm&0x0f)<<4
				sc[j-4] |= (ls >> 4) << 6
				sc[j] |= (lm >> 4) << 6
			}
		}
		payload(dst[16:176], w+2)
	case gguf.Q6_K:
		w := b * wordsQ6_K
		payload(dst[0:192], w+2)
		s := word(k, w+1)
		for i := range 16 {
			dst[192+i] = uint8(4 + s>>(2*i)&3)
		}
		binary.LittleEndian.PutUint16(dst[208:], scaleF16(word(k, w), p.Exp))
	}
}
