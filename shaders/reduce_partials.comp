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

shared uint sPart[WG];    // partial indices of the current chunk
shared float sW[WG];      // their weights exp(lse - max)

void main() {
    uint query = gl_WorkGroupID.x + gl_WorkGroupID.z * pc.gridX;
    if (query >= pc.nQueries) {
        return;
    }
    uint h = gl_WorkGroupID.y;
    uint tid = gl_LocalInvocationIndex;
    uint begin = meta[pc.offsetsOff + query];
    uint end = meta[pc.offsetsOff + query + 1u];
    // The maximum log-sum-exp: one partial per thread, so the loads of a
    // query's partials overlap instead of forming one dependent chain.
    float m = NEG_INF;
    for (uint i = begin + tid; i < end; i += WG) {
        m = max(m, pl[meta[pc.listOff + i] * QH + h]);
    }
    sW[tid] = m;
    barrier();
    m = NEG_INF;
    for (uint i = 0u; i < WG; i++) {
        m = max(m, sW[i]);
    }
    barrier();
    // Weighted sums in chunks of WG partials, in a fixed order: bit-identical reruns.
    float num[(D + WG - 1u) / WG];
    for (uint c = 0u; c < (D + WG - 1u) / WG; c++) {
        num[c] = 0.0;
    }
    float den = 0.0;
    for (uint chunk = begin; chunk < end; chunk += WG) {
        uint n = min(WG, end - chunk);
        if (tid < n) {
            uint p = meta[pc.listOff + chunk + tid] * QH + h;
            float lse = pl[p];
            sPart[tid] = p;
            sW[tid] = lse == NEG_INF ? 0.0 : exp(lse - m);
        }
        barrier();
        for (uint i = 0u; i < n; i++) {
            float w = sW[i];
            uint p = sPart[i];
            den += w;
            for (uint c = 0u; c < (D + WG - 1u) / WG; c++) {
                uint j = tid + c * WG;
                if (j < D) {
                    num[c] += w * po[p * D + j];
                }
            }
        }
        barrier();
    }
    for (uint c = 0u; c < (D + WG - 1u) / WG; c++) {
        uint j = tid + c * WG;
        if (j < D) {
            o[(query * QH + h) * D + j] = den > 0.0 ? num[c] / den : 0.0;
        }
    }
}
