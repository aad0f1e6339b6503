// Special floats and their tests, by bits so that no fast-math assumption
// can drop them; shared by partial_attn's scalar and decode variants and
// reduce_partials (and what include/fused_merge.glsl expects).

#define NEG_INF uintBitsToFloat(0xff800000u)
#define NAN uintBitsToFloat(0x7fc00000u)
#define POS_INF uintBitsToFloat(0x7f800000u)

// Inf or NaN.
bool nonFinite(float x) {
    return (floatBitsToUint(x) & 0x7f800000u) == 0x7f800000u;
}

// NaN or +Inf: a log-sum-exp that cannot be weighed (-Inf is an empty
// partial).
bool poisoned(float lse) {
    uint b = floatBitsToUint(lse);
    return b == 0x7f800000u || (b & 0x7fffffffu) > 0x7f800000u;
}

const float LOG2E = 1.4426950408889634;
const float LN2 = 0.6931471805599453;
