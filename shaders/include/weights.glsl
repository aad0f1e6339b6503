// Weight rows in their GGUF encoding, read from a storage buffer.
//
// The including shader declares the weight tensor's bytes, padded by at
// least 16 bytes past the last row, either as `uint w[]` or, after
// `#define W_VEC4`, as `uvec4 w4[]` (16-byte loads; rows of F32, F16, BF16
// and Q4_K then start 16-byte aligned when their byte length allows), and
// the specialization constant WTYPE, one of the W_* values below. Rows
// start at byte offset row * rowBytes. Elements are read in quads (4
// consecutive elements, the first a multiple of 4):
//   float types: a quad is 16 (F32) or 8 (F16, BF16) bytes; with row lengths
//     a multiple of 4 these are whole aligned words;
//   block types (32 elements per block, as in GGUF): Q8_0 = f16 scale d and
//     32 int8 q (34 bytes), value q*d; Q4_0 = f16 d and 16 bytes whose low
//     nibbles are elements 0..15 and high nibbles 16..31, value (q-8)*d.
//     Blocks are only 2-byte aligned, so their words are assembled from two
//     buffer words when needed (wWord2);
//   K-quants (super-blocks of 256 elements, ggml's block_q4_K/block_q6_K):
//     Q4_K = f16 d, f16 dmin, 12 bytes of packed 6-bit scales and mins, 128
//     bytes of nibbles (144 bytes, 4-byte aligned); value d*sc*q - dmin*m.
//     Q5_K = Q4_K's 16-byte header, 32 bytes qh (the fifth bit: element
//     64g+l takes bit 2g of qh[l], element 64g+32+l bit 2g+1), 128 bytes of
//     nibbles as Q4_K's (176 bytes, 16-byte aligned); value d*sc*q - dmin*m,
//     q in 0..31.
//     Q6_K = 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8
//     scales, f16 d (210 bytes, 2-byte aligned); value d*sc*(q-32).
//     gguf/quant.go (dequantQ4_K, dequantQ5_K, dequantQ6_K) is the reference.
//   grouped layouts (model/ops.go repacks Q8_0, Q4_0 and Q6_K rows into
//     them at upload, so that every quant lies 16-byte aligned): a row is
//     groups of 8 blocks, each a 16-byte header of the blocks' 8 f16 scales
//     d followed by the blocks without their d (Q8_0: 32 bytes of int8,
//     Q4_0: 16 bytes of nibbles, Q6_K: ql, qh and scales, 208 bytes); a
//     last group of fewer blocks keeps the whole 16-byte header. Group sizes
//     are 272, 144 and 1680 bytes, the sizes of 8 GGUF blocks.

const uint W_F32 = 0u;
const uint W_F16 = 1u;
const uint W_BF16 = 2u;
const uint W_Q8_0 = 3u;
const uint W_Q4_0 = 4u;
const uint W_Q4_K = 5u;
const uint W_Q6_K = 6u;
const uint W_Q8_0G = 7u; // grouped layouts
const uint W_Q4_0G = 8u;
const uint W_Q6_KG = 9u;
const uint W_Q5_K = 10u; // GGUF layout: its blocks are already 16-byte aligned

const bool W_KQUANT = WTYPE == W_Q4_K || WTYPE == W_Q5_K || WTYPE == W_Q6_K || WTYPE == W_Q6_KG;
const bool W_GROUPED = WTYPE >= W_Q8_0G && WTYPE <= W_Q6_KG;
const bool W_BLOCKS = WTYPE == W_Q8_0 || WTYPE == W_Q4_0; // GGUF 32-element blocks with one f16 scale
const uint W_BLOCK_BYTES = WTYPE == W_Q8_0 ? 34u : 18u;
const uint W_SUPER_BYTES = WTYPE == W_Q4_K ? 144u : WTYPE == W_Q5_K ? 176u : 210u;

// Word i (bytes 4i..4i+3) of the weight buffer.
uint wWord(uint i) {
#ifdef W_VEC4
    return w4[i >> 2u][i & 3u];
#else
    return w[i];
#endif
}

// 16 bits at an even byte offset.
uint wHalf(uint byteOff) {
    return (wWord(byteOff >> 2u) >> ((byteOff & 2u) * 8u)) & 0xffffu;
}

// One byte.
uint wByte(uint byteOff) {
    return (wWord(byteOff >> 2u) >> ((byteOff & 3u) * 8u)) & 0xffu;
}

// 32 bits at an even byte offset (two words when it is not a multiple of 4).
uint wWord2(uint byteOff) {
    uint i = byteOff >> 2u;
    if ((byteOff & 2u) == 0u) {
        return wWord(i);
    }
    return (wWord(i) >> 16u) | (wWord(i + 1u) << 16u);
}

// Two bfloat16 (or float16 with the unpack builtin) values of one word.
vec2 bf16x2(uint v) {
    return vec2(uintBitsToFloat(v << 16u), uintBitsToFloat(v & 0xffff0000u));
}

// The four bytes of v as unsigned values, lowest first.
uvec4 wBytes(uint v) {
    return uvec4(v, v >> 8u, v >> 16u, v >> 24u) & 0xffu;
}

// The scale d of block blk of the row at rowOff (block types).
float wBlockScale(uint rowOff, uint blk) {
    return unpackHalf2x16(wHalf(rowOff + blk * W_BLOCK_BYTES)).x;
}

// Quad q (elements 4q..4q+3) of block blk, scaled by d (block types).
vec4 wBlockQuad(uint rowOff, uint blk, uint q, float d) {
    uint base = rowOff + blk * W_BLOCK_BYTES + 2u;
    if (WTYPE == W_Q8_0) {
        uint v = wWord2(base + 4u * q);
        ivec4 b = ivec4(int(v << 24u), int(v << 16u), int(v << 8u), int(v)) >> 24;
        return vec4(b) * d;
    }
    // Q4_0: byte j holds element j (low nibble) and j+16 (high nibble).
    uint v = wWord2(base + 4u * (q & 3u));
    if (q >= 4u) {
        v >>= 4u;
    }
    uvec4 n = uvec4(v, v >> 8u, v >> 16u, v >> 24u) & 0xfu;
    return (vec4(n) - 8.0) * d;
}

// Elements e..e+3 of a row of a float type (e a multiple of 4).
vec4 wFloatQuad(uint rowOff, uint e) {
    if (WTYPE == W_F32) {
        uint i = (rowOff >> 2u) + e;
        return vec4(uintBitsToFloat(wWord(i)), uintBitsToFloat(wWord(i + 1u)), uintBitsToFloat(wWord(i + 2u)),
                    uintBitsToFloat(wWord(i + 3u)));
    }
    uint i = (rowOff >> 2u) + (e >> 1u);
    uint a = wWord(i);
    uint b = wWord(i + 1u);
    if (WTYPE == W_F16) {
        return vec4(unpackHalf2x16(a), unpackHalf2x16(b));
    }
    return vec4(bf16x2(a), bf16x2(b));
}

// The 6-bit scale (x) and min (y) of sub-block j (0..7) of a Q4_K
// super-block from its 12 packed bytes s0 (bytes 0..3), s1 (4..7) and
// s2 (8..11): sub-blocks 0..3 keep them in the low 6 bits of bytes j and
// j+4; sub-blocks 4..7 keep the low 4 bits in the nibbles of byte j+4 and
// the top 2 bits in the top bits of bytes j-4 and j (gguf's scaleMinK4).
uvec2 wScaleMinK4(uint j, uint s0, uint s1, uint s2) {
    uint sh = 8u * (j & 3u);
    uint a = (s0 >> sh) & 0xffu; // byte j (j < 4) or j-4
    uint b = (s1 >> sh) & 0xffu; // byte j+4 (j < 4) or j
    if (j < 4u) {
        return uvec2(a & 63u, b & 63u);
    }
    uint c = (s2 >> sh) & 0xffu; // byte j+4
    return uvec2((c & 0xfu) | ((a >> 6u) << 4u), (c >> 4u) | ((b >> 6u) << 4u));
}

// Elements e..e+3 of a Q4_K row: x = d*sc*q - dmin*m, each product rounded
// on its own as in the reference (precise: no fused multiply-add).
vec4 wQ4KQuad(uint rowOff, uint e) {
    uint base = rowOff + (e >> 8u) * 144u;
    uint within = e & 255u;
    uint g = within >> 6u;          // 32-byte group of nibbles
    uint hi = (within >> 5u) & 1u;  // high nibbles: the group's second sub-block
    uint l = within & 31u;
    uint dm = wWord(base >> 2u);
    vec2 dd = unpackHalf2x16(dm);
    uvec2 sm = wScaleMinK4(2u * g + hi, wWord((base >> 2u) + 1u), wWord((base >> 2u) + 2u), wWord((base >> 2u) + 3u));
    uint v = wWord((base + 16u + 32u * g + l) >> 2u) >> (4u * hi);
    vec4 q = vec4(uvec4(v, v >> 8u, v >> 16u, v >> 24u) & 0xfu);
    precise float d1 = dd.x * float(sm.x);
    precise float m1 = dd.y * float(sm.y);
    precise vec4 p = d1 * q;
    precise vec4 r = p - m1;
    return r;
}

// Elements e..e+3 of a Q5_K row: as wQ4KQuad, with the fifth bit of each
// element from qh (bit 2g+hi of byte l), the same rounding as the reference.
vec4 wQ5KQuad(uint rowOff, uint e) {
    uint base = rowOff + (e >> 8u) * 176u;
    uint within = e & 255u;
    uint g = within >> 6u;          // 32-byte group of nibbles
    uint hi = (within >> 5u) & 1u;  // high nibbles: the group's second sub-block
    uint l = within & 31u;
    uint w0 = base >> 2u;
    vec2 dd = unpackHalf2x16(wWord(w0));
    uvec2 sm = wScaleMinK4(2u * g + hi, wWord(w0 + 1u), wWord(w0 + 2u), wWord(w0 + 3u));
    uint v = wWord((base + 48u + 32u * g + l) >> 2u) >> (4u * hi);
    uint h = wWord((base + 16u + l) >> 2u) >> (2u * g + hi);
    uvec4 qi = (uvec4(v, v >> 8u, v >> 16u, v >> 24u) & 0xfu) | ((uvec4(h, h >> 8u, h >> 16u, h >> 24u) & 1u) << 4u);
    vec4 q = vec4(qi);
    precise float d1 = dd.x * float(sm.x);
    precise float m1 = dd.y * float(sm.y);
    precise vec4 p = d1 * q;
    precise vec4 r = p - m1;
    return r;
}

// Elements e..e+3 of a Q6_K super-block at base (ql, qh, scales) with
// scale d: x = (d*sc)*(q-32), as in the reference.
vec4 wQ6KQuad(uint base, float d, uint e) {
    uint within = e & 255u;
    uint h = within >> 7u;         // half of 128 elements
    uint k = (within >> 5u) & 3u;  // which of the 4 interleaved groups of 32
    uint l = within & 31u;
    uint lo = wWord2(base + 64u * h + 32u * (k & 1u) + l) >> (4u * (k >> 1u));
    uint hb = wWord2(base + 128u + 32u * h + l) >> (2u * k);
    ivec4 q = ivec4(((uvec4(lo, lo >> 8u, lo >> 16u, lo >> 24u) & 0xfu) |
                     ((uvec4(hb, hb >> 8u, hb >> 16u, hb >> 24u) & 3u) << 4u))) - 32;
    int sc = int(wByte(base + 192u + 8u * h + (l >> 4u) + 2u * k) << 24u) >> 24;
    precise float ds = d * float(sc);
    precise vec4 r = ds * vec4(q);
    return r;
}

// Elements e..e+3 of the row at rowOff, any type (e a multiple of 4).
vec4 wQuad(uint rowOff, uint e) {
    if (WTYPE == W_Q4_K) {
        return wQ4KQuad(rowOff, e);
    }
    if (WTYPE == W_Q5_K) {
        return wQ5KQuad(rowOff, e);
    }
    if (WTYPE == W_Q6_K) {
        uint base = rowOff + (e >> 8u) * 210u;
        return wQ6KQuad(base, unpackHalf2x16(wHalf(base + 208u)).x, e);
    }
    if (WTYPE == W_Q6_KG) {
        uint s = e >> 8u;
        uint g = rowOff + (s >> 3u) * 1680u;
        return wQ6KQuad(g + 16u + 208u * (s & 7u), unpackHalf2x16(wHalf(g + 2u * (s & 7u))).x, e);
    }
    if (W_GROUPED) { // Q8_0G, Q4_0G
        uint b = e >> 5u;
        uint g = rowOff + (b >> 3u) * (WTYPE == W_Q8_0G ? 272u : 144u);
        float d = unpackHalf2x16(wHalf(g + 2u * (b & 7u))).x;
        if (WTYPE == W_Q8_0G) {
            uint v = wWord((g + 16u + 32u * (b & 7u) + (e & 31u)) >> 2u);
            ivec4 q = ivec4(int(v << 24u), int(v << 16u), int(v << 8u), int(v)) >> 24;
            return vec4(q) * d;
        }
        uint v = wWord((g + 16u + 16u * (b & 7u) + (e & 15u)) >> 2u) >> ((e & 16u) >> 2u);
        uvec4 n = uvec4(v, v >> 8u, v >> 16u, v >> 24u) & 0xfu;
        return (vec4(n) - 8.0) * d;
    }
    if (W_BLOCKS) {
        uint blk = e >> 5u;
        return wBlockQuad(rowOff, blk, (e >> 2u) & 7u, wBlockScale(rowOff, blk));
    }
    return wFloatQuad(rowOff, e);
}
