// Weight rows in their GGUF encoding, read from a buffer of 32-bit words.
//
// The including shader declares `uint w[]` (the weight tensor's bytes, padded
// by at least 4 bytes past the last row) and the specialization constant
// WTYPE, one of the W_* values below. Rows start at byte offset
// row * rowBytes. Elements are read in quads (4 consecutive elements, the
// first a multiple of 4):
//   float types: a quad is 16 (F32) or 8 (F16, BF16) bytes; with row lengths
//     a multiple of 4 these are whole aligned words;
//   block types (32 elements per block, as in GGUF): Q8_0 = f16 scale d and
//     32 int8 q (34 bytes), value q*d; Q4_0 = f16 d and 16 bytes whose low
//     nibbles are elements 0..15 and high nibbles 16..31, value (q-8)*d.
//     Blocks are only 2-byte aligned, so their words are assembled from two
//     buffer words when needed (wWord2).

const uint W_F32 = 0u;
const uint W_F16 = 1u;
const uint W_BF16 = 2u;
const uint W_Q8_0 = 3u;
const uint W_Q4_0 = 4u;

const bool W_BLOCKS = WTYPE >= W_Q8_0;
const uint W_BLOCK_BYTES = WTYPE == W_Q8_0 ? 34u : 18u;

// 16 bits at an even byte offset.
uint wHalf(uint byteOff) {
    return (w[byteOff >> 2u] >> ((byteOff & 2u) * 8u)) & 0xffffu;
}

// 32 bits at an even byte offset (two words when it is not a multiple of 4).
uint wWord2(uint byteOff) {
    uint i = byteOff >> 2u;
    if ((byteOff & 2u) == 0u) {
        return w[i];
    }
    return (w[i] >> 16u) | (w[i + 1u] << 16u);
}

// Two bfloat16 (or float16 with the unpack builtin) values of one word.
vec2 bf16x2(uint v) {
    return vec2(uintBitsToFloat(v << 16u), uintBitsToFloat(v & 0xffff0000u));
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
        return vec4(uintBitsToFloat(w[i]), uintBitsToFloat(w[i + 1u]), uintBitsToFloat(w[i + 2u]),
                    uintBitsToFloat(w[i + 3u]));
    }
    uint i = (rowOff >> 2u) + (e >> 1u);
    uint a = w[i];
    uint b = w[i + 1u];
    if (WTYPE == W_F16) {
        return vec4(unpackHalf2x16(a), unpackHalf2x16(b));
    }
    return vec4(bf16x2(a), bf16x2(b));
}

// Elements e..e+3 of the row at rowOff, any type (e a multiple of 4).
vec4 wQuad(uint rowOff, uint e) {
    if (W_BLOCKS) {
        uint blk = e >> 5u;
        return wBlockQuad(rowOff, blk, (e >> 2u) & 7u, wBlockScale(rowOff, blk));
    }
    return wFloatQuad(rowOff, e);
}
