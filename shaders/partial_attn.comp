#version 450
#extension GL_GOOGLE_include_directive : require
// Partial tree attention for one work item and one KV head.
//
// A work item is a run of KV tokens (slots listed in the metadata) and the
// queries that see at least one of them, with an optional bitmask saying
// which query sees which token. Every attention method (DeFT-Flatten blocks,
// DeFT-Node nodes, Flash-Decoding chunks, the dense mask) is a list of work
// items. The workgroup stages a tile of B tokens' K (then V) in shared
// memory and computes, for R rows at a time (a row is a query and one query
// head of the KV head's group), scores, an online softmax and the weighted
// sum of V. Each row's normalised output and log-sum-exp are written as a
// partial result for reduce_partials. All query heads sharing the KV head
// are rows of the same workgroup, so K/V is read once per KV head.
//
// Sizes are specialization constants chosen by the host from the device's
// limits; nothing here assumes a subgroup size.
#include "include/kv.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128;   // head dim (even)
layout(constant_id = 2) const uint B = 32;    // tokens per shared tile
layout(constant_id = 3) const uint R = 32;    // rows per row tile
layout(constant_id = 4) const uint G = 4;     // query heads per KV head
layout(constant_id = 5) const uint KVH = 8;   // KV heads
layout(constant_id = 6) const uint KV_F16 = 1;

const uint WG = gl_WorkGroupSize.x;
const uint QH = G * KVH;
const uint KSTRIDE = D + 1u;          // padded rows: no shared-memory bank conflicts
const uint NACC = (R * D + WG - 1u) / WG;

layout(set = 0, binding = 0) readonly buffer Qbuf { float q[]; };      // [query][QH][D]
layout(set = 0, binding = 1) readonly buffer Kbuf { uint kw[]; };
layout(set = 0, binding = 2) readonly buffer Vbuf { uint vw[]; };
layout(set = 0, binding = 3) readonly buffer Meta { uint meta[]; };
layout(set = 0, binding = 4) writeonly buffer PartO { float po[]; };   // [partial][QH][D]
layout(set = 0, binding = 5) writeonly buffer PartL { float pl[]; };   // [partial][QH]

layout(push_constant) uniform Push {
    uint nItems;
    uint itemsOff;   // meta offset of the item table, 8 words per item
    uint gridX;      // workgroups along x; items = x + z * gridX
    uint numSlots;   // slots in the pool (bounds check)
    float scale;
} pc;

shared float sKV[B * KSTRIDE];
shared float sQ[R * D];
shared float sP[R * B];
shared float sM[R];
shared float sL[R];
shared float sAlpha[R];
shared uint sRowQuery[R];   // item-local query index of each row, ~0u when unused

#define NEG_INF uintBitsToFloat(0xff800000u)

void loadTile(uint tokStart, uint first, uint count, uint head, bool isV) {
    for (uint idx = gl_LocalInvocationIndex; idx < B * (D / 2u); idx += WG) {
        uint t = idx / (D / 2u);
        uint j = (idx % (D / 2u)) * 2u;
        vec2 x = vec2(0.0);
        if (t < count) {
            uint slot = meta[tokStart + first + t];
            if (slot < pc.numSlots) {
                x = isV ? KV_PAIR(vw, slot, head, j, KVH, D, KV_F16) : KV_PAIR(kw, slot, head, j, KVH, D, KV_F16);
            }
        }
        sKV[t * KSTRIDE + j] = x.x;
        sKV[t * KSTRIDE + j + 1u] = x.y;
    }
}

void main() {
    uint item = gl_WorkGroupID.x + gl_WorkGroupID.z * pc.gridX;
    if (item >= pc.nItems) {
        return; // whole workgroup leaves together
    }
    uint head = gl_WorkGroupID.y;
    uint base = pc.itemsOff + item * 8u;
    uint tokStart = meta[base + 0u];
    uint tokCount = meta[base + 1u];
    uint qStart = meta[base + 2u];
    uint qCount = meta[base + 3u];
    uint maskOff = meta[base + 4u];
    uint maskWords = meta[base + 5u];
    uint partialBase = meta[base + 6u];
    uint tid = gl_LocalInvocationIndex;

    uint rows = qCount * G;
    for (uint rowTile = 0u; rowTile < rows; rowTile += R) {
        for (uint r = tid; r < R; r += WG) {
            uint row = rowTile + r;
            sRowQuery[r] = row < rows ? row / G : ~0u;
            sM[r] = NEG_INF;
            sL[r] = 0.0;
        }
        for (uint idx = tid; idx < R * D; idx += WG) {
            uint r = idx / D;
            uint row = rowTile + r;
            float x = 0.0;
            if (row < rows) {
                uint query = meta[qStart + row / G];
                x = q[(query * QH + head * G + row % G) * D + idx % D];
            }
            sQ[idx] = x;
        }
        float acc[NACC];
        for (uint a = 0u; a < NACC; a++) {
            acc[a] = 0.0;
        }
        barrier();

        for (uint first = 0u; first < tokCount; first += B) {
            uint count = min(B, tokCount - first);
            loadTile(tokStart, first, count, head, false);
            barrier();

            // Scores for every (row, token) of the tile; masked ones are -inf.
            for (uint e = tid; e < R * B; e += WG) {
                uint r = e / B;
                uint t = e % B;
                uint qi = sRowQuery[r];
                bool visible = qi != ~0u && t < count;
                if (visible && maskWords != 0u) {
                    uint word = meta[maskOff + (first + t) * maskWords + (qi >> 5u)];
                    visible = ((word >> (qi & 31u)) & 1u) != 0u;
                }
                float s = NEG_INF;
                if (visible) {
                    float dot = 0.0;
                    for (uint j = 0u; j < D; j++) {
                        dot += sQ[r * D + j] * sKV[t * KSTRIDE + j];
                    }
                    s = dot * pc.scale;
                }
                sP[e] = s;
            }
            barrier();

            // Online softmax: new running max, rescale factor, probabilities.
            for (uint r = tid; r < R; r += WG) {
                float mOld = sM[r];
                float mNew = mOld;
                for (uint t = 0u; t < B; t++) {
                    mNew = max(mNew, sP[r * B + t]);
                }
                float sum = 0.0;
                float alpha = 1.0;
                if (mNew != NEG_INF) {
                    alpha = mOld == NEG_INF ? 0.0 : exp(mOld - mNew);
                    for (uint t = 0u; t < B; t++) {
                        float s = sP[r * B + t];
                        float p = s == NEG_INF ? 0.0 : exp(s - mNew);
                        sP[r * B + t] = p;
                        sum += p;
                    }
                } else {
                    for (uint t = 0u; t < B; t++) {
                        sP[r * B + t] = 0.0;
                    }
                }
                sM[r] = mNew;
                sL[r] = sL[r] * alpha + sum;
                sAlpha[r] = alpha;
            }
            barrier();

            loadTile(tokStart, first, count, head, true);
            barrier();

            for (uint a = 0u; a < NACC; a++) {
                uint e = tid + a * WG;
                if (e < R * D) {
                    uint r = e / D;
                    uint j = e % D;
                    float x = acc[a] * sAlpha[r];
                    for (uint t = 0u; t < count; t++) {
                        x += sP[r * B + t] * sKV[t * KSTRIDE + j];
                    }
                    acc[a] = x;
                }
            }
            barrier();
        }

        // Normalised partial output and log-sum-exp per row.
        for (uint a = 0u; a < NACC; a++) {
            uint e = tid + a * WG;
            if (e < R * D) {
                uint r = e / D;
                uint j = e % D;
                uint qi = sRowQuery[r];
                if (qi != ~0u) {
                    uint g = (rowTile + r) % G;
                    uint p = (partialBase + qi) * QH + head * G + g;
                    float l = sL[r];
                    po[p * D + j] = l > 0.0 ? acc[a] / l : 0.0;
                    if (j == 0u) {
                        pl[p] = l > 0.0 ? sM[r] + log(l) : NEG_INF;
                    }
                }
            }
        }
        barrier();
    }
}
