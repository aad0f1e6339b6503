#version 450
// Merges each query's partial attention results (normalised output and
// log-sum-exp per query head) into its final output. The host builds an
// inverse index, query -> partials, so every output is written by exactly
// one workgroup in a fixed order: no atomics, bit-identical reruns.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128;
layout(constant_id = 2) const uint QH = 32;

const uint WG = gl_WorkGroupSize.x;

layout(set = 0, binding = 0) readonly buffer PartO { float po[]; };   // [partial][QH][D]
layout(set = 0, binding = 1) readonly buffer PartL { float pl[]; };   // [partial][QH]
layout(set = 0, binding = 2) readonly buffer Meta { uint meta[]; };
layout(set = 0, binding = 3) writeonly buffer Out { float o[]; };     // [query][QH][D]

layout(push_constant) uniform Push {
    uint nQueries;
    uint offsetsOff;  // meta offset of nQueries+1 CSR offsets into the list
    uint listOff;     // meta offset of the partial indices
    uint gridX;       // queries = x + z * gridX
} pc;

#define NEG_INF uintBitsToFloat(0xff800000u)

void main() {
    uint query = gl_WorkGroupID.x + gl_WorkGroupID.z * pc.gridX;
    if (query >= pc.nQueries) {
        return;
    }
    uint h = gl_WorkGroupID.y;
    uint begin = meta[pc.offsetsOff + query];
    uint end = meta[pc.offsetsOff + query + 1u];
    float m = NEG_INF;
    for (uint i = begin; i < end; i++) {
        m = max(m, pl[meta[pc.listOff + i] * QH + h]);
    }
    for (uint j = gl_LocalInvocationIndex; j < D; j += WG) {
        float num = 0.0;
        float den = 0.0;
        for (uint i = begin; i < end; i++) {
            uint p = meta[pc.listOff + i] * QH + h;
            float lse = pl[p];
            float w = lse == NEG_INF ? 0.0 : exp(lse - m);
            num += w * po[p * D + j];
            den += w;
        }
        o[(query * QH + h) * D + j] = den > 0.0 ? num / den : 0.0;
    }
}
