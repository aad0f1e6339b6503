#version 450
#extension GL_EXT_control_flow_attributes : require
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
// Partial tree attention for work items of one query (partial_attn's
// "decode" variant; same contract as partial_attn.comp: bindings, push
// constants, item records, spec ids, fused reduction).
//
// A decoding step's items (a single sequence, flashdecoding's per-query
// items) have one query group: G rows. partial_attn's tile pipeline then
// spends its time in a chain of dependent steps with four barriers per
// tile. Here a pass covers WG tokens with few dependent steps:
//   1. every invocation loads its own token's slot and K row, and the
//      slots and V words of the tokens it will sum in step 4, at once;
//   2. it scores its token against the G query heads (Q in shared memory);
//   3. one workgroup-wide maximum per head (subgroupMax, then the
//      subgroups' maxima through shared memory: one barrier);
//      probabilities of the own token to shared memory (one barrier);
//   4. O += P V with invocations along the head dim (coalesced V rows)
//      and TG = WG / (D/4) token groups; the row sums ride along.
// Items longer than WG tokens run several passes with the online softmax
// (at most MAX_PASSES x B tokens, as in partial_attn). The token groups'
// sums meet in shared memory; the normalised output and log-sum-exp are
// written as a partial, or, with pc.fuse and a query of one partial,
// straight to Out (what merging that one partial would give, bit for
// bit). Otherwise the fused merge is partial_attn's.
//
// An item of more than one query (the planner never gives this variant
// one) or over the pass cap is not computed: its partials are NaN.
// Nothing assumes a subgroup size.

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128;   // head dim, a multiple of 4; WG a multiple of D/4
layout(constant_id = 2) const uint B = 32;    // partial_attn's token tile: the pass cap and merge scratch
layout(constant_id = 3) const uint R = 32;    // partial_attn's row tile: the pass cap
layout(constant_id = 4) const uint G = 4;     // query heads per KV head
layout(constant_id = 5) const uint KVH = 8;   // KV heads
layout(constant_id = 6) const uint KV_F16 = 1;
layout(constant_id = 7) const uint UNROLL = 4;   // unused here
layout(constant_id = 8) const uint MAX_PASSES = 48;   // treeattn.MaxTilePasses
layout(constant_id = 9) const uint CM_M = 16;    // unused here
layout(constant_id = 10) const uint CM_N = 16;
layout(constant_id = 11) const uint CM_K = 16;

const uint WG = gl_WorkGroupSize.x;
const uint QH = G * KVH;
const uint D4 = D / 4u;
const uint D8 = D / 8u;
// fp16 rows read 8 elements (16 bytes) at a time (a select: glslang emits
// && of spec constants as a branch, which spirv-val rejects).
const uint K8 = D % 8u == 0u ? KV_F16 : 0u;
const uint TG = WG / D4;     // token groups of the P V step
const uint VT = WG / TG;     // tokens per invocation in the P V step

layout(set = 0, binding = 0) readonly buffer Qbuf { vec4 q4[]; };
layout(set = 0, binding = 1) readonly buffer K16 { uvec2 k16[]; };
layout(set = 0, binding = 1) readonly buffer K32 { uvec4 k32[]; };
layout(set = 0, binding = 2) readonly buffer V16 { uvec2 v16[]; };
layout(set = 0, binding = 2) readonly buffer V32 { uvec4 v32[]; };
layout(set = 0, binding = 3) readonly buffer Meta { uint meta[]; };
struct ItemRecord {
    uint slotsOff;
    uint numSlots;
    uint queriesOff;
    uint numQueries;
    uint maskOff;
    uint maskWords;
    uint partialBase;
    uint reserved;
};
layout(set = 0, binding = 3) readonly buffer MetaItems { ItemRecord items[]; };
layout(set = 0, binding = 4) coherent buffer PartO { vec4 po4[]; };
layout(set = 0, binding = 5) coherent buffer PartL { float pl[]; };
layout(set = 0, binding = 6) writeonly buffer Out { vec4 o4[]; };
layout(set = 0, binding = 7) coherent buffer Counters { uint counter[]; };

layout(push_constant) uniform Push {
    uint nItems;
    uint itemsOff;
    uint gridX;
    uint numSlots;
    float scale;
    float unit;
    uint fuse;
    uint offsetsOff;
    uint listOff;
} pc;

shared vec4 sQ[G * D4];          // [head][dim] pre-scaled query
shared float sRed[G * WG];       // [head][subgroup] maxima (any subgroup size); merge flags
shared float sP[WG * G];         // [token][head] probabilities of a pass
shared vec4 sO[TG * G * D4];     // [token group][head][dim] sums; the merge's scratch
shared float sL[TG * G];         // [token group][head] row sums
shared uint sList[2u * B];       // the merge's partial indices

#include "include/float_bits.glsl"

// partial_attn's merge scratch: B x (D/4+1) vec4s of floats (the host's
// fusedReduce sizes lists by it); sO holds the floats it uses.
const uint SCRATCH = B * (D4 + 1u) * 4u;
float scratch(uint i) {
    return sO[i / 4u][i % 4u];
}
void setScratch(uint i, float x) {
    sO[i / 4u][i % 4u] = x;
}

// partial_attn's fused reduction (same order and arithmetic), with the
// list in sList and the flags in sRed.
#define MERGE_LIST sList
#define MERGE_FLAGS sRed
#include "include/fused_merge.glsl"

vec4 unpack16(uvec2 w) {
    return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
}

void main() {
    uint item = gl_WorkGroupID.x + gl_WorkGroupID.z * pc.gridX;
    if (item >= pc.nItems) {
        return;
    }
    uint head = gl_WorkGroupID.y;
    ItemRecord it = items[pc.itemsOff / 8u + item];
    uint tokStart = it.slotsOff;
    uint tokCount = it.numSlots;
    uint qCount = it.numQueries;
    uint maskOff = it.maskOff;
    uint maskWords = it.maskWords;
    uint tid = gl_LocalInvocationIndex;
    uint tg = tid / D4;      // P V step: token group and column
    uint col = tid % D4;

    // partial_attn's cap (one row tile for one query), and one query only.
    bool bad = qCount != 1u || tokCount > MAX_PASSES * B ||
        ((G + R - 1u) / R) * max((tokCount + B - 1u) / B, 1u) > MAX_PASSES;
    if (bad) {
        tokCount = 0u;
    }
    uint query = qCount != 0u ? meta[it.queriesOff] : 0u;
    for (uint idx = tid; idx < G * D4; idx += WG) {
        vec4 x = vec4(0.0);
        if (!bad) {
            x = q4[(query * QH + head * G + idx / D4) * D4 + idx % D4] * (pc.scale * LOG2E);
        }
        sQ[idx] = x;
    }

    float mRun[G];
    vec4 acc[G];
    float lsum[G];
    [[unroll]] for (uint g = 0u; g < G; g++) {
        mRun[g] = NEG_INF;
        acc[g] = vec4(0.0);
        lsum[g] = 0.0;
    }
    barrier();   // sQ

    for (uint first = 0u; first < tokCount; first += WG) {
        // 1. Own token: slot, visibility, K row; the P V step's V words.
        uint t = first + tid;
        uint slot = t < tokCount ? meta[tokStart + t] : ~0u;
        bool seen = t < tokCount;
        if (seen && maskWords != 0u) {
            seen = (meta[maskOff + t * maskWords] & 1u) != 0u;   // item-local query 0: word 0, bit 0
        }
        bool ok = slot < pc.numSlots;
        uint row = (slot * KVH + head);
        uvec4 kw[D4];   // fp32: D4 vec4s; fp16 (K8): D8 words of 8 halves; fp16 else: D4 uvec2 in .xy
        [[unroll]] for (uint j = 0u; j < D4; j++) {
            kw[j] = uvec4(0u);
            if (ok) {
                if (K8 != 0u) {
                    if (j < D8) {
                        kw[j] = k32[row * D8 + j];
                    }
                } else if (KV_F16 != 0u) {
                    kw[j].xy = k16[row * D4 + j];
                } else {
                    kw[j] = k32[row * D4 + j];
                }
            }
        }
        uvec4 vw[VT];   // fp32 vec4, or fp16 words in .xy
        [[unroll]] for (uint k = 0u; k < VT; k++) {
            uint tv = first + k * TG + tg;
            uint sv = tv < tokCount ? meta[tokStart + tv] : ~0u;
            vw[k] = uvec4(0u);
            if (sv < pc.numSlots) {
                uint at = (sv * KVH + head) * D4 + col;
                if (KV_F16 != 0u) {
                    vw[k].xy = v16[at];
                } else {
                    vw[k] = v32[at];
                }
            }
        }

        // 2. Scores of the own token; 3. the workgroup's maxima.
        float x[G];
        [[unroll]] for (uint g = 0u; g < G; g++) {
            vec4 s4 = vec4(0.0);
            [[unroll]] for (uint j = 0u; j < D4; j++) {
                vec4 k;
                if (K8 != 0u) {
                    uvec4 w = kw[j / 2u];
                    k = (j % 2u == 0u) ? unpack16(w.xy) : unpack16(w.zw);
                } else if (KV_F16 != 0u) {
                    k = unpack16(kw[j].xy);
                } else {
                    k = uintBitsToFloat(kw[j]);
                }
                s4 = fma(sQ[g * D4 + j], k, s4);
            }
            float s = (s4.x + s4.y) + (s4.z + s4.w);
            // A visible non-finite score poisons the head: +Inf as the
            // maximum marks it.
            x[g] = !seen ? NEG_INF : (nonFinite(s) ? POS_INF : s);
            float m = subgroupMax(x[g]);
            if (subgroupElect()) {
                sRed[g * WG + gl_SubgroupID] = m;
            }
        }
        barrier();
        float alpha[G];
        [[unroll]] for (uint g = 0u; g < G; g++) {
            float mNew = mRun[g];
            for (uint i = 0u; i < gl_NumSubgroups; i++) {
                mNew = max(mNew, sRed[g * WG + i]);
            }
            bool poison = mNew == POS_INF;
            sP[tid * G + g] = x[g] == NEG_INF || poison ? 0.0 : exp2((x[g] - mNew) * pc.unit);
            alpha[g] = mRun[g] == NEG_INF || poison ? 0.0 : exp2((mRun[g] - mNew) * pc.unit);
            mRun[g] = mNew;
        }
        barrier();

        // 4. O = diag(alpha) O + P V over this invocation's tokens.
        [[unroll]] for (uint g = 0u; g < G; g++) {
            acc[g] *= alpha[g];
            lsum[g] *= alpha[g];
        }
        [[unroll]] for (uint k = 0u; k < VT; k++) {
            uint tl = k * TG + tg;
            vec4 v = KV_F16 != 0u ? unpack16(vw[k].xy) : uintBitsToFloat(vw[k]);
            [[unroll]] for (uint g = 0u; g < G; g++) {
                float p = sP[tl * G + g];
                acc[g] = fma(vec4(p), v, acc[g]);
                lsum[g] += p;
            }
        }
        if (first + WG < tokCount) {
            barrier();   // sP and sRed are rewritten by the next pass
        }
    }

    // The token groups' sums, in token-group order.
    [[unroll]] for (uint g = 0u; g < G; g++) {
        sO[(tg * G + g) * D4 + col] = acc[g];
        if (col == 0u) {
            sL[tg * G + g] = lsum[g];
        }
    }
    barrier();
    uint need = 0u;
    if (pc.fuse != 0u && qCount != 0u) {
        need = meta[pc.offsetsOff + query + 1u] - meta[pc.offsetsOff + query];
    }
    bool direct = !bad && need == 1u;   // the query's only partial: write the output
    [[unroll]] for (uint e = 0u; e < (G * D4 + WG - 1u) / WG; e++) {
        uint idx = tid + e * WG;
        if (idx >= G * D4) {
            continue;
        }
        uint g = idx / D4;
        uint c = idx % D4;
        vec4 o = vec4(0.0);
        float l = 0.0;
        for (uint i = 0u; i < TG; i++) {
            o += sO[(i * G + g) * D4 + c];
            l += sL[i * G + g];
        }
        float lse = l > 0.0 ? (mRun[g] + log2(l) / pc.unit) * LN2 : NEG_INF;
        bool rowBad = bad || mRun[g] == POS_INF || (nonFinite(lse) && lse != NEG_INF);
        vec4 res = rowBad ? vec4(NAN) : (l > 0.0 ? o / l : vec4(0.0));
        if (direct) {
            o4[(query * QH + head * G + g) * D4 + c] = res;
        } else if (qCount == 1u) {
            uint p = it.partialBase * QH + head * G + g;
            po4[p * D4 + c] = res;
            if (c == 0u) {
                pl[p] = rowBad ? NAN : lse;
            }
        }
    }
    // An item of several queries (never planned for this variant):
    // NaN partials for all of them, bounded like partial_attn's.
    uint nq = min(qCount, MAX_PASSES * R);
    if (qCount > 1u) {
        for (uint e = tid; e < nq * G * D4; e += WG) {
            uint r = e / D4;
            uint p = (it.partialBase + r / G) * QH + head * G + r % G;
            po4[p * D4 + e % D4] = vec4(NAN);
            if (e % D4 == 0u) {
                pl[p] = NAN;
            }
        }
    }
    if (pc.fuse == 0u || direct) {
        return;
    }

    // Fused reduction: partial_attn's protocol (release, count, acquire,
    // merge by the workgroup that completes a query).
    fusedMerge(it.queriesOff, nq, head);
}
