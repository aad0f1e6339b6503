#version 450
#extension GL_GOOGLE_include_directive : require
// Merges lists of partial attention results (normalised output and
// log-sum-exp per query head). The host builds an inverse index, group ->
// partials. In the final pass a group is one query and its merge is the
// output. A query with more than FANIN partials is first merged in chunks
// of at most FANIN into intermediate partials, one pass per level, so no
// invocation loops over more than FANIN partials however deep the tree:
// drivers stop long shader loops (lavapipe after 65535 loop iterations per
// invocation, summed over all loops; others with watchdogs), which used to
// drop a deep chain's later partials silently. Every result is written by
// exactly one workgroup in a fixed order: no atomics, bit-identical reruns.
//
// Log-sum-exps are in score units of pc.unit (a power of two: 1 unless the
// host scaled scores down to keep them finite), so a partial's weight is
// exp((lse - max) * unit). A NaN log-sum-exp marks a poisoned partial
// (non-finite scores in partial_attn) and makes the result NaN, as does a
// list longer than FANIN: never a plausible wrong answer.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128;
layout(constant_id = 2) const uint QH = 32;
layout(constant_id = 3) const uint FANIN = 1024;   // most partials one group merges

const uint WG = gl_WorkGroupSize.x;

// Partials are read and, by intermediate passes, written (at other indices
// than the ones the pass reads).
layout(set = 0, binding = 0) buffer PartO { float po[]; };   // [partial][QH][D]
layout(set = 0, binding = 1) buffer PartL { float pl[]; };   // [partial][QH]
layout(set = 0, binding = 2) readonly buffer Meta { uint meta[]; };
layout(set = 0, binding = 3) writeonly buffer Out { float o[]; };     // [query][QH][D]

layout(push_constant) uniform Push {
    uint nGroups;
    uint offsetsOff;  // meta offset of nGroups+1 CSR offsets into the list
    uint listOff;     // meta offset of the partial indices
    uint gridX;       // groups = x + z * gridX
    uint toPartials;  // 0: group g is query g, written to Out; 1: written as partial outBase + g
    uint outBase;
    float unit;       // score unit of the log-sum-exps
} pc;

#include "include/float_bits.glsl"

shared uint sPart[WG];    // partial indices of the current chunk
shared float sW[WG];      // their weights exp((lse - max) * unit); first the threads' maxima

void main() {
    uint group = gl_WorkGroupID.x + gl_WorkGroupID.z * pc.gridX;
    if (group >= pc.nGroups) {
        return;
    }
    uint h = gl_WorkGroupID.y;
    uint tid = gl_LocalInvocationIndex;
    uint begin = meta[pc.offsetsOff + group];
    uint end = meta[pc.offsetsOff + group + 1u];
    // A list the host should have split is not merged (no unbounded loop)
    // but poisons the result.
    bool bad = end < begin || end - begin > FANIN;
    if (bad) {
        end = begin;
    }
    // The maximum log-sum-exp: one partial per thread, so the loads of a
    // list's partials overlap instead of forming one dependent chain.
    // A poisoned partial makes a thread's maximum +Inf, which no finite
    // log-sum-exp reaches: the workgroup's maximum carries the flag.
    float m = bad ? POS_INF : NEG_INF;
    for (uint i = begin + tid; i < end; i += WG) {
        float lse = pl[meta[pc.listOff + i] * QH + h];
        m = max(m, poisoned(lse) ? POS_INF : lse);
    }
    sW[tid] = m;
    barrier();
    m = NEG_INF;
    for (uint i = 0u; i < WG; i++) {
        m = max(m, sW[i]);
    }
    barrier();
    bad = m == POS_INF;
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
            sW[tid] = lse == NEG_INF ? 0.0 : exp((lse - m) * pc.unit);
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
    uint dst = pc.toPartials != 0u ? pc.outBase + group : group;
    float lse = den > 0.0 ? m + log(den) / pc.unit : NEG_INF;
    if (pc.toPartials != 0u) {
        bad = bad || poisoned(lse);   // the next pass could not weigh it
    }
    for (uint c = 0u; c < (D + WG - 1u) / WG; c++) {
        uint j = tid + c * WG;
        if (j < D) {
            float x = bad ? NAN : (den > 0.0 ? num[c] / den : 0.0);
            if (pc.toPartials != 0u) {
                po[(dst * QH + h) * D + j] = x;
            } else {
                o[(dst * QH + h) * D + j] = x;
            }
        }
    }
    if (pc.toPartials != 0u && tid == 0u) {
        pl[dst * QH + h] = bad ? NAN : lse;
    }
}
