// The random-model generator of package modelgen (modelgen/rng.go and
// modelgen/fill.go), byte for byte: every random word is a hash of (tensor
// key, word index), and every byte of a tensor's GGUF encoding is a pure
// function of its offset, so any range can be produced by any invocation.
// Integer operations only, so the GPU and the CPU agree exactly.

#ifndef MODELGEN_GLSL
#define MODELGEN_GLSL

// GGUF tensor types (ggml.h numbering).
const uint MG_F32 = 0u;
const uint MG_F16 = 1u;
const uint MG_Q4_0 = 2u;
const uint MG_Q8_0 = 8u;
const uint MG_Q4_K = 12u;
const uint MG_Q5_K = 13u;
const uint MG_Q6_K = 14u;
const uint MG_BF16 = 30u;

// PCG's RXS-M-XS output function of one LCG step.
uint mg_hash(uint x) {
    uint s = x * 747796405u + 2891336453u;
    uint w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

uint mg_word(uint k, uint i) { return mg_hash(k ^ mg_hash(i)); }

// n * 2^e as float32 bits (|n| < 2^23, normal result).
uint mg_f32_bits(int n, int e) {
    if (n == 0) return 0u;
    uint sign = n < 0 ? 0x80000000u : 0u;
    uint a = uint(abs(n));
    int p = findMSB(a);
    return sign | (uint(p + e + 127) << 23) | ((a << uint(23 - p)) & 0x7fffffu);
}

// float32 bits of a value exactly representable as a normal f16 (or 0).
uint mg_f16_from_f32_bits(uint f) {
    uint sign = (f >> 16) & 0x8000u;
    if ((f & 0x7fffffffu) == 0u) return sign;
    uint e = ((f >> 23) & 0xffu) - 127u + 15u;
    return sign | (e << 10) | ((f >> 13) & 0x3ffu);
}

// The float32 bits of an element from its random word.
uint mg_float_bits(uint w, bool norm, int e) {
    if (norm) return mg_f32_bits(64 + int(w >> 28) - 8, -6);
    return mg_f32_bits(int(w >> 24) - 128, e);
}

uint mg_scale_f16(uint w, int e) { return (uint(e + 15) << 10) | (w & 0xffu); }

uint mg_byte_of(uint v, uint j) { return (v >> (8u * j)) & 0xffu; }

// Q4_K sub-block scale ls(j) and min lm(j) from the block's scale word.
uint mg_q4k_ls(uint s, uint j) { return 8u + ((s >> (3u * j)) & 7u); }
uint mg_q4k_lm(uint s, uint j) { return (15u * mg_q4k_ls(s, j) + 2u) / 4u; }
// Q5_K: the same scales, mins centred on level 15.5 with dmin = 4d.
uint mg_q5k_lm(uint s, uint j) { return (31u * mg_q4k_ls(s, j) + 4u) / 8u; }

// The byte at offset off of a tensor of type typ.
uint mg_byte(uint typ, uint k, bool norm, int e, uint off) {
    if (typ == MG_F32) {
        return mg_byte_of(mg_float_bits(mg_word(k, off >> 2), norm, e), off & 3u);
    }
    if (typ == MG_F16) {
        return mg_byte_of(mg_f16_from_f32_bits(mg_float_bits(mg_word(k, off >> 1), norm, e)), off & 1u);
    }
    if (typ == MG_BF16) {
        return mg_byte_of(mg_float_bits(mg_word(k, off >> 1), norm, e) >> 16, off & 1u);
    }
    if (typ == MG_Q8_0 || typ == MG_Q4_0) {
        uint bb = typ == MG_Q8_0 ? 34u : 18u;
        uint words = typ == MG_Q8_0 ? 9u : 5u;
        uint b = off / bb, j = off % bb;
        if (j < 2u) return mg_byte_of(mg_scale_f16(mg_word(k, b * words), e), j);
        j -= 2u;
        return mg_byte_of(mg_word(k, b * words + 1u + j / 4u), j & 3u);
    }
    if (typ == MG_Q4_K) {
        uint b = off / 144u, j = off % 144u;
        uint w = b * 34u;
        if (j < 4u) {
            uint d = mg_scale_f16(mg_word(k, w), e);
            return mg_byte_of(j < 2u ? d : d + 1024u, j & 1u);
        }
        if (j < 16u) {
            uint s = mg_word(k, w + 1u);
            uint i = j - 4u;
            if (i < 4u) return mg_q4k_ls(s, i) | ((mg_q4k_ls(s, i + 4u) >> 4) << 6);
            if (i < 8u) return mg_q4k_lm(s, i - 4u) | ((mg_q4k_lm(s, i) >> 4) << 6);
            return (mg_q4k_ls(s, i - 4u) & 15u) | ((mg_q4k_lm(s, i - 4u) & 15u) << 4);
        }
        j -= 16u;
        return mg_byte_of(mg_word(k, w + 2u + j / 4u), j & 3u);
    }
    if (typ == MG_Q5_K) {
        uint b = off / 176u, j = off % 176u;
        uint w = b * 42u;
        if (j < 4u) {
            uint d = mg_scale_f16(mg_word(k, w), e);
            return mg_byte_of(j < 2u ? d : d + 2048u, j & 1u);
        }
        if (j < 16u) {
            uint s = mg_word(k, w + 1u);
            uint i = j - 4u;
            if (i < 4u) return mg_q4k_ls(s, i) | ((mg_q4k_ls(s, i + 4u) >> 4) << 6);
            if (i < 8u) return mg_q5k_lm(s, i - 4u) | ((mg_q5k_lm(s, i) >> 4) << 6);
            return (mg_q4k_ls(s, i - 4u) & 15u) | ((mg_q5k_lm(s, i - 4u) & 15u) << 4);
        }
        j -= 16u;
        return mg_byte_of(mg_word(k, w + 2u + j / 4u), j & 3u);
    }
    if (typ == MG_Q6_K) {
        uint b = off / 210u, j = off % 210u;
        uint w = b * 50u;
        if (j < 192u) return mg_byte_of(mg_word(k, w + 2u + j / 4u), j & 3u);
        if (j < 208u) return 4u + ((mg_word(k, w + 1u) >> (2u * (j - 192u))) & 3u);
        return mg_byte_of(mg_scale_f16(mg_word(k, w), e), j - 208u);
    }
    return 0u;
}

#endif
