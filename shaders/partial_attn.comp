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
// Scores and outputs use register tiles over vec4s of the head dim, and the
// softmax uses WG/R threads per row. Sizes are
// specialization constants chosen by the host from the device's limits;
// nothing here assumes a subgroup size.

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128;   // head dim, a multiple of 4
layout(constant_id = 2) const uint B = 32;    // tokens per shared tile, even
layout(constant_id = 3) const uint R = 32;    // rows per row tile, even, divides WG
layout(constant_id = 4) const uint G = 4;     // query heads per KV head
layout(constant_id = 5) const uint KVH = 8;   // KV heads
layout(constant_id = 6) const uint KV_F16 = 1;

const uint WG = gl_WorkGroupSize.x;
const uint QH = G * KVH;
const uint D4 = D / 4u;
const uint KSTRIDE = D4 + 1u;          // padded rows (vec4s): conflict-free token-row reads
const uint PSTRIDE = B + 1u;
const uint T = WG / R;                 // threads per row in the softmax
// Register tiles: each thread scores RPT rows against one token, and
// accumulates RPV rows of one vec4 of the output, so every K or V vec4 read
// from shared memory feeds 4*RPT (4*RPV) FMAs while the Q and P reads are
// broadcasts. R, B, D4 and WG are powers of two.
const uint RPT = (R * B) / WG > 0u ? (R * B) / WG : 1u;
const uint RPV = (R * D4) / WG > 0u ? (R * D4) / WG : 1u;
const uint NL = (B * D4 + WG - 1u) / WG;   // vec4s of a K (or V) tile each thread fetches

layout(set = 0, binding = 0) readonly buffer Qbuf { float q[]; };      // [query][QH][D]
// K and V are read 4 elements at a time: fp16 as uvec2, fp32 as uvec4
// (aliased views of the same binding).
layout(set = 0, binding = 1) readonly buffer K16 { uvec2 k16[]; };
layout(set = 0, binding = 1) readonly buffer K32 { uvec4 k32[]; };
layout(set = 0, binding = 2) readonly buffer V16 { uvec2 v16[]; };
layout(set = 0, binding = 2) readonly buffer V32 { uvec4 v32[]; };
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

shared vec4 sKV[B * KSTRIDE];
shared vec4 sQ[R * D4];
shared float sP[R * PSTRIDE];
shared float sRed[R * T];
shared float sM[R];
shared float sL[R];
shared float sMNew[R];
shared float sAlpha[R];
shared uint sRowQuery[R];   // item-local query index of each row, ~0u when unused

#define NEG_INF uintBitsToFloat(0xff800000u)

// K and V tiles are fetched into registers one tile ahead and stored to
// shared memory when needed, so global-memory latency overlaps the math.
vec4 fetch4(uint slot, uint head, uint j, bool isV) {
    uint at = ((slot * KVH + head) * D + j) / 4u;
    if (KV_F16 != 0u) {
        uvec2 w = isV ? v16[at] : k16[at];
        return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
    }
    return uintBitsToFloat(isV ? v32[at] : k32[at]);
}

void fetchTile(out vec4 regs[NL], uint tokStart, uint first, uint count, uint head, bool isV) {
    for (uint i = 0u; i < NL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        uint t = idx / D4;
        vec4 x = vec4(0.0);
        if (idx < B * D4 && t < count) {
            uint slot = meta[tokStart + first + t];
            if (slot < pc.numSlots) {
                x = fetch4(slot, head, (idx % D4) * 4u, isV);
            }
        }
        regs[i] = x;
    }
}

void storeTile(vec4 regs[NL]) {
    for (uint i = 0u; i < NL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        if (idx < B * D4) {
            sKV[(idx / D4) * KSTRIDE + idx % D4] = regs[i];
        }
    }
}

bool sees(uint qi, uint t, uint first, uint count, uint maskOff, uint maskWords) {
    if (qi == ~0u || t >= count) {
        return false;
    }
    if (maskWords == 0u) {
        return true;
    }
    uint word = meta[maskOff + (first + t) * maskWords + (qi >> 5u)];
    return ((word >> (qi & 31u)) & 1u) != 0u;
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
    uint myRow = tid / T;      // softmax: row and lane
    uint lane = tid % T;

    uint rows = qCount * G;
    for (uint rowTile = 0u; rowTile < rows; rowTile += R) {
        if (tid < R) {
            uint row = rowTile + tid;
            sRowQuery[tid] = row < rows ? row / G : ~0u;
            sM[tid] = NEG_INF;
            sL[tid] = 0.0;
        }
        for (uint idx = tid; idx < R * D4; idx += WG) {
            uint r = idx / D4;
            uint row = rowTile + r;
            vec4 x = vec4(0.0);
            if (row < rows) {
                uint query = meta[qStart + row / G];
                uint at = (query * QH + head * G + row % G) * D + (idx % D4) * 4u;
                x = vec4(q[at], q[at + 1u], q[at + 2u], q[at + 3u]);
            }
            sQ[idx] = x;
        }
        vec4 acc[RPV];
        for (uint a = 0u; a < RPV; a++) {
            acc[a] = vec4(0.0);
        }
        vec4 kNext[NL];
        vec4 vNext[NL];
        fetchTile(kNext, tokStart, 0u, min(B, tokCount), head, false);
        fetchTile(vNext, tokStart, 0u, min(B, tokCount), head, true);
        uint pvRow0 = (tid / D4) * RPV;   // this thread's output rows and vec4
        uint pvCol = tid % D4;
        bool pvActive = tid < (R / RPV) * D4;
        barrier();

        for (uint first = 0u; first < tokCount; first += B) {
            uint count = min(B, tokCount - first);
            uint next = first + B;
            uint nextCount = next < tokCount ? min(B, tokCount - next) : 0u;
            storeTile(kNext);
            barrier();
            if (nextCount > 0u) {
                fetchTile(kNext, tokStart, next, nextCount, head, false);
            }

            // Scores: rows sRow0 .. sRow0+RPT-1 against token sTok.
            for (uint e = tid; e < (R / RPT) * B; e += WG) {
                uint t = e % B;
                uint r0 = (e / B) * RPT;
                bool vis[RPT];
                bool any = false;
                for (uint i = 0u; i < RPT; i++) {
                    vis[i] = sees(sRowQuery[r0 + i], t, first, count, maskOff, maskWords);
                    any = any || vis[i];
                }
                vec4 d[RPT];
                for (uint i = 0u; i < RPT; i++) {
                    d[i] = vec4(0.0);
                }
                if (any) {
                    for (uint j = 0u; j < D4; j++) {
                        vec4 k = sKV[t * KSTRIDE + j];
                        for (uint i = 0u; i < RPT; i++) {
                            d[i] = fma(sQ[(r0 + i) * D4 + j], k, d[i]);
                        }
                    }
                }
                for (uint i = 0u; i < RPT; i++) {
                    sP[(r0 + i) * PSTRIDE + t] = vis[i] ? dot(d[i], vec4(1.0)) * pc.scale : NEG_INF;
                }
            }
            barrier();

            // Online softmax, T threads per row: local maxima first.
            float localMax = NEG_INF;
            for (uint t = lane; t < B; t += T) {
                localMax = max(localMax, sP[myRow * PSTRIDE + t]);
            }
            sRed[myRow * T + lane] = localMax;
            barrier();
            float mOld = sM[myRow];
            float mNew = mOld;
            for (uint i = 0u; i < T; i++) {
                mNew = max(mNew, sRed[myRow * T + i]);
            }
            float localSum = 0.0;
            for (uint t = lane; t < B; t += T) {
                float s = sP[myRow * PSTRIDE + t];
                float p = (s == NEG_INF) ? 0.0 : exp(s - mNew);
                sP[myRow * PSTRIDE + t] = p;
                localSum += p;
            }
            barrier(); // every lane has read sRed and sM
            sRed[myRow * T + lane] = localSum;
            if (lane == 0u) {
                sMNew[myRow] = mNew;
                sAlpha[myRow] = (mNew == NEG_INF || mOld == NEG_INF) ? (mNew == NEG_INF ? 1.0 : 0.0) : exp(mOld - mNew);
            }
            storeTile(vNext);
            barrier();
            if (nextCount > 0u) {
                fetchTile(vNext, tokStart, next, nextCount, head, true);
            }
            if (tid < R) {
                float sum = 0.0;
                for (uint i = 0u; i < T; i++) {
                    sum += sRed[tid * T + i];
                }
                sL[tid] = sL[tid] * sAlpha[tid] + sum;
                sM[tid] = sMNew[tid];
            }

            // Weighted sum of V: RPV rows of one vec4 per thread.
            if (pvActive) {
                float alpha[RPV];
                bool live = false;
                for (uint i = 0u; i < RPV; i++) {
                    alpha[i] = sAlpha[pvRow0 + i];
                    acc[i] *= alpha[i];
                    live = live || sRowQuery[pvRow0 + i] != ~0u;
                }
                if (live) {
                    for (uint t = 0u; t < count; t++) {
                        vec4 v = sKV[t * KSTRIDE + pvCol];
                        for (uint i = 0u; i < RPV; i++) {
                            acc[i] = fma(vec4(sP[(pvRow0 + i) * PSTRIDE + t]), v, acc[i]);
                        }
                    }
                }
            }
            barrier();
        }

        // Normalised partial output and log-sum-exp per row.
        if (pvActive) {
            for (uint i = 0u; i < RPV; i++) {
                uint r = pvRow0 + i;
                uint qi = sRowQuery[r];
                if (qi != ~0u) {
                    uint g = (rowTile + r) % G;
                    uint p = (partialBase + qi) * QH + head * G + g;
                    float l = sL[r];
                    vec4 o = l > 0.0 ? acc[i] / l : vec4(0.0);
                    uint j = pvCol * 4u;
                    po[p * D + j] = o.x;
                    po[p * D + j + 1u] = o.y;
                    po[p * D + j + 2u] = o.z;
                    po[p * D + j + 3u] = o.w;
                    if (j == 0u) {
                        pl[p] = l > 0.0 ? sM[r] + log(l) : NEG_INF;
                    }
                }
            }
        }
        barrier();
    }
}
